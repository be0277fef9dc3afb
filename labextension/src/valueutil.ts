/**
 * Recorded values (`record(name, value)`) as every view shows and orders them:
 * the detail view's cards, the sidebar's value columns and the Compare table.
 * One rule: numbers with at most 6 significant digits, strings as they are,
 * anything else as compact JSON; a missing value is the em dash. Ordering
 * follows the server's `?sort=values.NAME` (store.py): numbers by value,
 * then strings; tasks without the value last, whichever the direction.
 */
import { EMPTY } from './format';
import type { ITask } from './models';

/** Text of a recorded value (at most `max` characters). */
export function formatValue(value: unknown, max = 80): string {
  if (value === undefined) {
    return EMPTY;
  }
  let text: string;
  if (typeof value === 'number') {
    text = Number.isInteger(value)
      ? String(value)
      : String(Number(value.toPrecision(6)));
  } else if (typeof value === 'string') {
    text = value;
  } else {
    text = JSON.stringify(value) ?? String(value);
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/** The full value, for a tooltip. */
export function valueTitle(name: string, value: unknown): string {
  const text =
    typeof value === 'string' ? value : (JSON.stringify(value) ?? EMPTY);
  return `${name} = ${text.length > 2000 ? text.slice(0, 2000) + '…' : text}`;
}

/** A plain number of a value (booleans and strings are not), else null. */
export function numericValue(value: unknown): number | null {
  return typeof value === 'number' && Number.isFinite(value) ? value : null;
}

// as SQLite orders json_extract(): null, then numbers (true/false as 1/0),
// then text (strings; lists and objects as their JSON)
function rank(value: unknown): number {
  if (value === null) {
    return 0;
  }
  return typeof value === 'number' || typeof value === 'boolean' ? 1 : 2;
}

/** Compare two present values (null, booleans, numbers, strings, JSON). */
export function compareValues(a: unknown, b: unknown): number {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb || ra === 0) {
    return ra - rb;
  }
  if (ra === 1) {
    return Number(a) - Number(b);
  }
  const sa = typeof a === 'string' ? a : JSON.stringify(a);
  const sb = typeof b === 'string' ? b : JSON.stringify(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

/** `values.acc` → {name: 'acc', descending: false}; `-values.acc` → descending. */
export function parseSort(
  sort: string
): { name: string; descending: boolean } | null {
  const m = /^(-?)values\.(.+)$/.exec(sort);
  return m ? { name: m[2], descending: m[1] === '-' } : null;
}

/**
 * Order by a value as the server does; a stable sort, so ties keep the
 * given order. Values missing from `get(item)` go last.
 */
export function sortByValue<T>(
  items: readonly T[],
  get: (item: T) => unknown,
  descending: boolean
): T[] {
  return items
    .map((item, index) => ({ item, index, value: get(item) }))
    .sort((a, b) => {
      const ma = a.value === undefined;
      const mb = b.value === undefined;
      if (ma || mb) {
        return ma && mb ? a.index - b.index : ma ? 1 : -1;
      }
      const c = compareValues(a.value, b.value);
      return (descending ? -c : c) || a.index - b.index;
    })
    .map(x => x.item);
}

/** The value `name` of a task, or undefined when it recorded none. */
export function taskValue(task: ITask, name: string): unknown {
  const values = task.values;
  return values && Object.prototype.hasOwnProperty.call(values, name)
    ? values[name]
    : undefined;
}

/** Every value name the tasks recorded, sorted. */
export function valueNames(tasks: Iterable<ITask>): string[] {
  const names = new Set<string>();
  for (const task of tasks) {
    Object.keys(task.values ?? {}).forEach(n => names.add(n));
  }
  return [...names].sort();
}
