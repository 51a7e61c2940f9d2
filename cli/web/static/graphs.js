// The pipeline and lineage pages: a layered left-to-right layout (longest-path layers,
// barycentre ordering; after Sugiyama et al.), drawn as SVG. Clicking a node opens its
// run, or the lineage of its file.
import {
  api, el, clear, errorLine, commandText, shortHash, localTime, lineageHref, loading, setTitle, link,
} from './util.js';

const GAP_X = 56; const GAP_Y = 18; const PAD = 24;
const measure = document.createElement('canvas').getContext('2d');

function textWidth(text, font) {
  measure.font = font;
  return measure.measureText(text).width;
}

// nodes: [{id, w, h}], edges: [{from, to}] -> sets n.x, n.y; returns {width, height}
export function layout(nodes, edges) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const out = new Map(nodes.map((n) => [n.id, []]));
  const inc = new Map(nodes.map((n) => [n.id, []]));
  // a cycle cannot be layered: drop the edges that close one (DFS back edges)
  const state = new Map();
  const keep = [];
  const adj = new Map(nodes.map((n) => [n.id, []]));
  for (const e of edges) if (byId.has(e.from) && byId.has(e.to) && e.from !== e.to) adj.get(e.from).push(e);
  const visit = (start) => {
    const stack = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const list = adj.get(top[0]);
      if (top[1] >= list.length) { state.set(top[0], 2); stack.pop(); continue; }
      const e = list[top[1]++];
      const s = state.get(e.to);
      if (s === 1) continue; // back edge
      keep.push(e);
      if (!s) { state.set(e.to, 1); stack.push([e.to, 0]); }
    }
  };
  for (const n of nodes) if (!state.get(n.id)) visit(n.id);
  for (const e of keep) { out.get(e.from).push(e.to); inc.get(e.to).push(e.from); }
  // layers: longest path from a source (Kahn order)
  const indeg = new Map(nodes.map((n) => [n.id, inc.get(n.id).length]));
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  const queue = nodes.filter((n) => !indeg.get(n.id)).map((n) => n.id);
  while (queue.length) {
    const id = queue.shift();
    for (const t of out.get(id)) {
      layer.set(t, Math.max(layer.get(t), layer.get(id) + 1));
      indeg.set(t, indeg.get(t) - 1);
      if (!indeg.get(t)) queue.push(t);
    }
  }
  // a source feeding only a later layer sits just before its first consumer
  for (const n of nodes) {
    if (!inc.get(n.id).length && out.get(n.id).length) {
      layer.set(n.id, Math.max(layer.get(n.id), Math.min(...out.get(n.id).map((t) => layer.get(t))) - 1));
    }
  }
  const layers = [];
  for (const n of nodes) (layers[layer.get(n.id)] ||= []).push(n);
  const pos = new Map();
  const index = () => layers.forEach((l) => l.forEach((n, i) => pos.set(n.id, i)));
  index();
  const bary = (n, nbrs) => {
    const xs = nbrs.get(n.id).map((m) => pos.get(m));
    return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : pos.get(n.id);
  };
  for (let sweep = 0; sweep < 8; sweep += 1) {
    const down = sweep % 2 === 0;
    const order = down ? layers.slice(1) : layers.slice(0, -1).reverse();
    for (const l of order) {
      const b = new Map(l.map((n) => [n.id, bary(n, down ? inc : out)]));
      l.sort((p, q) => b.get(p.id) - b.get(q.id));
      l.forEach((n, i) => pos.set(n.id, i));
    }
  }
  // x by layer; y stacked, then nudged towards the neighbours' centres in order
  let x = PAD;
  const heights = layers.map((l) => l.reduce((a, n) => a + n.h, 0) + GAP_Y * (l.length - 1));
  const tallest = Math.max(...heights, 0);
  layers.forEach((l, i) => {
    const w = Math.max(...l.map((n) => n.w));
    let y = PAD + (tallest - heights[i]) / 2;
    for (const n of l) { n.x = x + (w - n.w) / 2; n.y = y; y += n.h + GAP_Y; }
    x += w + GAP_X;
  });
  for (let pass = 0; pass < 4; pass += 1) {
    for (const l of layers) {
      for (const n of l) {
        const nb = [...inc.get(n.id), ...out.get(n.id)].map((m) => byId.get(m));
        if (nb.length) n.want = nb.reduce((a, m) => a + m.y + m.h / 2, 0) / nb.length - n.h / 2;
        else n.want = n.y;
      }
      // keep the order and the gaps: forward then backward clamping
      for (let i = 0; i < l.length; i += 1) {
        const lo = i ? l[i - 1].y + l[i - 1].h + GAP_Y : PAD;
        l[i].y = Math.max(lo, (l[i].y + l[i].want) / 2);
      }
    }
  }
  let height = 0; let width = 0;
  for (const n of nodes) { height = Math.max(height, n.y + n.h); width = Math.max(width, n.x + n.w); }
  return { width: width + PAD, height: height + PAD, edges: keep };
}

