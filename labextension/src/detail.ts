/**
 * The main-area view of one task: live log tail, rich outputs, metrics with
 * a CPU/memory chart, the error and the actions. The parts live in
 * feed.ts (events), header.ts, log.ts, outputs.ts and metrics.ts.
 */
import { Dialog, MainAreaWidget, showDialog } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import {
  deleteIcon,
  downloadIcon,
  notebookIcon,
  refreshIcon,
  runIcon,
  stopIcon,
  ToolbarButton,
  ToolbarButtonComponent
} from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { Panel, Widget } from '@lumino/widgets';

import { APIError, TaskAPI } from './api';
import { askCascade, cancelTask } from './cascade';
import { DependenciesView } from './dependencies';
import { saveExecutedNotebook } from './executednotebook';
import { FeedState, TaskFeed } from './feed';
import { ErrorView, HeaderView } from './header';
import { trans } from './i18n';
import { LogView } from './log';
import { MetricsView } from './metrics';
import {
  ICellEventData,
  IClearEventData,
  ILogEventData,
  IMetricsEventData,
  IOutputEventData,
  IStatusEventData,
  ITask,
  ITaskProgress,
  ITruncatedEventData,
  isTerminal
} from './models';
import { OutputsView } from './outputs';
import { saveBlob } from './resultsapi';
import { ICompareScope, ResultsView } from './resultsview';
import { errorMessage, TaskListModel } from './tasklist';
import { formatBytes } from './format';
import { secondTicker } from './ticker';
import { safeFileName, STATUS_LABELS, statusIcon } from './utils';

export interface ITaskDetailOptions {
  taskId: string;
  model: TaskListModel;
  rendermime: IRenderMimeRegistry;
  /** Open a (saved) executed notebook in Lab, without starting a kernel. */
  openPath: (path: string) => Promise<void>;
  /** Open the detail view of another task (after a rerun). */
  openTask: (id: string) => void;
  /** Report a failed action. */
  onError: (title: string, error: unknown) => void;
  /** Open the Compare view of the tasks sharing a tag or a schedule. */
  openCompare?: (scope: ICompareScope) => void;
}

/** A toolbar button whose tooltip can say why it is disabled. */
interface IButton {
  button: ToolbarButton;
  props: ToolbarButtonComponent.IProps;
  tooltip: string;
}

export class TaskDetail extends Panel {
  constructor(options: ITaskDetailOptions) {
    super();
    this.taskId = options.taskId;
    this._options = options;
    this.id = `jupyter-taskrun-task-${options.taskId}`;
    this.addClass('jp-TaskRun-detail');

    this._header = new HeaderView();
    this._error = new ErrorView(options.rendermime);
    this._log = new LogView(() => void this.downloadLog());
    this._outputs = new OutputsView(options.rendermime);
    this._metrics = new MetricsView();
    this._results = new ResultsView(this.taskId, options);
    this._deps = new DependenciesView(
      this.taskId,
      options.model,
      options.openTask
    );
    this.addWidget(this._header.widget);
    this.addWidget(this._deps.widget);
    this.addWidget(this._error.widget);
    this.addWidget(this._results.values.widget);
    this.addWidget(this._log.widget);
    this.addWidget(this._outputs.header);
    this.addWidget(this._outputs.area);
    this.addWidget(this._results.files.widget);
    this.addWidget(this._metrics.widget);

    this._feed = new TaskFeed(this.taskId, {
      onEvent: (...event) => this._onEvent(...event),
      onEnd: () => {
        this._results.load();
        this._log.flush();
        this._renderLogState();
        void this._load();
      },
      onState: () => this._renderLogState(),
      onTask: task => this._setTask(task),
      onPollReset: () => this._log.clear(),
      onPolled: async (text, outputs) => {
        this._log.append('stdout', text);
        this._outputs.reset(outputs.outputs);
        this._results.load();
        await this._loadMetrics();
      },
      onGone: () => {
        this._loadError = trans.__('This task does not exist (any more).');
        this._renderHeader();
      }
    });

    const model = options.model;
    model.taskChanged.connect(this._onModelTask, this);
    model.taskDeleted.connect(this._onModelDeleted, this);
    model.changed.connect(this._updateButtons, this);

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
    const make = (
      props: ToolbarButtonComponent.IProps,
      enabled = false
    ): IButton => {
      const all = { ...props, enabled };
      return {
        button: new ToolbarButton(all),
        props: all,
        tooltip: props.tooltip ?? ''
      };
    };
    this._buttons = {
      cancel: make({
        icon: stopIcon,
        label: trans.__('Cancel'),
        tooltip: trans.__('Cancel this task'),
        onClick: () => void this.cancel()
      }),
      rerun: make({
        icon: runIcon,
        label: trans.__('Rerun'),
        tooltip: trans.__('Run the same submission again as a new task'),
        onClick: () => void this.rerun()
      }),
      delete: make({
        icon: deleteIcon,
        label: trans.__('Delete'),
        tooltip: trans.__('Delete this task with its logs and artifacts'),
        onClick: () => void this.remove()
      }),
      'open-notebook': make({
        icon: notebookIcon,
        label: trans.__('Open executed notebook'),
        tooltip: trans.__(
          'Save the executed notebook next to its source (once) and open it without a kernel'
        ),
        onClick: () => void this.openNotebook()
      }),
      'download-log': make(
        {
          icon: downloadIcon,
          label: trans.__('Download log'),
          tooltip: trans.__('Download the full log (stdout and stderr)'),
          onClick: () => void this.downloadLog()
        },
        true
      ),
      refresh: make(
        {
          icon: refreshIcon,
          tooltip: trans.__('Reload this task from the server'),
          onClick: () => {
            this._options.model.reconnect();
            this._feed.start();
            void this._load();
          }
        },
        true
      )
    };
    this._updateButtons();
    return Object.entries(this._buttons).map(([name, b]) => ({
      name,
      widget: b.button
    }));
  }

