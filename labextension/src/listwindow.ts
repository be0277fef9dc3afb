/**
 * The window of a long task list that is in the DOM (panel.ts), and the next
 * page loaded on scroll.
 *
 * Guarantees: at most `MIN_ROWS` rows, or about two screens more than the
 * visible ones, are in the DOM whatever the number of loaded tasks; the rows
 * outside the window are stood in for by padding of their estimated height
 * (the mean height of the rows measured so far), so the scroll bar keeps its
 * length and place; scrolling within `LOAD_AHEAD` rows of the end of the
 * loaded tasks asks for the next page.
 */
import { Throttler } from '@lumino/polling';

/** lists this short are rendered whole (no estimate involved) */
const MIN_ROWS = 200;
/** rows rendered above and below the visible ones */
const BUFFER = 40;
/** the next page loads this many rows before the end */
const LOAD_AHEAD = 30;
const DEFAULT_ROW_HEIGHT = 48;

export class ListWindow {
  constructor(options: {
    scroller: HTMLElement;
    list: HTMLElement;
    /** re-render (the window moved) */
    onScroll: () => void;
    /** load the next page, if any */
    loadMore: () => void;
  }) {
    this._scroller = options.scroller;
    this._list = options.list;
    this._loadMore = options.loadMore;
    this._throttle = new Throttler(() => options.onScroll(), {
      limit: 50,
      edge: 'trailing'
    });
    this._onScroll = () => void this._throttle.invoke();
    this._scroller.addEventListener('scroll', this._onScroll, {
      passive: true
    });
  }

  /** The [start, end) of the `count` rows to render now. */
  range(count: number, hasMore: boolean): [number, number] {
    const rowHeight = this._rowHeight;
    let start = 0;
    let end = count;
    if (count > MIN_ROWS) {
      const offset = Math.max(0, this._scroller.scrollTop - this._listTop());
      const visible = Math.ceil(this._scroller.clientHeight / rowHeight) + 1;
      start = Math.max(0, Math.floor(offset / rowHeight) - BUFFER);
      end = Math.min(count, start + visible + 2 * BUFFER);
    }
    const lastVisible =
      Math.floor(
        (this._scroller.scrollTop +
          this._scroller.clientHeight -
          this._listTop()) /
          rowHeight
      ) + 1;
    if (hasMore && count > 0 && lastVisible >= count - LOAD_AHEAD) {
      this._loadMore();
    }
    this._list.style.paddingTop = `${start * rowHeight}px`;
    this._list.style.paddingBottom = `${(count - end) * rowHeight}px`;
    return [start, end];
  }

  /** Learn the rows' height from the rendered ones. */
  measure(rendered: number): void {
    if (rendered < 5) {
      return;
    }
    const padding =
      parseFloat(this._list.style.paddingTop || '0') +
      parseFloat(this._list.style.paddingBottom || '0');
    const height = (this._list.offsetHeight - padding) / rendered;
    if (height > 8 && Number.isFinite(height)) {
      // smoothed: a few tall rows do not make the padding jump
      this._rowHeight = 0.7 * this._rowHeight + 0.3 * height;
    }
  }

  dispose(): void {
    this._scroller.removeEventListener('scroll', this._onScroll);
    this._throttle.dispose();
  }

  private _listTop(): number {
    return (
      this._list.getBoundingClientRect().top -
      this._scroller.getBoundingClientRect().top +
      this._scroller.scrollTop
    );
  }

  private _scroller: HTMLElement;
  private _list: HTMLElement;
  private _loadMore: () => void;
  private _throttle: Throttler;
  private _onScroll: () => void;
  private _rowHeight = DEFAULT_ROW_HEIGHT;
}
