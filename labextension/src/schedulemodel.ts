/**
 * The live model behind the Schedules view: the user's schedules
 * (`GET /taskrun/api/schedules`) and the history of the ones looked at
 * (`GET /taskrun/api/tasks?schedule=ID`).
 *
 * Guarantees: no second stream. It follows the one change feed the
 * TaskListModel reads: `schedule` entries replace or drop a schedule, and
 * every task change carrying a `schedule_id` updates that schedule's history
 * and last status as it happens. What the feed does not carry (the counts
 * after a run ends, next runs after a firing that was skipped) is re-read
 * over REST, once per burst. When the feed comes back after a drop the list
 * and the loaded histories are reloaded; while it is down a lumino `Poll`
 * reloads them every few seconds (standing by while the tab is hidden).
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';

import { ScheduleAPI } from './api';
import { errorMessage, isNewer, Later } from './feedutil';
import {
  ISchedule,
  IScheduleChangeData,
  IScheduleInput,
  ITask,
  isTerminal
} from './models';
import type { FeedMode, TaskListModel } from './tasklist';
import { parseTime } from './utils';

/** How many runs a history shows (the newest). */
export const HISTORY_LIMIT = 20;
/** list reload period while the change feed is down */
const POLL_EVERY = 5000;
/** a next run this far in the past without news re-reads the schedule */
const STALE_AFTER = 10000;

/** The runs of one schedule, newest first. */
export interface IScheduleHistory {
  tasks: ITask[];
  loading: boolean;
  loaded: boolean;
  error: string;
  /** more runs exist than are loaded */
  hasMore: boolean;
}

export class ScheduleListModel implements IDisposable {
  constructor(tasks: TaskListModel) {
    this._tasks = tasks;
    this._poll = new Poll({
      name: 'jupyter-taskrun:schedules',
      auto: false,
      factory: () => this._tick(),
      frequency: { interval: 1000, backoff: false },
      standby: 'when-hidden'
    });
  }

  /** Emitted when a schedule, a history or the loading state changes. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Every schedule, newest first (as the server orders them). */
  get schedules(): readonly ISchedule[] {
    return this._order
      .map(id => this._schedules.get(id))
      .filter((s): s is ISchedule => s !== undefined);
  }

  get loading(): boolean {
    return this._loading;
  }

  /** The list was loaded at least once. */
  get loaded(): boolean {
    return this._loaded;
  }

