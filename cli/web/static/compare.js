// The compare page (2 to 50 runs): what differs in params, metrics, inputs and code;
// a metric's series overlaid; params against a metric in parallel coordinates; and for
// two runs, `onlooker diff` with its causes.
import {
  api, el, card, clear, errorLine, commandText, statusBadge, numberText, metricValue, shortHash,
  colour, link, loading, setTitle, humanSize, humanDuration,
} from './util.js';
import { lineChart, joined } from './charts.js';

function hashes(entries) {
  const out = {};
  for (const e of entries || []) out[e.path] = e.hash;
  return out;
}

function flat(run) {
  return {
    params: run.params || {},
    metrics: Object.fromEntries(Object.entries(run.metrics || {}).map(([k, v]) => [k, metricValue(v)])),
    inputs: hashes(run.inputs),
    code: hashes(run.code),
    outputs: hashes(run.outputs),
  };
}

function same(values) {
  const texts = values.map((v) => JSON.stringify(v === undefined ? null : v));
  return texts.every((t) => t === texts[0]);
}

function show(section, v) {
  if (v === undefined || v === null) return el('span', { class: 'faint' }, '-');
  if (['inputs', 'code', 'outputs'].includes(section)) return el('span', { class: 'mono', title: v }, shortHash(v));
  return numberText(v);
}

function diffTable(runs, showSame) {
  const flats = runs.map(flat);
  const sections = ['params', 'metrics', 'inputs', 'code', 'outputs'];
  const body = [];
  let differing = 0;
  for (const s of sections) {
    const keys = [...new Set(flats.flatMap((f) => Object.keys(f[s])))].sort();
    const rows = [];
    for (const k of keys) {
      const values = flats.map((f) => f[s][k]);
      const alike = same(values);
      if (!alike) differing += 1;
      if (alike && !showSame) continue;
      const base = JSON.stringify(values[0] ?? null);
      rows.push(el('tr', { dataset: { section: s, key: k } }, el('td', { class: 'mono' }, k),
        values.map((v, i) => el('td', { class: `mono ${i && JSON.stringify(v ?? null) !== base ? 'changed' : ''}` }, show(s, v)))));
    }
    if (rows.length) {
      body.push(el('tr', {}, el('th', { colspan: runs.length + 1, style: 'background:#f3f5f8' }, s)));
      body.push(...rows);
    }
  }
  const table = el('table', { class: 'dense', id: 'diff-table' },
    el('thead', {}, el('tr', {}, el('th', {}, 'key'), runs.map((r, i) => el('th', {},
      el('span', { class: 'swatch', style: `background:${colour(i)};margin-right:6px` }), link(`/runs/${r.id}`, `run ${r.id}`))))),
    el('tbody', {}, body));
  return { table, differing, empty: !body.length };
}

async function overlay(box, runs, key) {
  clear(box).append(loading());
  const got = await Promise.all(runs.map((r) => api(`/api/runs/${r.id}/metrics/${encodeURIComponent(key)}`, { points: 2000 })
    .catch(() => null)));
  const present = got.map((s, i) => [s, i]).filter(([s]) => s);
  clear(box);
  if (!present.length) { box.append(el('div', { class: 'faint' }, 'None of these runs has this series.')); return; }
  const data = joined(present.map(([s]) => [s.step, s.value]));
  lineChart(box, data[0], present.map(([, i], j) => ({ label: `run ${runs[i].id}`, values: data[j + 1], colour: colour(i) })), { height: 260 });
}

function numeric(v) { return typeof v === 'number' && Number.isFinite(v); }

