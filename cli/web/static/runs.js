// The runs page: the `runs` table, --where in a search box, status and tag filters,
// sorting, extra columns, server-side paging, selection for compare, live refresh.
import {
  api, el, clear, errorLine, humanDuration, localTime, commandText, statusBadge, numberText,
  metricValue, setTitle,
} from './util.js';

const STATUSES = ['running', 'completed', 'failed', 'ended', 'lost'];
const LIVE_MS = 4000;
const BASE = [
  ['id', 'ID', 'id', 'num'], ['status', 'Status', 'status'], ['started', 'Started', 'started_at'],
  ['duration', 'Duration', 'duration', 'num'], ['command', 'Command', 'command'],
  ['in', 'In', null, 'num'], ['out', 'Out', null, 'num'],
];
const SELECTED_KEY = 'onlooker.selected';

function readState() {
  const q = new URLSearchParams(location.search);
  return {
    where: q.get('where') || '', status: q.get('status') || '', tag: q.get('tag') || '',
    sort: q.get('sort') || '', columns: q.get('columns') || '',
    offset: Math.max(0, parseInt(q.get('offset') || '0', 10) || 0),
    limit: Math.min(500, Math.max(1, parseInt(q.get('limit') || '50', 10) || 50)),
  };
}

function writeState(state) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) {
    if (v && !(k === 'limit' && v === 50)) q.set(k, v);
  }
  const url = `${location.pathname}${q.toString() ? `?${q}` : ''}`;
  history.replaceState(null, '', url);
}

function selected() {
  try { return new Set(JSON.parse(sessionStorage.getItem(SELECTED_KEY) || '[]')); } catch (e) { return new Set(); }
}
function saveSelected(set) { sessionStorage.setItem(SELECTED_KEY, JSON.stringify([...set])); }

function specs(text) { return text.split(',').map((s) => s.trim()).filter(Boolean); }

function cellText(spec, value) {
  if (spec === 'duration') return humanDuration(value);
  if (spec === 'started_at' || spec === 'ended_at') return localTime(value);
  if (spec === 'command') return commandText(value);
  return numberText(metricValue(value));
}

