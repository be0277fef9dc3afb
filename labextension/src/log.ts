/**
 * The log section of a task's detail view: stdout/stderr in order, `\r`
 * rewrites the current line, follow / pause, bounded in the page (the full log
 * stays downloadable).
 */
import { downloadIcon, pauseIcon, runIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { FeedState } from './feed';
import { trans } from './i18n';
import { stripAnsi } from './format';
import { h, iconNode, setText } from './utils';

/** Characters of log kept in the page; the full log stays downloadable. */
const LOG_MAX_CHARS = 400_000;

type Stream = 'stdout' | 'stderr';

export class LogView {
  constructor(onDownload: () => void) {
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-section');
    this.widget.addClass('jp-TaskRun-logSection');
    const node = this.widget.node;
    const bar = h('div', 'jp-TaskRun-sectionBar');
    bar.appendChild(h('h2', 'jp-TaskRun-sectionTitle', trans.__('Log')));
    this._state = h('span', 'jp-TaskRun-logState');
    bar.append(this._state, h('span', 'jp-TaskRun-spacer'));

    this._followLabel = h('label', 'jp-TaskRun-follow');
    this._followBox = h('input');
    this._followBox.type = 'checkbox';
    this._followBox.checked = true;
    this._followBox.addEventListener('change', () => {
      this._follow = this._followBox.checked;
      if (this._follow) {
        this._scrollToEnd();
      }
    });
    this._followLabel.append(
      this._followBox,
      document.createTextNode(' ' + trans.__('Follow'))
    );
    bar.appendChild(this._followLabel);

    this._pause = h('button', 'jp-TaskRun-smallButton jp-mod-pause');
    this._pause.addEventListener('click', () => this._togglePause());
    bar.appendChild(this._pause);

    const download = h('button', 'jp-TaskRun-smallButton jp-mod-download');
    download.appendChild(iconNode(downloadIcon, 'jp-TaskRun-buttonIcon'));
    download.appendChild(h('span', '', trans.__('Download')));
    download.title = trans.__('Download the full log');
    download.addEventListener('click', onDownload);
    bar.appendChild(download);

    this._notice = h('div', 'jp-TaskRun-logNotice');
    this._notice.hidden = true;
    this._log = h('pre', 'jp-TaskRun-log');
    this._log.setAttribute('aria-live', 'off');
    this._log.tabIndex = 0;
    this._log.addEventListener('scroll', () => {
      const nearEnd =
        this._log.scrollHeight - this._log.scrollTop - this._log.clientHeight <
        24;
      if (nearEnd !== this._follow && !this._autoScrolling) {
        this._follow = nearEnd;
        this._followBox.checked = nearEnd;
      }
      this._autoScrolling = false;
    });
    this._empty = h('div', 'jp-TaskRun-logEmpty', trans.__('No output yet.'));
    node.append(bar, this._notice, this._log, this._empty);
    this.render();
  }

  readonly widget: Widget;

  /** The feed's state and whether the task has finished (nothing more will come). */
  setState(state: FeedState, finished: boolean): void {
    this._feedState = state;
    this._finished = finished;
    if (finished && state === 'ended' && this._paused) {
      this._paused = false;
      this._flushPending();
    }
    this.render();
  }

  render(): void {
    const over = this._finished && this._feedState === 'ended';
    // nothing more arrives: no Pause, no Follow, no "live"
    this._pause.hidden = over;
    this._followLabel.hidden = over;
    this._pause.replaceChildren(
      iconNode(this._paused ? runIcon : pauseIcon, 'jp-TaskRun-buttonIcon')
    );
    const pending = this._pending.reduce((n, p) => n + p.text.length, 0);
    this._pause.appendChild(
      h(
        'span',
        '',
        this._paused
          ? pending
            ? trans.__('Resume (%1 new chars)', pending)
            : trans.__('Resume')
          : trans.__('Pause')
      )
    );
    this._pause.title = this._paused
      ? trans.__(
          'Show the log lines that arrived while paused and keep following'
        )
      : trans.__('Freeze the log view (new lines are kept)');
    const labels: { [k: string]: string } = {
      connecting: trans.__('connecting…'),
      live: trans.__('live'),
      reconnecting: trans.__('reconnecting…'),
      polling: trans.__('polling')
    };
    let state = this._paused ? 'paused' : this._feedState;
    if (over || (this._finished && state === 'live')) {
      state = 'ended';
    }
    setText(
      this._state,
      state === 'paused' ? trans.__('paused') : (labels[state] ?? '')
    );
    this._state.dataset.state = state;
    this._empty.hidden = this._chars > 0;
    setText(
      this._empty,
      over ? trans.__('No log output.') : trans.__('No output yet.')
    );
    this._log.hidden = this._chars === 0;
  }

  append(stream: Stream, text: string): void {
    if (!text) {
      return;
    }
    if (this._paused) {
      this._pending.push({ stream, text });
      if (this._pending.length % 20 === 1) {
        this.render();
      }
      return;
    }
    this._write(stream, text);
    this._afterWrite();
  }

  marker(message: string): void {
    const span = h('span', 'jp-TaskRun-logMarker', `\n[${message}]\n`);
    span.dataset.stream = 'marker';
    this._log.appendChild(span);
    this._chars += message.length + 4;
    this._afterWrite();
  }

  clear(): void {
    this._log.replaceChildren();
    this._pending = [];
    this._chars = 0;
    this._trimmed = false;
    this._notice.hidden = true;
    this.render();
  }

  /** Show what arrived while paused. */
  flush(): void {
    this._flushPending();
  }

  dispose(): void {
    if (this._frame !== null) {
      window.cancelAnimationFrame(this._frame);
      this._frame = null;
    }
  }

  private _togglePause(): void {
    this._paused = !this._paused;
    if (!this._paused) {
      this._flushPending();
    }
    this.render();
  }

  private _write(stream: Stream, text: string): void {
    const clean = stripAnsi(text);
    // a bare carriage return rewrites the current line (progress bars)
    const segments = clean.split(/\r(?!\n)/);
    segments.forEach((segment, index) => {
      if (index > 0) {
        this._rewindLine(stream);
      }
      if (!segment) {
        return;
      }
      const last = this._log.lastChild as HTMLElement | null;
      if (last && last.dataset?.stream === stream && last.firstChild) {
        (last.firstChild as Text).appendData(segment);
      } else {
        const span = h('span', `jp-TaskRun-${stream}`);
        span.dataset.stream = stream;
        span.appendChild(document.createTextNode(segment));
        this._log.appendChild(span);
      }
      this._chars += segment.length;
    });
    this._trim();
  }

  /** Drop the text after the last newline of the last span of `stream`. */
  private _rewindLine(stream: string): void {
    const last = this._log.lastChild as HTMLElement | null;
    if (!last || last.dataset?.stream !== stream || !last.firstChild) {
      return;
    }
    const node = last.firstChild as Text;
    const data = node.data;
    const cut = data.lastIndexOf('\n') + 1;
    if (cut < data.length) {
      node.deleteData(cut, data.length - cut);
      this._chars -= data.length - cut;
    }
  }

  private _trim(): void {
    while (this._chars > LOG_MAX_CHARS && this._log.firstChild) {
      const first = this._log.firstChild as HTMLElement;
      const node = first.firstChild as Text | null;
      const length = node?.data.length ?? 0;
      const excess = this._chars - LOG_MAX_CHARS;
      if (node && length > excess) {
        // keep whole lines: cut after the first newline past the excess
        const nl = node.data.indexOf('\n', excess);
        const cut = nl >= 0 ? nl + 1 : excess;
        node.deleteData(0, cut);
        this._chars -= cut;
      } else {
        first.remove();
        this._chars -= length;
      }
      this._trimmed = true;
    }
    if (this._trimmed && this._notice.hidden) {
      this._notice.hidden = false;
      this._notice.textContent = trans.__(
        'Earlier output is not shown here; use Download for the full log.'
      );
    }
  }

  private _afterWrite(): void {
    if (this._log.hidden) {
      this.render();
    }
    if (this._follow) {
      this._scrollToEnd();
    }
  }

  private _flushPending(): void {
    const pending = this._pending;
    this._pending = [];
    for (const p of pending) {
      this._write(p.stream, p.text);
    }
    if (pending.length) {
      this._afterWrite();
    }
  }

  private _scrollToEnd(): void {
    if (this._frame !== null) {
      return;
    }
    this._frame = window.requestAnimationFrame(() => {
      this._frame = null;
      this._autoScrolling = true;
      this._log.scrollTop = this._log.scrollHeight;
    });
  }

  private _feedState: FeedState = 'idle';
  private _finished = false;
  private _follow = true;
  private _autoScrolling = false;
  private _paused = false;
  private _pending: Array<{ stream: Stream; text: string }> = [];
  private _chars = 0;
  private _trimmed = false;
  private _frame: number | null = null;
  private _state: HTMLElement;
  private _followLabel: HTMLElement;
  private _followBox: HTMLInputElement;
  private _pause: HTMLButtonElement;
  private _notice: HTMLElement;
  private _log: HTMLElement;
  private _empty: HTMLElement;
}
