/**
 * The live model behind the sidebar, the status bar and the notifications.
 *
 * Modes:
 * - `stream`: the global change feed (SSE `GET /taskrun/api/events`) keeps the
 *   list current; the browser resumes a dropped stream with Last-Event-ID.
 * - `polling`: the stream failed; `GET /taskrun/api/tasks` is polled with
 *   backoff, and the stream is retried now and then.
 * - `standby`: the panel is hidden; the stream is closed and only a light
 *   poll of `GET /taskrun/api/status` (plus the tasks started from this Lab,
 *   so their notifications still come) runs. Showing the panel resyncs.
 */
import { IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { TaskAPI } from './api';
import {
  CHANGE_TYPES,
  IChange,
  ICounts,
  ITask,
  ITaskProgress,
  isTerminal,
  TaskStatus
} from './models';
import { EventStream } from './sse';
import { parseTime } from './utils';

export type FeedMode = 'stream' | 'polling' | 'standby' | 'connecting';

export interface ITaskFilters {
  status: TaskStatus | '';
  tag: string;
  search: string;
}

const PAGE_SIZE = 50;
const POLL_MIN = 2000;
const POLL_MAX = 30000;
const STANDBY_INTERVAL = 10000;
const STREAM_RETRY_EVERY = 30000;
const STARTED_KEY = 'jupyter-taskrun:started-here';
const MAX_TRACKED = 200;

export class TaskListModel implements IDisposable {
  constructor() {
    this._tracked = new Set(loadTracked());
  }

  /** Emitted when the list, the filters, the paging or the mode change. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Emitted when the running/queued counts change. */
  get countsChanged(): ISignal<this, ICounts> {
    return this._countsChanged;
  }

  /** Emitted with the new task whenever a task record is updated. */
  get taskChanged(): ISignal<this, ITask> {
    return this._taskChanged;
  }

  /** Emitted once when a task reaches a final state (seen live). */
  get taskFinished(): ISignal<this, ITask> {
    return this._taskFinished;
  }

  /** Emitted with the id of a deleted task. */
  get taskDeleted(): ISignal<this, string> {
    return this._taskDeleted;
  }

  get tasks(): readonly ITask[] {
    return this._order
      .map(id => this._tasks.get(id))
      .filter((t): t is ITask => t !== undefined);
  }

  get counts(): ICounts {
    return { ...this._counts };
  }

  get filters(): ITaskFilters {
    return { ...this._filters };
  }

  get mode(): FeedMode {
    return this._mode;
  }

  get hasMore(): boolean {
    return this._nextCursor !== null;
  }

  get loading(): boolean {
    return this._loading;
  }

  get lastError(): string {
    return this._lastError;
  }

  /** Tags seen on loaded tasks (for the tag filter's suggestions). */
  get knownTags(): string[] {
    const tags = new Set<string>();
    for (const task of this._tasks.values()) {
      task.tags.forEach(t => tags.add(t));
    }
    return [...tags].sort();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Look a loaded task up by id. */
  get(id: string): ITask | undefined {
    return this._tasks.get(id);
  }

  /** Remember a task started from this Lab so its end is notified. */
  track(task: ITask): void {
    this._tracked.add(task.id);
    saveTracked(this._tracked);
    this.upsert(task);
    this._scheduleCounts();
  }

  isTracked(id: string): boolean {
    return this._tracked.has(id);
  }

  /**
   * Start in standby (panel hidden); `setActive(true)` when the panel shows.
   */
  start(): void {
    this._started = true;
    void this._refreshCounts();
    this._enterStandby();
  }

  /** The panel was shown (true) or hidden (false). */
  setActive(active: boolean): void {
    if (this._disposed || active === this._active) {
      return;
    }
    this._active = active;
    if (!this._started) {
      return;
    }
    if (active) {
      this._clearTimers();
      this._setMode('connecting');
      this._openStream();
      void this.refresh();
    } else {
      this._enterStandby();
    }
  }

  setFilters(filters: Partial<ITaskFilters>): void {
    const next = { ...this._filters, ...filters };
    if (
      next.status === this._filters.status &&
      next.tag === this._filters.tag &&
      next.search === this._filters.search
    ) {
      return;
    }
    this._filters = next;
    this._changed.emit();
    void this.refresh();
  }

  /** Reload the first page(s) with the current filters; false on failure. */
  async refresh(): Promise<boolean> {
    const token = ++this._refreshToken;
    const limit = Math.min(
      Math.max(PAGE_SIZE, this._order.length),
      PAGE_SIZE * 4
    );
    this._loading = true;
    this._changed.emit();
    try {
      const page = await TaskAPI.list({
        status: this._filters.status,
        tag: this._filters.tag.trim(),
        name: this._filters.search.trim(),
        limit
      });
      if (token !== this._refreshToken || this._disposed) {
        return true;
      }
      this._lastError = '';
      const previous = new Map(this._tasks);
      this._tasks.clear();
      this._order = [];
      for (const task of page.tasks) {
        this._tasks.set(task.id, task);
        this._order.push(task.id);
        const old = previous.get(task.id) ?? null;
        this._noticeTransition(old, task);
        if (
          !old ||
          old.status !== task.status ||
          old.last_event_id !== task.last_event_id
        ) {
          this._taskChanged.emit(task);
        }
      }
      this._nextCursor = page.next_cursor ?? null;
      void this._refreshCounts();
      return true;
    } catch (error) {
      if (token === this._refreshToken) {
        this._lastError = errorMessage(error);
      }
      return false;
    } finally {
      if (token === this._refreshToken) {
        this._loading = false;
        this._changed.emit();
      }
    }
  }

  /** Fetch the next page (cursor paging) and append it. */
  async loadMore(): Promise<void> {
    if (this._nextCursor === null || this._loadingMore) {
      return;
    }
    this._loadingMore = true;
    const token = this._refreshToken;
    try {
      const page = await TaskAPI.list({
        status: this._filters.status,
        tag: this._filters.tag.trim(),
        name: this._filters.search.trim(),
        limit: PAGE_SIZE,
        cursor: this._nextCursor
      });
      if (token !== this._refreshToken || this._disposed) {
        return;
      }
      for (const task of page.tasks) {
        if (!this._tasks.has(task.id)) {
          this._order.push(task.id);
        }
        this._tasks.set(task.id, task);
      }
      this._nextCursor = page.next_cursor ?? null;
      this._lastError = '';
    } catch (error) {
      this._lastError = errorMessage(error);
    } finally {
      this._loadingMore = false;
      this._changed.emit();
    }
  }

  /** Insert or update a task known from a REST answer. */
  upsert(task: ITask): void {
    const old = this._tasks.get(task.id) ?? null;
    if (old && !isNewer(task, old)) {
      return;
    }
    this._noticeTransition(old, task);
    if (old) {
      if (this._matches(task)) {
        this._tasks.set(task.id, task);
      } else {
        this._remove(task.id);
      }
    } else if (this._matches(task) && this._inLoadedRange(task)) {
      this._tasks.set(task.id, task);
      this._insertSorted(task);
    }
    this._taskChanged.emit(task);
    this._changed.emit();
  }

  /** Forget a task (deleted here or on the server). */
  removeTask(id: string): void {
    if (this._remove(id)) {
      this._changed.emit();
    }
    this._taskDeleted.emit(id);
    this._scheduleCounts();
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._clearTimers();
    this._stream?.dispose();
    this._stream = null;
    Signal.clearData(this);
  }

  // ------------------------------------------------------------------ stream

  private _openStream(): void {
    if (!this._stream) {
      this._stream = new EventStream({
        endPoint: 'events',
        events: CHANGE_TYPES,
        // on re-open the list reloads from REST, so the stream starts live
        resume: false,
        onEvent: (type, data) => this._onChange(type, data),
        onOpen: () => {
          this._pollDelay = POLL_MIN;
          this._clearTimers();
          this._setMode('stream');
        },
        onFail: () => this._startPolling()
      });
    }
    this._stream.open();
  }

  private _onChange(type: string, data: unknown): void {
    if (!data || typeof data !== 'object') {
      return;
    }
    const change = data as IChange;
    if (typeof change.seq === 'number') {
      if (change.seq <= this._lastSeq) {
        return; // already applied (a resume that overlapped)
      }
      this._lastSeq = change.seq;
    }
    const kind = (change.type ?? type) as IChange['type'];
    switch (kind) {
      case 'created':
      case 'status': {
        const task = change.data as ITask;
        if (task && typeof task === 'object' && 'id' in task) {
          this.upsert(task);
        }
        this._scheduleCounts();
        break;
      }
      case 'progress': {
        const task = this._tasks.get(change.task_id);
        if (task) {
          const updated = {
            ...task,
            progress: change.data as ITaskProgress
          };
          this._tasks.set(task.id, updated);
          this._taskChanged.emit(updated);
          this._changed.emit();
        }
        break;
      }
      case 'deleted':
        this.removeTask(change.task_id);
        break;
      default:
        break;
    }
  }

  // ----------------------------------------------------------------- polling

  private _startPolling(): void {
    if (this._disposed || !this._active) {
      return;
    }
    this._setMode('polling');
    this._clearTimers();
    this._sincestreamTry = 0;
    this._schedulePoll();
  }

  private _schedulePoll(): void {
    this._pollTimer = window.setTimeout(async () => {
      this._pollTimer = null;
      if (this._disposed || !this._active || this._mode !== 'polling') {
        return;
      }
      if (!document.hidden) {
        const ok = await this.refresh();
        this._pollDelay = ok
          ? POLL_MIN
          : Math.min(this._pollDelay * 2, POLL_MAX);
        this._sincestreamTry += this._pollDelay;
        if (this._sincestreamTry >= STREAM_RETRY_EVERY) {
          // try the stream again; onOpen switches back to `stream`
          this._sincestreamTry = 0;
          this._openStream();
        }
      }
      if (this._mode === 'polling' && this._active) {
        this._schedulePoll();
      }
    }, this._pollDelay);
  }

  private _enterStandby(): void {
    this._stream?.close();
    this._clearTimers();
    this._setMode('standby');
    const tick = async () => {
      this._standbyTimer = null;
      if (this._disposed || this._active) {
        return;
      }
      if (!document.hidden) {
        await this._standbyCheck();
      }
      if (!this._active && !this._disposed) {
        this._standbyTimer = window.setTimeout(tick, STANDBY_INTERVAL);
      }
    };
    this._standbyTimer = window.setTimeout(tick, STANDBY_INTERVAL);
  }

  /** Light check while hidden: counts, and the tasks started from here. */
  private async _standbyCheck(): Promise<void> {
    await this._refreshCounts();
    const active = [...this._tracked].slice(-20);
    for (const id of active) {
      try {
        const task = await TaskAPI.get(id);
        this.upsert(task);
        if (isTerminal(task.status)) {
          this._untrack(id);
        }
      } catch (error) {
        if ((error as { status?: number }).status === 404) {
          this._untrack(id);
        }
      }
    }
  }

  private _clearTimers(): void {
    if (this._pollTimer !== null) {
      window.clearTimeout(this._pollTimer);
      this._pollTimer = null;
    }
    if (this._standbyTimer !== null) {
      window.clearTimeout(this._standbyTimer);
      this._standbyTimer = null;
    }
  }

  private _setMode(mode: FeedMode): void {
    if (this._mode !== mode) {
      this._mode = mode;
      this._changed.emit();
    }
  }

  // ------------------------------------------------------------------ counts

  private _scheduleCounts(): void {
    if (this._countsTimer !== null) {
      return;
    }
    this._countsTimer = window.setTimeout(() => {
      this._countsTimer = null;
      void this._refreshCounts();
    }, 250);
  }

  private async _refreshCounts(): Promise<void> {
    try {
      const status = await TaskAPI.status();
      const counts = {
        running: Number(status.running) || 0,
        queued: Number(status.queued) || 0
      };
      if (
        counts.running !== this._counts.running ||
        counts.queued !== this._counts.queued
      ) {
        this._counts = counts;
        this._countsChanged.emit(this.counts);
        this._changed.emit();
      }
    } catch {
      // the server may not be ready yet; the next change or tick retries
    }
  }

  // ----------------------------------------------------------------- helpers

  private _noticeTransition(old: ITask | null, task: ITask): void {
    if (!isTerminal(task.status)) {
      return;
    }
    if (old && isTerminal(old.status)) {
      return;
    }
    if (!old && !this._tracked.has(task.id)) {
      return; // first sight of an already finished task: not news
    }
    if (this._finishedSeen.has(task.id)) {
      return;
    }
    this._finishedSeen.add(task.id);
    this._taskFinished.emit(task);
    if (this._tracked.has(task.id)) {
      this._untrack(task.id);
    }
  }

  private _untrack(id: string): void {
    if (this._tracked.delete(id)) {
      saveTracked(this._tracked);
    }
  }

  private _matches(task: ITask): boolean {
    const f = this._filters;
    if (f.status && task.status !== f.status) {
      return false;
    }
    const tag = f.tag.trim();
    if (tag && !task.tags.includes(tag)) {
      return false;
    }
    const search = f.search.trim();
    if (search && !task.name.startsWith(search)) {
      return false;
    }
    return true;
  }

  /** Would the task appear among the pages loaded so far? */
  private _inLoadedRange(task: ITask): boolean {
    if (this._nextCursor === null || this._order.length === 0) {
      return true;
    }
    const last = this._tasks.get(this._order[this._order.length - 1]);
    const created = parseTime(task.created_at) ?? 0;
    return !last || created >= (parseTime(last.created_at) ?? 0);
  }

  private _insertSorted(task: ITask): void {
    const created = parseTime(task.created_at) ?? Date.now();
    let index = 0;
    while (index < this._order.length) {
      const other = this._tasks.get(this._order[index]);
      if (!other || (parseTime(other.created_at) ?? 0) <= created) {
        break;
      }
      index += 1;
    }
    this._order.splice(index, 0, task.id);
  }

  private _remove(id: string): boolean {
    const had = this._tasks.delete(id);
    const index = this._order.indexOf(id);
    if (index >= 0) {
      this._order.splice(index, 1);
    }
    return had || index >= 0;
  }

  private _tasks = new Map<string, ITask>();
  private _order: string[] = [];
  private _nextCursor: string | null = null;
  private _filters: ITaskFilters = { status: '', tag: '', search: '' };
  private _counts: ICounts = { running: 0, queued: 0 };
  private _mode: FeedMode = 'standby';
  private _active = false;
  private _started = false;
  private _loading = false;
  private _loadingMore = false;
  private _lastError = '';
  private _lastSeq = 0;
  private _refreshToken = 0;
  private _stream: EventStream | null = null;
  private _pollTimer: number | null = null;
  private _standbyTimer: number | null = null;
  private _countsTimer: number | null = null;
  private _pollDelay = POLL_MIN;
  private _sincestreamTry = 0;
  private _tracked: Set<string>;
  private _finishedSeen = new Set<string>();
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
  private _countsChanged = new Signal<this, ICounts>(this);
  private _taskChanged = new Signal<this, ITask>(this);
  private _taskFinished = new Signal<this, ITask>(this);
  private _taskDeleted = new Signal<this, string>(this);
}

/** Is `a` at least as recent as `b` (by last event id)? */
function isNewer(a: ITask, b: ITask): boolean {
  if (typeof a.last_event_id === 'number' && typeof b.last_event_id === 'number') {
    if (a.last_event_id !== b.last_event_id) {
      return a.last_event_id > b.last_event_id;
    }
  }
  // same event id: only a move to a final state counts as news
  return a.status !== b.status ? isTerminal(a.status) || b.status === 'queued' : true;
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) {
    return error.message;
  }
  return String(error);
}

function loadTracked(): string[] {
  try {
    const raw = window.localStorage.getItem(STARTED_KEY);
    const ids = raw ? (JSON.parse(raw) as unknown) : [];
    return Array.isArray(ids)
      ? ids.filter((x): x is string => typeof x === 'string')
      : [];
  } catch {
    return [];
  }
}

function saveTracked(ids: Set<string>): void {
  try {
    const list = [...ids].slice(-MAX_TRACKED);
    window.localStorage.setItem(STARTED_KEY, JSON.stringify(list));
  } catch {
    // storage may be unavailable (private mode); tracking stays in memory
  }
}
