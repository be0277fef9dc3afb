/**
 * The metrics section of a task's detail view: the summary table, the
 * CPU/memory chart and the per-cell durations.
 */
import { Widget } from '@lumino/widgets';

import { renderMetricsChart } from './chart';
import { trans } from './i18n';
import {
  ICellDuration,
  IMetricsEventData,
  IMetricsSample,
  ITask,
  isTerminal
} from './models';
import { EMPTY, formatBytes, formatDuration } from './format';
import { h } from './utils';

export class MetricsView {
  constructor() {
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-section');
    this.widget.addClass('jp-TaskRun-metricsSection');
    const node = this.widget.node;
    node.appendChild(h('h2', 'jp-TaskRun-sectionTitle', trans.__('Metrics')));
    this._table = h('dl', 'jp-TaskRun-meta jp-TaskRun-metricsTable');
    this._chart = h('div', 'jp-TaskRun-charts');
    this._cells = h('div', 'jp-TaskRun-cells');
    node.append(this._table, this._chart, this._cells);
  }

  readonly widget: Widget;

  setTask(task: ITask): void {
    const wasActive = this._task ? !isTerminal(this._task.status) : true;
    this._task = task;
    if (task.metrics) {
      this._summary = { ...this._summary, ...task.metrics };
    }
    if (isTerminal(task.status) && wasActive) {
      this.render();
    }
  }

  /** Summary values from `GET …/metrics`. */
  merge(
    summary: { [key: string]: unknown } | null | undefined,
    samples: IMetricsSample[] = []
  ): void {
    if (summary) {
      this._summary = { ...this._summary, ...summary };
    }
    samples.forEach(s => this._addSample(s));
    this.render();
  }

  /** A `metrics` event. */
  sample(d: IMetricsEventData): void {
    this._addSample(d);
    for (const key of ['cpu_user', 'cpu_system', 'peak_rss'] as const) {
      if (typeof d[key] === 'number') {
        this._summary[key] = d[key];
      }
    }
    this.schedule();
  }

  /** A `cell` start event: the kernel was ready by then. */
  cellStarted(): void {
    if (!this._kernelReady) {
      this._kernelReady = true;
      this.render();
    }
  }

  cellEnded(index: number, duration: number | undefined): void {
    if (typeof duration === 'number') {
      this._cellDurations[index] = duration;
      this.schedule();
    }
  }

  schedule(): void {
    if (this._timer === null) {
      this._timer = window.setTimeout(() => {
        this._timer = null;
        this.render();
      }, 500);
    }
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
  }

  render(): void {
    if (this.widget.isDisposed) {
      return;
    }
    const m = this._summary;
    const num = (v: unknown): number | null =>
      typeof v === 'number' ? v : null;
    const active = !!this._task && !isTerminal(this._task.status);
    const cpuTotal =
      num(m.cpu_user) !== null || num(m.cpu_system) !== null
        ? (num(m.cpu_user) ?? 0) + (num(m.cpu_system) ?? 0)
        : null;
    // the server measures the kernel start and the wall time at the end
    let kernelStart = formatDuration(num(m.kernel_start));
    if (num(m.kernel_start) === null && active) {
      kernelStart =
        this._task?.status === 'queued'
          ? trans.__('not started')
          : this._kernelReady
            ? trans.__('ready (measured at the end)')
            : trans.__('starting…');
    }
    let wall = formatDuration(num(m.wall));
    if (num(m.wall) === null && active) {
      wall = trans.__('running (see Duration)');
    }
    const rows: Array<[string, string]> = [
      [trans.__('Queue wait'), formatDuration(num(m.queue_wait))],
      [trans.__('Kernel start'), kernelStart],
      [trans.__('Wall time'), wall],
      [
        trans.__('CPU time'),
        cpuTotal === null
          ? EMPTY
          : trans.__(
              '%1 (user %2, system %3)',
              formatDuration(cpuTotal),
              formatDuration(num(m.cpu_user)),
              formatDuration(num(m.cpu_system))
            )
      ],
      [trans.__('Peak memory'), formatBytes(num(m.peak_rss))],
      [trans.__('Output'), formatBytes(num(m.output_bytes))]
    ];
    this._table.replaceChildren(
      ...rows.flatMap(([k, v]) => [h('dt', '', k), h('dd', '', v)])
    );
    renderMetricsChart(this._chart, this._samples);
    this._renderCells();
  }

  private _renderCells(): void {
    const m = this._summary;
    const durations: Array<number | null> = [];
    if (Array.isArray(m.cell_durations)) {
      (m.cell_durations as Array<number | ICellDuration | null>).forEach(
        (d, i) => {
          if (d && typeof d === 'object') {
            const index = typeof d.cell_index === 'number' ? d.cell_index : i;
            durations[index] =
              typeof d.duration === 'number' ? d.duration : null;
          } else {
            durations[i] = typeof d === 'number' ? d : null;
          }
        }
      );
    }
    for (let i = 0; i < durations.length; i++) {
      if (durations[i] === undefined) {
        durations[i] = null;
      }
    }
    this._cellDurations.forEach((d, i) => {
      if (
        typeof d === 'number' &&
        (durations[i] === undefined || durations[i] === null)
      ) {
        durations[i] = d;
      }
    });
    this._cells.replaceChildren();
    if (durations.length) {
      this._cells.appendChild(
        h('div', 'jp-TaskRun-cellsTitle', trans.__('Cell durations'))
      );
      const max = Math.max(...durations.map(d => Number(d) || 0), 1e-9);
      const list = h('ol', 'jp-TaskRun-cellList');
      durations.forEach(d => {
        const li = h('li', 'jp-TaskRun-cellItem');
        const bar = h('span', 'jp-TaskRun-cellBar');
        bar.style.width = `${Math.max(1, ((Number(d) || 0) / max) * 100)}%`;
        li.append(bar, h('span', 'jp-TaskRun-cellTime', formatDuration(d)));
        list.appendChild(li);
      });
      this._cells.appendChild(list);
    }
  }

  private _addSample(sample: IMetricsSample): void {
    if (!sample || typeof sample.t !== 'number') {
      return;
    }
    const key = sample.t.toFixed(3);
    if (this._sampleKeys.has(key)) {
      return;
    }
    this._sampleKeys.add(key);
    const s = {
      t: sample.t,
      cpu: Number(sample.cpu) || 0,
      rss: Number(sample.rss) || 0
    };
    const samples = this._samples;
    samples.push(s);
    if (samples.length > 1 && samples[samples.length - 2].t > s.t) {
      samples.sort((a, b) => a.t - b.t);
    }
  }

  private _task: ITask | null = null;
  private _summary: { [key: string]: unknown } = {};
  private _samples: IMetricsSample[] = [];
  private _sampleKeys = new Set<string>();
  private _cellDurations: Array<number | undefined> = [];
  private _kernelReady = false;
  private _timer: number | null = null;
  private _table: HTMLElement;
  private _chart: HTMLElement;
  private _cells: HTMLElement;
}
