/**
 * The live model behind the sidebar, the status bar, the detail views and the
 * notifications.
 *
 * The global change feed (SSE `GET /taskrun/api/events`) is followed from
 * start-up whether the sidebar is shown or not, so the status bar and the
 * notifications are as current as the list. One `Poll` (lumino) watches the
 * connection: while the feed is down it reloads the list over REST (with a
 * backoff capped at 2 s) and re-opens the feed as soon as the server answers
 * again (e.g. after a server restart). When the feed keeps failing while REST
 * works (a proxy that breaks streaming) the list is polled and the feed
 * retried now and then. The poll stands by while the browser tab is hidden.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';
import { ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

import { APIError, TaskAPI } from './api';
import type { ITaskFilters } from './feedutil';
import {
  CHANGE_TYPES,
  IChange,
  ICounts,
  IScheduleChangeData,
  ITask
} from './models';
import {
  changedSince,
  errorMessage,
  fetchCounts,
  fetchQueuePositions,
  insertIndex,
  Later,
  inLoadedRange,
  IServerQuery,
  isNewer,
  matchesLocal,
  matchesServer,
  movedInQueue,
  NO_FILTERS,
  patchOf,
  serverQuery
} from './feedutil';
import { FinishedNotices } from './notices';
import { EventStream } from './sse';

export { errorMessage } from './feedutil';

export type FeedMode = 'stream' | 'polling' | 'reconnecting' | 'connecting';

export type { ITaskFilters } from './feedutil';

const PAGE_SIZE = 50;
/** rows loaded while a search is active (the search runs over them) */
const SEARCH_PAGE_SIZE = 200;
/** list reload period while the feed is unavailable but REST answers */
const POLL_LIST_EVERY = 2000;
/** retry the feed this often while it fails with the server answering */
const STREAM_RETRY_EVERY = 30000;
/** a feed still connecting this long after the server answered is re-opened */
const STREAM_STALL = 1500;

