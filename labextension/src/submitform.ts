/**
 * The values of the "Run as task" dialog: the raw text of each field, its
 * parsing into submission options (the field names of POST
 * /taskrun/api/tasks, docs/API_CONTRACT.md) and the last values per file.
 *
 * Guarantees: no DOM (remembered values live in uistate.ts); every refusal is a translated
 * sentence saying which field is wrong; what is sent passes the server's
 * definition of a submission (schemas/submission.json) for the checks it
 * can make here (names, ranges, `args` only for scripts).
 */
import type { PartialJSONObject } from '@lumino/coreutils';

import { trans } from './i18n';
import type { ITaskSubmission } from './models';
import { settings } from './settings';
import { uiState } from './uistate';

/** What is being run: decides the parameters hint and whether arguments apply. */
export type SubmitKind = 'notebook' | 'script' | 'cells' | 'files';

/** The options the dialog adds to a submission. */
export type SubmitOptions = Pick<
  ITaskSubmission,
  | 'name'
  | 'kernel_name'
  | 'timeout'
  | 'cell_timeout'
  | 'parameters'
  | 'tags'
  | 'env'
  | 'cwd'
  | 'priority'
  | 'memory_limit'
> & {
  /** a script's `sys.argv[1:]`; sent with `.py` paths only */
  args?: string[];
};

/** The dialog's fields as typed. */
export interface IRawValues {
  name: string;
  kernel: string;
  timeout: string;
  cellTimeout: string;
  parameters: string;
  tags: string;
  env: string;
  cwd: string;
  priority: string;
  memoryLimit: string;
  args: string;
}

export const EMPTY_VALUES: IRawValues = {
  name: '',
  kernel: '',
  timeout: '',
  cellTimeout: '',
  parameters: '',
  tags: '',
  env: '',
  cwd: '',
  priority: '',
  memoryLimit: '',
  args: ''
};

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;
const MAX_PRIORITY = 1000;
const UNITS: { [unit: string]: number } = {
  '': 1,
  b: 1,
  k: 1024,
  m: 1024 ** 2,
  g: 1024 ** 3,
  t: 1024 ** 4
};

type Parsed<T> = { value: T } | { error: string };

function seconds(text: string, what: string): Parsed<number | undefined> {
  const raw = text.trim();
  if (!raw) {
    return { value: undefined };
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value <= 0) {
    return {
      error: trans.__('%1 must be a positive number of seconds.', what)
    };
  }
  return { value };
}

/** `2 GiB`, `512M`, `1.5g`, `1048576`: bytes (units are powers of 1024). */
export function parseMemory(text: string): Parsed<number | undefined> {
  const raw = text.trim();
  if (!raw) {
    return { value: undefined };
  }
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(raw);
  const unit = match ? match[2].toLowerCase() : '';
  const bytes = match ? Math.round(Number(match[1]) * UNITS[unit]) : NaN;
  if (!match || !(bytes > 0) || !Number.isSafeInteger(bytes)) {
    return {
      error: trans.__(
        'Memory limit must be a size such as 2 GiB, 512M or a number of bytes.'
      )
    };
  }
  return { value: bytes };
}

/** `KEY=VALUE` lines (blank lines and `#` comments skipped; the value is taken as is). */
export function parseEnv(text: string): Parsed<{ [key: string]: string }> {
  const env: { [key: string]: string } = {};
  for (const line of text.split(/\r?\n/)) {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) {
      continue;
    }
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq).trim() : '';
    if (!IDENTIFIER.test(key)) {
      return {
        error: trans.__(
          'Environment lines are KEY=VALUE with KEY a variable name: %1',
          trimmed
        )
      };
    }
    env[key] = line.slice(eq + 1);
  }
  return { value: env };
}

/**
 * Split a command line as a POSIX shell does (without expansions): blanks
 * separate words; '…' keeps everything literally; "…" keeps everything but
 * a backslash before " \ $ or `; a backslash outside quotes keeps the next
 * character.
 */
export function splitShellWords(text: string): Parsed<string[]> {
  const words: string[] = [];
  let word = '';
  let inWord = false;
  let quote: '' | "'" | '"' = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote === "'") {
      if (c === "'") {
        quote = '';
      } else {
        word += c;
      }
    } else if (quote === '"') {
      if (c === '"') {
        quote = '';
      } else if (
        c === '\\' &&
        i + 1 < text.length &&
        '"\\$`'.includes(text[i + 1])
      ) {
        word += text[++i];
      } else {
        word += c;
      }
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === '\\') {
      if (i + 1 < text.length) {
        const next = text[++i];
        if (next !== '\n') {
          word += next; // a backslash-newline joins lines, as in a shell
        }
      }
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) {
        words.push(word);
        word = '';
        inWord = false;
      }
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) {
    return { error: trans.__('Arguments: a %1 quote is not closed.', quote) };
  }
  if (inWord) {
    words.push(word);
  }
  return { value: words };
}

export function parseParameters(
  text: string
): Parsed<PartialJSONObject | undefined> {
  const params = text.trim();
  if (!params) {
    return { value: undefined };
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(params);
  } catch (e) {
    return {
      error: trans.__('Parameters are not valid JSON: %1', (e as Error).message)
    };
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return {
      error: trans.__('Parameters must be a JSON object, e.g. {"alpha": 0.5}.')
    };
  }
  const bad = Object.keys(parsed).filter(k => !IDENTIFIER.test(k));
  if (bad.length) {
    return {
      error: trans.__(
        'Parameter names must be Python identifiers: %1',
        bad.join(', ')
      )
    };
  }
  return { value: parsed as PartialJSONObject };
}

