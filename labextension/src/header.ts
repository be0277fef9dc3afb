/**
 * The header (status, name, progress, facts) and the error section of a
 * task's detail view.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { formatDuration } from './format';
import { trans } from './i18n';
import { ITask, isTerminal } from './models';
import {
  formatTime,
  h,
  iconNode,
  progressFraction,
  setText,
  STATUS_LABELS,
  statusIcon,
  taskDuration
} from './utils';

export interface IHeaderState {
  taskId: string;
  task: ITask | null;
  loadError: string;
  /** the cell running now (from `cell` events), 0-based */
  currentCell: number | null;
  /** Cancel was pressed and the task has not ended yet */
  cancelRequested: boolean;
}

export class HeaderView {
  constructor() {
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-detailHeader');
    const top = h('div', 'jp-TaskRun-detailTop');
    this._badge = h('span', 'jp-TaskRun-badge');
    this._title = h('h1', 'jp-TaskRun-detailTitle');
    this._id = h('code', 'jp-TaskRun-detailId');
    top.append(this._badge, this._title, this._id);
    this._loadError = h('div', 'jp-TaskRun-error');
    this._notice = h('div', 'jp-TaskRun-notice');
    this._progress = h('div', 'jp-TaskRun-progress jp-TaskRun-detailProgress');
    const track = h('div', 'jp-TaskRun-progressTrack');
    this._bar = h('div', 'jp-TaskRun-progressBar');
    track.appendChild(this._bar);
    this._label = h('span', 'jp-TaskRun-progressLabel');
    this._progress.append(track, this._label);
    this._meta = h('dl', 'jp-TaskRun-meta');
    this.widget.node.append(
      top,
      this._loadError,
      this._notice,
      this._progress,
      this._meta
    );
  }

  readonly widget: Widget;

  render(s: IHeaderState): void {
    setText(this._loadError, s.loadError);
    this._loadError.hidden = !s.loadError;
    const task = s.task;
    const notice =
      task && !isTerminal(task.status) && s.cancelRequested
        ? trans.__('Cancellation requested…')
        : '';
    setText(this._notice, notice);
    this._notice.hidden = !notice;
    if (!task) {
      setText(
        this._title,
        s.loadError ? trans.__('Task') : trans.__('Loading task…')
      );
      setText(this._id, s.taskId);
      this._progress.hidden = true;
      return;
    }
    if (this._badge.dataset.status !== task.status) {
      this._badge.dataset.status = task.status;
      this._badge.className = `jp-TaskRun-badge jp-mod-${task.status}`;
      this._badge.replaceChildren(
        iconNode(statusIcon(task.status)),
        h('span', '', STATUS_LABELS[task.status])
      );
    }
    setText(this._title, task.name || task.id);
    setText(this._id, task.id);

    const running = task.status === 'running';
    const fraction = progressFraction(task);
    const p = task.progress;
    this._progress.hidden = !(running || fraction !== null);
    this._progress.classList.toggle(
      'jp-mod-indeterminate',
      fraction === null && running
    );
    this._bar.style.width =
      fraction === null ? '' : `${(fraction * 100).toFixed(1)}%`;
    const parts: string[] = [];
    if (p && fraction !== null) {
      parts.push(`${Math.round(fraction * 100)}% (${p.value}/${p.total})`);
    } else if (p && p.value) {
      parts.push(String(p.value));
    }
    if (p?.message) {
      parts.push(p.message);
    }
    if (s.currentCell !== null && running) {
      parts.push(trans.__('cell %1', s.currentCell + 1));
    }
    setText(this._label, parts.join(' · '));

    const duration = taskDuration(task);
    const rows: Array<[string, string]> = [
      [trans.__('Owner'), task.owner || '—'],
      [trans.__('Kernel'), task.kernel_name || '—'],
      [
        trans.__('Source'),
        task.path ? `${task.source_kind}: ${task.path}` : task.source_kind
      ],
      [trans.__('Tags'), task.tags.length ? task.tags.join(', ') : '—'],
      [trans.__('Created'), formatTime(task.created_at)],
      [trans.__('Started'), formatTime(task.started_at)],
      [
        trans.__('Finished'),
        isTerminal(task.status) ? formatTime(task.finished_at) : '—'
      ],
      [trans.__('Duration'), formatDuration(duration)],
      [
        trans.__('Executor'),
        task.worker ? `${task.executor} (${task.worker})` : task.executor
      ]
    ];
    if (typeof task.exit_code === 'number') {
      rows.push([trans.__('Exit code'), String(task.exit_code)]);
    }
    if (task.status === 'queued' && task.queue_position) {
      rows.push([trans.__('Queue position'), String(task.queue_position)]);
    }
    if (task.rerun_of) {
      rows.push([trans.__('Rerun of'), task.rerun_of]);
    }
    if (task.priority) {
      rows.push([trans.__('Priority'), String(task.priority)]);
    }
    const key = JSON.stringify(rows);
    if (key !== this._metaKey) {
      this._metaKey = key;
      this._meta.replaceChildren(
        ...rows.flatMap(([k, v]) => {
          const dt = h('dt', '', k);
          const dd = h('dd', '', v);
          dd.dataset.field = k;
          return [dt, dd];
        })
      );
    }
  }

