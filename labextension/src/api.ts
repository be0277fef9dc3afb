/**
 * The one way this extension talks to the server: `requestAPI` goes through
 * ServerConnection so the base URL, token/cookie auth and XSRF all work, also
 * under JupyterHub.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import type {
  IClearResult,
  ISchedule,
  IScheduleInput,
  ISchedulePreview,
  IServerStatus,
  ITask,
  ITaskList,
  ITaskListQuery,
  ITaskMetrics,
  ITaskOutputs,
  ITaskSubmission,
  TaskStatus
} from './models';

export const API_NAMESPACE = 'taskrun/api';

let defaultSettings: ServerConnection.ISettings | null = null;

/** The server settings shared by every request (made once). */
export function serverSettings(): ServerConnection.ISettings {
  if (!defaultSettings) {
    defaultSettings = ServerConnection.makeSettings();
  }
  return defaultSettings;
}

/** Replace the settings (the plugin passes the app's service manager settings). */
export function setServerSettings(settings: ServerConnection.ISettings): void {
  defaultSettings = settings;
}

/** An error answer of the API: carries the status and the server's message. */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly reason: string = ''
  ) {
    super(message);
    this.name = 'APIError';
  }
}

type QueryValue = string | number | boolean | null | undefined;

/** `a/b` + `{x: 1, y: undefined}` → `a/b?x=1` */
export function withQuery(
  path: string,
  query: { [key: string]: QueryValue } = {}
): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(query)) {
    if (value === undefined || value === null || value === '') {
      continue;
    }
    parts.push(
      `${encodeURIComponent(key)}=${encodeURIComponent(String(value))}`
    );
  }
  return parts.length ? `${path}?${parts.join('&')}` : path;
}

/** Absolute URL of an API route (no auth added). */
export function apiURL(endPoint = ''): string {
  return URLExt.join(serverSettings().baseUrl, API_NAMESPACE, endPoint);
}

/**
 * URL for an EventSource. EventSource cannot send headers: the browser sends
 * the Jupyter cookie, and the token is appended only when the settings have one.
 */
export function eventSourceURL(
  endPoint: string,
  query: { [key: string]: QueryValue } = {}
): string {
  const settings = serverSettings();
  const q = { ...query };
  if (settings.token) {
    q.token = settings.token;
  }
  return withQuery(apiURL(endPoint), q);
}

