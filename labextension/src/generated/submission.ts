/**
 * Generated from jupyter_taskrun/schemas/submission.json by
 * `python -m jupyter_taskrun.schema ts`: do not edit (tests/test_schema.py checks it).
 */

import type { PartialJSONObject } from '@lumino/coreutils';

/**
 * What a user asks to run: exactly one source (code, cells, path or notebook)
 * plus options. A field given as null is the same as a field left out.
 */
export interface ITaskSubmission {
  /** Source code, run as one cell (a script when 'args' are given). */
  code?: string;
  /** Code cells, run in order; at most c.TaskRun.max_cells (default 2000). */
  cells?: string[];
  /**
   * A .py script or .ipynb notebook, relative to the server root. At most 4096
   * characters.
   */
  path?: string;
  /**
   * An inline notebook document (nbformat 4, or any version Jupyter converts).
   */
  notebook?: PartialJSONObject;
  /**
   * Display name of the task (default: from the source). At most 200
   * characters.
   */
  name?: string;
  /**
   * Kernel spec to run in (default: the server's default kernel). At most 200
   * characters.
   */
  kernel_name?: string;
  /**
   * Values injected papermill-style before the first cell; at most 64 levels
   * of nesting.
   */
  parameters?: PartialJSONObject;
  /** Seconds the whole task may run. Greater than 0. */
  timeout?: number;
  /** Seconds each cell may run. Greater than 0. */
  cell_timeout?: number;
  /** Environment variables of the kernel. */
  env?: { [key: string]: string };
  /**
   * Working directory, relative to the server root. At most 4096 characters.
   */
  cwd?: string;
  /**
   * Labels to filter tasks by; duplicates are dropped. At most 64 characters
   * each; at most 32 items.
   */
  tags?: string[];
  /** Higher runs first among queued tasks. From -1000 to 1000. */
  priority?: number;
  /** Bytes of memory the kernel may use. Greater than 0. */
  memory_limit?: number;
  /** Abstract resources the task needs (Dask worker resources). */
  resources?: { [key: string]: number };
  /**
   * A script's command-line arguments, sys.argv[1:] (with 'code' or a .py
   * 'path'). At most 65536 characters each; at most 1000 items.
   */
  args?: string[];
  /**
   * If the server stops while the task runs, queue it again at the next start
   * (at-least-once: it runs again from the start, at most
   * c.TaskRun.max_requeue_attempts times). Default false: it fails
   * 'interrupted'.
   */
  requeue_on_restart?: boolean;
  /**
   * An http:// or https:// URL the server POSTs a signed JSON summary to when
   * the task ends (a webhook; see c.TaskRun.webhook_*). Its host must match
   * c.TaskRun.webhook_allowed_hosts; no credentials in it. At most 2048
   * characters.
   */
  callback_url?: string;
  /**
   * Python variables to restore in the task kernel before the first cell:
   * {name: base64 of the variable pickled with cloudpickle}, at most 64. Each
   * at most c.TaskRun.max_variable_bytes once decoded, all together at most
   * c.TaskRun.max_task_variable_bytes; Python kernels only. The server never
   * unpickles them.
   */
  variables_in?: { [key: string]: string };
  /**
   * Variables the task sends back, pickled with cloudpickle, when it completes
   * (GET /taskrun/api/tasks/{id}/variables); '@result' is the last
   * expression's value. Caps: c.TaskRun.max_variable_bytes each,
   * c.TaskRun.max_task_variable_bytes in all; Python kernels only. At most 200
   * characters each; at most 64 items.
   */
  variables_out?: string[];
  /**
   * Files the task writes, as glob patterns relative to its working folder
   * ('results/*.csv', 'model.pt', 'out/**'; a matched folder brings every file
   * under it), collected when it ends (completed, failed, cancelled or timed
   * out) into its artifacts: GET /taskrun/api/tasks/{id}/files. No absolute
   * paths, no '..'; files over c.TaskRun.max_artifact_bytes, past
   * c.TaskRun.max_task_artifact_bytes or c.TaskRun.max_artifacts, and symlinks
   * out of the working folder are listed as refused, never cut. At most 1024
   * characters each; at most 100 items.
   */
  outputs?: string[];
  /**
   * Files or folders, relative to the server root and inside the task's
   * working folder, that the task reads. A local task reads them in place; a
   * Dask task gets them copied into its working folder on the worker, at the
   * same paths (at most c.TaskRun.max_staged_input_bytes in all). At most 4096
   * characters each; at most 100 items.
   */
  inputs?: string[];
  /**
   * A name for this entry of a batch (POST /taskrun/api/tasks/batch), so other
   * entries can name it in 'depends_on' and in {"$value": "KEY.name"} /
   * {"$result": "KEY"} parameters. Letters, digits, '_' and '-', starting with
   * a letter or '_'; unique in its batch.
   */
  key?: string;
  /**
   * Tasks that must end before this one is queued: task ids of yours, or (in a
   * batch) the 'key' of another entry. Until they have ended the task is
   * 'waiting'; it is queued when all have completed. See
   * on_dependency_failure. At most 100 items.
   */
  depends_on?: string[];
  /**
   * What happens when a dependency fails, times out or is cancelled: 'cancel'
   * (default) cancels this task naming it; 'run' runs it anyway.
   */
  on_dependency_failure?: string;
  /**
   * How many more times a failed or timed-out task is tried again, each try a
   * new task (retry_of names the first). Never after a cancel or refused
   * input. Default 0. From 0 to 100.
   */
  retries?: number;
  /**
   * Seconds before the first retry (default 0); each later one waits
   * retry_backoff times longer. From 0 to 86400.
   */
  retry_delay?: number;
  /**
   * Factor by which each retry's delay grows (default 1: the same delay every
   * time). From 1 to 100.
   */
  retry_backoff?: number;
}

/** The fields of which a submission gives exactly one. */
export const SUBMISSION_SOURCES = [
  'code',
  'cells',
  'path',
  'notebook'
] as const;
