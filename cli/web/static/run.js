// The run page: everything `onlooker show` has, with metrics and telemetry as charts.
import {
  api, el, card, errorLine, humanDuration, humanSize, localTime, commandText, statusBadge,
  numberText, shortHash, lineageHref, link, loading, setTitle,
} from './util.js';
import { lineChart, chartBox } from './charts.js';

const MAX_CHARTS = 12;

function fact(k, v) { return el('div', { class: 'fact' }, el('div', { class: 'k' }, k), el('div', { class: 'v' }, v)); }

function kvTable(rows) {
  return el('table', { class: 'kv' }, el('tbody', {}, rows.map(([k, v]) => el('tr', {}, el('td', {}, k), el('td', {}, v)))));
}

function valueText(v) {
  if (v === null || v === undefined) return '-';
  if (typeof v === 'object') return JSON.stringify(v);
  return numberText(v);
}

function filesTable(entries, { withAccess = false } = {}) {
  if (!entries || !entries.length) return el('div', { class: 'faint' }, '(none)');
  return el('table', { class: 'files dense' },
    el('thead', {}, el('tr', {}, el('th', {}, 'Path'), withAccess ? el('th', {}, 'Access') : null,
      el('th', {}, 'Kind'), el('th', { class: 'num' }, 'Size'), el('th', {}, 'Hash'), el('th', {}, 'Basis'))),
    el('tbody', {}, entries.map((e) => el('tr', {},
      el('td', { class: 'path' }, withAccess ? e.path : link(lineageHref(e.path), e.path, { title: 'lineage of this file' })),
      withAccess ? el('td', {}, e.access || '-') : null,
      el('td', {}, e.kind || '-'), el('td', { class: 'num' }, humanSize(e.size)),
      el('td', { class: 'mono faint', title: e.hash || '' }, shortHash(e.hash)),
      basisCell(e.basis)))));
}

// The bases that are guesses (docs/user-guide.md): starred, with what they mean.
const GUESSES = {
  window: 'by time alone',
  rescan: 'found changed by a later scan',
  ambiguous: 'one of the runs alive then did it, and each of them has it',
};

function basisCell(basis) {
  const why = GUESSES[basis];
  if (!why) return el('td', { class: 'faint' }, basis || '-');
  return el('td', { class: 'guess', title: `a guess: ${why}` }, `${basis}*`);
}

function paramsTable(params) {
  const keys = Object.keys(params || {});
  if (!keys.length) return el('div', { class: 'faint' }, '(none)');
  return el('table', { class: 'kv' }, el('tbody', {}, keys.map((k) => el('tr', {},
    el('td', { class: 'mono' }, k), el('td', { class: 'mono', style: 'white-space:pre-wrap' }, valueText(params[k]))))));
}

function metricsTable(metrics) {
  const keys = Object.keys(metrics || {});
  if (!keys.length) return el('div', { class: 'faint' }, '(none)');
  return el('table', { class: 'dense' },
    el('thead', {}, el('tr', {}, ['Metric', 'Last / value', 'Min', 'Max', 'Points', 'Final'].map((h, i) => el('th', { class: i ? 'num' : '' }, h)))),
    el('tbody', {}, keys.map((k) => {
      const m = metrics[k];
      const series = m && typeof m === 'object';
      return el('tr', {}, el('td', { class: 'mono' }, k),
        el('td', { class: 'num mono' }, numberText(series ? m.last : m)),
        el('td', { class: 'num mono' }, series ? numberText(m.min) : ''),
        el('td', { class: 'num mono' }, series ? numberText(m.max) : ''),
        el('td', { class: 'num' }, series ? m.count : ''),
        el('td', { class: 'num mono' }, series && 'final' in m ? numberText(m.final) : ''));
    })));
}