  private _badge: HTMLElement;
  private _title: HTMLElement;
  private _id: HTMLElement;
  private _loadError: HTMLElement;
  private _notice: HTMLElement;
  private _progress: HTMLElement;
  private _bar: HTMLElement;
  private _label: HTMLElement;
  private _meta: HTMLElement;
  private _metaKey = '';
}

/** The error section: what went wrong, once, and the traceback. */
export class ErrorView {
  constructor(rendermime: IRenderMimeRegistry) {
    this._rendermime = rendermime;
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-section');
    this.widget.addClass('jp-TaskRun-errorSection');
    this.widget.hide();
  }

  readonly widget: Widget;

  render(task: ITask | null): void {
    const error = task?.error ?? null;
    const status = task?.status ?? 'failed';
    const key = error ? `${status}:${JSON.stringify(error)}` : '';
    if (key === this._key) {
      return;
    }
    this._key = key;
    this._disposeRenderer();
    const node = this.widget.node;
    node.replaceChildren();
    if (!error) {
      this.widget.hide();
      return;
    }
    this.widget.show();
    const titles: { [k: string]: string } = {
      cancelled: trans.__('Cancelled'),
      timed_out: trans.__('Timed out')
    };
    node.dataset.status = status;
    node.appendChild(
      h('h2', 'jp-TaskRun-sectionTitle', titles[status] ?? trans.__('Error'))
    );
    // a cancel or a timeout has a synthetic error {ename: status, evalue: reason, reason}
    const synthetic = error.ename === status || error.ename === 'TaskFailed';
    const summary = synthetic
      ? error.evalue || error.reason || ''
      : [error.ename, error.evalue].filter(Boolean).join(': ');
    if (summary) {
      node.appendChild(h('div', 'jp-TaskRun-errorSummary', summary));
    }
    const seen = new Set([
      summary,
      error.evalue,
      `${error.ename}: ${error.evalue}`
    ]);
    const where: string[] = [];
    if (error.reason && !seen.has(error.reason)) {
      where.push(error.reason);
    }
    if (
      typeof error.cell_index === 'number' &&
      !/\bcell\b/i.test(error.reason ?? '')
    ) {
      where.push(trans.__('in cell %1', error.cell_index));
    }
    if (where.length) {
      node.appendChild(h('div', 'jp-TaskRun-errorReason', where.join(' — ')));
    }
    if (error.traceback && error.traceback.length) {
      const host = h('div', 'jp-TaskRun-traceback');
      node.appendChild(host);
      const mime = 'application/vnd.jupyter.stderr';
      const renderer = this._rendermime.createRenderer(mime);
      this._renderer = renderer;
      const model = new MimeModel({
        data: { [mime]: error.traceback.join('\n') },
        trusted: false
      });
      void renderer
        .renderModel(model)
        .then(() => host.replaceChildren(renderer.node));
    }
  }

  /** Free the traceback renderer (the widget belongs to the detail view). */
  dispose(): void {
    this._disposeRenderer();
  }

  private _disposeRenderer(): void {
    this._renderer?.dispose();
    this._renderer = null;
  }

  private _rendermime: IRenderMimeRegistry;
  private _renderer: Widget | null = null;
  private _key = '';
}