function parsePriority(text: string): Parsed<number | undefined> {
  const raw = text.trim();
  if (!raw) {
    return { value: undefined };
  }
  const value = Number(raw);
  if (!Number.isInteger(value) || Math.abs(value) > MAX_PRIORITY) {
    return {
      error: trans.__(
        'Priority must be a whole number from %1 to %2 (higher runs first).',
        -MAX_PRIORITY,
        MAX_PRIORITY
      )
    };
  }
  return { value };
}

/** Turn the raw form values into submission options, or explain what is wrong. */
export function parseSubmitValues(
  raw: IRawValues,
  defaultName: string,
  kind: SubmitKind = 'notebook'
): { options: SubmitOptions } | { error: string } {
  const options: SubmitOptions = {};
  options.name = raw.name.trim() || defaultName;
  if (raw.kernel) {
    options.kernel_name = raw.kernel;
  }
  const timeout = seconds(raw.timeout, trans.__('Timeout'));
  const cellTimeout = seconds(raw.cellTimeout, trans.__('Cell timeout'));
  const parameters = parseParameters(raw.parameters);
  const env = parseEnv(raw.env);
  const priority = parsePriority(raw.priority);
  const memory = parseMemory(raw.memoryLimit);
  const args =
    kind === 'script' || kind === 'files'
      ? splitShellWords(raw.args)
      : { value: [] };
  for (const part of [
    timeout,
    cellTimeout,
    parameters,
    env,
    priority,
    memory,
    args
  ]) {
    if ('error' in part) {
      return { error: part.error };
    }
  }
  const value = <T>(p: Parsed<T>): T => (p as { value: T }).value;
  const set = <K extends keyof SubmitOptions>(
    key: K,
    v: SubmitOptions[K] | undefined
  ) => {
    if (v !== undefined) {
      options[key] = v;
    }
  };
  set('timeout', value(timeout));
  set('cell_timeout', value(cellTimeout));
  set('parameters', value(parameters));
  const envValue = value(env);
  set('env', Object.keys(envValue).length ? envValue : undefined);
  set('cwd', raw.cwd.trim() || undefined);
  set('priority', value(priority));
  set('memory_limit', value(memory));
  const argsValue = value(args);
  set('args', argsValue.length ? argsValue : undefined);
  const tags = raw.tags
    .split(',')
    .map(t => t.trim())
    .filter(Boolean);
  if (tags.length) {
    options.tags = [...new Set(tags)];
  }
  return { options };
}

// ------------------------------------------------------------ remembered values

/** the last timeout and tags of any submission (a file never run before starts with them) */
const LAST_KEY = 'jupyter-taskrun:last-submit-options';
/** the last values of every field, per file */
const FILE_KEY_PREFIX = 'jupyter-taskrun:submit-options:';

function read(key: string): Partial<IRawValues> {
  const value = uiState.get(key);
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    return {};
  }
  const out: Partial<IRawValues> = {};
  for (const field of Object.keys(EMPTY_VALUES) as Array<keyof IRawValues>) {
    const v = (value as { [k: string]: unknown })[field];
    if (typeof v === 'string') {
      out[field] = v;
    }
  }
  return out;
}

function write(key: string, value: Partial<IRawValues>): void {
  uiState.set(key, { ...value });
}

/** files whose last values are kept (the oldest are forgotten) */
const MAX_REMEMBERED_FILES = 100;

/**
 * The dialog's starting values: the last ones used for `fileKey`, else the
 * last timeout and tags of any submission on top of `defaults`.
 */
export function loadRemembered(
  fileKey: string,
  defaults: Partial<IRawValues>
): IRawValues {
  const perFile = fileKey ? read(FILE_KEY_PREFIX + fileKey) : {};
  if (Object.keys(perFile).length) {
    return { ...EMPTY_VALUES, ...defaults, ...perFile };
  }
  // the user's default options (settings) first, else the last ones used
  const last = read(LAST_KEY);
  const d = settings.current;
  return {
    ...EMPTY_VALUES,
    ...defaults,
    kernel: defaults.kernel || d.defaultKernel,
    timeout: d.defaultTimeout ? String(d.defaultTimeout) : (last.timeout ?? ''),
    tags: d.defaultTags.length ? d.defaultTags.join(', ') : (last.tags ?? ''),
    priority: d.defaultPriority === null ? '' : String(d.defaultPriority)
  };
}

/** Remember what was submitted (per file, and the timeout and tags for any file). */
export function remember(fileKeys: string[], values: IRawValues): void {
  write(LAST_KEY, { timeout: values.timeout, tags: values.tags });
  for (const key of fileKeys) {
    if (key) {
      uiState.set(FILE_KEY_PREFIX + key, undefined); // re-written: the newest
      write(FILE_KEY_PREFIX + key, values);
    }
  }
  const files = uiState.names(FILE_KEY_PREFIX);
  files
    .slice(0, Math.max(0, files.length - MAX_REMEMBERED_FILES))
    .forEach(name => uiState.set(name, undefined));
}
