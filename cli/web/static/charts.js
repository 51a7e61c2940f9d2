// Line charts with uPlot (vendor/uPlot.iife.min.js, a global): small, and fast enough
// for the 2,000 points a downsampled series has. A chart marks itself data-rendered
// once drawn (the tests and the benchmark wait on it).
import { el, numberText, humanSize, colour } from './util.js';

const HEIGHT = 210;

function width(box) { return Math.max(240, box.clientWidth - 20); }

export function formatter(kind) {
  if (kind === 'bytes') return (v) => (v === null || v === undefined ? '-' : humanSize(v));
  if (kind === 'pct') return (v) => (v === null || v === undefined ? '-' : `${Math.round(v)}%`);
  return (v) => numberText(v);
}

// one unit for every tick of an axis (0, 256 MiB, 512 MiB), not one per tick
function byteTicks(u, ticks) {
  const top = Math.max(...ticks.map((t) => Math.abs(t)), 1);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (i < units.length - 1 && top >= 1024 ** (i + 1)) i += 1;
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) / 1024 ** i : 1;
  const digits = step >= 1 || i === 0 ? 0 : step >= 0.1 ? 1 : 2;
  return ticks.map((t) => `${(t / 1024 ** i).toFixed(digits)} ${units[i]}`);
}

// series: [{label, values, colour?, dash?}] over the shared x; opts: {time, xLabel, y: 'bytes'|'pct'}
export function lineChart(box, x, series, opts = {}) {
  const fmt = formatter(opts.y);
  const plotBox = el('div', {});
  box.append(plotBox);
  const uopts = {
    width: width(box),
    height: opts.height || HEIGHT,
    scales: { x: { time: !!opts.time } },
    legend: { show: opts.legend !== false },
    cursor: { drag: { x: true, y: false } },
    axes: [
      { stroke: '#5f6b7a', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e2e5ea' },
        values: opts.time ? undefined : (u, ticks) => ticks.map((t) => numberText(t)) },
      { stroke: '#5f6b7a', grid: { stroke: '#eef0f3' }, ticks: { stroke: '#e2e5ea' },
        size: opts.y === 'bytes' ? 78 : 62, values: opts.y === 'bytes' ? byteTicks : (u, ticks) => ticks.map(fmt) },
    ],
    series: [
      { label: opts.xLabel || 'step', value: opts.time ? undefined : (u, v) => numberText(v) },
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.colour || colour(i),
        width: 1.6,
        dash: s.dash,
        spanGaps: true,
        points: { show: x.length < 60 },
        value: (u, v) => fmt(v),
      })),
    ],
    hooks: {
      draw: [() => {
        if (!box.dataset.rendered) performance.mark(`onlooker:chart:${box.dataset.key || ''}`);
        box.dataset.rendered = '1';
      }],
    },
  };
  const chart = new uPlot(uopts, [x, ...series.map((s) => s.values)], plotBox);
  const ro = new ResizeObserver(() => chart.setSize({ width: width(box), height: uopts.height }));
  ro.observe(box);
  return chart;
}

export function chartBox(title, meta) {
  return el('div', { class: 'chart' },
    el('h3', {}, el('span', { class: 'meta' }, meta || ''), title));
}

// Align several (x, y) series on one x (uPlot.join), for overlays of runs.
export function joined(pairs) {
  return uPlot.join(pairs.map(([x, y]) => [x, y]));
}
