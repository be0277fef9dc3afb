/**
 * UI state that outlives a page (the tasks started here, the last options of
 * the run dialog, the list's sort): kept in Lab's state database (IStateDB,
 * saved with the workspace), one JSON object under one key.
 *
 * Guarantees: reads are synchronous (the object is fetched once at start-up;
 * until then, and without a state database, it is in memory only); writes
 * are coalesced into one save per burst; a stored value of the wrong shape
 * reads as absent.
 */
import type { IStateDB } from '@jupyterlab/statedb';
import type { ReadonlyPartialJSONValue } from '@lumino/coreutils';
import { Debouncer } from '@lumino/polling';

const KEY = 'jupyter-taskrun:ui';

type Data = { [key: string]: ReadonlyPartialJSONValue };

class UIState {
  /** Resolves once the stored state is loaded (at once without a database). */
  get ready(): Promise<void> {
    return this._ready;
  }

  /** Load the stored state; values set before it loads win over stored ones. */
  init(db: IStateDB | null): Promise<void> {
    this._db = db;
    if (!db) {
      return this._ready;
    }
    this._ready = db
      .fetch(KEY)
      .then(stored => {
        if (stored && typeof stored === 'object' && !Array.isArray(stored)) {
          this._data = { ...(stored as Data), ...this._data };
        }
      })
      .catch(() => undefined);
    return this._ready;
  }

  get(name: string): ReadonlyPartialJSONValue | undefined {
    return this._data[name];
  }

  set(name: string, value: ReadonlyPartialJSONValue | undefined): void {
    if (value === undefined) {
      delete this._data[name];
    } else {
      this._data[name] = value;
    }
    if (this._db) {
      void this._save.invoke();
    }
  }

  /** Names starting with `prefix`, oldest written first. */
  names(prefix: string): string[] {
    return Object.keys(this._data).filter(k => k.startsWith(prefix));
  }

  private _data: Data = {};
  private _db: IStateDB | null = null;
  private _ready: Promise<void> = Promise.resolve();
  private _save = new Debouncer(async () => {
    await this._ready;
    await this._db?.save(KEY, this._data);
  }, 300);
}

export const uiState = new UIState();
