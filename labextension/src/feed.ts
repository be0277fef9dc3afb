/**
 * The event feed of one task for its detail view: the SSE stream of
 * `GET /taskrun/api/tasks/{id}/events` (replay + live + `end`), with a lumino
 * `Poll` that
 * - reconnects after the server went away (a restart): it probes the task over
 *   REST (backoff capped at 2 s) and re-opens the stream, resuming after the
 *   last event seen, as soon as the server answers;
 * - falls back to REST polling when the stream fails while REST works (a
 *   proxy that breaks streaming).
 * The poll stands by while the browser tab is hidden.
 */
import { IDisposable } from '@lumino/disposable';
import { Poll } from '@lumino/polling';

import { APIError, TaskAPI } from './api';
import { ITask, ITaskOutputs, isTerminal, TASK_EVENT_TYPES } from './models';
import { EventStream } from './sse';

export type FeedState =
  'connecting' | 'live' | 'reconnecting' | 'polling' | 'ended' | 'idle';

/** What the feed tells its view. */
export interface IFeedHandlers {
  /** A task event (not yet seen), with its type, payload, time and seq. */
  onEvent: (
    type: string,
    data: unknown,
    time: string | null,
    seq: number | null
  ) => void;
  /** The stream said `end`: every event of the task has been delivered. */
  onEnd: () => void;
  /** The state changed (for the "live" / "polling" label). */
  onState: (state: FeedState) => void;
  /** A fresh copy of the task (from a REST probe or poll). */
  onTask: (task: ITask) => void;
  /** Polling mode restarts the log view from the REST log. */
  onPollReset: () => void;
  /** Polling mode: new log text, the current outputs. */
  onPolled: (log: string, outputs: ITaskOutputs) => Promise<void>;
  /** The task is gone (404). */
  onGone: () => void;
}

const POLL_EVERY = 2000;

export class TaskFeed implements IDisposable {
  constructor(taskId: string, handlers: IFeedHandlers) {
    this._taskId = taskId;
    this._handlers = handlers;
    this._poll = new Poll({
      name: `jupyter-taskrun:task-${taskId}`,
      auto: false,
      factory: () => this._tick(),
      frequency: { interval: 1000, backoff: 1.5, max: 2000 },
      standby: 'when-hidden'
    });
  }

  get state(): FeedState {
    return this._state;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Open the stream (once); later calls only probe a feed that is down. */
  start(): void {
    if (this._disposed) {
      return;
    }
    if (!this._stream && this._state === 'idle') {
      this._openStream();
      void this._poll.start();
    } else if (this._state === 'reconnecting') {
      void this._poll.refresh();
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._poll.dispose();
    this._stream?.dispose();
    this._stream = null;
  }

  private _setState(state: FeedState): void {
    if (state !== this._state) {
      this._state = state;
      this._handlers.onState(state);
    }
  }

  private _openStream(): void {
    if (!this._stream) {
      this._stream = new EventStream({
        endPoint: `tasks/${encodeURIComponent(this._taskId)}/events`,
        events: [...TASK_EVENT_TYPES, 'end'],
        onEvent: (type, data, id) => this._onEvent(type, data, id),
        onOpen: () => this._setState('live'),
        onError: () => {
          if (this._state === 'live') {
            this._setState('connecting');
          }
          void this._poll.refresh();
        },
        onFail: () => {
          this._failedAt = Date.now();
          void this._poll.refresh();
        }
      });
    }
    this._setState('connecting');
    this._stream.open(); // resumes after the last event seen
  }

  private _onEvent(type: string, data: unknown, id: number | null): void {
    if (type === 'end') {
      this._stream?.dispose();
      this._stream = null;
      this._setState('ended');
      void this._poll.stop();
      this._handlers.onEnd();
      return;
    }
    if (id !== null) {
      if (id <= this._lastSeq) {
        return; // replayed twice on a resume: already shown
      }
      this._lastSeq = id;
    }
    const event = data as {
      type?: string;
      data?: unknown;
      time?: string;
    } | null;
    const wrapped = !!event && typeof event === 'object' && 'data' in event;
    const payload = wrapped ? event!.data : data;
    const kind =
      wrapped && typeof event!.type === 'string' ? event!.type : type;
    this._handlers.onEvent(
      kind,
      payload,
      wrapped ? (event!.time ?? null) : null,
      id
    );
  }

  private async _tick(): Promise<void> {
    if (this._disposed || this._state === 'ended' || this._state === 'live') {
      return;
    }
    if (this._state === 'polling') {
      await this._pollOnce();
      return;
    }
    // the stream is down or (re)connecting: does the server answer?
    let task: ITask;
    try {
      task = await TaskAPI.get(this._taskId);
    } catch (error) {
      if (error instanceof APIError && error.status === 404) {
        this._gone();
        return;
      }
      this._wasDown = true;
      this._setState('reconnecting');
      throw error; // the poll backs off (capped at 2 s)
    }
    this._handlers.onTask(task);
    const stream = this._stream;
    if (stream?.isOpen) {
      return;
    }
    const cameBack = this._wasDown;
    this._wasDown = false;
    if (cameBack || !stream?.isActive || Date.now() - stream.openedAt > 1500) {
      if (
        !cameBack &&
        !stream?.isActive &&
        Date.now() - this._failedAt < 1000 &&
        this._failures++ >= 1
      ) {
        // the stream fails while REST answers: poll REST instead
        this._startPolling();
        return;
      }
      this._openStream();
    }
  }

  private _gone(): void {
    this._stream?.dispose();
    this._stream = null;
    void this._poll.stop();
    this._handlers.onGone();
  }

  private _startPolling(): void {
    this._stream?.dispose();
    this._stream = null;
    this._logOffset = 0;
    this._handlers.onPollReset();
    this._setState('polling');
    void this._poll.refresh();
  }

  private async _pollOnce(): Promise<void> {
    if (Date.now() - this._lastPoll < POLL_EVERY) {
      return;
    }
    this._lastPoll = Date.now();
    try {
      const task = await TaskAPI.get(this._taskId);
      this._handlers.onTask(task);
      const chunk = await TaskAPI.logsFrom(this._taskId, this._logOffset);
      if (chunk.text) {
        this._logOffset = chunk.next;
      }
      const outputs = await TaskAPI.outputs(this._taskId);
      await this._handlers.onPolled(chunk.text, outputs);
      if (isTerminal(task.status)) {
        this._setState('ended');
        void this._poll.stop();
        this._handlers.onEnd();
      }
    } catch (error) {
      if (error instanceof APIError && error.status === 404) {
        this._gone();
        return;
      }
      throw error;
    }
  }

  private _taskId: string;
  private _handlers: IFeedHandlers;
  private _poll: Poll;
  private _stream: EventStream | null = null;
  private _state: FeedState = 'idle';
  private _lastSeq = 0;
  private _logOffset = 0;
  private _lastPoll = 0;
  private _failedAt = 0;
  private _failures = 0;
  private _wasDown = false;
  private _disposed = false;
}