function stepsTable(steps) {
  if (!steps || !steps.length) return el('div', { class: 'faint' }, '(none)');
  const byId = new Map(steps.map((s) => [s.id, s]));
  const kids = new Map();
  const roots = [];
  for (const s of steps) {
    if (s.parent !== null && s.parent !== undefined && byId.has(s.parent) && s.parent !== s.id) {
      if (!kids.has(s.parent)) kids.set(s.parent, []);
      kids.get(s.parent).push(s);
    } else roots.push(s);
  }
  const rows = [];
  const seen = new Set();
  const walk = (s, depth) => {
    if (seen.has(s.id)) return;
    seen.add(s.id);
    const secs = s.started_at && s.ended_at ? (new Date(s.ended_at) - new Date(s.started_at)) / 1000 : null;
    rows.push(el('tr', {}, el('td', { class: 'num' }, s.pid ?? '-'), el('td', {}, statusBadge(s)),
      el('td', { class: 'num' }, humanDuration(secs)),
      el('td', { class: 'num' }, `${(s.inputs || []).length}/${(s.outputs || []).length}`),
      el('td', { class: 'cmd' }, `${'  '.repeat(depth)}${depth ? '└ ' : ''}${commandText(s.argv)}`)));
    for (const c of kids.get(s.id) || []) walk(c, depth + 1);
  };
  roots.forEach((r) => walk(r, 0));
  return el('div', { class: 'scroll' }, el('table', { class: 'steps dense' },
    el('thead', {}, el('tr', {}, el('th', { class: 'num' }, 'PID'), el('th', {}, 'Status'), el('th', { class: 'num' }, 'Duration'),
      el('th', { class: 'num' }, 'In/Out'), el('th', {}, 'Command'))), el('tbody', {}, rows)));
}

function envTable(env) {
  if (!env) return el('div', { class: 'faint' }, '(not recorded)');
  const py = env.python || {};
  const os = env.os || {};
  const cpu = env.cpu || {};
  const gpus = (env.gpus || []).map((g) => (typeof g === 'object' ? g.name || JSON.stringify(g) : String(g))).join(', ') || 'none';
  const packages = Object.entries(env.packages || {});
  const rows = [
    ['python', `${py.version || '-'} (${py.executable || '-'})`],
    ['os', typeof os === 'object' ? [os.distro, [os.system, os.release].filter(Boolean).join(' ')].filter(Boolean).join(', ') || '-' : String(os)],
    ['cpu', typeof cpu === 'object' ? [cpu.model, cpu.count && `× ${cpu.count}`].filter(Boolean).join(' ') || '-' : String(cpu)],
    ['memory', humanSize(env.memory_bytes)], ['gpus', gpus], ['host', `${env.user || '-'}@${env.hostname || '-'}`],
  ];
  const list = packages.length ? el('details', {}, el('summary', {}, `${packages.length} packages`),
    el('table', { class: 'dense' }, el('tbody', {}, packages.map(([n, v]) => el('tr', {}, el('td', { class: 'mono' }, n), el('td', { class: 'mono muted' }, String(v))))))) : '(none)';
  rows.push(['packages', list]);
  return kvTable(rows);
}

function diffPre(text) {
  return el('pre', { class: 'diff' }, text.split('\n').map((line) => {
    const cls = line.startsWith('@@') ? 'hunk' : line.startsWith('+++') || line.startsWith('---') ? ''
      : line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : '';
    return cls ? el('span', { class: cls }, line) : `${line}\n`;
  }));
}

async function metricCharts(box, id, known) {
  let keys = known;
  if (!keys) {
    try { keys = (await api(`/api/runs/${id}/metrics`)).series; } catch (err) { box.replaceChildren(errorLine(err.message)); return; }
  }
  if (!keys.length) { box.replaceChildren(el('div', { class: 'faint' }, 'No metric series (final values are in the table below).')); return; }
  const grid = el('div', { class: 'charts' });
  box.replaceChildren(grid);
  const drawOne = async (key) => {
    const holder = chartBox(key, '');
    holder.dataset.key = key;
    grid.append(holder);
    try {
      const s = await api(`/api/runs/${id}/metrics/${encodeURIComponent(key)}`, { points: 2000 });
      holder.querySelector('.meta').textContent = s.downsampled
        ? `${s.step.length.toLocaleString()} of ${s.count.toLocaleString()} points` : `${s.count.toLocaleString()} points`;
      lineChart(holder, s.step, [{ label: key.split(':').pop(), values: s.value }], { legend: false });
    } catch (err) { holder.append(errorLine(err.message)); }
  };
  const first = keys.slice(0, MAX_CHARTS);
  await Promise.all(first.map(drawOne));
  if (keys.length > MAX_CHARTS) {
    const more = el('button', { class: 'small' }, `Show ${keys.length - MAX_CHARTS} more`);
    more.addEventListener('click', () => { more.remove(); keys.slice(MAX_CHARTS).forEach(drawOne); });
    box.append(el('div', { style: 'margin-top:10px' }, more));
  }
}

