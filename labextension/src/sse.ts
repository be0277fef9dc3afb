/**
 * A small wrapper around EventSource for the API's SSE routes.
 *
 * The browser itself resumes a dropped stream with `Last-Event-ID`; this
 * wrapper adds: named-event dispatch with parsed JSON, a count of consecutive
 * failures after which it gives up (so the caller can fall back to polling),
 * and `?after=` on a manual re-open so a new stream starts where the old one
 * stopped.
 */
import { IDisposable } from '@lumino/disposable';

import { eventSourceURL } from './api';

export interface IEventStreamOptions {
  /** API route below `taskrun/api/`, e.g. `events` */
  endPoint: string;
  /** SSE event names to listen to (`message` is always included) */
  events: readonly string[];
  /** Called for every event with its parsed JSON data and its id. */
  onEvent: (type: string, data: unknown, id: number | null) => void;
  /** Called when the stream (re)opens. */
  onOpen?: () => void;
  /**
   * Called on every error of the stream (the connection dropped or could not
   * be made; the browser may still be retrying).
   */
  onError?: () => void;
  /**
   * Called once when the stream is given up: the server refused it, or it
   * failed `maxErrors` times in a row without opening.
   */
  onFail?: () => void;
  /** Consecutive errors tolerated before giving up (default 3). */
  maxErrors?: number;
  /** Last event id already seen (sent as `?after=` on open). */
  after?: number | null;
  /**
   * Whether a manual re-open resumes after the last seen id (default true).
   * A list view that reloads itself on re-open starts fresh instead.
   */
  resume?: boolean;
}

export class EventStream implements IDisposable {
  constructor(options: IEventStreamOptions) {
    this._options = options;
    this._lastId = options.after ?? null;
  }

  /** The id of the last event received (or given as `after`). */
  get lastId(): number | null {
    return this._lastId;
  }

  get isOpen(): boolean {
    return this._source !== null && this._source.readyState === 1;
  }

  /** When the current EventSource was created (ms since epoch), or 0. */
  get openedAt(): number {
    return this._source ? this._openedAt : 0;
  }

  get isActive(): boolean {
    return this._source !== null;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Open (or re-open) the stream, resuming after the last seen id. */
  open(): void {
    if (this._disposed) {
      return;
    }
    this.close();
    if (typeof EventSource === 'undefined') {
      this._fail();
      return;
    }
    const query: { [key: string]: number } = {};
    if (this._lastId !== null && this._options.resume !== false) {
      query.after = this._lastId;
    }
    const source = new EventSource(
      eventSourceURL(this._options.endPoint, query)
    );
    this._source = source;
    this._openedAt = Date.now();
    this._errors = 0;
    source.onopen = () => {
      this._errors = 0;
      this._options.onOpen?.();
    };
    source.onerror = () => {
      if (this._source !== source) {
        return;
      }
      this._errors += 1;
      this._options.onError?.();
      const max = this._options.maxErrors ?? 3;
      // CLOSED means the browser will not retry (HTTP error, wrong type...)
      if (source.readyState === 2 || this._errors >= max) {
        this._fail();
      }
    };
    const handler = (event: MessageEvent) => {
      if (this._source !== source) {
        return;
      }
      this._errors = 0;
      const id = event.lastEventId ? Number(event.lastEventId) : NaN;
      if (Number.isFinite(id)) {
        this._lastId = id;
      }
      let data: unknown = event.data;
      if (typeof event.data === 'string' && event.data.length > 0) {
        try {
          data = JSON.parse(event.data);
        } catch {
          data = event.data;
        }
      }
      this._options.onEvent(event.type, data, Number.isFinite(id) ? id : null);
    };
    for (const name of new Set(['message', ...this._options.events])) {
      source.addEventListener(name, handler as EventListener);
    }
  }

  /** Close the stream; `open()` can resume it later. */
  close(): void {
    if (this._source) {
      this._source.onopen = null;
      this._source.onerror = null;
      this._source.close();
      this._source = null;
    }
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this.close();
    this._disposed = true;
  }

  private _fail(): void {
    this.close();
    this._options.onFail?.();
  }

  private _options: IEventStreamOptions;
  private _source: EventSource | null = null;
  private _lastId: number | null;
  private _errors = 0;
  private _openedAt = 0;
  private _disposed = false;
}
