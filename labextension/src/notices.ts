/**
 * Which task ends are news for the notifications: a task that reaches a
 * final state while this Lab watches it, once per task. A task started from
 * this Lab is remembered across page reloads (Lab's state database, see
 * uistate.ts; the latest 200), so its end is announced even when the first
 * sight of it is already final.
 */
import { ITask, isTerminal } from './models';
import { uiState } from './uistate';

const STARTED_KEY = 'started-here';
const MAX_TRACKED = 200;

export class FinishedNotices {
  constructor() {
    this._tracked = new Set(loadTracked());
    // the state database loads after start-up: merge what it remembers
    void uiState.ready.then(() => {
      loadTracked().forEach(id => this._tracked.add(id));
    });
  }

  /** Remember a task started from this Lab. */
  track(id: string): void {
    this._tracked.add(id);
    saveTracked(this._tracked);
  }

  isTracked(id: string): boolean {
    return this._tracked.has(id);
  }

  /** True, once per task, when the change from `old` to `task` is an end to announce. */
  isNews(old: ITask | null, task: ITask): boolean {
    if (!isTerminal(task.status) || (old && isTerminal(old.status))) {
      return false;
    }
    if (!old && !this._tracked.has(task.id)) {
      return false; // first sight of an already finished task: not news
    }
    if (this._seen.has(task.id)) {
      return false;
    }
    this._seen.add(task.id);
    return true;
  }

  /** Forget a tracked task once its end was announced. */
  untrack(id: string): void {
    if (this._tracked.delete(id)) {
      saveTracked(this._tracked);
    }
  }

  private _tracked: Set<string>;
  private _seen = new Set<string>();
}

function loadTracked(): string[] {
  const ids = uiState.get(STARTED_KEY);
  return Array.isArray(ids)
    ? ids.filter((x): x is string => typeof x === 'string')
    : [];
}

function saveTracked(ids: Set<string>): void {
  uiState.set(STARTED_KEY, [...ids].slice(-MAX_TRACKED));
}
