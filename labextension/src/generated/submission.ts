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
}

/** The fields of which a submission gives exactly one. */
export const SUBMISSION_SOURCES = [
  'code',
  'cells',
  'path',
  'notebook'
] as const;