const STYLE = {
  stage: { fill: '#eef4ff', stroke: '#2463eb', radius: 8 },
  run: { fill: '#eef4ff', stroke: '#2463eb', radius: 8 },
  failed: { fill: '#fdecec', stroke: '#c62828', radius: 8 },
  file: { fill: '#ffffff', stroke: '#9aa4b2', radius: 16 },
  old: { fill: '#f5f6f8', stroke: '#c4cad3', radius: 16 },
  code: { fill: '#f6f3ff', stroke: '#7048e8', radius: 16 },
};

// nodes: [{id, title, sub, style, href, tip}], edges: [{from, to, label}]
function drawGraph(box, nodes, edges) {
  clear(box);
  if (!nodes.length) return;
  for (const n of nodes) {
    const w1 = textWidth(n.title, '600 12px system-ui, sans-serif');
    const w2 = n.sub ? textWidth(n.sub, '11px ui-monospace, monospace') : 0;
    n.w = Math.min(380, Math.max(w1, w2) + 26);
    n.h = n.sub ? 44 : 30;
  }
  const { width, height, edges: kept } = layout(nodes, edges);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  // wider than the page: scaled down to fit (to 55% at most, then it scrolls)
  const scale = Math.max(0.55, Math.min(1, (box.clientWidth - 4) / width));
  const svg = el('svg', { width: width * scale, height: height * scale, viewBox: `0 0 ${width} ${height}`, role: 'img' });
  svg.append(el('defs', {}));
  svg.firstChild.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#9aa4b2"/></marker>';
  const labels = new Map(edges.map((e) => [`${e.from}\u0000${e.to}`, e.label]));
  for (const e of kept) {
    const a = byId.get(e.from); const b = byId.get(e.to);
    const x1 = a.x + a.w; const y1 = a.y + a.h / 2; const x2 = b.x - 2; const y2 = b.y + b.h / 2;
    const dx = Math.max(30, (x2 - x1) / 2);
    svg.append(el('path', { class: 'edge', d: `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`, 'marker-end': 'url(#arrow)' }));
    const label = labels.get(`${e.from}\u0000${e.to}`);
    if (label) svg.append(el('text', { class: 'edge-label', x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 5, 'text-anchor': 'middle' }, label));
  }
  for (const n of nodes) {
    const s = STYLE[n.style] || STYLE.file;
    const g = el('g', { class: 'node', transform: `translate(${n.x},${n.y})`, dataset: { id: n.id, kind: n.kind || '' }, tabindex: 0, role: 'link' },
      el('title', {}, n.tip || n.title),
      el('rect', { width: n.w, height: n.h, rx: Math.min(s.radius, n.h / 2), fill: s.fill, stroke: s.stroke }),
      el('text', { x: 13, y: n.sub ? 18 : 19, style: 'font-weight:600' }, n.title),
      n.sub ? el('text', { class: 'sub', x: 13, y: 34 }, n.sub) : null);
    const go = () => { if (n.href) location.href = n.href; };
    g.addEventListener('click', go);
    g.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') go(); });
    svg.append(g);
  }
  box.append(svg);
  box.dataset.rendered = '1';
}

function cut(text, n = 40) { return text.length > n ? `${text.slice(0, n - 1)}…` : text; }

async function pipelinePage(main) {
  setTitle('Pipeline');
  const box = el('div', { class: 'graph', id: 'graph' }, loading());
  const info = el('div', {});
  main.append(el('div', { class: 'pagehead' }, el('h1', {}, 'Pipeline'),
    el('span', { class: 'sub' }, 'inferred from what the runs read and wrote; nothing declared')),
  el('section', { class: 'card flush' }, el('div', { class: 'graph-legend' },
    el('span', {}, el('span', { class: 'swatch', style: 'background:#eef4ff;border:1px solid #2463eb' }), ' stage: opens its latest run'),
    el('span', {}, el('span', { class: 'swatch', style: 'background:#fff;border:1px solid #9aa4b2;border-radius:5px' }), ' file: opens its lineage')), box), info);
  let pipe;
  try { pipe = await api('/api/pipeline'); } catch (err) { box.replaceChildren(errorLine(err.message)); return; }
  if (!pipe.stages.length) {
    box.replaceChildren(el('div', { class: 'empty' }, 'No pipeline yet: no command that reads or writes files has run while the agent watched.'));
    return;
  }
  const nodes = []; const edges = []; const files = new Map();
  const file = (path) => {
    if (!files.has(path)) {
      files.set(path, { id: `file:${path}`, title: cut(path), kind: 'file', style: 'file', href: lineageHref(path), tip: `${path}: open its lineage` });
      nodes.push(files.get(path));
    }
    return files.get(path).id;
  };
  for (const s of pipe.stages) {
    const code = new Set(s.code || []);
    nodes.push({ id: `stage:${s.name}`, title: s.name, sub: cut(s.pattern, 44), kind: 'stage', style: 'stage', href: `/runs/${s.latest_run}`,
      tip: `${s.pattern}\n${s.runs.length} runs, latest ${s.latest_run}\ncode: ${[...code].join(', ') || '-'}` });
  }
  for (const s of pipe.stages) {
    const code = new Set(s.code || []);
    for (const d of s.deps) if (!code.has(d)) edges.push({ from: file(d), to: `stage:${s.name}` });
    for (const [p] of Object.entries(s.params || {})) edges.push({ from: file(p), to: `stage:${s.name}` });
    for (const o of s.outs) edges.push({ from: `stage:${s.name}`, to: file(o) });
  }
  drawGraph(box, nodes, edges);
  const rows = pipe.stages.map((s) => el('tr', {}, el('td', {}, link(`/runs/${s.latest_run}`, s.name)),
    el('td', { class: 'mono' }, s.pattern), el('td', { class: 'num' }, s.runs.length),
    el('td', { class: 'mono muted' }, Object.entries(s.params || {}).map(([f, keys]) => `${f}: ${keys.join(', ')}`).join('; ') || '-')));
  info.append(el('section', { class: 'card' }, el('h2', {}, 'Stages'), el('table', { class: 'dense' },
    el('thead', {}, el('tr', {}, ['Stage', 'Command', 'Runs', 'Params'].map((h) => el('th', {}, h)))), el('tbody', {}, rows))),
  ...(pipe.warnings.length ? [el('section', { class: 'card' }, pipe.warnings.map((w) => errorLine(w)))] : []));
}