const TELEMETRY = [
  ['CPU (100% = one core)', [['cpu_pct', 'cpu %']], 'pct'],
  ['Memory (RSS)', [['rss', 'rss']], 'bytes'],
  ['IO (cumulative)', [['read_bytes', 'read'], ['write_bytes', 'written']], 'bytes'],
];

async function telemetryCharts(box, id) {
  let data;
  try { data = await api(`/api/runs/${id}/telemetry`); } catch (err) { box.replaceChildren(errorLine(err.message)); return; }
  const series = data.series || [];
  if (!series.length) {
    box.replaceChildren(el('div', { class: 'faint' }, 'No telemetry (the run ended before the first sample, or the agent was not sampling).'));
    return;
  }
  const keys = new Set(series.flatMap((p) => Object.keys(p.values)));
  const panels = [...TELEMETRY];
  const devices = [...new Set([...keys].filter((k) => /^gpu\.[^.]+\.(util|mem)$/.test(k)).map((k) => k.split('.')[1]))].sort();
  for (const d of devices) {
    panels.push([`GPU ${d} utilization`, [[`gpu.${d}.util`, 'run (SM %)'], [`dev.${d}.util`, 'whole device']], 'pct']);
    panels.push([`GPU ${d} memory`, [[`gpu.${d}.mem`, 'run']], 'bytes']);
  }
  const t0 = series[0].t;
  const x = series.map((p) => p.t - t0);
  const grid = el('div', { class: 'charts' });
  box.replaceChildren(grid);
  const summary = data.summary || {};
  for (const [title, lines, unit] of panels) {
    const present = lines.filter(([k]) => keys.has(k));
    if (!present.length) continue;
    const holder = chartBox(title, `${series.length} samples`);
    holder.dataset.key = `telemetry:${present[0][0]}`;
    grid.append(holder);
    lineChart(holder, x, present.map(([k, label]) => ({ label, values: series.map((p) => (k in p.values ? p.values[k] : null)) })),
      { xLabel: 's since start', y: unit });
  }
  if (Object.keys(summary).length) {
    const rows = [];
    if (summary.cpu_seconds !== undefined) rows.push(['CPU time', humanDuration(summary.cpu_seconds)]);
    if (summary.cpu_pct_mean !== undefined) rows.push(['CPU mean / peak', `${Math.round(summary.cpu_pct_mean)}% / ${Math.round(summary.cpu_pct_peak || 0)}%`]);
    if (summary.rss_peak !== undefined) rows.push(['RSS peak', humanSize(summary.rss_peak)]);
    if (summary.read_bytes !== undefined) rows.push(['read / written', `${humanSize(summary.read_bytes)} / ${humanSize(summary.write_bytes)}`]);
    if (summary.gpu_hours) rows.push(['GPU hours', summary.gpu_hours.toFixed(3)]);
    box.append(el('div', { style: 'margin-top:12px' }, kvTable(rows)));
  }
}