// Parallel coordinates: one axis per param that varies, the chosen metric last; each
// run a line, coloured by the metric.
function parallel(box, runs, metricKey) {
  clear(box);
  const flats = runs.map(flat);
  const paramKeys = [...new Set(flats.flatMap((f) => Object.keys(f.params)))].sort()
    .filter((k) => !same(flats.map((f) => f.params[k])) && flats.every((f) => f.params[k] === undefined || typeof f.params[k] !== 'object'))
    .slice(0, 10);
  const axes = [...paramKeys.map((k) => ({ label: k.split(':').pop(), get: (f) => f.params[k] })),
    ...(metricKey ? [{ label: metricKey.split(':').pop(), get: (f) => f.metrics[metricKey], metric: true }] : [])];
  if (axes.length < 2) { box.append(el('div', { class: 'faint' }, 'Parallel coordinates need at least one param that varies and a metric.')); return; }
  const W = Math.max(520, box.clientWidth - 10); const H = 280; const pad = { l: 40, r: 60, t: 28, b: 24 };
  const step = (W - pad.l - pad.r) / (axes.length - 1);
  const scales = axes.map((a) => {
    const values = flats.map(a.get).filter((v) => v !== undefined && v !== null);
    if (values.every(numeric)) {
      let lo = Math.min(...values); let hi = Math.max(...values);
      if (lo === hi) { lo -= 1; hi += 1; }
      return { pos: (v) => (numeric(v) ? pad.t + (H - pad.t - pad.b) * (1 - (v - lo) / (hi - lo)) : null), ticks: [[hi, numberText(hi)], [lo, numberText(lo)]] };
    }
    const cats = [...new Set(values.map(String))].sort();
    const at = (v) => pad.t + (H - pad.t - pad.b) * (cats.length === 1 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1));
    return { pos: (v) => (v === undefined || v === null ? null : at(v)), ticks: cats.map((c) => [c, c]) };
  });
  const mvals = metricKey ? flats.map((f) => f.metrics[metricKey]).filter(numeric) : [];
  const mlo = Math.min(...mvals); const mhi = Math.max(...mvals);
  const tint = (v) => {
    if (!numeric(v) || !mvals.length) return '#9aa4b2';
    const t = mhi === mlo ? 1 : (v - mlo) / (mhi - mlo);
    return `hsl(${220 - 200 * t}, 70%, ${48 - 6 * t}%)`;
  };
  const svg = el('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  flats.forEach((f, i) => {
    const pts = axes.map((a, j) => [pad.l + j * step, scales[j].pos(a.get(f))]).filter(([, y]) => y !== null);
    const line = el('polyline', { points: pts.map((p) => p.join(',')).join(' '), fill: 'none', stroke: tint(metricKey ? f.metrics[metricKey] : null), 'stroke-width': 2, opacity: 0.85 },
      el('title', {}, `run ${runs[i].id}`));
    svg.append(line);
  });
  axes.forEach((a, j) => {
    const x = pad.l + j * step;
    const g = el('g', { class: 'axis' }, el('line', { x1: x, x2: x, y1: pad.t, y2: H - pad.b, stroke: '#b8c0cc' }),
      el('text', { x, y: 14, 'text-anchor': 'middle', style: `font-weight:${a.metric ? 700 : 500};fill:#1c2128` }, a.label));
    for (const [v, label] of scales[j].ticks) {
      const y = scales[j].pos(v);
      g.append(el('text', { x: x + 5, y: y + 4 }, label));
    }
    svg.append(g);
  });
  box.append(svg);
}

const BYTES = /(rss_peak|read_bytes|write_bytes|mem_peak|memory_bytes)$/;
const SECONDS = /(duration|cpu_seconds)$/;
const PCT = /(cpu_pct_mean|cpu_pct_peak|util_mean|device_util_mean)$/;

async function runDiff(box, a, b) {
  let d;
  try { d = await api('/api/diff', { a, b }); } catch (err) { box.replaceChildren(errorLine(err.message)); return; }
  clear(box);
  const sections = Object.entries(d.sections).filter(([, entries]) => entries.length);
  if (!sections.length) box.append(el('div', { class: 'faint' }, 'Nothing differs (telemetry within jitter).'));
  else {
    const rows = [];
    for (const [name, entries] of sections) {
      rows.push(el('tr', {}, el('th', { colspan: 3, style: 'background:#f3f5f8' }, name)));
      for (const e of entries) {
        const delta = e.delta !== undefined && e.delta !== null && e.change === 'changed'
          ? el('span', { class: 'faint' }, `  (${e.delta > 0 ? '+' : ''}${fmt(name, e.key, e.delta)})`) : null;
        rows.push(el('tr', { dataset: { section: name, key: e.key } },
          el('td', { style: 'width:28px' }, el('span', { class: `change ${e.change}` }, { changed: '~', added: '+', removed: '-' }[e.change] || '=')),
          el('td', { class: 'mono', style: 'width:38%' }, e.key),
          el('td', { class: 'mono' }, `${short(name, e.key, e.old)} → ${short(name, e.key, e.new)}`, delta)));
      }
    }
    box.append(el('table', { class: 'dense', style: 'table-layout:fixed' },
      el('colgroup', {}, el('col', { style: 'width:34px' }), el('col', { style: 'width:40%' }), el('col', {})),
      el('tbody', {}, rows)));
  }
  box.append(el('h3', { style: 'margin-top:16px' }, 'Causes (most upstream first)'));
  box.append(d.causes.length ? el('ol', { class: 'causes', id: 'causes' }, d.causes.map((c) => el('li', {}, c.sentence)))
    : el('div', { class: 'faint', id: 'causes' }, 'None found: the runs and the runs upstream of them read the same inputs with the same params and code.'));
}

