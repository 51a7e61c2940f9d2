// Shared helpers: the API, building DOM, and formatting as the CLI does (cli/output.py).

export class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

export async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => url.searchParams.append(k, x));
    else if (v !== undefined && v !== null && v !== '') url.searchParams.set(k, v);
  }
  let res;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' } });
  } catch (err) {
    throw new ApiError('the dashboard server does not answer (was `onlooker ui` stopped?)', 0);
  }
  let body = null;
  try { body = await res.json(); } catch (err) { body = null; }
  if (!res.ok) throw new ApiError((body && body.error) || `HTTP ${res.status}`, res.status);
  return body;
}

// el('div', {class: 'x', onclick: f}, child, 'text', [more])
export function el(tag, attrs, ...children) {
  const svg = ['svg', 'g', 'path', 'rect', 'text', 'line', 'circle', 'title', 'polyline', 'defs', 'marker'].includes(tag);
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

export function card(title, ...children) {
  const head = el('div', { class: 'head' }, el('h2', {}, title));
  return el('section', { class: 'card' }, head, ...children);
}

export function errorLine(message) { return el('div', { class: 'error-line', role: 'alert' }, message); }

export function humanSize(n) {
  if (n === null || n === undefined) return '-';
  let size = Number(n);
  for (const unit of ['B', 'KiB', 'MiB', 'GiB', 'TiB']) {
    if (Math.abs(size) < 1024 || unit === 'TiB') return unit === 'B' ? `${Math.trunc(size)} B` : `${size.toFixed(1)} ${unit}`;
    size /= 1024;
  }
  return `${n} B`;
}

export function humanDuration(s) {
  if (s === null || s === undefined) return '-';
  if (s < 10) return `${s.toFixed(2)}s`;
  if (s < 60) return `${s.toFixed(1)}s`;
  let m = Math.floor(Math.round(s) / 60); const sec = Math.round(s) % 60;
  if (m < 60) return `${m}m${String(sec).padStart(2, '0')}s`;
  const h = Math.floor(m / 60); m %= 60;
  if (h < 48) return `${h}h${String(m).padStart(2, '0')}m`;
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, '0')}h`;
}

export function localTime(iso) {
  if (!iso) return '-';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (x) => String(x).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

export function shortHash(h, n = 12) { return h ? String(h).split(':').pop().slice(0, n) : '-'; }

export function numberText(v) {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'number') {
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return (a !== 0 && (a < 1e-3 || a >= 1e7)) ? v.toExponential(4) : String(+v.toPrecision(6));
  }
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

// A metric as a single figure: a final value, or a series' last point (as --where reads it).
export function metricValue(m) {
  if (m && typeof m === 'object' && !Array.isArray(m)) return 'final' in m ? m.final : m.last;
  return m;
}

const SAFE = /^[A-Za-z0-9_./:=@%+,-]+$/;
export function quoteArg(a) {
  const s = String(a);
  return s !== '' && SAFE.test(s) ? s : `'${s.replace(/'/g, `'"'"'`)}'`;
}

// The program as people type it: a path's basename (the table; the run page keeps the path).
export function commandText(argv, { full = false } = {}) {
  if (!Array.isArray(argv) || !argv.length) return argv ? String(argv) : '-';
  const [prog, ...rest] = argv;
  const shown = full ? prog : String(prog).split('/').pop();
  return [shown, ...rest].map(quoteArg).join(' ');
}

export function statusBadge(run) {
  const status = run.status || 'unknown';
  let text = status;
  if (run.exit_code !== null && run.exit_code !== undefined && run.exit_code !== 0) text += ` (${run.exit_code})`;
  else if (run.signal) text += ` (sig ${run.signal})`;
  return el('span', { class: `status ${status}` }, text);
}

export function link(href, text, attrs) { return el('a', { href, ...(attrs || {}) }, text); }

export function runLink(id) { return link(`/runs/${id}`, `run ${id}`); }

export function lineageHref(path, direction) {
  const q = new URLSearchParams({ path });
  if (direction && direction !== 'up') q.set('direction', direction);
  return `/lineage?${q}`;
}

// Colours for series and runs: distinct, readable on white (Tableau 10, reordered).
export const PALETTE = ['#2463eb', '#e8590c', '#2b8a3e', '#c2255c', '#7048e8', '#0c8599',
  '#a61e4d', '#5c940d', '#d9480f', '#1864ab', '#862e9c', '#087f5b'];
export function colour(i) { return PALETTE[i % PALETTE.length]; }

export function setTitle(text) { document.title = `${text} · onlooker`; }

export function loading(text = 'Loading…') { return el('div', { class: 'spinner' }, text); }
