/**
 * A small plain-SVG chart of CPU % and memory over a task's run.
 */
import { trans } from './i18n';
import { IMetricsSample } from './models';
import { formatBytes, formatDuration } from './format';

const SVG_NS = 'http://www.w3.org/2000/svg';

function svg<K extends keyof SVGElementTagNameMap>(
  tag: K,
  attrs: { [key: string]: string | number } = {}
): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    el.setAttribute(key, String(value));
  }
  return el;
}

export interface ISeriesOptions {
  title: string;
  className: string;
  value: (s: IMetricsSample) => number;
  format: (v: number) => string;
  /** smallest top of the y-axis (e.g. 100 for CPU %) */
  minMax: number;
}

/** One panel: a line with an area under it, axis labels and the last value. */
function renderSeries(
  samples: IMetricsSample[],
  options: ISeriesOptions
): HTMLElement {
  const width = 320;
  const height = 84;
  const pad = { left: 44, right: 8, top: 8, bottom: 18 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;

  const box = document.createElement('div');
  box.className = `jp-TaskRun-chart ${options.className}`;
  const caption = document.createElement('div');
  caption.className = 'jp-TaskRun-chartCaption';
  const last = samples.length
    ? options.value(samples[samples.length - 1])
    : null;
  const peak = samples.reduce((m, s) => Math.max(m, options.value(s)), 0);
  caption.textContent =
    last === null
      ? `${options.title}: no samples yet`
      : `${options.title}: ${options.format(last)} (peak ${options.format(peak)})`;
  box.appendChild(caption);

  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width: '100%',
    height,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': `${options.title} over time`
  });
  const tMax = samples.length ? Math.max(samples[samples.length - 1].t, 1) : 1;
  const tMin = samples.length ? Math.min(samples[0].t, tMax) : 0;
  const yMax = Math.max(options.minMax, peak * 1.1);
  const x = (t: number) =>
    pad.left + ((t - tMin) / Math.max(tMax - tMin, 1e-9)) * w;
  const y = (v: number) => pad.top + hgt - (v / yMax) * hgt;

  // grid and axis labels
  for (const frac of [0, 0.5, 1]) {
    const gy = pad.top + hgt - frac * hgt;
    root.appendChild(
      svg('line', {
        x1: pad.left,
        x2: pad.left + w,
        y1: gy,
        y2: gy,
        class: 'jp-TaskRun-chartGrid'
      })
    );
    const label = svg('text', {
      x: pad.left - 4,
      y: gy + 3,
      'text-anchor': 'end',
      class: 'jp-TaskRun-chartLabel'
    });
    label.textContent = options.format(yMax * frac);
    root.appendChild(label);
  }
  const tLabel = svg('text', {
    x: pad.left + w,
    y: height - 4,
    'text-anchor': 'end',
    class: 'jp-TaskRun-chartLabel'
  });
  tLabel.textContent = samples.length ? formatDuration(tMax) : '';
  root.appendChild(tLabel);
  const t0Label = svg('text', {
    x: pad.left,
    y: height - 4,
    'text-anchor': 'start',
    class: 'jp-TaskRun-chartLabel'
  });
  t0Label.textContent = samples.length ? formatDuration(tMin) : '';
  root.appendChild(t0Label);

  if (samples.length > 0) {
    const points = samples.map(
      s => `${x(s.t).toFixed(1)},${y(options.value(s)).toFixed(1)}`
    );
    if (samples.length === 1) {
      points.push(
        `${(pad.left + w).toFixed(1)},${y(options.value(samples[0])).toFixed(1)}`
      );
    }
    const first = points[0].split(',')[0];
    const lastX = points[points.length - 1].split(',')[0];
    const base = (pad.top + hgt).toFixed(1);
    root.appendChild(
      svg('polygon', {
        points: `${first},${base} ${points.join(' ')} ${lastX},${base}`,
        class: 'jp-TaskRun-chartArea'
      })
    );
    root.appendChild(
      svg('polyline', {
        points: points.join(' '),
        class: 'jp-TaskRun-chartLine',
        fill: 'none'
      })
    );
  }
  box.appendChild(root);
  return box;
}

