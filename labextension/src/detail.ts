/**
 * The main-area view of one task: live log tail, rich outputs, metrics with
 * a CPU/memory chart, the error and the actions.
 */
import { Dialog, MainAreaWidget, showDialog } from '@jupyterlab/apputils';
import { IOutput } from '@jupyterlab/nbformat';
import { OutputAreaModel, SimplifiedOutputArea } from '@jupyterlab/outputarea';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import {
  deleteIcon,
  downloadIcon,
  notebookIcon,
  pauseIcon,
  refreshIcon,
  runIcon,
  stopIcon,
  ToolbarButton
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { APIError, TaskAPI } from './api';
import { renderMetricsChart } from './chart';
import {
  ICellDuration,
  ICellEventData,
  ILogEventData,
  IMetricsEventData,
  IMetricsSample,
  IOutputEventData,
  IStatusEventData,
  ITask,
  ITaskProgress,
  ITruncatedEventData,
  isTerminal,
  TASK_EVENT_TYPES
} from './models';
import { EventStream } from './sse';
import { errorMessage, TaskListModel } from './tasklist';
import {
  formatBytes,
  formatDuration,
  formatSeconds,
  formatTime,
  h,
  iconNode,
  progressFraction,
  safeFileName,
  setText,
  STATUS_LABELS,
  statusIcon,
  stripAnsi,
  taskDuration
} from './utils';

/** Characters of log kept in the page; the full log stays downloadable. */
const LOG_MAX_CHARS = 400_000;
const POLL_MIN = 2000;
const POLL_MAX = 30000;

export interface ITaskDetailOptions {
  taskId: string;
  model: TaskListModel;
  rendermime: IRenderMimeRegistry;
  /** Open a (saved) executed notebook in Lab. */
  openPath: (path: string) => Promise<void>;
  /** Open the detail view of another task (after a rerun). */
  openTask: (id: string) => void;
  /** Report a failed action. */
  onError: (title: string, error: unknown) => void;
}

export class TaskDetail extends Panel {
  constructor(options: ITaskDetailOptions) {
    super();
    this.taskId = options.taskId;
    this._options = options;
    this.id = `jupyter-taskrun-task-${options.taskId}`;
    this.addClass('jp-TaskRun-detail');

    this._header = new Widget();
    this._header.addClass('jp-TaskRun-detailHeader');
    this._errorSection = new Widget();
    this._errorSection.addClass('jp-TaskRun-section');
    this._errorSection.addClass('jp-TaskRun-errorSection');
    this._logSection = new Widget();
    this._logSection.addClass('jp-TaskRun-section');
    this._logSection.addClass('jp-TaskRun-logSection');
    this._outputsHeader = new Widget();
    this._outputsHeader.addClass('jp-TaskRun-section');
    this._outputsModel = new OutputAreaModel({ trusted: false });
    this._outputArea = new SimplifiedOutputArea({
      model: this._outputsModel,
      rendermime: options.rendermime
    });
    this._outputArea.addClass('jp-TaskRun-outputs');
    this._metricsSection = new Widget();
    this._metricsSection.addClass('jp-TaskRun-section');
    this._metricsSection.addClass('jp-TaskRun-metricsSection');

    this._buildHeader();
    this._buildLogs();
    this._buildOutputs();
    this._buildMetrics();
    this._errorSection.hide();

    this.addWidget(this._header);
    this.addWidget(this._errorSection);
    this.addWidget(this._logSection);
    this.addWidget(this._outputsHeader);
    this.addWidget(this._outputArea);
    this.addWidget(this._metricsSection);

    const model = options.model;
    model.taskChanged.connect(this._onModelTask, this);
    model.taskDeleted.connect(this._onModelDeleted, this);

    const known = model.get(this.taskId);
    if (known) {
      this._setTask(known);
    }
    void this._load();
  }

  readonly taskId: string;

  get task(): ITask | null {
    return this._task;
  }

  /** Toolbar items for the MainAreaWidget that hosts this view. */
  createToolbarItems(): Array<{ name: string; widget: Widget }> {
    this._cancelButton = new ToolbarButton({
      icon: stopIcon,
      label: 'Cancel',
      tooltip: 'Cancel this task',
      onClick: () => void this.cancel(),
      enabled: false
    });
    this._rerunButton = new ToolbarButton({
      icon: runIcon,
      label: 'Rerun',
      tooltip: 'Run the same submission again as a new task',
      onClick: () => void this.rerun(),
      enabled: false
    });
    this._deleteButton = new ToolbarButton({
      icon: deleteIcon,
      label: 'Delete',
      tooltip: 'Delete this task with its logs and artifacts',
      onClick: () => void this.remove(),
      enabled: false
    });
    this._notebookButton = new ToolbarButton({
      icon: notebookIcon,
      label: 'Open executed notebook',
      tooltip: 'Save the executed notebook into the workspace and open it',
      onClick: () => void this.openNotebook(),
      enabled: false
    });
    const download = new ToolbarButton({
      icon: downloadIcon,
      label: 'Download log',
      tooltip: 'Download the full log (stdout and stderr)',
      onClick: () => void this.downloadLog()
    });
    const refresh = new ToolbarButton({
      icon: refreshIcon,
      tooltip: 'Reload this task from the server',
      onClick: () => void this._load()
    });
    this._updateButtons();
    return [
      { name: 'cancel', widget: this._cancelButton },
      { name: 'rerun', widget: this._rerunButton },
      { name: 'delete', widget: this._deleteButton },
      { name: 'open-notebook', widget: this._notebookButton },
      { name: 'download-log', widget: download },
      { name: 'refresh', widget: refresh }
    ];
  }

  // ----------------------------------------------------------------- actions

  async cancel(): Promise<void> {
    try {
      const task = await TaskAPI.cancel(this.taskId);
      this._options.model.upsert(task);
      this._setTask(task);
    } catch (error) {
      this._options.onError('Cancel failed', error);
    }
  }

  async rerun(): Promise<void> {
    try {
      const task = await TaskAPI.rerun(this.taskId);
      this._options.model.track(task);
      this._options.openTask(task.id);
    } catch (error) {
      this._options.onError('Rerun failed', error);
    }
  }

  async remove(): Promise<void> {
    const task = this._task;
    const result = await showDialog({
      title: 'Delete task',
      body: `Delete “${task?.name ?? this.taskId}” with its logs, outputs and artifacts?`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Delete' })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await TaskAPI.remove(this.taskId);
      this._options.model.removeTask(this.taskId);
    } catch (error) {
      this._options.onError('Delete failed', error);
    }
  }

  async openNotebook(): Promise<void> {
    const task = this._task;
    if (!task) {
      return;
    }
    const path = executedNotebookPath(task);
    try {
      const saved = await TaskAPI.saveNotebook(task.id, path);
      await this._options.openPath(saved?.path || path);
    } catch (error) {
      this._options.onError('Could not open the executed notebook', error);
    }
  }

  async downloadLog(): Promise<void> {
    try {
      const text = await TaskAPI.logs(this.taskId);
      const blob = new Blob([text], { type: 'text/plain;charset=utf-8' });
      const url = URL.createObjectURL(blob);
      const a = document.createElement('a');
      a.href = url;
      a.download = `${safeFileName(this._task?.name ?? 'task')}-${this.taskId.slice(0, 8)}.log`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      this._options.onError('Could not download the log', error);
    }
  }

  // -------------------------------------------------------------- life cycle

  protected override onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._renderHeader();
    this._renderMetrics();
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stream?.dispose();
    this._stream = null;
    this._stopTimers();
    this._options.model.taskChanged.disconnect(this._onModelTask, this);
    this._options.model.taskDeleted.disconnect(this._onModelDeleted, this);
    this._outputsModel.dispose();
    super.dispose();
  }

  private async _load(): Promise<void> {
    try {
      const task = await TaskAPI.get(this.taskId);
      if (this.isDisposed) {
        return;
      }
      this._setTask(task);
      this._everLoaded = true;
      this._loadError = '';
    } catch (error) {
      if (this.isDisposed) {
        return;
      }
      this._loadError =
        error instanceof APIError && error.status === 404
          ? 'This task does not exist (any more).'
          : `Could not load the task: ${errorMessage(error)}`;
      this._renderHeader();
      if (error instanceof APIError && error.status === 404) {
        if (!this._task && !this._everLoaded) {
          // e.g. a view restored from the workspace for a deleted task
          this.parent?.dispose();
        }
        return;
      }
    }
    void this._loadMetrics();
    if (!this._stream && !this._polling) {
      this._openStream();
    }
  }

  private async _loadMetrics(): Promise<void> {
    try {
      const metrics = await TaskAPI.metrics(this.taskId);
      if (this.isDisposed) {
        return;
      }
      for (const s of metrics.samples ?? []) {
        this._addSample(s);
      }
      if (metrics.summary) {
        this._summary = { ...this._summary, ...metrics.summary };
      }
      this._renderMetrics();
    } catch {
      // metrics are optional: the chart fills from live events
    }
  }

  // ------------------------------------------------------------------ stream

  private _openStream(): void {
    this._stream = new EventStream({
      endPoint: `tasks/${encodeURIComponent(this.taskId)}/events`,
      events: [...TASK_EVENT_TYPES, 'end'],
      onEvent: (type, data, id) => this._onEvent(type, data, id),
      onOpen: () => {
        this._streamState = 'live';
        this._renderLogState();
      },
      onFail: () => this._startPolling()
    });
    this._streamState = 'connecting';
    this._stream.open();
  }

  private _onEvent(type: string, data: unknown, id: number | null): void {
    if (type === 'end') {
      this._stream?.dispose();
      this._stream = null;
      this._streamState = 'ended';
      this._flushPending();
      this._renderLogState();
      void this._load();
      return;
    }
    if (id !== null) {
      if (id <= this._lastSeq) {
        return; // replayed twice on a resume: already shown
      }
      this._lastSeq = id;
    }
    const event = data as { type?: string; data?: unknown } | null;
    const payload = (event && typeof event === 'object' && 'data' in event
      ? event.data
      : data) as unknown;
    const kind = (event && typeof event.type === 'string' ? event.type : type) as string;
    switch (kind) {
      case 'log': {
        const d = payload as ILogEventData;
        this._appendLog(d.stream === 'stderr' ? 'stderr' : 'stdout', String(d.text ?? ''));
        break;
      }
      case 'output': {
        const d = payload as IOutputEventData;
        if (d && d.output) {
          this._addOutput(d.output);
        }
        break;
      }
      case 'status': {
        const d = payload as IStatusEventData;
        if (this._task && d?.status && d.status !== this._task.status) {
          this._setTask({
            ...this._task,
            status: d.status,
            error: d.error ?? this._task.error
          });
        }
        this._scheduleReload();
        break;
      }
      case 'progress': {
        const d = payload as ITaskProgress;
        if (this._task) {
          this._setTask({ ...this._task, progress: d });
        }
        break;
      }
      case 'metrics': {
        const d = payload as IMetricsEventData;
        this._addSample(d);
        if (typeof d.cpu_user === 'number') {
          this._summary.cpu_user = d.cpu_user;
        }
        if (typeof d.cpu_system === 'number') {
          this._summary.cpu_system = d.cpu_system;
        }
        if (typeof d.peak_rss === 'number') {
          this._summary.peak_rss = d.peak_rss;
        }
        this._scheduleMetrics();
        break;
      }
      case 'cell': {
        const d = payload as ICellEventData;
        if (d.phase === 'start') {
          this._currentCell = d.cell_index;
        } else if (d.phase === 'end') {
          this._currentCell = null;
          if (typeof d.duration === 'number') {
            this._cellDurations[d.cell_index] = d.duration;
            this._scheduleMetrics();
          }
        }
        this._renderHeader();
        break;
      }
      case 'truncated': {
        const d = payload as ITruncatedEventData;
        this._appendMarker(
          d?.message || `Output beyond ${formatBytes(d?.limit)} was not kept.`
        );
        break;
      }
      default:
        break;
    }
  }

  private _startPolling(): void {
    if (this.isDisposed || this._polling) {
      return;
    }
    this._stream?.dispose();
    this._stream = null;
    this._polling = true;
    this._streamState = 'polling';
    // the log view restarts from the REST log (bytes offset) so nothing is lost
    this._clearLog();
    this._logOffset = 0;
    this._renderLogState();
    void this._poll();
  }

  private async _poll(): Promise<void> {
    this._pollTimer = null;
    if (this.isDisposed) {
      return;
    }
    let ok = true;
    try {
      const task = await TaskAPI.get(this.taskId);
      this._setTask(task);
      const chunk = await TaskAPI.logsFrom(this.taskId, this._logOffset);
      if (chunk.text) {
        this._logOffset = chunk.next;
        this._appendLog('stdout', chunk.text);
      }
      const outputs = await TaskAPI.outputs(this.taskId);
      this._outputsModel.clear();
      this._outputCount = 0;
      for (const output of outputs.outputs ?? []) {
        this._addOutput(output);
      }
      await this._loadMetrics();
      if (isTerminal(task.status)) {
        this._polling = false;
        this._streamState = 'ended';
        this._renderLogState();
        return;
      }
    } catch (error) {
      ok = false;
      if (error instanceof APIError && error.status === 404) {
        this._loadError = 'This task does not exist (any more).';
        this._renderHeader();
        return;
      }
    }
    this._pollDelay = ok ? POLL_MIN : Math.min(this._pollDelay * 2, POLL_MAX);
    this._pollTimer = window.setTimeout(() => void this._poll(), this._pollDelay);
  }

  private _scheduleReload(): void {
    if (this._reloadTimer !== null) {
      return;
    }
    this._reloadTimer = window.setTimeout(() => {
      this._reloadTimer = null;
      TaskAPI.get(this.taskId)
        .then(task => {
          if (!this.isDisposed) {
            this._setTask(task);
            this._options.model.upsert(task);
          }
        })
        .catch(() => undefined);
    }, 150);
  }

  private _scheduleMetrics(): void {
    if (this._metricsTimer !== null) {
      return;
    }
    this._metricsTimer = window.setTimeout(() => {
      this._metricsTimer = null;
      this._renderMetrics();
    }, 500);
  }

  private _stopTimers(): void {
    for (const timer of [
      this._pollTimer,
      this._reloadTimer,
      this._metricsTimer,
      this._ticker
    ]) {
      if (timer !== null) {
        window.clearTimeout(timer);
        window.clearInterval(timer);
      }
    }
    this._pollTimer = this._reloadTimer = this._metricsTimer = this._ticker = null;
  }

  // ------------------------------------------------------------------- model

  private _onModelTask(_: TaskListModel, task: ITask): void {
    if (task.id === this.taskId) {
      if (
        !this._task ||
        task.last_event_id >= this._task.last_event_id ||
        (isTerminal(task.status) && !isTerminal(this._task.status))
      ) {
        this._setTask(task);
      }
    }
  }

  private _onModelDeleted(_: TaskListModel, id: string): void {
    if (id === this.taskId) {
      this._deleted = true;
      this._stream?.dispose();
      this._stream = null;
      this._stopTimers();
      this.parent?.dispose();
    }
  }

  private _setTask(task: ITask): void {
    const wasActive = this._task ? !isTerminal(this._task.status) : true;
    this._task = task;
    if (task.metrics) {
      this._summary = { ...this._summary, ...task.metrics };
    }
    const owner = this.parent;
    if (owner) {
      owner.title.label = task.name || task.id;
      owner.title.caption = `${task.name} — ${STATUS_LABELS[task.status]} (${task.id})`;
      owner.title.icon = statusIcon(task.status);
      owner.title.className = `jp-TaskRun-tab jp-mod-${task.status}`;
    }
    this._renderHeader();
    this._renderError();
    this._updateButtons();
    if (!isTerminal(task.status)) {
      if (this._ticker === null) {
        this._ticker = window.setInterval(() => this._renderHeader(), 1000);
      }
    } else {
      if (this._ticker !== null) {
        window.clearInterval(this._ticker);
        this._ticker = null;
      }
      if (wasActive) {
        this._renderMetrics();
      }
    }
  }

  private _updateButtons(): void {
    const task = this._task;
    const active = task ? !isTerminal(task.status) : false;
    if (this._cancelButton) {
      this._cancelButton.enabled = !!task && active && !this._deleted;
    }
    if (this._rerunButton) {
      this._rerunButton.enabled = !!task && !this._deleted;
    }
    if (this._deleteButton) {
      this._deleteButton.enabled = !!task && !active && !this._deleted;
    }
    if (this._notebookButton) {
      this._notebookButton.enabled = !!task && !active && !this._deleted;
    }
  }

  // ------------------------------------------------------------------ header

  private _buildHeader(): void {
    const node = this._header.node;
    const top = h('div', 'jp-TaskRun-detailTop');
    this._badge = h('span', 'jp-TaskRun-badge');
    this._title = h('h1', 'jp-TaskRun-detailTitle');
    this._idLabel = h('code', 'jp-TaskRun-detailId');
    top.append(this._badge, this._title, this._idLabel);
    this._loadErrorNode = h('div', 'jp-TaskRun-error');
    this._progress = h('div', 'jp-TaskRun-progress jp-TaskRun-detailProgress');
    const track = h('div', 'jp-TaskRun-progressTrack');
    this._bar = h('div', 'jp-TaskRun-progressBar');
    track.appendChild(this._bar);
    this._progressLabel = h('span', 'jp-TaskRun-progressLabel');
    this._progress.append(track, this._progressLabel);
    this._meta = h('dl', 'jp-TaskRun-meta');
    node.append(top, this._loadErrorNode, this._progress, this._meta);
  }

  private _renderHeader(): void {
    if (this.isDisposed) {
      return;
    }
    setText(this._loadErrorNode, this._loadError);
    this._loadErrorNode.hidden = !this._loadError;
    const task = this._task;
    if (!task) {
      setText(this._title, this._loadError ? 'Task' : 'Loading task…');
      setText(this._idLabel, this.taskId);
      this._progress.hidden = true;
      return;
    }
    if (this._badge.dataset.status !== task.status) {
      this._badge.dataset.status = task.status;
      this._badge.className = `jp-TaskRun-badge jp-mod-${task.status}`;
      this._badge.replaceChildren();
      this._badge.appendChild(iconNode(statusIcon(task.status)));
      this._badge.appendChild(h('span', '', STATUS_LABELS[task.status]));
    }
    setText(this._title, task.name || task.id);
    setText(this._idLabel, task.id);

    const fraction = progressFraction(task);
    const showProgress = task.status === 'running' || fraction !== null;
    this._progress.hidden = !showProgress;
    this._progress.classList.toggle(
      'jp-mod-indeterminate',
      fraction === null && task.status === 'running'
    );
    this._bar.style.width =
      fraction === null ? '' : `${(fraction * 100).toFixed(1)}%`;
    const p = task.progress;
    const parts: string[] = [];
    if (p && fraction !== null) {
      parts.push(`${Math.round(fraction * 100)}% (${p.value}/${p.total})`);
    } else if (p && p.value) {
      parts.push(String(p.value));
    }
    if (p?.message) {
      parts.push(p.message);
    }
    if (this._currentCell !== null && task.status === 'running') {
      parts.push(`cell ${this._currentCell + 1}`);
    }
    setText(this._progressLabel, parts.join(' · '));

    const duration = taskDuration(task);
    const rows: Array<[string, string]> = [
      ['Owner', task.owner || '—'],
      ['Kernel', task.kernel_name || '—'],
      ['Source', task.path ? `${task.source_kind}: ${task.path}` : task.source_kind],
      ['Tags', task.tags.length ? task.tags.join(', ') : '—'],
      ['Created', formatTime(task.created_at)],
      ['Started', formatTime(task.started_at)],
      ['Finished', formatTime(task.finished_at)],
      ['Duration', duration === null ? '—' : formatDuration(duration)],
      ['Executor', task.worker ? `${task.executor} (${task.worker})` : task.executor]
    ];
    if (task.status === 'queued' && task.queue_position) {
      rows.push(['Queue position', String(task.queue_position)]);
    }
    if (task.rerun_of) {
      rows.push(['Rerun of', task.rerun_of]);
    }
    if (task.priority) {
      rows.push(['Priority', String(task.priority)]);
    }
    const key = JSON.stringify(rows);
    if (key !== this._metaKey) {
      this._metaKey = key;
      this._meta.replaceChildren(
        ...rows.flatMap(([k, v]) => [h('dt', '', k), h('dd', '', v)])
      );
    }
  }

  // ------------------------------------------------------------------- error

  private _renderError(): void {
    const error = this._task?.error ?? null;
    const status = this._task?.status ?? 'failed';
    const key = error ? `${status}:${JSON.stringify(error)}` : '';
    if (key === this._errorKey) {
      return;
    }
    this._errorKey = key;
    const node = this._errorSection.node;
    node.replaceChildren();
    if (!error) {
      this._errorSection.hide();
      return;
    }
    this._errorSection.show();
    const titles: { [k: string]: string } = {
      cancelled: 'Cancelled',
      timed_out: 'Timed out'
    };
    node.dataset.status = status;
    node.appendChild(h('h2', 'jp-TaskRun-sectionTitle', titles[status] ?? 'Error'));
    const summary = [error.ename, error.evalue].filter(Boolean).join(': ');
    if (summary) {
      node.appendChild(h('div', 'jp-TaskRun-errorSummary', summary));
    }
    const where: string[] = [];
    if (error.reason && error.reason !== summary) {
      where.push(error.reason);
    }
    if (typeof error.cell_index === 'number' && !/\bcell\b/i.test(error.reason ?? '')) {
      where.push(`in cell ${error.cell_index}`);
    }
    if (where.length) {
      node.appendChild(h('div', 'jp-TaskRun-errorReason', where.join(' — ')));
    }
    if (error.traceback && error.traceback.length) {
      const host = h('div', 'jp-TaskRun-traceback');
      node.appendChild(host);
      const mime = 'application/vnd.jupyter.stderr';
      const renderer = this._options.rendermime.createRenderer(mime);
      const model = new MimeModel({
        data: { [mime]: error.traceback.join('\n') },
        trusted: false
      });
      void renderer.renderModel(model).then(() => {
        host.replaceChildren(renderer.node);
      });
    }
  }

  // -------------------------------------------------------------------- logs

  private _buildLogs(): void {
    const node = this._logSection.node;
    const bar = h('div', 'jp-TaskRun-sectionBar');
    bar.appendChild(h('h2', 'jp-TaskRun-sectionTitle', 'Log'));
    this._logState = h('span', 'jp-TaskRun-logState');
    bar.appendChild(this._logState);
    const spacer = h('span', 'jp-TaskRun-spacer');
    bar.appendChild(spacer);

    const follow = h('label', 'jp-TaskRun-follow');
    this._followBox = h('input');
    this._followBox.type = 'checkbox';
    this._followBox.checked = true;
    this._followBox.addEventListener('change', () => {
      this._follow = this._followBox.checked;
      if (this._follow) {
        this._scrollToEnd();
      }
    });
    follow.append(this._followBox, document.createTextNode(' Follow'));
    bar.appendChild(follow);

    this._pauseButton = h('button', 'jp-TaskRun-smallButton jp-mod-pause');
    this._pauseButton.addEventListener('click', () => this._togglePause());
    bar.appendChild(this._pauseButton);

    const download = h('button', 'jp-TaskRun-smallButton jp-mod-download');
    download.appendChild(iconNode(downloadIcon, 'jp-TaskRun-buttonIcon'));
    download.appendChild(h('span', '', 'Download'));
    download.title = 'Download the full log';
    download.addEventListener('click', () => void this.downloadLog());
    bar.appendChild(download);

    this._logNotice = h('div', 'jp-TaskRun-logNotice');
    this._logNotice.hidden = true;
    this._log = h('pre', 'jp-TaskRun-log');
    this._log.setAttribute('aria-live', 'off');
    this._log.tabIndex = 0;
    this._log.addEventListener('scroll', () => {
      const nearEnd =
        this._log.scrollHeight - this._log.scrollTop - this._log.clientHeight < 24;
      if (nearEnd !== this._follow && !this._autoScrolling) {
        this._follow = nearEnd;
        this._followBox.checked = nearEnd;
      }
      this._autoScrolling = false;
    });
    this._logEmpty = h('div', 'jp-TaskRun-logEmpty', 'No output yet.');
    node.append(bar, this._logNotice, this._log, this._logEmpty);
    this._renderLogState();
  }

  private _togglePause(): void {
    this._paused = !this._paused;
    if (!this._paused) {
      this._flushPending();
    }
    this._renderLogState();
  }

  private _renderLogState(): void {
    if (!this._pauseButton) {
      return;
    }
    this._pauseButton.replaceChildren();
    this._pauseButton.appendChild(
      iconNode(this._paused ? runIcon : pauseIcon, 'jp-TaskRun-buttonIcon')
    );
    const pending = this._pending.reduce((n, p) => n + p.text.length, 0);
    this._pauseButton.appendChild(
      h('span', '', this._paused ? (pending ? `Resume (${pending} new chars)` : 'Resume') : 'Pause')
    );
    this._pauseButton.title = this._paused
      ? 'Show the log lines that arrived while paused and keep following'
      : 'Freeze the log view (new lines are kept)';
    const state: { [k: string]: string } = {
      connecting: 'connecting…',
      live: 'live',
      polling: 'polling',
      ended: '',
      idle: ''
    };
    setText(this._logState, this._paused ? 'paused' : state[this._streamState] ?? '');
    this._logState.dataset.state = this._paused ? 'paused' : this._streamState;
    this._logEmpty.hidden = this._logChars > 0;
    setText(
      this._logEmpty,
      this._task && isTerminal(this._task.status) && this._streamState === 'ended'
        ? 'No log output.'
        : 'No output yet.'
    );
    this._log.hidden = this._logChars === 0;
  }

  private _appendLog(stream: 'stdout' | 'stderr', text: string): void {
    if (!text) {
      return;
    }
    if (this._paused) {
      this._pending.push({ stream, text });
      if (this._pending.length % 20 === 1) {
        this._renderLogState();
      }
      return;
    }
    this._writeLog(stream, text);
    this._afterLogWrite();
  }

  private _writeLog(stream: 'stdout' | 'stderr', text: string): void {
    const clean = stripAnsi(text);
    // a bare carriage return rewrites the current line (progress bars)
    const segments = clean.split(/\r(?!\n)/);
    segments.forEach((segment, index) => {
      if (index > 0) {
        this._rewindLine(stream);
      }
      if (!segment) {
        return;
      }
      const last = this._log.lastChild as HTMLElement | null;
      if (last && last.dataset?.stream === stream && last.firstChild) {
        (last.firstChild as Text).appendData(segment);
      } else {
        const span = h('span', `jp-TaskRun-${stream}`);
        span.dataset.stream = stream;
        span.appendChild(document.createTextNode(segment));
        this._log.appendChild(span);
      }
      this._logChars += segment.length;
    });
    this._trimLog();
  }

  /** Drop the text after the last newline of the last span of `stream`. */
  private _rewindLine(stream: string): void {
    const last = this._log.lastChild as HTMLElement | null;
    if (!last || last.dataset?.stream !== stream || !last.firstChild) {
      return;
    }
    const node = last.firstChild as Text;
    const data = node.data;
    const cut = data.lastIndexOf('\n') + 1;
    if (cut < data.length) {
      node.deleteData(cut, data.length - cut);
      this._logChars -= data.length - cut;
    }
  }

  private _trimLog(): void {
    while (this._logChars > LOG_MAX_CHARS && this._log.firstChild) {
      const first = this._log.firstChild as HTMLElement;
      const node = first.firstChild as Text | null;
      const length = node?.data.length ?? 0;
      const excess = this._logChars - LOG_MAX_CHARS;
      if (node && length > excess) {
        // keep whole lines: cut after the first newline past the excess
        const nl = node.data.indexOf('\n', excess);
        const cut = nl >= 0 ? nl + 1 : excess;
        node.deleteData(0, cut);
        this._logChars -= cut;
      } else {
        first.remove();
        this._logChars -= length;
      }
      this._logTrimmed = true;
    }
    if (this._logTrimmed && this._logNotice.hidden) {
      this._logNotice.hidden = false;
      this._logNotice.textContent =
        'Earlier output is not shown here; use Download for the full log.';
    }
  }

  private _appendMarker(message: string): void {
    const span = h('span', 'jp-TaskRun-logMarker', `\n[${message}]\n`);
    span.dataset.stream = 'marker';
    this._log.appendChild(span);
    this._logChars += message.length + 4;
    this._afterLogWrite();
  }

  private _afterLogWrite(): void {
    if (this._log.hidden) {
      this._renderLogState();
    }
    if (this._follow) {
      this._scrollToEnd();
    }
  }

  private _flushPending(): void {
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) {
      this._writeLog(p.stream, p.text);
    }
    if (pending.length) {
      this._afterLogWrite();
    }
  }

  private _clearLog(): void {
    this._log.replaceChildren();
    this._pending = [];
    this._logChars = 0;
    this._logTrimmed = false;
    this._logNotice.hidden = true;
  }

  private _scrollToEnd(): void {
    if (this._scrollFrame !== null) {
      return;
    }
    this._scrollFrame = window.requestAnimationFrame(() => {
      this._scrollFrame = null;
      this._autoScrolling = true;
      this._log.scrollTop = this._log.scrollHeight;
    });
  }

  // ----------------------------------------------------------------- outputs

  private _buildOutputs(): void {
    this._outputsTitle = h('h2', 'jp-TaskRun-sectionTitle', 'Outputs');
    this._outputsEmpty = h('div', 'jp-TaskRun-logEmpty', 'No rich outputs.');
    this._outputsHeader.node.append(this._outputsTitle, this._outputsEmpty);
  }

  private _addOutput(output: IOutput): void {
    if (output.output_type === 'error') {
      return; // shown with its traceback in the Error section
    }
    const clean = { ...output } as IOutput & { cell_index?: number };
    delete clean.cell_index;
    this._outputsModel.add(clean);
    this._outputCount += 1;
    setText(this._outputsTitle, `Outputs (${this._outputCount})`);
    this._outputsEmpty.hidden = true;
  }

  // ----------------------------------------------------------------- metrics

  private _buildMetrics(): void {
    const node = this._metricsSection.node;
    node.appendChild(h('h2', 'jp-TaskRun-sectionTitle', 'Metrics'));
    this._metricsTable = h('dl', 'jp-TaskRun-meta jp-TaskRun-metricsTable');
    this._chart = h('div', 'jp-TaskRun-charts');
    this._cells = h('div', 'jp-TaskRun-cells');
    node.append(this._metricsTable, this._chart, this._cells);
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
    const s = { t: sample.t, cpu: Number(sample.cpu) || 0, rss: Number(sample.rss) || 0 };
    const samples = this._samples;
    if (!samples.length || samples[samples.length - 1].t <= s.t) {
      samples.push(s);
    } else {
      samples.push(s);
      samples.sort((a, b) => a.t - b.t);
    }
  }

  private _renderMetrics(): void {
    if (this.isDisposed || !this._metricsTable) {
      return;
    }
    const m = this._summary;
    const cpuTotal =
      typeof m.cpu_user === 'number' || typeof m.cpu_system === 'number'
        ? (Number(m.cpu_user) || 0) + (Number(m.cpu_system) || 0)
        : null;
    const rows: Array<[string, string]> = [
      ['Queue wait', formatSeconds(m.queue_wait as number | null)],
      ['Kernel start', formatSeconds(m.kernel_start as number | null)],
      ['Wall time', formatSeconds(m.wall as number | null)],
      [
        'CPU time',
        cpuTotal === null
          ? '—'
          : `${formatSeconds(cpuTotal)} (user ${formatSeconds(m.cpu_user as number)}, system ${formatSeconds(m.cpu_system as number)})`
      ],
      ['Peak memory', formatBytes(m.peak_rss as number | null)],
      ['Output', formatBytes(m.output_bytes as number | null)]
    ];
    this._metricsTable.replaceChildren(
      ...rows.flatMap(([k, v]) => [h('dt', '', k), h('dd', '', v)])
    );
    renderMetricsChart(this._chart, this._samples);

    const durations: Array<number | null> = [];
    if (Array.isArray(m.cell_durations)) {
      (m.cell_durations as Array<number | ICellDuration | null>).forEach(
        (d, i) => {
          if (d && typeof d === 'object') {
            const index =
              typeof d.cell_index === 'number' ? d.cell_index : i;
            durations[index] = typeof d.duration === 'number' ? d.duration : null;
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
      if (typeof d === 'number' && (durations[i] === undefined || durations[i] === null)) {
        durations[i] = d;
      }
    });
    this._cells.replaceChildren();
    if (durations.length) {
      this._cells.appendChild(h('div', 'jp-TaskRun-cellsTitle', 'Cell durations'));
      const max = Math.max(...durations.map(d => Number(d) || 0), 1e-9);
      const list = h('ol', 'jp-TaskRun-cellList');
      durations.forEach(d => {
        const li = h('li', 'jp-TaskRun-cellItem');
        const bar = h('span', 'jp-TaskRun-cellBar');
        bar.style.width = `${Math.max(1, ((Number(d) || 0) / max) * 100)}%`;
        li.append(bar, h('span', 'jp-TaskRun-cellTime', formatSeconds(d)));
        list.appendChild(li);
      });
      this._cells.appendChild(list);
    }
  }

  private _options: ITaskDetailOptions;
  private _task: ITask | null = null;
  private _loadError = '';
  private _deleted = false;
  private _everLoaded = false;
  private _stream: EventStream | null = null;
  private _streamState: 'connecting' | 'live' | 'polling' | 'ended' | 'idle' = 'idle';
  private _polling = false;
  private _pollDelay = POLL_MIN;
  private _pollTimer: number | null = null;
  private _reloadTimer: number | null = null;
  private _metricsTimer: number | null = null;
  private _ticker: number | null = null;
  private _lastSeq = 0;
  private _logOffset = 0;
  private _currentCell: number | null = null;
  private _cellDurations: Array<number | undefined> = [];
  private _summary: { [key: string]: unknown } = {};
  private _samples: IMetricsSample[] = [];
  private _sampleKeys = new Set<string>();
  private _outputCount = 0;
  private _follow = true;
  private _autoScrolling = false;
  private _paused = false;
  private _pending: Array<{ stream: 'stdout' | 'stderr'; text: string }> = [];
  private _logChars = 0;
  private _logTrimmed = false;
  private _scrollFrame: number | null = null;
  private _metaKey = '';
  private _errorKey = '';

  private _header: Widget;
  private _errorSection: Widget;
  private _logSection: Widget;
  private _outputsHeader: Widget;
  private _outputsModel: OutputAreaModel;
  private _outputArea: SimplifiedOutputArea;
  private _metricsSection: Widget;

  private _badge!: HTMLElement;
  private _title!: HTMLElement;
  private _idLabel!: HTMLElement;
  private _loadErrorNode!: HTMLElement;
  private _progress!: HTMLElement;
  private _bar!: HTMLElement;
  private _progressLabel!: HTMLElement;
  private _meta!: HTMLElement;
  private _logState!: HTMLElement;
  private _followBox!: HTMLInputElement;
  private _pauseButton!: HTMLButtonElement;
  private _logNotice!: HTMLElement;
  private _log!: HTMLElement;
  private _logEmpty!: HTMLElement;
  private _outputsTitle!: HTMLElement;
  private _outputsEmpty!: HTMLElement;
  private _metricsTable!: HTMLElement;
  private _chart!: HTMLElement;
  private _cells!: HTMLElement;

  private _cancelButton: ToolbarButton | null = null;
  private _rerunButton: ToolbarButton | null = null;
  private _deleteButton: ToolbarButton | null = null;
  private _notebookButton: ToolbarButton | null = null;
}

/** Where "Open executed notebook" saves the notebook in the workspace. */
export function executedNotebookPath(task: ITask): string {
  const short = task.id.slice(0, 8);
  if (task.path) {
    const slash = task.path.lastIndexOf('/');
    const dir = slash >= 0 ? task.path.slice(0, slash + 1) : '';
    const base = task.path.slice(slash + 1).replace(/\.(ipynb|py)$/, '');
    return `${dir}${base}.executed-${short}.ipynb`;
  }
  return `${safeFileName(task.name)}.executed-${short}.ipynb`;
}

/** Wrap a detail view in a MainAreaWidget with its toolbar. */
export function createDetailWidget(
  options: ITaskDetailOptions
): MainAreaWidget<TaskDetail> {
  const content = new TaskDetail(options);
  const widget = new MainAreaWidget({ content });
  widget.id = `jupyter-taskrun-detail-${options.taskId}`;
  widget.addClass('jp-TaskRun-detailWidget');
  widget.title.label = content.task?.name ?? `Task ${options.taskId.slice(0, 8)}`;
  widget.title.icon = statusIcon(content.task?.status ?? 'queued');
  widget.title.closable = true;
  for (const item of content.createToolbarItems()) {
    widget.toolbar.addItem(item.name, item.widget);
  }
  return widget;
}
