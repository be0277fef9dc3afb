/**
 * The Files section of a task's detail view: the output files the task's
 * `outputs` patterns collected (path, size, Download; Open shows a text or an
 * image inline), the ones refused with the server's reason, the patterns that
 * matched nothing, and the executed notebook as HTML (with or without code).
 *
 * Downloads are fetched as bytes (resultsapi.ts) and saved under the server's
 * file name; an opened file is shown as text (`textContent`) or as an
 * `<img>`, so a task's HTML or SVG never runs in Lab's origin.
 */
import { downloadIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { formatBytes } from './format';
import { trans } from './i18n';
import { isTerminal, ITask, ITaskFile, ITaskFiles } from './models';
import { ResultsAPI, saveBlob } from './resultsapi';
import { h, iconNode, safeFileName, setText } from './utils';

/** Opened inline up to this size (bigger files: Download). */
const OPEN_MAX_BYTES = 2 * 1024 * 1024;
/** text shown of an opened file */
const TEXT_PREVIEW_CHARS = 200 * 1024;

/** Can `Open` show this file inline: text, JSON or an image, not too big? */
export function openable(file: ITaskFile): 'text' | 'image' | null {
  if (file.size > OPEN_MAX_BYTES) {
    return null;
  }
  const type = (file.content_type || '').split(';')[0].trim().toLowerCase();
  if (type.startsWith('image/')) {
    return 'image';
  }
  if (
    type.startsWith('text/') ||
    /^application\/(json|xml|javascript|x-yaml|yaml|x-sh|x-python)$/.test(
      type
    ) ||
    type.endsWith('+json') ||
    type.endsWith('+xml')
  ) {
    return 'text';
  }
  return null;
}

export class FilesView {
  constructor(taskId: string, onError: (title: string, e: unknown) => void) {
    this._taskId = taskId;
    this._onError = onError;
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-section');
    this.widget.addClass('jp-TaskRun-filesSection');
    const bar = h('div', 'jp-TaskRun-sectionBar');
    this._title = h('h2', 'jp-TaskRun-sectionTitle', trans.__('Files'));
    const spacer = h('span', 'jp-TaskRun-spacer');
    this._html = this._button(
      trans.__('Download HTML'),
      'jp-mod-html',
      () => void this.downloadHTML(false)
    );
    this._htmlNoInput = this._button(
      trans.__('HTML without code'),
      'jp-mod-htmlNoInput',
      () => void this.downloadHTML(true)
    );
    bar.append(this._title, spacer, this._html, this._htmlNoInput);
    this._notice = h('div', 'jp-TaskRun-logEmpty');
    this._list = h('table', 'jp-TaskRun-fileTable');
    this._refused = h('div', 'jp-TaskRun-fileRefused');
    this._missing = h('div', 'jp-TaskRun-fileMissing');
    this._preview = h('div', 'jp-TaskRun-filePreview');
    this._preview.hidden = true;
    this.widget.node.append(
      bar,
      this._notice,
      this._list,
      this._refused,
      this._missing,
      this._preview
    );
    this._render();
  }

  readonly widget: Widget;

  /** The task changed: the HTML needs a finished task; files come at its end. */
  setTask(task: ITask): void {
    const ended = isTerminal(task.status);
    const wasEnded = this._task ? isTerminal(this._task.status) : false;
    this._task = task;
    if (ended && !wasEnded) {
      void this.load();
    }
    this._render();
  }

  /** Read the manifest (`GET …/files`). */
  async load(): Promise<void> {
    const token = ++this._token;
    try {
      const files = await ResultsAPI.files(this._taskId);
      if (token === this._token && !this.widget.isDisposed) {
        this._files = files;
        this._render();
      }
    } catch {
      // shown as "not collected yet"; the next end or artifacts event retries
    }
  }

  /** An `artifacts` event: the manifest, as the server stored it. */
  artifacts(data: Partial<ITaskFiles>): void {
    if (data && Array.isArray(data.files)) {
      // the event carries no content types: read the listing
      void this.load();
    }
  }

  async download(file: ITaskFile): Promise<void> {
    try {
      const got = await ResultsAPI.file(this._taskId, file.path);
      saveBlob(got.blob, got.name ?? file.path.split('/').pop() ?? 'file');
    } catch (error) {
      this._onError(trans.__('Could not download %1', file.path), error);
    }
  }

  async open(file: ITaskFile): Promise<void> {
    const kind = openable(file);
    if (!kind) {
      return this.download(file);
    }
    try {
      const got = await ResultsAPI.file(this._taskId, file.path);
      this._closePreview();
      const head = h('div', 'jp-TaskRun-filePreviewBar');
      const close = h('button', 'jp-TaskRun-linkButton', trans.__('Close'));
      close.addEventListener('click', () => this._closePreview());
      head.append(h('code', '', file.path), close);
      let body: HTMLElement;
      if (kind === 'image') {
        const img = h('img', 'jp-TaskRun-filePreviewImage');
        this._objectURL = URL.createObjectURL(got.blob);
        img.src = this._objectURL;
        img.alt = file.path;
        body = img;
      } else {
        const text = await got.blob.text();
        body = h(
          'pre',
          'jp-TaskRun-filePreviewText',
          text.length > TEXT_PREVIEW_CHARS
            ? text.slice(0, TEXT_PREVIEW_CHARS) + '\n…'
            : text
        );
      }
      this._preview.dataset.path = file.path;
      this._preview.replaceChildren(head, body);
      this._preview.hidden = false;
    } catch (error) {
      this._onError(trans.__('Could not open %1', file.path), error);
    }
  }

  async downloadHTML(noInput: boolean): Promise<void> {
    try {
      const got = await ResultsAPI.notebookHTML(this._taskId, noInput);
      const stem = safeFileName(this._task?.name ?? 'task');
      const fallback = `${stem}-${this._taskId.slice(0, 8)}.html`;
      let name = got.name ?? fallback;
      if (noInput) {
        name = name.replace(/\.html$/, '-no-code.html');
      }
      saveBlob(got.blob, name);
    } catch (error) {
      this._onError(trans.__('Could not export the notebook as HTML'), error);
    }
  }

  dispose(): void {
    this._closePreview();
  }

  private _button(
    label: string,
    mod: string,
    onClick: () => void
  ): HTMLButtonElement {
    const b = h('button', `jp-mod-styled jp-TaskRun-fileAction ${mod}`);
    b.append(iconNode(downloadIcon), h('span', '', label));
    b.addEventListener('click', onClick);
    return b;
  }

  private _closePreview(): void {
    if (this._objectURL) {
      URL.revokeObjectURL(this._objectURL);
      this._objectURL = null;
    }
    this._preview.replaceChildren();
    this._preview.hidden = true;
  }

  private _render(): void {
    const task = this._task;
    const ended = !!task && isTerminal(task.status);
    for (const b of [this._html, this._htmlNoInput]) {
      b.disabled = !ended;
      b.title = ended
        ? b === this._html
          ? trans.__('Download the executed notebook as HTML')
          : trans.__('Download the executed notebook as HTML, outputs only')
        : trans.__('The executed notebook is ready when the task ends');
    }
    const f = this._files;
    const kept = f?.files ?? [];
    setText(
      this._title,
      kept.length ? trans.__('Files (%1)', kept.length) : trans.__('Files')
    );
    let notice = '';
    if (!f || !f.collected) {
      const asked = f ? f.outputs.length > 0 : false;
      notice = !ended
        ? trans.__('Output files are collected when the task ends.')
        : asked
          ? trans.__('No output files were collected.')
          : trans.__(
              'No output files: submit with "outputs": ["results/*.csv", …] to keep files the task writes.'
            );
    } else if (!kept.length) {
      notice = trans.__('No file was kept.');
    }
    setText(this._notice, notice);
    this._notice.hidden = !notice;
    this._renderKept(kept);
    const refused = f?.refused ?? [];
    this._refused.replaceChildren();
    this._refused.hidden = refused.length === 0;
    if (refused.length) {
      this._refused.appendChild(
        h('div', 'jp-TaskRun-fileSubtitle', trans.__('Not kept'))
      );
      const ul = h('ul', 'jp-TaskRun-fileRefusedList');
      for (const r of refused) {
        const li = h('li', 'jp-TaskRun-fileRefusedItem');
        li.dataset.path = r.path;
        li.append(
          h('code', '', r.path),
          h(
            'span',
            'jp-TaskRun-fileReason',
            r.size !== null && r.size !== undefined
              ? `${formatBytes(r.size)} — ${r.reason}`
              : r.reason
          )
        );
        ul.appendChild(li);
      }
      this._refused.appendChild(ul);
    }
    const missing = f?.missing ?? [];
    this._missing.hidden = missing.length === 0;
    setText(
      this._missing,
      missing.length ? trans.__('Matched no file: %1', missing.join(', ')) : ''
    );
  }

  private _renderKept(kept: ITaskFile[]): void {
    const key = JSON.stringify(kept.map(k => [k.path, k.size]));
    if (key === this._keptKey) {
      return;
    }
    this._keptKey = key;
    this._list.replaceChildren();
    this._list.hidden = kept.length === 0;
    for (const file of kept) {
      const tr = h('tr', 'jp-TaskRun-fileRow');
      tr.dataset.path = file.path;
      const path = h('td', 'jp-TaskRun-filePath', file.path);
      path.title = `${file.path}\nsha256 ${file.sha256}`;
      const size = h('td', 'jp-TaskRun-fileSize', formatBytes(file.size));
      const actions = h('td', 'jp-TaskRun-fileActions');
      const download = h(
        'button',
        'jp-TaskRun-linkButton jp-mod-download',
        trans.__('Download')
      );
      download.addEventListener('click', () => void this.download(file));
      actions.appendChild(download);
      if (openable(file)) {
        const open = h(
          'button',
          'jp-TaskRun-linkButton jp-mod-open',
          trans.__('Open')
        );
        open.addEventListener('click', () => void this.open(file));
        actions.appendChild(open);
      }
      tr.append(path, size, actions);
      this._list.appendChild(tr);
    }
  }

  private _taskId: string;
  private _onError: (title: string, e: unknown) => void;
  private _task: ITask | null = null;
  private _files: ITaskFiles | null = null;
  private _token = 0;
  private _keptKey = '';
  private _objectURL: string | null = null;
  private _title: HTMLElement;
  private _html: HTMLButtonElement;
  private _htmlNoInput: HTMLButtonElement;
  private _notice: HTMLElement;
  private _list: HTMLTableElement;
  private _refused: HTMLElement;
  private _missing: HTMLElement;
  private _preview: HTMLElement;
}