/** Reduce a long series to at most `max` points (keeps first and last). */
export function downsample(
  samples: IMetricsSample[],
  max = 300
): IMetricsSample[] {
  if (samples.length <= max) {
    return samples;
  }
  const step = samples.length / max;
  const out: IMetricsSample[] = [];
  for (let i = 0; i < max - 1; i++) {
    out.push(samples[Math.floor(i * step)]);
  }
  out.push(samples[samples.length - 1]);
  return out;
}

/** Render both charts (CPU %, memory) into `host`. */
export function renderMetricsChart(
  host: HTMLElement,
  samples: IMetricsSample[]
): void {
  const data = downsample(samples);
  host.replaceChildren(
    renderSeries(data, {
      title: trans.__('CPU'),
      className: 'jp-mod-cpu',
      value: s => s.cpu,
      format: v => `${Math.round(v)}%`,
      minMax: 100
    }),
    renderSeries(data, {
      title: trans.__('Memory'),
      className: 'jp-mod-memory',
      value: s => s.rss,
      format: v => formatBytes(v),
      minMax: 1024 * 1024
    })
  );
}

/** A point of a recorded series: `x` is its step (or its position), `y` its value. */
export interface IChartPoint {
  x: number;
  y: number;
}

/**
 * A small line chart of one recorded series (values.ts): the y-axis spans the
 * values' own range (a loss near 0.3 is not drawn from 0), the x-axis the steps.
 */
export function renderValueChart(
  points: IChartPoint[],
  title: string,
  format: (v: number) => string
): SVGSVGElement {
  const width = 220;
  const height = 64;
  const pad = { left: 40, right: 6, top: 6, bottom: 14 };
  const w = width - pad.left - pad.right;
  const hgt = height - pad.top - pad.bottom;
  const root = svg('svg', {
    viewBox: `0 0 ${width} ${height}`,
    width: '100%',
    height,
    preserveAspectRatio: 'none',
    role: 'img',
    'aria-label': trans.__('%1 by step', title),
    class: 'jp-TaskRun-valueChart'
  });
  const data = points.length > 300 ? thin(points, 300) : points;
  const xs = data.map(p => p.x);
  const ys = data.map(p => p.y);
  const [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  let [yMin, yMax] = [Math.min(...ys), Math.max(...ys)];
  if (yMax - yMin < 1e-12) {
    yMin -= Math.abs(yMin) * 0.1 || 1;
    yMax += Math.abs(yMax) * 0.1 || 1;
  }
  const x = (v: number) =>
    pad.left + ((v - xMin) / Math.max(xMax - xMin, 1e-12)) * w;
  const y = (v: number) => pad.top + hgt - ((v - yMin) / (yMax - yMin)) * hgt;
  const label = (
    text: string,
    at: { x: number; y: number },
    anchor: string
  ): void => {
    const el = svg('text', {
      x: at.x,
      y: at.y,
      'text-anchor': anchor,
      class: 'jp-TaskRun-chartLabel'
    });
    el.textContent = text;
    root.appendChild(el);
  };
  for (const [v, gy] of [
    [yMax, pad.top],
    [yMin, pad.top + hgt]
  ]) {
    root.appendChild(
      svg('line', {
        x1: pad.left,
        x2: pad.left + w,
        y1: gy,
        y2: gy,
        class: 'jp-TaskRun-chartGrid'
      })
    );
    label(format(v), { x: pad.left - 3, y: gy + 3 }, 'end');
  }
  label(String(xMin), { x: pad.left, y: height - 2 }, 'start');
  label(String(xMax), { x: pad.left + w, y: height - 2 }, 'end');
  const line = data.map(p => `${x(p.x).toFixed(1)},${y(p.y).toFixed(1)}`);
  root.appendChild(
    svg('polyline', {
      points: line.join(' '),
      class: 'jp-TaskRun-chartLine',
      fill: 'none'
    })
  );
  const last = data[data.length - 1];
  root.appendChild(
    svg('circle', {
      cx: x(last.x).toFixed(1),
      cy: y(last.y).toFixed(1),
      r: 2,
      class: 'jp-TaskRun-chartDot'
    })
  );
  return root;
}

/** At most `max` points of a long series (first and last kept). */
function thin(points: IChartPoint[], max: number): IChartPoint[] {
  const step = points.length / max;
  const out: IChartPoint[] = [];
  for (let i = 0; i < max - 1; i++) {
    out.push(points[Math.floor(i * step)]);
  }
  out.push(points[points.length - 1]);
  return out;
}
