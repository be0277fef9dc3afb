/**
 * What a task gives back besides its logs (issue 15): recorded values, the
 * collected output files and the executed notebook as HTML
 * (jupyter_taskrun/server/results.py). Everything goes through
 * ServerConnection (base URL, token or cookie), as api.ts does; a download is
 * fetched as bytes and handed to the browser as a Blob, never by navigating
 * to the API (whose answers are attachments with a sandboxing CSP).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { API_NAMESPACE, APIError, requestAPI, serverSettings } from './api';
import type { ITaskFiles, ITaskValues } from './models';

const taskPath = (id: string, sub: string): string =>
  `tasks/${encodeURIComponent(id)}/${sub}`;

/** `a/b c/d.txt` → `a/b%20c/d.txt` (each part encoded, the slashes kept). */
export function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

/** The file name of a `Content-Disposition` header (RFC 6266: `filename*` first). */
export function dispositionName(header: string | null): string | null {
  if (!header) {
    return null;
  }
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      // fall back to the ASCII name
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header);
  return plain ? plain[1] : null;
}

/** A fetched body: its bytes, the server's file name and type. */
export interface IFetched {
  blob: Blob;
  name: string | null;
  contentType: string;
}

async function fetchBytes(endPoint: string): Promise<IFetched> {
  const settings = serverSettings();
  const url = URLExt.join(settings.baseUrl, API_NAMESPACE, endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, {}, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  if (!response.ok) {
    const text = await response.text();
    let message = text.trim().slice(0, 500) || `${response.status}`;
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? message;
    } catch {
      // not JSON: the text says it
    }
    throw new APIError(response.status, message);
  }
  const contentType =
    response.headers.get('Content-Type') ?? 'application/octet-stream';
  const buffer = await response.arrayBuffer();
  return {
    blob: new Blob([buffer], { type: contentType }),
    name: dispositionName(response.headers.get('Content-Disposition')),
    contentType
  };
}

/** Hand a Blob to the browser as a download named `name`. */
export function saveBlob(blob: Blob, name: string): void {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export const ResultsAPI = {
  values(id: string): Promise<ITaskValues> {
    return requestAPI<ITaskValues>(taskPath(id, 'values'));
  },
  files(id: string): Promise<ITaskFiles> {
    return requestAPI<ITaskFiles>(taskPath(id, 'files'));
  },
  /** One collected file, byte-identical. */
  file(id: string, path: string): Promise<IFetched> {
    return fetchBytes(taskPath(id, `files/${encodePath(path)}`));
  },
  /** The executed notebook as HTML (nbconvert); `noInput` drops the code. */
  notebookHTML(id: string, noInput = false): Promise<IFetched> {
    const query = noInput ? '?format=html&no_input=1' : '?format=html';
    return fetchBytes(taskPath(id, `notebook${query}`));
  }
};