  // ----------------------------------------------------------------- actions

  async cancel(): Promise<void> {
    // asks first when tasks wait for this one (cascade.ts); null: kept
    const cascade = await askCascade(this.taskId, this._task?.name);
    if (cascade === null) {
      return;
    }
    this._cancelRequested = true;
    this._renderHeader();
    this._updateButtons();
    try {
      const task = await cancelTask(this.taskId, cascade);
      this._options.model.upsert(task);
      this._setTask(task);
    } catch (error) {
      this._cancelRequested = false;
      this._renderHeader();
      this._updateButtons();
      this._options.onError(trans.__('Cancel failed'), error);
    }
  }

  async rerun(): Promise<void> {
    try {
      const task = await TaskAPI.rerun(this.taskId);
      this._options.model.track(task);
      this._options.openTask(task.id);
    } catch (error) {
      this._options.onError(trans.__('Rerun failed'), error);
    }
  }

  async remove(): Promise<void> {
    const task = this._task;
    const result = await showDialog({
      title: trans.__('Delete task'),
      body: trans.__(
        'Delete “%1” with its logs, outputs and artifacts?',
        task?.name ?? this.taskId
      ),
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: trans.__('Delete') })
      ]
    });
    if (!result.button.accept) {
      return;
    }
    try {
      await TaskAPI.remove(this.taskId);
      this._options.model.removeTask(this.taskId);
    } catch (error) {
      this._options.onError(trans.__('Delete failed'), error);
    }
  }

  async openNotebook(): Promise<void> {
    const task = this._task;
    if (!task) {
      return;
    }
    try {
      await this._options.openPath(await saveExecutedNotebook(task));
    } catch (error) {
      this._options.onError(
        trans.__('Could not open the executed notebook'),
        error
      );
    }
  }

  async downloadLog(): Promise<void> {
    try {
      const text = await TaskAPI.logs(this.taskId);
      const blob = new Blob([text], { type: 'text/plain;charset=utf-8' });
      const name = safeFileName(this._task?.name ?? 'task');
      saveBlob(blob, `${name}-${this.taskId.slice(0, 8)}.log`);
    } catch (error) {
      this._options.onError(trans.__('Could not download the log'), error);
    }
  }

  // -------------------------------------------------------------- life cycle

  protected override onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._renderHeader();
    this._metrics.render();
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._feed.dispose();
    this._stopTicker();
    const model = this._options.model;
    model.taskChanged.disconnect(this._onModelTask, this);
    model.taskDeleted.disconnect(this._onModelDeleted, this);
    model.changed.disconnect(this._updateButtons, this);
    this._outputs.dispose();
    this._error.dispose();
    this._log.dispose();
    this._metrics.dispose();
    this._results.dispose();
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
      const gone = error instanceof APIError && error.status === 404;
      this._loadError = gone
        ? trans.__('This task does not exist (any more).')
        : trans.__('Could not load the task: %1', errorMessage(error));
      this._renderHeader();
      if (gone) {
        if (!this._task && !this._everLoaded) {
          // e.g. a view restored from the workspace for a deleted task
          this.parent?.dispose();
        }
        return;
      }
    }
    void this._loadMetrics();
    this._feed.start();
  }

  private async _loadMetrics(): Promise<void> {
    try {
      const metrics = await TaskAPI.metrics(this.taskId);
      if (!this.isDisposed) {
        this._metrics.merge(metrics.summary, metrics.samples ?? []);
      }
    } catch {
      // metrics are optional: the chart fills from live events
    }
  }

  // ------------------------------------------------------------------ events

  private _onEvent(
    kind: string,
    payload: unknown,
    time: string | null,
    seq: number | null
  ): void {
    switch (kind) {
      case 'log': {
        const d = payload as ILogEventData;
        this._log.append(
          d.stream === 'stderr' ? 'stderr' : 'stdout',
          String(d.text ?? '')
        );
        break;
      }
      case 'output':
        this._outputs.add(payload as IOutputEventData);
        break;
      case 'clear':
        this._outputs.clear((payload as IClearEventData)?.cell_index);
        break;
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
      case 'progress':
        if (this._task && payload && typeof payload === 'object') {
          this._setTask({ ...this._task, progress: payload as ITaskProgress });
        }
        break;
      case 'metrics':
        this._metrics.sample(payload as IMetricsEventData);
        break;
      case 'cell': {
        const d = payload as ICellEventData;
        if (d.phase === 'start') {
          this._currentCell = d.cell_index;
          this._metrics.cellStarted();
        } else if (d.phase === 'end') {
          this._currentCell = null;
          this._metrics.cellEnded(d.cell_index, d.duration);
        }
        this._renderHeader();
        break;
      }
      case 'truncated': {
        const d = payload as ITruncatedEventData;
        this._log.marker(
          d?.message ||
            trans.__('Output beyond %1 was not kept.', formatBytes(d?.limit))
        );
        break;
      }
      default:
        this._results.event(kind, payload, time, seq);
        break;
    }
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

  private _stopTicker(): void {
    if (this._reloadTimer !== null) {
      window.clearTimeout(this._reloadTimer);
    }
    this._reloadTimer = null;
    void this._ticker.stop();
  }

  // ------------------------------------------------------------------- model

  private _onModelTask(_: TaskListModel, task: ITask): void {
    if (task.id !== this.taskId) {
      return;
    }
    const mine = this._task;
    if (
      !mine ||
      task.last_event_id > mine.last_event_id ||
      (isTerminal(task.status) && !isTerminal(mine.status))
    ) {
      this._setTask(task);
    } else if (task.last_event_id === mine.last_event_id) {
      // same record (e.g. a progress entry of the change feed, a queue position)
      this._setTask({
        ...mine,
        progress: task.progress ?? mine.progress,
        queue_position: task.queue_position
      });
    }
  }

  private _onModelDeleted(_: TaskListModel, id: string): void {
    if (id === this.taskId) {
      this._deleted = true;
      this._feed.dispose();
      this._stopTicker();
      this.parent?.dispose();
    }
  }

  private _setTask(task: ITask): void {
    const old = this._task;
    if (
      old &&
      task.last_event_id < old.last_event_id &&
      !isTerminal(task.status)
    ) {
      // an older copy (e.g. a slow REST answer): keep the live progress
      task = { ...task, progress: old.progress ?? task.progress };
    }
    this._task = task;
    if (isTerminal(task.status)) {
      this._cancelRequested = false;
    }
    const owner = this.parent;
    if (owner) {
      owner.title.label = task.name || task.id;
      owner.title.caption = `${task.name} — ${STATUS_LABELS[task.status]} (${task.id})`;
      owner.title.icon = statusIcon(task.status);
      owner.title.className = `jp-TaskRun-tab jp-mod-${task.status}`;
    }
    this._metrics.setTask(task);
    this._results.setTask(task);
    this._deps.setTask(task);
    this._renderHeader();
    this._error.render(task);
    this._updateButtons();
    this._renderLogState();
    if (!isTerminal(task.status)) {
      void this._ticker.start(); // (no-op when started)
    } else {
      void this._ticker.stop();
    }
  }

  private _renderHeader(): void {
    if (this.isDisposed) {
      return;
    }
    this._header.render({
      taskId: this.taskId,
      task: this._task,
      loadError: this._loadError,
      currentCell: this._currentCell,
      cancelRequested: this._cancelRequested
    });
  }

  private _renderLogState(): void {
    const state: FeedState = this._feed?.state ?? 'idle';
    this._log.setState(state, !!this._task && isTerminal(this._task.status));
  }

  /** Enable what can be done now; a disabled button's tooltip says why. */
  private _updateButtons(): void {
    const b = this._buttons;
    if (!b) {
      return;
    }
    const task = this._task;
    const active = task ? !isTerminal(task.status) : false;
    const offline = this._options.model.offline;
    const why = (reasons: Array<[boolean, string]>): string =>
      reasons.find(([cond]) => cond)?.[1] ?? '';
    const common: Array<[boolean, string]> = [
      [this._deleted, trans.__('This task was deleted')],
      [!task, trans.__('The task is not loaded yet')],
      [offline, trans.__('The server is not answering; reconnecting…')]
    ];
    this._setButton(
      b.cancel,
      why([
        ...common,
        [!active, trans.__('The task has finished: nothing to cancel')],
        [this._cancelRequested, trans.__('Cancellation requested…')]
      ])
    );
    this._setButton(b.rerun, why(common));
    this._setButton(
      b.delete,
      why([
        ...common,
        [
          active,
          trans.__('Only a finished task can be deleted: cancel it first')
        ]
      ])
    );
    this._setButton(
      b['open-notebook'],
      why([
        ...common,
        [active, trans.__('The executed notebook is saved when the task ends')]
      ])
    );
    this._setButton(b['download-log'], why([[offline, common[2][1]]]));
  }

  private _setButton(b: IButton, reason: string): void {
    const tooltip = reason
      ? trans.__('%1 (unavailable: %2)', b.tooltip, reason)
      : b.tooltip;
    if (b.props.tooltip !== tooltip) {
      b.props.tooltip = tooltip;
      b.button.update();
    }
    b.button.enabled = !reason;
  }

  private _options: ITaskDetailOptions;
  private _feed: TaskFeed;
  private _task: ITask | null = null;
  private _deps: DependenciesView;
  private _loadError = '';
  private _deleted = false;
  private _everLoaded = false;
  private _cancelRequested = false;
  private _currentCell: number | null = null;
  private _reloadTimer: number | null = null;
  private _ticker = secondTicker('detail', () => this._renderHeader());
  private _header: HeaderView;
  private _error: ErrorView;
  private _log: LogView;
  private _outputs: OutputsView;
  private _metrics: MetricsView;
  private _results: ResultsView;
  private _buttons: { [name: string]: IButton } | null = null;
}

/** Wrap a detail view in a MainAreaWidget with its toolbar. */
export function createDetailWidget(
  options: ITaskDetailOptions
): MainAreaWidget<TaskDetail> {
  const content = new TaskDetail(options);
  const widget = new MainAreaWidget({ content });
  widget.id = `jupyter-taskrun-detail-${options.taskId}`;
  widget.addClass('jp-TaskRun-detailWidget');
  widget.title.label =
    content.task?.name ?? trans.__('Task %1', options.taskId.slice(0, 8));
  widget.title.icon = statusIcon(content.task?.status ?? 'queued');
  widget.title.closable = true;
  for (const item of content.createToolbarItems()) {
    widget.toolbar.addItem(item.name, item.widget);
  }
  return widget;
}
