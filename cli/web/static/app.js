// Entry point: reads the page's boot data and draws that page.
import { el } from './util.js';

const boot = JSON.parse(document.getElementById('boot').textContent || '{}');
const PAGES = {
  runs: () => import('./runs.js'),
  run: () => import('./run.js'),
  compare: () => import('./compare.js'),
  pipeline: () => import('./graphs.js'),
  lineage: () => import('./graphs.js'),
};

const nav = { runs: 'runs', run: 'runs', compare: 'runs', pipeline: 'pipeline', lineage: 'lineage' };
for (const a of document.querySelectorAll('.top nav a')) {
  if (a.dataset.nav === nav[boot.page]) a.classList.add('active');
}

const main = document.getElementById('main');
const load = PAGES[boot.page];
if (load) {
  main.replaceChildren();
  load().then((mod) => mod.draw(main, boot)).catch((err) => {
    main.replaceChildren(el('section', { class: 'card error-page' },
      el('h1', {}, 'Cannot show this page'), el('p', { class: 'sentence' }, String(err.message || err))));
  });
}
