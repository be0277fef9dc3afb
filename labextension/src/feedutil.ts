/**
 * Small pure helpers of the task list model.
 */
import type {
  IProgressChangeData,
  ITask,
  ITaskProgress
} from './models';
import { isTerminal, TaskStatus } from './models';
import { TaskAPI } from './api';
import { parseTime } from './utils';

export interface ITaskFilters {
  status: TaskStatus | '';
  tag: string;
  search: string;
}

export interface IServerQuery {
  status: TaskStatus | '';
  tag: string;
  q: string;
}

/**
 * What the server filters: status, and the tag once it is a complete tag
 * seen before. The name search is a substring match done here (the REST
 * `?name=` is a prefix filter); `q` is sent too, for a server that searches.
 */
export function serverQuery(f: ITaskFilters, seenTags: Set<string>): IServerQuery {
  const tag = f.tag.trim();
  return {
    status: f.status,
    tag: tag && seenTags.has(tag) ? tag : '',
    q: f.search.trim()
  };
}

export function matchesServer(task: ITask, q: IServerQuery): boolean {
  if (q.status && task.status !== q.status) {
    return false;
  }
  return !q.tag || task.tags.includes(q.tag);
}

/** The filters as typed: a tag prefix, a name substring (or an id prefix). */
export function matchesLocal(task: ITask, f: ITaskFilters): boolean {
  if (f.status && task.status !== f.status) {
    return false;
  }
  const tag = f.tag.trim().toLowerCase();
  if (tag && !task.tags.some(t => t.toLowerCase().startsWith(tag))) {
    return false;
  }
  const search = f.search.trim().toLowerCase();
  return (
    !search ||
    (task.name || '').toLowerCase().includes(search) ||
    task.id.startsWith(search)
  );
}

/** id → queue position of every queued task (the change feed carries none). */
export async function fetchQueuePositions(): Promise<Map<string, number | null>> {
  const page = await TaskAPI.list({ status: 'queued', limit: 500 });
  return new Map(page.tasks.map(t => [t.id, t.queue_position ?? null]));
}

const STARTED_KEY = 'jupyter-taskrun:started-here';
const MAX_TRACKED = 200;

/** The progress of a feed entry: `{progress, id, owner}` (or a bare progress dict). */
export function progressOf(data: unknown): ITaskProgress | null {
  if (!data || typeof data !== 'object') {
    return null;
  }
  const d = data as Partial<IProgressChangeData> & Partial<ITaskProgress>;
  const p = (d.progress && typeof d.progress === 'object' ? d.progress : d) as Partial<ITaskProgress>;
  return typeof p.value === 'number'
    ? { value: p.value, total: typeof p.total === 'number' ? p.total : null, message: p.message ?? '' }
    : null;
}

/** Is `a` at least as recent as `b` (by last event id)? */
export function isNewer(a: ITask, b: ITask): boolean {
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

export function loadTracked(): string[] {
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

export function saveTracked(ids: Set<string>): void {
  try {
    const list = [...ids].slice(-MAX_TRACKED);
    window.localStorage.setItem(STARTED_KEY, JSON.stringify(list));
  } catch {
    // storage may be unavailable (private mode); tracking stays in memory
  }
}

/** Would `task` appear among the pages loaded so far (newest first)? */
export function inLoadedRange(
  task: ITask,
  order: string[],
  tasks: Map<string, ITask>
): boolean {
  if (order.length === 0) {
    return true;
  }
  const last = tasks.get(order[order.length - 1]);
  const created = parseTime(task.created_at) ?? 0;
  return !last || created >= (parseTime(last.created_at) ?? 0);
}

/** Where `task` goes in the newest-first order. */
export function insertIndex(
  task: ITask,
  order: string[],
  tasks: Map<string, ITask>
): number {
  const created = parseTime(task.created_at) ?? Date.now();
  let index = 0;
  while (index < order.length) {
    const other = tasks.get(order[index]);
    if (!other || (parseTime(other.created_at) ?? 0) <= created) {
      break;
    }
    index += 1;
  }
  return index;
}