export function draw(main, boot) {
  setTitle('Runs');
  const state = readState();
  const sel = selected();
  let lastKey = '';
  let timer = null;

  const whereBox = el('input', {
    type: 'search', class: 'where', name: 'where', value: state.where, spellcheck: 'false',
    placeholder: "--where, e.g.  params.lr > 0.01 and metrics.accuracy >= 0.8   or   command ~ '*train*'",
    'aria-label': 'filter (the --where language)',
  });
  const statusBox = el('select', { name: 'status', 'aria-label': 'status' },
    el('option', { value: '' }, 'any status'), STATUSES.map((s) => el('option', { value: s }, s)));
  statusBox.value = state.status;
  const tagBox = el('select', { name: 'tag', 'aria-label': 'tag' }, el('option', { value: '' }, 'any tag'));
  const columnsBox = el('input', {
    type: 'text', name: 'columns', class: 'mono', value: state.columns, style: 'flex:1;min-width:240px',
    placeholder: 'extra columns: params.lr, metrics.accuracy', 'aria-label': 'extra columns', spellcheck: 'false',
  });
  const addColumn = el('select', { 'aria-label': 'add a column' }, el('option', { value: '' }, '+ column'));
  const errorBox = el('div', {});
  const compareBtn = el('button', { class: 'primary', id: 'compare', disabled: true }, 'Compare');
  const clearBtn = el('button', { id: 'clear-selection', disabled: true }, 'Clear');
  const tableBox = el('div', { class: 'scroll' });
  const pager = el('div', { class: 'pager' });
  const live = el('span', { class: 'faint', style: 'margin-left:auto;font-size:12.5px' });

  const form = el('form', { class: 'toolbar', role: 'search', onsubmit: (e) => { e.preventDefault(); apply(); } },
    whereBox, statusBox, tagBox, el('button', { type: 'submit', class: 'primary' }, 'Search'));
  main.append(
    el('div', { class: 'pagehead' }, el('h1', {}, 'Runs'), el('span', { class: 'sub', id: 'count' }), live),
    el('section', { class: 'card' }, form,
      el('div', { class: 'toolbar' }, el('label', {}, 'Columns'), columnsBox, addColumn,
        el('span', { class: 'spacer' }), compareBtn, clearBtn),
      errorBox),
    el('section', { class: 'card flush' }, tableBox, pager),
  );
  if (boot.error) showError(boot.error);

  statusBox.addEventListener('change', () => apply());
  tagBox.addEventListener('change', () => apply());
  columnsBox.addEventListener('change', () => apply());
  addColumn.addEventListener('change', () => {
    if (!addColumn.value) return;
    const cols = specs(columnsBox.value);
    if (!cols.includes(addColumn.value)) cols.push(addColumn.value);
    columnsBox.value = cols.join(', ');
    addColumn.value = '';
    apply();
  });
  // oldest first: the comparison reads as what changed since
  compareBtn.addEventListener('click', () => { location.href = `/compare?runs=${[...sel].sort((x, y) => x - y).join(',')}`; });
  clearBtn.addEventListener('click', () => { sel.clear(); saveSelected(sel); refreshSelection(); });

  api('/api/tags').then((data) => {
    for (const [name, n] of Object.entries(data.tags || {})) tagBox.append(el('option', { value: name }, `${name} (${n})`));
    tagBox.value = state.tag;
  }).catch(() => {});

  function showError(message) {
    clear(errorBox).append(errorLine(message));
    whereBox.classList.add('invalid');
  }

  function apply(keepOffset = false) {
    state.where = whereBox.value.trim();
    state.status = statusBox.value;
    state.tag = tagBox.value;
    state.columns = specs(columnsBox.value).join(',');
    if (!keepOffset) state.offset = 0;
    writeState(state);
    load();
  }

  function refreshSelection() {
    compareBtn.disabled = sel.size < 2 || sel.size > 50;
    clearBtn.disabled = sel.size === 0;
    compareBtn.textContent = sel.size ? `Compare ${sel.size}` : 'Compare';
    for (const row of tableBox.querySelectorAll('tr[data-id]')) {
      const on = sel.has(Number(row.dataset.id));
      row.classList.toggle('selected', on);
      const box = row.querySelector('input');
      if (box) box.checked = on;
    }
  }

  async function load(silent = false) {
    let data;
    try {
      data = await api('/api/runs', {
        where: state.where, status: state.status, tag: state.tag, sort: state.sort,
        columns: state.columns, offset: state.offset, limit: state.limit,
      });
    } catch (err) {
      if (!silent) { showError(err.message); clear(tableBox); clear(pager); }
      return;
    }
    clear(errorBox);
    whereBox.classList.remove('invalid');
    const key = JSON.stringify(data.runs.map((r) => [r.id, r.status, r.ended_at, r.tags]));
    if (silent && key === lastKey) return;
    lastKey = key;
    render(data);
  }

  function header(label, spec, cls) {
    if (!spec) return el('th', { class: cls }, label);
    const asc = state.sort === spec; const desc = state.sort === `-${spec}`;
    const th = el('th', { class: `sortable ${cls || ''}`, title: `sort by ${spec}`, dataset: { sort: spec } },
      label, asc ? el('span', { class: 'arrow' }, '↑') : desc ? el('span', { class: 'arrow' }, '↓') : null);
    th.addEventListener('click', () => {
      state.sort = desc ? spec : asc ? '' : `-${spec}`;
      apply(true);
    });
    return th;
  }

  function render(data) {
    const { runs } = data;
    const cols = data.columns || [];
    const shown = runs.length ? `${data.offset + 1}–${data.offset + runs.length}` : '0';
    const of = data.total !== null ? ` of ${data.total.toLocaleString()}` : data.has_more ? ' (more match)' : '';
    document.getElementById('count').textContent = `${shown}${of} ${data.total !== null ? 'runs' : 'matching runs'}`;
    const tagged = runs.some((r) => (r.tags || []).length);
    const head = el('tr', {}, el('th', { class: 'check' }),
      BASE.map(([, label, spec, cls]) => header(label, spec, cls)),
      tagged ? el('th', {}, 'Tags') : null,
      cols.map((c) => header(c, c, 'num')));
    const rows = runs.map((r) => {
      const box = el('input', { type: 'checkbox', 'aria-label': `select run ${r.id}` });
      box.checked = sel.has(r.id);
      box.addEventListener('click', (e) => {
        e.stopPropagation();
        if (box.checked) sel.add(r.id); else sel.delete(r.id);
        saveSelected(sel); refreshSelection();
      });
      const tr = el('tr', { dataset: { id: r.id } },
        el('td', { class: 'check' }, box),
        el('td', { class: 'num' }, el('a', { href: `/runs/${r.id}` }, String(r.id))),
        el('td', {}, statusBadge(r)),
        el('td', { class: 'muted' }, localTime(r.started_at)),
        el('td', { class: 'num' }, humanDuration(r.duration)),
        el('td', { class: 'cmd', title: commandText(r.command, { full: true }) }, commandText(r.command)),
        el('td', { class: 'num' }, (r.inputs || []).length),
        el('td', { class: 'num' }, (r.outputs || []).length),
        tagged ? el('td', {}, el('div', { class: 'chips' }, (r.tags || []).map((t) => el('span', { class: 'chip tag' }, t)))) : null,
        cols.map((c) => el('td', { class: 'num mono' }, cellText(c, (r.columns || {})[c]))));
      tr.addEventListener('click', (e) => {
        if (e.target.closest('a,input')) return;
        location.href = `/runs/${r.id}`;
      });
      return tr;
    });
    clear(tableBox).append(runs.length
      ? el('table', { class: 'runs', id: 'runs-table' }, el('thead', {}, head), el('tbody', {}, rows))
      : el('div', { class: 'empty' }, state.where || state.status || state.tag
        ? 'No runs match.' : 'No runs yet: run your scripts as usual while the agent watches.'));
    suggest(runs, cols);
    if (!performance.getEntriesByName('onlooker:runs').length) performance.mark('onlooker:runs');
    const prev = el('button', { class: 'small', disabled: data.offset === 0 }, '‹ Previous');
    const next = el('button', { class: 'small', disabled: !data.has_more }, 'Next ›');
    prev.addEventListener('click', () => { state.offset = Math.max(0, data.offset - data.limit); apply(true); });
    next.addEventListener('click', () => { state.offset = data.offset + data.limit; apply(true); });
    const size = el('select', { 'aria-label': 'runs per page' }, [25, 50, 100, 200, 500].map((n) => el('option', { value: n }, `${n} per page`)));
    size.value = String(state.limit);
    size.addEventListener('change', () => { state.limit = Number(size.value); apply(); });
    clear(pager).append(prev, next, el('span', { class: 'faint' }, `${shown}${of}`), el('span', { class: 'spacer' }), size);
    refreshSelection();
  }

  // "+ column" offers the params and metrics the shown runs have
  function suggest(runs, cols) {
    const keys = new Map();
    for (const r of runs) {
      for (const k of Object.keys(r.params || {})) keys.set(`params.${k}`, true);
      for (const k of Object.keys(r.metrics || {})) keys.set(`metrics.${k}`, true);
    }
    clear(addColumn).append(el('option', { value: '' }, '+ column'));
    for (const k of [...keys.keys()].sort()) if (!cols.includes(k)) addColumn.append(el('option', { value: k }, k));
  }

  function tick() {
    live.replaceChildren(el('span', { class: 'live-dot' }), 'live');
    timer = setInterval(() => {
      if (document.visibilityState === 'visible' && state.offset === 0) load(true);
    }, LIVE_MS);
  }

  load().then(tick);
  window.addEventListener('beforeunload', () => clearInterval(timer));
}