export class TaskListModel implements IDisposable {
  constructor() {
    this._poll = new Poll({
      name: 'jupyter-taskrun:feed',
      auto: false,
      factory: () => this._tick(),
      // the backoff after failures is capped low: a server that comes back
      // is noticed within 2 s
      frequency: { interval: 1000, backoff: 1.5, max: 2000 },
      standby: 'when-hidden'
    });
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

  /** Emitted for every `schedule` entry of the change feed (schedules.ts follows it). */
  get scheduleChanged(): ISignal<this, IScheduleChangeData & { id: string }> {
    return this._scheduleChanged;
  }

  /** The loaded tasks matching the filters: running ones first, then newest first. */
  get tasks(): readonly ITask[] {
    const all = this._order
      .map(id => this._tasks.get(id))
      .filter(
        (t): t is ITask => t !== undefined && matchesLocal(t, this._filters)
      );
    return [
      ...all.filter(t => t.status === 'running'),
      ...all.filter(t => t.status !== 'running')
    ];
  }

  /** How many tasks are loaded (the search runs over these). */
  get loadedCount(): number {
    return this._order.length;
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

  /** The server did not answer the last request (network error). */
  get offline(): boolean {
    return this._offline;
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
    this._notices.track(task.id);
    this.upsert(task);
    this._scheduleCounts();
  }

  isTracked(id: string): boolean {
    return this._notices.isTracked(id);
  }

  /** Follow the change feed (from start-up, whether the sidebar shows or not). */
  start(): void {
    if (this._started || this._disposed) {
      return;
    }
    this._started = true;
    this._setMode('connecting');
    this._openStream();
    void this.refresh();
    void this._poll.start();
  }

  /** The panel was shown (true) or hidden (false): a shown panel resyncs if stale. */
  setActive(active: boolean): void {
    if (this._disposed || active === this._active) {
      return;
    }
    this._active = active;
    if (active && this._started && this._mode !== 'stream') {
      this._streamFailedAt = 0; // a shown panel retries the feed at once
      void this._poll.refresh();
    }
  }

  /** The refresh settings (settings.ts), live: reload every `interval` ms while the feed is down. */
  setPolling(interval: number, standby: Poll.Standby): void {
    this._pollEvery = interval;
    const [tick, max] = [Math.min(1000, interval), Math.max(2000, interval)];
    this._poll.frequency = { interval: tick, backoff: 1.5, max };
    this._poll.standby = standby;
  }

  /** Probe the server now (e.g. a button was pressed while offline). */
  reconnect(): void {
    if (this._started && !this._disposed) {
      void this._poll.refresh();
    }
  }

  setFilters(filters: Partial<ITaskFilters>): void {
    const next = { ...this._filters, ...filters };
    const before = JSON.stringify(this._serverQuery());
    const keys = Object.keys(next) as (keyof ITaskFilters)[];
    if (keys.every(k => next[k] === this._filters[k])) {
      return;
    }
    this._filters = next;
    this._changed.emit();
    if (JSON.stringify(this._serverQuery()) !== before) {
      void this.refresh();
    }
  }

  /** Reload the first page(s) with the current filters; false on failure. */
  async refresh(): Promise<boolean> {
    const token = ++this._refreshToken;
    const searching = this._filters.search.trim() !== '';
    const limit = Math.min(
      Math.max(searching ? SEARCH_PAGE_SIZE : PAGE_SIZE, this._order.length),
      PAGE_SIZE * 4
    );
    this._loading = true;
    this._lastRefresh = Date.now();
    this._changed.emit();
    try {
      const page = await TaskAPI.list({ ...this._serverQuery(), limit });
      if (token !== this._refreshToken || this._disposed) {
        return true;
      }
      this._lastError = '';
      this._setOffline(false);
      const previous = new Map(this._tasks);
      this._tasks.clear();
      this._order = [];
      for (const task of page.tasks) {
        this._tasks.set(task.id, task);
        this._order.push(task.id);
        task.tags.forEach(t => this._seenTags.add(t));
        const old = previous.get(task.id) ?? null;
        this._noticeTransition(old, task);
        if (changedSince(old, task)) {
          this._taskChanged.emit(task);
        }
      }
      this._nextCursor = page.next_cursor ?? null;
      void this._refreshCounts();
      return true;
    } catch (error) {
      if (token === this._refreshToken) {
        this._noteError(error);
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
        ...this._serverQuery(),
        limit: this._filters.search.trim() ? SEARCH_PAGE_SIZE : PAGE_SIZE,
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
      this._setOffline(false);
    } catch (error) {
      this._noteError(error);
    } finally {
      this._loadingMore = false;
      this._changed.emit();
    }
  }

  /** Insert or update a task known from a REST answer or the feed. */
  upsert(task: ITask): void {
    const old = this._tasks.get(task.id) ?? null;
    if (old && !isNewer(task, old)) {
      return;
    }
    if (old && task.status === 'queued' && !('queue_position' in task)) {
      task = { ...task, queue_position: old.queue_position }; // the feed has no position
    }
    this._noticeTransition(old, task);
    task.tags.forEach(t => this._seenTags.add(t));
    if (old) {
      if (this._matchesServer(task)) {
        this._tasks.set(task.id, task);
      } else {
        this._remove(task.id);
      }
    } else if (this._matchesServer(task) && this._inLoadedRange(task)) {
      this._tasks.set(task.id, task);
      this._order.splice(
        insertIndex(task, this._order, this._tasks),
        0,
        task.id
      );
    }
    this._taskChanged.emit(task);
    this._changed.emit();
    if (task.status === 'queued' || old?.status === 'queued') {
      this._scheduleQueue();
    }
  }

  /** Forget a task (deleted here or on the server). */
  removeTask(id: string): void {
    const wasQueued = this._tasks.get(id)?.status === 'queued';
    if (this._remove(id)) {
      this._changed.emit();
    }
    this._taskDeleted.emit(id);
    this._scheduleCounts();
    if (wasQueued) {
      this._scheduleQueue();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._poll.dispose();
    this._countsLater.dispose();
    this._queueLater.dispose();
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
          this._setOffline(false);
          this._setMode('stream');
          if (this._resync) {
            this._resync = false;
            void this.refresh();
          }
        },
        onError: () => {
          // dropped (server restart, network): what happens meanwhile is
          // reloaded when it is back; probe the server now
          this._resync = true;
          if (this._mode === 'stream') {
            this._setMode('connecting');
          }
          void this._poll.refresh();
        },
        onFail: () => {
          this._streamFailedAt = Date.now();
          this._resync = true;
          void this._poll.refresh();
        }
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
        if (task && typeof task === 'object' && task.retried_as) {
          // a try a retry superseded: the list shows its last try (history: dependencies.ts)
          if (this._remove(task.id)) {
            this._changed.emit();
          }
          this._taskChanged.emit(task);
        } else if (task && typeof task === 'object' && 'id' in task) {
          this.upsert(task);
        }
        this._scheduleCounts();
        break;
      }
      case 'progress':
      case 'values': {
        const task = this._tasks.get(change.task_id);
        const patch = patchOf(kind, change.data);
        if (task && patch) {
          const updated = { ...task, ...patch };
          this._tasks.set(task.id, updated);
          this._taskChanged.emit(updated);
          this._changed.emit();
        }
        break;
      }
      case 'deleted':
        this.removeTask(change.task_id);
        break;
      case 'schedule': {
        const d = change.data as IScheduleChangeData;
        if (d && typeof d === 'object' && typeof d.action === 'string') {
          this._scheduleChanged.emit({ ...d, id: change.task_id });
        }
        break;
      }
      default:
        break;
    }
  }

  // -------------------------------------------------------------- connection

  /** One tick of the connection watch (see the module comment). */
  private async _tick(): Promise<void> {
    if (this._disposed) {
      return;
    }
    const stream = this._stream;
    if (stream?.isOpen) {
      return;
    }
    const now = Date.now();
    if (
      !this._offline &&
      this._mode === 'polling' &&
      now - this._lastRefresh < this._pollEvery
    ) {
      return;
    }
    const ok = await this.refresh();
    if (!ok) {
      if (this._offline) {
        this._setMode('reconnecting');
      }
      throw new Error(this._lastError || 'no answer'); // the poll backs off (capped)
    }
    const cameBack = this._cameBack;
    this._cameBack = false;
    if (stream?.isOpen) {
      return;
    }
    const stalled = !!stream?.isActive && now - stream.openedAt > STREAM_STALL;
    const retry =
      !stream?.isActive && now - this._streamFailedAt >= STREAM_RETRY_EVERY;
    if (cameBack || stalled || retry || !stream) {
      this._openStream();
    }
    this._setMode(this._stream?.isActive ? 'connecting' : 'polling');
  }

  private _noteError(error: unknown): void {
    const network =
      error instanceof ServerConnection.NetworkError ||
      error instanceof TypeError ||
      (error instanceof APIError && error.status >= 502 && error.status <= 504);
    this._lastError = errorMessage(error);
    if (network) {
      this._setOffline(true);
    }
  }

  private _setOffline(offline: boolean): void {
    if (offline === this._offline) {
      return;
    }
    this._offline = offline;
    if (!offline) {
      this._cameBack = true;
    } else {
      this._setMode('reconnecting');
    }
    this._changed.emit();
  }

  private _setMode(mode: FeedMode): void {
    if (this._mode !== mode) {
      this._mode = mode;
      this._changed.emit();
    }
  }

  // ------------------------------------------------------------------ counts

  private _scheduleCounts(): void {
    this._countsLater.schedule();
  }

  private async _refreshCounts(): Promise<void> {
    try {
      const counts = await fetchCounts();
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

  /** Queue positions move as tasks start: re-read the queued ones (the feed has none). */
  private _scheduleQueue(): void {
    this._queueLater.schedule();
  }

  private async _refreshQueue(): Promise<void> {
    let moved: ITask[];
    try {
      moved = movedInQueue(this._tasks, await fetchQueuePositions());
    } catch {
      return; // positions refresh with the next change
    }
    for (const task of moved) {
      this._tasks.set(task.id, task);
      this._taskChanged.emit(task);
    }
    if (moved.length) {
      this._changed.emit();
    }
  }

  // ----------------------------------------------------------------- helpers

  private _noticeTransition(old: ITask | null, task: ITask): void {
    if (this._notices.isNews(old, task)) {
      this._taskFinished.emit(task); // listeners still see it as tracked
      this._notices.untrack(task.id);
    }
  }

  private _serverQuery(): IServerQuery {
    return serverQuery(this._filters, this._seenTags);
  }

  private _matchesServer(task: ITask): boolean {
    return matchesServer(task, this._serverQuery());
  }

  private _inLoadedRange(task: ITask): boolean {
    return (
      this._nextCursor === null || inLoadedRange(task, this._order, this._tasks)
    );
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
  private _filters: ITaskFilters = { ...NO_FILTERS };
  private _counts: ICounts = { running: 0, queued: 0 };
  private _mode: FeedMode = 'connecting';
  private _active = false;
  private _started = false;
  private _loading = false;
  private _loadingMore = false;
  private _lastError = '';
  private _lastSeq = 0;
  private _refreshToken = 0;
  private _lastRefresh = 0;
  private _offline = false;
  private _cameBack = false;
  private _resync = false;
  private _streamFailedAt = 0;
  private _stream: EventStream | null = null;
  private _poll: Poll;
  private _pollEvery = POLL_LIST_EVERY;
  // one request per burst of changes, 150 / 300 ms after its first change
  private _countsLater = new Later(() => void this._refreshCounts(), 150);
  private _queueLater = new Later(() => void this._refreshQueue(), 300);
  private _notices = new FinishedNotices();
  /** every tag seen so far: a typed tag the server knows is filtered there */
  private _seenTags = new Set<string>();
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
  private _countsChanged = new Signal<this, ICounts>(this);
  private _taskChanged = new Signal<this, ITask>(this);
  private _taskFinished = new Signal<this, ITask>(this);
  private _taskDeleted = new Signal<this, string>(this);
  private _scheduleChanged = new Signal<
    this,
    IScheduleChangeData & { id: string }
  >(this);
}
