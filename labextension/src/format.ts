/**
 * One convention for what every view prints: durations, byte sizes, the
 * executed-notebook file name and ANSI stripping — a rule-for-rule mirror of
 * jupyter_taskrun/formatting.py (docs/API_CONTRACT.md, "Conventions").
 *
 * Guarantees: pure functions, no DOM, no I/O. Numbers round as Python's
 * format specs do (an exact tie goes to the even digit), so the CLI, the
 * notebook panel and JupyterLab never disagree; tests/test_format_ts.py runs
 * the compiled module against tests/formatting_examples.json, the table the
 * Python side is pinned to.
 */

/** Shown for a value that is not known (yet). */
export const EMPTY = '—';

/**
 * CSI sequences (colours, cursor moves), OSC sequences (window titles,
 * hyperlinks) and two-byte escapes. Global: use it with `replace`, which
 * restarts a global regex at the beginning of the text.
 */
export const ANSI_ESCAPE =
  // eslint-disable-next-line no-control-regex -- matching the ESC and BEL control characters is the point
  /\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]/g;

const UNSAFE_NAME = /[^A-Za-z0-9._-]+/g;
const EDGE_DASHES_DOTS = /^[-.]+|[-.]+$/g;

/** `text` without terminal escape sequences. */
export function stripAnsi(text: string): string {
  return text.replace(ANSI_ESCAPE, '');
}

/** 350 ms · 4.2 s · 42 s · 1 min 05 s · 2 h 05 min · 3 d 4 h (negative counts as 0). */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined) {
    return EMPTY;
  }
  seconds = Number(seconds);
  // Python raises on +infinity (and on text); a view shows "unknown" instead
  if (Number.isNaN(seconds) || seconds === Infinity) {
    return EMPTY;
  }
  seconds = Math.max(0, seconds);
  if (seconds < 1) {
    return `${toFixedEven(seconds * 1000, 0)} ms`;
  }
  if (seconds < 10) {
    return `${toFixedEven(seconds, 1)} s`;
  }
  if (seconds < 60) {
    return `${toFixedEven(seconds, 0)} s`;
  }
  const total = roundEven(seconds);
  let minutes = Math.floor(total / 60);
  const sec = total - minutes * 60;
  if (minutes < 60) {
    return `${minutes} min ${pad2(sec)} s`;
  }
  let hours = Math.floor(minutes / 60);
  minutes -= hours * 60;
  if (hours < 24) {
    return `${hours} h ${pad2(minutes)} min`;
  }
  const days = Math.floor(hours / 24);
  hours -= days * 24;
  return `${days} d ${hours} h`;
}

/** IEC units: 512 B · 1.5 KiB · 12.3 MiB · 120 GiB (one decimal below 100). */
export function formatBytes(n: number | null | undefined): string {
  if (typeof n !== 'number' || Number.isNaN(n)) {
    return EMPTY;
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  if (unit === 0 || Math.abs(value) >= 100) {
    return `${toFixedEven(value, 0)} ${units[unit]}`;
  }
  return `${toFixedEven(value, 1)} ${units[unit]}`;
}

/**
 * `<stem>-<first 8 of id>.executed.ipynb`: the stem is the task name's last
 * path part without its extension, reduced to `[A-Za-z0-9._-]` (40
 * characters at most, `task` when empty).
 */
export function executedNotebookName(
  taskName: string | null | undefined,
  taskId: string
): string {
  const path = String(taskName || '').replace(/\\/g, '/');
  const base = path.slice(path.lastIndexOf('/') + 1);
  const lower = base.toLowerCase();
  const stem =
    lower.endsWith('.ipynb') || lower.endsWith('.py')
      ? base.slice(0, base.lastIndexOf('.'))
      : base;
  const safe =
    stem
      .replace(UNSAFE_NAME, '-')
      .replace(EDGE_DASHES_DOTS, '')
      .slice(0, 40)
      .replace(EDGE_DASHES_DOTS, '') || 'task';
  return `${safe}-${taskId.slice(0, 8)}.executed.ipynb`;
}

// ------------------------------------------------- Python's number rendering

/** Python's `round(x)` for x >= 0: an exact half goes to the even integer. */
function roundEven(x: number): number {
  const floor = Math.floor(x);
  const rest = x - floor; // exact for doubles
  if (rest !== 0.5) {
    return rest < 0.5 ? floor : floor + 1;
  }
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Python's `f"{x:02d}"` for 0 <= x < 100. */
function pad2(x: number): string {
  return String(x).padStart(2, '0');
}

/**
 * Python's `f"{value:.{digits}f}"`. JavaScript's `toFixed` rounds an exact
 * tie away from zero and Python to the even digit (4.25 → "4.2", 0.5 → "0"),
 * and Python spells infinity "inf" and keeps the sign of -0.
 */
function toFixedEven(value: number, digits: number): string {
  if (!Number.isFinite(value)) {
    return value > 0 ? 'inf' : '-inf';
  }
  const sign = value < 0 || Object.is(value, -0) ? '-' : '';
  const abs = Math.abs(value);
  if (abs >= 1e21) {
    // toFixed switches to exponent notation there; such doubles are integers
    const fraction = digits > 0 ? `.${'0'.repeat(digits)}` : '';
    return `${sign}${BigInt(abs).toString()}${fraction}`;
  }
  // 25 more digits tell an exact tie (…5 followed by zeros) from a near one
  const extra = 25;
  const long = abs.toFixed(digits + extra);
  const cut = long.length - extra;
  if (long.slice(cut) === `5${'0'.repeat(extra - 1)}`) {
    const truncated = long.slice(0, digits > 0 ? cut : cut - 1);
    const lastDigit = Number(truncated[truncated.length - 1]);
    if (lastDigit % 2 === 0) {
      return sign + truncated;
    }
  }
  return sign + abs.toFixed(digits);
}
