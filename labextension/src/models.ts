/**
 * TypeScript mirrors of the Python models (jupyter_taskrun/models.py) as the
 * HTTP API serialises them; see docs/API_CONTRACT.md.
 */
import type { IOutput } from '@jupyterlab/nbformat';
import type { PartialJSONObject } from '@lumino/coreutils';

import type { ITaskSubmission } from './generated/submission';

export type TaskStatus =
  | 'waiting'
  | 'queued'
  | 'running'
  | 'completed'
  | 'failed'
  | 'cancelled'
  | 'timed_out';

export const TASK_STATUSES: readonly TaskStatus[] = [
  'waiting',
  'queued',
  'running',
  'completed',
  'failed',
  'cancelled',
  'timed_out'
];

export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set<TaskStatus>([
  'completed',
  'failed',
  'cancelled',
  'timed_out'
]);

export function isTerminal(status: TaskStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

export type SourceKind = 'code' | 'cells' | 'path' | 'notebook';

export interface ITaskProgress {
  value: number;
  total: number | null;
  message: string;
}

export interface ITaskError {
  ename: string;
  evalue: string;
  traceback: string[];
  cell_index: number | null;
  reason: string;
}

export interface ITaskMetricsSummary {
  queue_wait?: number | null;
  wall?: number | null;
  kernel_start?: number | null;
  cpu_user?: number | null;
  cpu_system?: number | null;
  peak_rss?: number | null;
  output_bytes?: number | null;
  /** per cell: a number of seconds, or {cell_index, duration, status} */
  cell_durations?: Array<number | ICellDuration | null>;
  [key: string]: unknown;
}

export interface ICellDuration {
  cell_index: number;
  duration: number | null;
  status?: 'ok' | 'error' | string;
}

export interface ITaskResult {
  data: PartialJSONObject;
}

/** A task as `GET /taskrun/api/tasks/{id}` returns it. */
export interface ITask {
  id: string;
  name: string;
  status: TaskStatus;
  owner: string;
  kernel_name: string;
  source_kind: SourceKind;
  path: string | null;
  tags: string[];
  priority: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  progress: ITaskProgress | null;
  error: ITaskError | null;
  metrics: ITaskMetricsSummary;
  result: ITaskResult | null;
  executor: 'local' | 'dask' | string;
  worker: string | null;
  rerun_of: string | null;
  last_event_id: number;
  /** 1-based position in the queue, only while queued */
  queue_position?: number | null;
  /**
   * How the code ended, as `python script.py` reports it (SystemExit's code,
   * 1 for an uncaught exception in a script, the kernel's status when it
   * died); null while running or when nothing says.
   */
  exit_code?: number | null;
  /** the schedule that made this task (a firing or "run now"), else null */
  schedule_id?: string | null;
  /** the cron time a firing ran for (ISO, `Z`); null for other tasks */
  scheduled_for?: string | null;
  /** the latest value recorded (`record()`) per name */
  values?: { [name: string]: unknown };
  /** the submission's parameters, when the server sends them */
  parameters?: { [name: string]: unknown };
  /** workflows (see dependencies.ts): the batch entry's key, what it waits for */
  key?: string | null;
  depends_on?: string[];
  waiting_for?: string[];
  parameter_refs?: { [name: string]: unknown };
  /** retries: 0 for the first try; the first try's id; the next try's id */
  retry?: number;
  retry_of?: string | null;
  retried_as?: string | null;
  not_before?: string | null;
  /** shared by the tasks of one batch of several (the sidebar groups them: batchgroups.ts) */
  batch_id?: string | null;
}

/** POST /taskrun/api/tasks: generated from the one submission schema (jupyter_taskrun/schemas/submission.json). */
export type { ITaskSubmission } from './generated/submission';

/** `DELETE /taskrun/api/tasks?status=…&before=…`: what was deleted (the caller's tasks only). */
export interface IClearResult {
  deleted: number;
  ids: string[];
}

export interface ITaskList {
  tasks: ITask[];
  next_cursor: string | null;
}

export interface ITaskListQuery {
  status?: TaskStatus | '';
  tag?: string;
  owner?: string;
  name?: string;
  /** substring search (a server that does not know it ignores it) */
  q?: string;
  limit?: number;
  cursor?: string | null;
  /** the tasks of one schedule (its history) */
  schedule?: string;
  /** `values.NAME` (ascending) or `-values.NAME`: by a recorded value, tasks without it last;
   * or a field: created, name, status, duration, finished (`-` first: descending) */
  sort?: string;
  /** ISO times: created at or after / before */
  created_after?: string;
  created_before?: string;
}

export type TaskEventType =
  | 'status'
  | 'log'
  | 'output'
  | 'progress'
  | 'metrics'
  | 'cell'
  | 'result'
  | 'truncated'
  | 'clear'
  | 'value'
  | 'artifacts';

export const TASK_EVENT_TYPES: readonly TaskEventType[] = [
  'status',
  'log',
  'output',
  'progress',
  'metrics',
  'cell',
  'result',
  'truncated',
  'clear',
  'value',
  'artifacts'
];

export interface IStatusEventData {
  status: TaskStatus;
  reason?: string;
  error?: ITaskError;
}

export interface ILogEventData {
  stream: 'stdout' | 'stderr';
  text: string;
}

export interface IOutputEventData {
  cell_index: number | null;
  output: IOutput;
  /** set when the output was displayed with a display id */
  display_id?: string;
  /** an `update_display_data`: replaces the outputs with this display id */
  update?: boolean;
}

/** A cell's displayed outputs were cleared (nbclient's `clear_output`). */
export interface IClearEventData {
  cell_index: number | null;
}

export interface IMetricsSample {
  /** seconds since the task started */
  t: number;
  /** CPU percent of the kernel process tree */
  cpu: number;
  /** resident memory in bytes */
  rss: number;
}

export interface IMetricsEventData extends IMetricsSample {
  cpu_user?: number;
  cpu_system?: number;
  peak_rss?: number;
}

export interface ICellEventData {
  cell_index: number;
  phase: 'start' | 'end';
  duration?: number;
  status?: 'ok' | 'error';
}

export interface ITruncatedEventData {
  limit: number;
  message: string;
}

/** A `value` event: one `record(name, value, step=…)`. */
export interface IValueEventData {
  name: string;
  value: unknown;
  step?: number | null;
}

/** One recording of a value (`GET …/values`, `series`). */
export interface IValuePoint {
  value: unknown;
  step: number | null;
  time: string;
  seq: number;
}

/** `GET /taskrun/api/tasks/{id}/values` */
export interface ITaskValues {
  task_id: string;
  values: { [name: string]: unknown };
  series: { [name: string]: IValuePoint[] };
}

/** A collected output file of `GET …/files`. */
export interface ITaskFile {
  path: string;
  size: number;
  sha256: string;
  content_type: string;
}

/** `GET /taskrun/api/tasks/{id}/files` (also the data of an `artifacts` event, without `task_id`). */
export interface ITaskFiles {
  task_id: string;
  /** the submission's `outputs` patterns */
  outputs: string[];
  /** false until the task's outputs were collected (at its end) */
  collected: boolean;
  files: ITaskFile[];
  refused: Array<{ path: string; size: number | null; reason: string }>;
  /** patterns that matched nothing */
  missing: string[];
}

/** One entry of a task's event log (`GET /taskrun/api/tasks/{id}/events`). */
export interface ITaskEvent<T = unknown> {
  task_id: string;
  seq: number;
  type: TaskEventType;
  time: string;
  data: T;
}

export type ChangeType =
  'created' | 'status' | 'progress' | 'deleted' | 'schedule' | 'values';

export const CHANGE_TYPES: readonly ChangeType[] = [
  'created',
  'status',
  'progress',
  'deleted',
  'schedule',
  'values'
];

/** One entry of the global change feed (`GET /taskrun/api/events`). */
export interface IChange {
  seq: number;
  type: ChangeType;
  task_id: string;
  time: string;
  /**
   * the task (created/status), {progress, id, owner} (progress), {owner}
   * (deleted) or {action, owner, schedule} (schedule; `task_id` is then the
   * schedule's id)
   */
  data: ITask | IProgressChangeData | IScheduleChangeData | { owner?: string };
}

/** `data` of a `progress` entry of the change feed. */
export interface IProgressChangeData {
  progress: ITaskProgress;
  id: string;
  owner: string;
}

/** `GET /taskrun/api/tasks/{id}/metrics` */
export interface ITaskMetrics {
  summary: ITaskMetricsSummary;
  samples: IMetricsSample[];
  cells: ICellDuration[];
}

/** `GET /taskrun/api/tasks/{id}/outputs` */
export interface ITaskOutputs {
  outputs: Array<IOutput & { cell_index?: number | null; display_id?: string }>;
}

/** `GET /taskrun/api/status` */
export interface IServerStatus {
  version: string;
  executor: string | { kind: string; [key: string]: unknown };
  capacity: number;
  running: number;
  queued: number;
  max_queued: number;
}

export interface ICounts {
  running: number;
  queued: number;
}

// ---------------------------------------------------------------- schedules

export type ScheduleOverlap = 'skip' | 'queue' | 'cancel_previous';
export type ScheduleCatchUp = 'skip' | 'run_once';

/** A schedule as the API serialises it (`GET /taskrun/api/schedules/{id}`). */
export interface ISchedule {
  id: string;
  name: string;
  owner: string;
  /** a submission exactly as `POST /taskrun/api/tasks` accepts it */
  task: ITaskSubmission;
  /** 5 fields, or an alias such as `@daily` */
  cron: string;
  /** IANA time zone name */
  timezone: string;
  /** the cron in words, made by the server */
  description: string;
  /** false = paused */
  enabled: boolean;
  start_at: string | null;
  end_at: string | null;
  max_runs: number | null;
  overlap: ScheduleOverlap;
  catch_up: ScheduleCatchUp;
  callback_url: string | null;
  created_at: string;
  updated_at: string;
  /** the next firing times (ISO with the zone's offset); [] when paused or ended */
  next_runs: string[];
  last_run: IScheduleLastRun | null;
  /** tasks this schedule made (firings + run now) */
  run_count: number;
  /** by status, of its tasks that still exist */
  counts: { [status: string]: number };
  /** firings that made no task (overlap skip, missed, refused) */
  skipped?: number;
  /** a firing held back by `overlap: queue` until the running one ends */
  pending_for?: string | null;
  /** why the last firing made no task, if it did not */
  last_error?: string | null;
}

export interface IScheduleLastRun {
  task_id: string;
  status: TaskStatus;
  scheduled_for: string | null;
  created_at: string;
}

/** The fields `POST /schedules` accepts; `PATCH` takes any subset. */
export interface IScheduleInput {
  name?: string;
  task?: ITaskSubmission;
  cron?: string;
  timezone?: string;
  enabled?: boolean;
  start_at?: string | null;
  end_at?: string | null;
  max_runs?: number | null;
  overlap?: ScheduleOverlap;
  catch_up?: ScheduleCatchUp;
  callback_url?: string | null;
}

/** `GET /schedules/preview?cron=&timezone=` */
export interface ISchedulePreview {
  cron: string;
  timezone: string;
  description: string;
  next_runs: string[];
}

/** `data` of a `schedule` entry of the change feed. */
export interface IScheduleChangeData {
  action: 'created' | 'updated' | 'deleted' | 'fired';
  owner: string;
  /** absent for `deleted` */
  schedule?: ISchedule;
}