  get lastError(): string {
    return this._lastError;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  get(id: string): ISchedule | undefined {
    return this._schedules.get(id);
  }

  /** The loaded history of a schedule, or null before `loadHistory`. */
  history(id: string): IScheduleHistory | null {
    return this._histories.get(id) ?? null;
  }

  /** Load the list and follow the change feed (once). */
  start(): void {
    if (this._started || this._disposed) {
      return;
    }
    this._started = true;
    this._mode = this._tasks.mode;
    this._tasks.scheduleChanged.connect(this._onScheduleChange, this);
    this._tasks.taskChanged.connect(this._onTask, this);
    this._tasks.taskDeleted.connect(this._onTaskDeleted, this);
    this._tasks.changed.connect(this._onTasksChanged, this);
    void this.refresh();
    void this._poll.start();
  }

  /** The view is shown (true) or hidden (false): only a shown view polls. */
  setActive(active: boolean): void {
    this._active = active;
    if (active && this._started && this._mode !== 'stream') {
      void this.refresh();
    }
  }

  /** Reload the list (and the loaded histories); false on failure. */
  async refresh(): Promise<boolean> {
    const token = ++this._token;
    this._loading = true;
    this._lastRefresh = Date.now();
    this._changed.emit();
    try {
      const schedules = await ScheduleAPI.list();
      if (token !== this._token || this._disposed) {
        return true;
      }
      this._schedules = new Map(schedules.map(s => [s.id, s]));
      this._order = schedules.map(s => s.id);
      for (const id of [...this._histories.keys()]) {
        if (this._schedules.has(id)) {
          void this.loadHistory(id);
        } else {
          this._histories.delete(id);
        }
      }
      this._lastError = '';
      this._loaded = true;
      return true;
    } catch (error) {
      if (token === this._token) {
        this._lastError = errorMessage(error);
      }
      return false;
    } finally {
      if (token === this._token) {
        this._loading = false;
        this._changed.emit();
      }
    }
  }

  /** (Re)load the newest runs of a schedule. */
  async loadHistory(id: string): Promise<void> {
    const old = this._histories.get(id);
    this._histories.set(id, {
      tasks: old?.tasks ?? [],
      loading: true,
      loaded: old?.loaded ?? false,
      error: '',
      hasMore: old?.hasMore ?? false
    });
    this._changed.emit();
    try {
      const page = await ScheduleAPI.history(id, HISTORY_LIMIT);
      if (this._disposed || !this._histories.has(id)) {
        return;
      }
      // runs seen live while the page loaded stay (the newer copy wins)
      const live = this._histories.get(id)?.tasks ?? [];
      const merged = new Map(page.tasks.map(t => [t.id, t]));
      for (const task of live) {
        const known = merged.get(task.id);
        if (!known || isNewer(task, known)) {
          merged.set(task.id, task);
        }
      }
      this._histories.set(id, {
        tasks: newestFirst([...merged.values()]).slice(0, HISTORY_LIMIT),
        loading: false,
        loaded: true,
        error: '',
        hasMore: page.next_cursor !== null && page.next_cursor !== undefined
      });
    } catch (error) {
      const h = this._histories.get(id);
      if (h) {
        this._histories.set(id, {
          ...h,
          loading: false,
          error: errorMessage(error)
        });
      }
    }
    this._changed.emit();
  }

  /** Insert or update a schedule known from a REST answer or the feed. */
  upsert(schedule: ISchedule): void {
    const old = this._schedules.get(schedule.id);
    if (old && isOlder(schedule, old)) {
      return; // an answer that crossed a newer feed entry
    }
    this._schedules.set(schedule.id, schedule);
    if (!old) {
      this._order.unshift(schedule.id);
    }
    this._changed.emit();
  }

  /** Forget a deleted schedule (its tasks stay, in the Tasks view). */
  removeSchedule(id: string): void {
    const had = this._schedules.delete(id);
    this._histories.delete(id);
    this._order = this._order.filter(x => x !== id);
    if (had) {
      this._changed.emit();
    }
  }

  async create(input: IScheduleInput): Promise<ISchedule> {
    const schedule = await ScheduleAPI.create(input);
    this.upsert(schedule);
    return schedule;
  }

  async update(id: string, fields: IScheduleInput): Promise<ISchedule> {
    const schedule = await ScheduleAPI.update(id, fields);
    this.upsert(schedule);
    return schedule;
  }

  /** Pause (false) or resume (true). */
  setEnabled(id: string, enabled: boolean): Promise<ISchedule> {
    return this.update(id, { enabled });
  }

  async remove(id: string): Promise<void> {
    await ScheduleAPI.remove(id);
    this.removeSchedule(id);
  }

  /** Run it now: the task is tracked (its end is notified in this Lab). */
  async runNow(id: string): Promise<ITask> {
    const task = await ScheduleAPI.run(id);
    this._tasks.track(task); // reaches the history through taskChanged
    return task;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._poll.dispose();
    this._reread.dispose();
    Signal.disconnectReceiver(this);
    Signal.clearData(this);
  }

  // ------------------------------------------------------------- the feed

  private _onScheduleChange(
    _: TaskListModel,
    change: IScheduleChangeData & { id: string }
  ): void {
    if (change.action === 'deleted') {
      this.removeSchedule(change.id);
    } else if (change.schedule && change.schedule.id) {
      this.upsert(change.schedule);
    }
  }

  private _onTask(_: TaskListModel, task: ITask): void {
    const id = task.schedule_id;
    if (!id) {
      return;
    }
    let changed = false;
    const history = this._histories.get(id);
    if (history) {
      const index = history.tasks.findIndex(t => t.id === task.id);
      if (index < 0 || isNewer(task, history.tasks[index])) {
        const tasks = history.tasks.filter(t => t.id !== task.id);
        tasks.push(task);
        const sorted = newestFirst(tasks);
        this._histories.set(id, {
          ...history,
          tasks: sorted.slice(0, HISTORY_LIMIT),
          hasMore: history.hasMore || sorted.length > HISTORY_LIMIT
        });
        changed = true;
      }
    }
    const schedule = this._schedules.get(id);
    if (schedule) {
      const last = schedule.last_run;
      const isLast = last?.task_id === task.id;
      const later =
        !last ||
        (parseTime(task.created_at) ?? 0) > (parseTime(last.created_at) ?? 0);
      if ((isLast && last.status !== task.status) || (!isLast && later)) {
        this._schedules.set(id, {
          ...schedule,
          last_run: {
            task_id: task.id,
            status: task.status,
            scheduled_for: task.scheduled_for ?? null,
            created_at: task.created_at
          }
        });
        changed = true;
      }
      if (!isLast && later) {
        this._stale.add(id); // a new run: the run count moved
        this._reread.schedule();
      } else if (isTerminal(task.status)) {
        this._stale.add(id); // a run ended: the counts moved
        this._reread.schedule();
      }
    }
    if (changed) {
      this._changed.emit();
    }
  }

  private _onTaskDeleted(_: TaskListModel, taskId: string): void {
    for (const [id, history] of this._histories) {
      if (history.tasks.some(t => t.id === taskId)) {
        this._histories.set(id, {
          ...history,
          tasks: history.tasks.filter(t => t.id !== taskId)
        });
        this._stale.add(id);
        this._reread.schedule();
        this._changed.emit();
      }
    }
  }

  /** The feed (re)opened: what changed while it was down is reloaded. */
  private _onTasksChanged(tasks: TaskListModel): void {
    const mode = tasks.mode;
    if (mode === this._mode) {
      return;
    }
    this._mode = mode;
    if (mode === 'stream') {
      void this.refresh();
    }
  }

  /** Re-read the schedules whose derived fields moved (one request each). */
  private async _rereadStale(): Promise<void> {
    const ids = [...this._stale];
    this._stale.clear();
    for (const id of ids) {
      if (!this._schedules.has(id)) {
        continue;
      }
      try {
        this.upsert(await ScheduleAPI.get(id));
      } catch {
        // gone or the server is away: the feed or the next reload says
      }
    }
  }

  /** The poll: a reload while the feed is down, a re-read of stale next runs. */
  private async _tick(): Promise<void> {
    if (this._disposed || !this._active) {
      return;
    }
    const now = Date.now();
    if (this._mode !== 'stream') {
      if (now - this._lastRefresh >= POLL_EVERY) {
        await this.refresh();
      }
      return;
    }
    for (const s of this._schedules.values()) {
      const next = parseTime(s.next_runs[0]);
      const checked = this._checkedAt.get(s.id) ?? 0;
      if (
        s.enabled &&
        next !== null &&
        now - next > STALE_AFTER &&
        now - checked > STALE_AFTER
      ) {
        this._checkedAt.set(s.id, now);
        this._stale.add(s.id);
        this._reread.schedule();
      }
    }
  }

  private _tasks: TaskListModel;
  private _poll: Poll;
  private _schedules = new Map<string, ISchedule>();
  private _order: string[] = [];
  private _histories = new Map<string, IScheduleHistory>();
  private _stale = new Set<string>();
  private _checkedAt = new Map<string, number>();
  private _reread = new Later(() => void this._rereadStale(), 300);
  private _mode: FeedMode = 'connecting';
  private _token = 0;
  private _lastRefresh = 0;
  private _loading = false;
  private _loaded = false;
  private _lastError = '';
  private _active = false;
  private _started = false;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}

/** Newest first by creation time. */
function newestFirst(tasks: ITask[]): ITask[] {
  return [...tasks].sort(
    (a, b) => (parseTime(b.created_at) ?? 0) - (parseTime(a.created_at) ?? 0)
  );
}

/** Is `a` an older copy of the schedule than `b` (by `updated_at`)? */
function isOlder(a: ISchedule, b: ISchedule): boolean {
  const ta = parseTime(a.updated_at);
  const tb = parseTime(b.updated_at);
  return ta !== null && tb !== null && ta < tb;
}