function fmt(section, key, v) {
  if (typeof v !== 'number' || !['telemetry', 'environment'].includes(section)) return numberText(v);
  if (BYTES.test(key)) return humanSize(v);
  if (SECONDS.test(key)) return humanDuration(v);
  if (PCT.test(key)) return `${Math.round(v)}%`;
  return numberText(v);
}

function short(section, key, v) {
  if (v === null || v === undefined) return '(none)';
  if (['inputs', 'outputs'].includes(section) || (section === 'code' && typeof v === 'string' && v.startsWith('blake3:'))) return shortHash(v);
  if (section === 'metrics' && typeof v === 'object') return numberText(v.last);
  if (section === 'command' && Array.isArray(v)) return commandText(v);
  return fmt(section, key, v);
}

export async function draw(main, boot) {
  const ids = boot.runs;
  setTitle(`Compare ${ids.join(', ')}`);
  main.append(el('div', { class: 'pagehead' }, el('h1', {}, `Compare ${ids.length} runs`)));
  const holder = el('div', {}, loading());
  main.append(holder);
  let data;
  try { data = await api('/api/runs', { where: `id in (${ids.join(', ')})`, limit: ids.length }); } catch (err) {
    holder.replaceChildren(errorLine(err.message)); return;
  }
  const byId = new Map(data.runs.map((r) => [r.id, r]));
  const runs = ids.map((i) => byId.get(i)).filter(Boolean);
  const list = el('table', { class: 'dense' }, el('tbody', {}, runs.map((r, i) => el('tr', {},
    el('td', { style: 'width:1%' }, el('span', { class: 'swatch', style: `background:${colour(i)}` })),
    el('td', { style: 'width:1%;white-space:nowrap' }, link(`/runs/${r.id}`, `run ${r.id}`)), el('td', { style: 'width:1%' }, statusBadge(r)),
    el('td', { class: 'mono' }, commandText(r.command))))));

  const showSame = el('input', { type: 'checkbox', id: 'show-same' });
  const tableBox = el('div', { class: 'scroll' });
  const redraw = () => {
    const { table, differing, empty } = diffTable(runs, showSame.checked);
    clear(tableBox).append(empty ? el('div', { class: 'faint' }, 'Params, metrics, inputs and code are the same.') : table);
    countNote.textContent = `${differing} key${differing === 1 ? '' : 's'} differ`;
  };
  const countNote = el('span', { class: 'hint' });
  showSame.addEventListener('change', redraw);
  const diffCard = card('Differences', tableBox);
  diffCard.querySelector('.head').append(countNote, el('span', { class: 'spacer' }),
    el('label', { class: 'muted', style: 'font-size:12.5px' }, showSame, ' show the same ones too'));

  const seriesKeys = [...new Set(runs.flatMap((r) => Object.entries(r.metrics || {}).filter(([, v]) => v && typeof v === 'object').map(([k]) => k)))].sort();
  const metricKeys = [...new Set(runs.flatMap((r) => Object.keys(r.metrics || {})))].sort();
  const cards = [card('Runs', list), diffCard];

  if (seriesKeys.length) {
    const pick = el('select', { 'aria-label': 'metric series' }, seriesKeys.map((k) => el('option', { value: k }, k)));
    const box = el('div', { class: 'chart', id: 'overlay' });
    pick.addEventListener('change', () => overlay(box, runs, pick.value));
    const c = card('Metric series', box);
    c.querySelector('.head').append(pick);
    cards.push(c);
    queueMicrotask(() => overlay(box, runs, pick.value));
  }
  const pcBox = el('div', { class: 'pc', id: 'parallel' });
  const pcPick = el('select', { 'aria-label': 'metric for parallel coordinates' }, metricKeys.map((k) => el('option', { value: k }, k)));
  const pcCard = card('Params against a metric', pcBox);
  pcCard.querySelector('.head').append(pcPick, el('span', { class: 'hint' }, 'one line per run, coloured by the metric'));
  pcPick.addEventListener('change', () => parallel(pcBox, runs, pcPick.value));
  if (metricKeys.length) cards.push(pcCard);
  let diffBox = null;
  if (runs.length === 2) {
    diffBox = el('div', { id: 'run-diff' }, loading());
    cards.push(card(`onlooker diff ${runs[0].id} ${runs[1].id}`, diffBox));
  }
  holder.replaceChildren(...cards);
  redraw();
  if (metricKeys.length) parallel(pcBox, runs, pcPick.value);
  if (diffBox) await runDiff(diffBox, runs[0].id, runs[1].id);
}