export async function draw(main, boot) {
  const id = boot.run;
  setTitle(`Run ${id}`);
  const metricsBox = el('div', { id: 'metric-charts' }, loading());
  const head = el('div', {}, loading());
  const metricsCard = card('Metrics', metricsBox);
  metricsCard.id = 'metrics';
  main.append(head, metricsCard);
  // the charts first: a long series is the slow part, and the summary (which reads
  // every metric's statistics) would compete with it for the server's time
  const charts = metricCharts(metricsBox, id, boot.series);
  await charts;
  let run;
  try { run = await api(`/api/runs/${id}`); } catch (err) { head.replaceChildren(errorLine(err.message)); return; }
  const git = run.git;
  const facts = [
    fact('Status', statusBadge(run)), fact('Exit code', run.exit_code ?? '-'),
    fact('Started', localTime(run.started_at)), fact('Ended', localTime(run.ended_at)),
    fact('Duration', humanDuration(run.duration)), fact('Working folder', el('span', { class: 'mono' }, run.cwd || '-')),
    fact('Capture tier', run.tier || '-'),
    fact('Git', git ? el('span', { class: 'mono' }, `${(git.commit || '-').slice(0, 12)} ${git.branch ? `(${git.branch})` : ''}${git.dirty ? ' · dirty' : ''}`) : 'not a repository'),
  ];
  if (run.origin) facts.push(fact('Imported from', `${run.origin.host || '-'}:${run.origin.project || '-'} run ${run.origin.run_id}`));
  if ((run.twins || []).length) facts.push(fact('Twins', el('span', {}, run.twins.map((t, i) => [i ? ', ' : '', link(`/runs/${t}`, `run ${t}`)]))));
  const script = Array.isArray(run.command) && run.command.length > 1 ? String(run.command[1]) : null;
  head.replaceChildren(
    el('div', { class: 'pagehead' }, el('h1', {}, `Run ${run.id}`), statusBadge(run),
      el('div', { class: 'chips' }, (run.tags || []).map((t) => el('span', { class: 'chip tag' }, t))),
      el('span', { class: 'spacer' }),
      link(lineageHref(String(run.id)), 'Lineage', { class: 'button' }),
      el('span', { id: 'compare-prev' })),
    el('section', { class: 'card' }, el('div', { class: 'command', id: 'command' }, commandText(run.command, { full: true })),
      el('div', { class: 'facts' }, facts),
      run.note ? el('div', { class: 'note' }, run.note) : null,
      (run.nondeterministic || []).length ? errorLine(`${run.nondeterministic.join(', ')} differ from a twin's output: the computation is not deterministic`) : null),
  );
  metricsCard.append(el('div', { style: 'margin-top:14px' }, metricsTable(run.metrics)));
  const teleBox = el('div', {}, loading());
  const tele = card('Telemetry', teleBox);
  tele.id = 'telemetry';
  const params = card('Params', paramsTable(run.params));
  params.id = 'params';
  const gitCard = card('Code and git', filesTable(run.code));
  const meta = run.meta || [];
  main.append(tele,
    el('div', { class: 'grid2' }, params, el('div', {},
      Object.assign(card('Inputs', filesTable(run.inputs)), { id: 'inputs' }),
      Object.assign(card('Outputs', filesTable(run.outputs)), { id: 'outputs' }))),
    gitCard,
    el('div', { class: 'grid2' }, card('Environment', envTable(run.env)), card('Steps', stepsTable(run.steps))),
    ...(meta.length ? [card(`Tool files (meta): ${meta.length}`, el('details', {}, el('summary', {}, 'what tools read and wrote around the run'), filesTable(meta, { withAccess: true })))] : []));
  if (git && git.diff) {
    api(`/api/runs/${run.id}/diff`).then((d) => {
      if (d.diff) gitCard.append(el('h3', { style: 'margin-top:14px' }, 'Uncommitted changes the run started with'), diffPre(d.diff));
    }).catch(() => {});
  }
  telemetryCharts(teleBox, run.id);
  if (script && !script.startsWith('-')) {
    // the run before this one of the same script, the comparison people want first
    const glob = `*${script.replace(/[*?[\]\\]/g, '?')}*`;
    api('/api/runs', { where: `id < ${run.id} and command ~ '${glob.replace(/'/g, "\\'")}'`, limit: 1 }).then((d) => {
      const prev = d.runs[0];
      if (prev) document.getElementById('compare-prev').replaceChildren(link(`/compare?runs=${prev.id},${run.id}`, `Compare with run ${prev.id}`, { class: 'button' }));
    }).catch(() => {});
  }
}