async function lineagePage(main, boot) {
  setTitle(boot.path ? `Lineage of ${boot.path}` : 'Lineage');
  const pathBox = el('input', { type: 'text', name: 'path', class: 'where', value: boot.path || '', placeholder: 'a file (model.pkl), PATH@HASH, or a run id', spellcheck: 'false', 'aria-label': 'file or run' });
  const dir = el('select', { name: 'direction', 'aria-label': 'direction' },
    el('option', { value: 'up' }, 'up: what led to it'), el('option', { value: 'down' }, 'down: what came from it'));
  dir.value = boot.direction === 'down' ? 'down' : 'up';
  const form = el('form', { class: 'toolbar', method: 'get', action: '/lineage' }, pathBox, dir, el('button', { type: 'submit', class: 'primary' }, 'Show'));
  dir.addEventListener('change', () => form.requestSubmit());
  const box = el('div', { class: 'graph', id: 'graph' });
  const hint = el('div', {});
  main.append(el('div', { class: 'pagehead' }, el('h1', {}, 'Lineage'), el('span', { class: 'sub' }, 'runs → versions → runs, followed through the data')),
    el('section', { class: 'card' }, form, hint),
    el('section', { class: 'card flush' }, el('div', { class: 'graph-legend' },
      el('span', {}, el('span', { class: 'swatch', style: 'background:#eef4ff;border:1px solid #2463eb' }), ' run: opens it'),
      el('span', {}, el('span', { class: 'swatch', style: 'background:#fff;border:1px solid #9aa4b2;border-radius:5px' }), ' version: its lineage'),
      el('span', {}, el('span', { class: 'swatch', style: 'background:#f5f6f8;border:1px solid #c4cad3;border-radius:5px' }), ' not the current version')), box));
  if (!boot.path) {
    box.replaceChildren(el('div', { class: 'empty' }, 'Give a file or a run above.'));
    api('/api/pipeline').then((pipe) => {
      const outs = [...new Set(pipe.stages.flatMap((s) => s.outs))].slice(0, 30);
      if (outs.length) hint.append(el('div', { class: 'toolbar', style: 'margin-top:10px' }, el('label', {}, 'Outputs:'), el('div', { class: 'chips' }, outs.map((o) => link(lineageHref(o), o, { class: 'chip' })))));
    }).catch(() => {});
    return;
  }
  box.replaceChildren(loading());
  let g;
  try { g = await api('/api/lineage', { path: boot.path, direction: dir.value }); } catch (err) {
    box.replaceChildren(el('div', { class: 'empty' }, errorLine(err.message))); return;
  }
  const targets = new Set(g.targets);
  const nodes = g.nodes.map((n) => (n.type === 'run' ? {
    id: n.id, title: `run ${n.run}${n.stage ? ` · ${n.stage}` : ''}`, sub: cut(commandText(n.command), 44), kind: 'run',
    style: n.status === 'failed' ? 'failed' : 'run', href: `/runs/${n.run}`,
    tip: `${commandText(n.command)}\n${n.status}, ${localTime(n.started_at)}`,
  } : {
    id: n.id, title: cut(n.path), sub: `${shortHash(n.hash)}${n.current ? '' : ' (old)'}${targets.has(n.id) ? ' · target' : ''}`, kind: 'version',
    style: n.current ? 'file' : 'old', href: lineageHref(`${n.path}@${shortHash(n.hash)}`, dir.value), tip: `${n.path}@${n.hash}\n${n.kind || ''}`,
  }));
  const edges = g.edges.map((e) => ({ from: e.from, to: e.to }));
  drawGraph(box, nodes, edges);
  if (nodes.length <= targets.size) hint.append(el('div', { class: 'faint', style: 'margin-top:10px' }, g.direction === 'up' ? 'No run wrote it while the agent watched.' : 'No run read it while the agent watched.'));
}

export function draw(main, boot) {
  return boot.page === 'pipeline' ? pipelinePage(main) : lineagePage(main, boot);
}
