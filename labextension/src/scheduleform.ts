/**
 * The values of the schedule dialog: the raw text of each field, their
 * parsing into the body of `POST` / `PATCH /taskrun/api/schedules`, and how
 * the views print a firing time.
 *
 * Guarantees: no DOM; every refusal is a translated sentence naming the
 * field; parameters are parsed exactly as the "Run as task" dialog parses
 * them (submitform.ts); a field the dialog does not show is kept as it was
 * (an edit sends the schedule's task with only the parameters replaced).
 */
import { formatDuration } from './format';
import { trans } from './i18n';
import type {
  ISchedule,
  IScheduleInput,
  ITaskSubmission,
  ScheduleCatchUp,
  ScheduleOverlap
} from './models';
import { parseParameters } from './submitform';
import { parseTime } from './utils';

/** The dialog's fields as typed. */
export interface IScheduleRaw {
  name: string;
  cron: string;
  timezone: string;
  parameters: string;
  overlap: ScheduleOverlap;
  catchUp: ScheduleCatchUp;
  enabled: boolean;
  callbackUrl: string;
}

export const OVERLAPS: readonly ScheduleOverlap[] = [
  'skip',
  'queue',
  'cancel_previous'
];
export const CATCH_UPS: readonly ScheduleCatchUp[] = ['skip', 'run_once'];

export function overlapLabel(value: ScheduleOverlap): string {
  switch (value) {
    case 'queue':
      return trans.__('Queue it after the running one');
    case 'cancel_previous':
      return trans.__('Cancel the running one');
    default:
      return trans.__('Skip this run');
  }
}

export function catchUpLabel(value: ScheduleCatchUp): string {
  return value === 'run_once'
    ? trans.__('Run once for the missed times')
    : trans.__('Skip the missed times');
}

/** The browser's time zone (the default of a new schedule). */
export function browserTimeZone(): string {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
  } catch {
    return 'UTC';
  }
}

/** Every IANA zone the browser knows (for suggestions; [] when it cannot say). */
export function knownTimeZones(): string[] {
  const intl = Intl as unknown as {
    supportedValuesOf?: (key: string) => string[];
  };
  try {
    return intl.supportedValuesOf?.('timeZone') ?? [];
  } catch {
    return [];
  }
}

/** The starting values: the schedule's when editing, else the defaults. */
export function initialValues(
  schedule: ISchedule | null,
  defaultName: string
): IScheduleRaw {
  if (!schedule) {
    return {
      name: defaultName,
      cron: '',
      timezone: browserTimeZone(),
      parameters: '',
      overlap: 'skip',
      catchUp: 'skip',
      enabled: true,
      callbackUrl: ''
    };
  }
  const params = schedule.task.parameters;
  return {
    name: schedule.name,
    cron: schedule.cron,
    timezone: schedule.timezone,
    parameters:
      params && Object.keys(params).length ? JSON.stringify(params) : '',
    overlap: schedule.overlap,
    catchUp: schedule.catch_up,
    enabled: schedule.enabled,
    callbackUrl: schedule.callback_url ?? ''
  };
}

/** An http(s) URL, or a sentence saying why not. */
export function checkCallbackUrl(text: string): string {
  const url = text.trim();
  if (!url) {
    return '';
  }
  let parsed: URL | null = null;
  try {
    parsed = new URL(url);
  } catch {
    parsed = null;
  }
  if (!parsed || !/^https?:$/.test(parsed.protocol) || !parsed.host) {
    return trans.__(
      'Callback URL must be an http:// or https:// address, e.g. https://example.org/hook.'
    );
  }
  return '';
}

/** The parameters field's error ('' when valid or empty). */
export function checkParameters(text: string): string {
  const parsed = parseParameters(text);
  return 'error' in parsed ? parsed.error : '';
}

/**
 * The request body for the typed values: `base` is the task to run (a new
 * schedule's file, or the edited schedule's task).
 */
export function parseScheduleValues(
  raw: IScheduleRaw,
  base: ITaskSubmission,
  defaultName: string,
  previousName = ''
): { input: IScheduleInput } | { error: string } {
  const cron = raw.cron.trim();
  if (!cron) {
    return {
      error: trans.__('Cron: give 5 fields (e.g. 0 3 * * *) or an alias.')
    };
  }
  const parameters = parseParameters(raw.parameters);
  if ('error' in parameters) {
    return { error: parameters.error };
  }
  const urlError = checkCallbackUrl(raw.callbackUrl);
  if (urlError) {
    return { error: urlError };
  }
  const name = raw.name.trim() || defaultName;
  const task: ITaskSubmission = { ...base };
  if (parameters.value) {
    task.parameters = parameters.value;
  } else {
    delete task.parameters;
  }
  // the runs are named after the schedule unless their task was named apart
  if (!task.name || task.name === previousName) {
    task.name = name;
  }
  const input: IScheduleInput = {
    name,
    task,
    cron,
    overlap: raw.overlap,
    catch_up: raw.catchUp,
    enabled: raw.enabled,
    callback_url: raw.callbackUrl.trim() || null
  };
  const timezone = raw.timezone.trim();
  if (timezone) {
    input.timezone = timezone;
  }
  return { input };
}

/** The API's field names, as the server's messages quote them. */
const FIELD_OF_NAME: { [name: string]: keyof IScheduleRaw } = {
  name: 'name',
  cron: 'cron',
  timezone: 'timezone',
  parameters: 'parameters',
  overlap: 'overlap',
  catch_up: 'catchUp',
  enabled: 'enabled',
  callback_url: 'callbackUrl'
};

/**
 * Which field a refusal of the server names: the quoted field it starts with
 * (`'timezone': unknown time zone …`), else the first field it mentions,
 * else `cron`.
 */
export function fieldOfError(message: string): keyof IScheduleRaw {
  const quoted = /^'([a-z_]+)'/.exec(message.trim());
  if (quoted && FIELD_OF_NAME[quoted[1]]) {
    return FIELD_OF_NAME[quoted[1]];
  }
  const m = message.toLowerCase();
  if (/time ?zone/.test(m)) {
    return 'timezone';
  }
  if (/callback/.test(m)) {
    return 'callbackUrl';
  }
  if (/parameters/.test(m)) {
    return 'parameters';
  }
  return 'cron';
}

const formats = new Map<string, Intl.DateTimeFormat>();

/** "Thu 3 Dec, 03:00" in the schedule's time zone (the browser's if unknown). */
export function formatRunTime(iso: string, timezone: string): string {
  const ms = parseTime(iso);
  if (ms === null) {
    return iso;
  }
  let format = formats.get(timezone);
  if (!format) {
    const options: Intl.DateTimeFormatOptions = {
      weekday: 'short',
      day: 'numeric',
      month: 'short',
      hour: '2-digit',
      minute: '2-digit'
    };
    try {
      format = new Intl.DateTimeFormat(undefined, {
        ...options,
        timeZone: timezone || undefined
      });
    } catch {
      format = new Intl.DateTimeFormat(undefined, options);
    }
    formats.set(timezone, format);
  }
  return format.format(new Date(ms));
}

/** "in 42 s", "in 2 h 05 min" (the duration convention of format.ts), or "now". */
export function formatUntil(iso: string, now = Date.now()): string {
  const ms = parseTime(iso);
  if (ms === null) {
    return '';
  }
  const seconds = (ms - now) / 1000;
  if (seconds < 1) {
    return trans.__('due now');
  }
  return trans.__('in %1', formatDuration(Math.round(seconds)));
}