/**
 * Call the API and return the parsed JSON (or text for non-JSON answers,
 * `undefined` for 204).
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {},
  settings: ServerConnection.ISettings = serverSettings()
): Promise<T> {
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (response.status === 204) {
    return undefined as T;
  }
  const contentType = response.headers.get('Content-Type') ?? '';
  const text = await response.text();
  let body: unknown = text;
  if (contentType.includes('json') && text.length > 0) {
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    let reason = '';
    if (body && typeof body === 'object') {
      const b = body as { message?: unknown; reason?: unknown };
      if (typeof b.message === 'string' && b.message) {
        message = b.message;
      }
      if (typeof b.reason === 'string') {
        reason = b.reason;
      }
    } else if (typeof body === 'string' && body.trim()) {
      message = body.trim().slice(0, 500);
    }
    throw new APIError(response.status, message, reason);
  }
  return body as T;
}

function jsonInit(method: string, body?: unknown): RequestInit {
  const init: RequestInit = { method };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = { 'Content-Type': 'application/json' };
  }
  return init;
}

const taskPath = (id: string, sub = ''): string =>
  `tasks/${encodeURIComponent(id)}${sub ? '/' + sub : ''}`;

/** Typed wrappers of every route the sidebar uses. */
export const TaskAPI = {
  status(): Promise<IServerStatus> {
    return requestAPI<IServerStatus>('status');
  },
  list(query: ITaskListQuery = {}): Promise<ITaskList> {
    return requestAPI<ITaskList>(
      withQuery('tasks', {
        status: query.status,
        tag: query.tag,
        owner: query.owner,
        name: query.name,
        q: query.q,
        limit: query.limit,
        cursor: query.cursor,
        schedule: query.schedule,
        sort: query.sort,
        created_after: query.created_after,
        created_before: query.created_before
      })
    );
  },
  get(id: string): Promise<ITask> {
    return requestAPI<ITask>(taskPath(id));
  },
  submit(submission: ITaskSubmission): Promise<ITask> {
    return requestAPI<ITask>('tasks', jsonInit('POST', submission));
  },
  cancel(id: string): Promise<ITask> {
    return requestAPI<ITask>(taskPath(id, 'cancel'), jsonInit('POST', {}));
  },
  rerun(id: string): Promise<ITask> {
    return requestAPI<ITask>(taskPath(id, 'rerun'), jsonInit('POST', {}));
  },
  remove(id: string): Promise<void> {
    return requestAPI<void>(taskPath(id), { method: 'DELETE' });
  },
  /**
   * Delete the caller's finished tasks with one of `statuses`, created before
   * `before` (ISO 8601 UTC) when given: `DELETE /tasks?status=…&before=…`.
   */
  clearFinished(
    statuses: readonly TaskStatus[],
    before?: string
  ): Promise<IClearResult> {
    return requestAPI<IClearResult>(
      withQuery('tasks', { status: statuses.join(','), before }),
      // 'no-store' (Lab's default) appends a cache-busting `&<ms>` to the
      // query, which this route refuses as an unknown parameter
      { method: 'DELETE', cache: 'no-cache' }
    );
  },
  logs(
    id: string,
    options: { stream?: 'stdout' | 'stderr'; offset?: number } = {}
  ): Promise<string> {
    return requestAPI<string>(withQuery(taskPath(id, 'logs'), options));
  },
  /** Log text from a byte offset, and the offset to ask for next. */
  async logsFrom(
    id: string,
    offset: number
  ): Promise<{ text: string; next: number }> {
    const settings = serverSettings();
    const url = URLExt.join(
      settings.baseUrl,
      API_NAMESPACE,
      withQuery(taskPath(id, 'logs'), { offset })
    );
    const response = await ServerConnection.makeRequest(url, {}, settings);
    const text = await response.text();
    if (!response.ok) {
      throw new APIError(response.status, text.slice(0, 500));
    }
    const header = Number(response.headers.get('X-Log-Offset'));
    const next =
      Number.isFinite(header) && header > 0
        ? header
        : offset + new TextEncoder().encode(text).length;
    return { text, next };
  },
  outputs(id: string): Promise<ITaskOutputs> {
    return requestAPI<ITaskOutputs>(taskPath(id, 'outputs'));
  },
  metrics(id: string): Promise<ITaskMetrics> {
    return requestAPI<ITaskMetrics>(taskPath(id, 'metrics'));
  },
  /**
   * Save the executed notebook into the server's contents (POST, XSRF-checked).
   * An existing file is kept unless `overwrite`: then the saved copy is opened as it is.
   */
  async saveNotebook(
    id: string,
    path: string,
    overwrite = false
  ): Promise<{ path: string }> {
    try {
      return await requestAPI<{ path: string }>(
        taskPath(id, 'notebook'),
        jsonInit('POST', { path, overwrite })
      );
    } catch (error) {
      if (!overwrite && error instanceof APIError && error.status === 409) {
        return { path };
      }
      throw error;
    }
  }
};

const schedulePath = (id: string, sub = ''): string =>
  `schedules/${encodeURIComponent(id)}${sub ? '/' + sub : ''}`;

/** Typed wrappers of the schedule routes (docs: the "Schedules" section). */
export const ScheduleAPI = {
  async list(): Promise<ISchedule[]> {
    const answer = await requestAPI<{ schedules: ISchedule[] }>('schedules');
    return answer.schedules;
  },
  get(id: string): Promise<ISchedule> {
    return requestAPI<ISchedule>(schedulePath(id));
  },
  create(input: IScheduleInput): Promise<ISchedule> {
    return requestAPI<ISchedule>('schedules', jsonInit('POST', input));
  },
  /** Any subset of the fields; `{enabled: false}` pauses, `true` resumes. */
  update(id: string, fields: IScheduleInput): Promise<ISchedule> {
    return requestAPI<ISchedule>(schedulePath(id), jsonInit('PATCH', fields));
  },
  remove(id: string): Promise<void> {
    return requestAPI<void>(schedulePath(id), { method: 'DELETE' });
  },
  /** Run it now, whatever its overlap policy says: the new task. */
  run(id: string): Promise<ITask> {
    return requestAPI<ITask>(schedulePath(id, 'run'), jsonInit('POST', {}));
  },
  /** The cron in words and its next times; a 400 names the bad field. */
  preview(cron: string, timezone: string): Promise<ISchedulePreview> {
    return requestAPI<ISchedulePreview>(
      withQuery('schedules/preview', { cron, timezone }),
      // no cache-busting key appended (see clearFinished)
      { cache: 'no-cache' }
    );
  },
  /** The schedule's tasks, newest first. */
  history(id: string, limit = 20): Promise<ITaskList> {
    return TaskAPI.list({ schedule: id, limit });
  }
};
