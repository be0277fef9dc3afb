/**
 * The rich outputs of a task's detail view, folded from `output` and `clear`
 * events with the server's rule (jupyter_taskrun/outputs.py, as nbclient
 * builds the executed notebook):
 * - an `output` appends to its cell's outputs;
 * - an `output` with `update` (update_display_data) replaces the data and
 *   metadata of every shown output with its `display_id`;
 * - a `clear` empties its cell's outputs (the server emits it when nbclient
 *   clears: at once for `clear_output()`, just before the next output for
 *   `clear_output(wait=True)`).
 * The log is not affected: it keeps everything.
 */
import { IOutput } from '@jupyterlab/nbformat';
import { OutputAreaModel, SimplifiedOutputArea } from '@jupyterlab/outputarea';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { trans } from './i18n';
import { IOutputEventData, ITaskOutputs } from './models';
import { h, setText } from './utils';

interface IShown {
  output: IOutput;
  displayId: string | null;
}

type CellKey = number | null;

export class OutputsView {
  constructor(rendermime: IRenderMimeRegistry) {
    this.header = new Widget();
    this.header.addClass('jp-TaskRun-section');
    this._title = h('h2', 'jp-TaskRun-sectionTitle', trans.__('Outputs'));
    this._empty = h('div', 'jp-TaskRun-logEmpty', trans.__('No rich outputs.'));
    this.header.node.append(this._title, this._empty);
    this._model = new OutputAreaModel({ trusted: false });
    this.area = new SimplifiedOutputArea({ model: this._model, rendermime });
    this.area.addClass('jp-TaskRun-outputs');
  }

  /** The section title ("Outputs (n)") and the empty notice. */
  readonly header: Widget;
  /** The rendered outputs. */
  readonly area: SimplifiedOutputArea;

  /** How many outputs are shown now. */
  get count(): number {
    let n = 0;
    for (const outs of this._cells.values()) {
      n += outs.length;
    }
    return n;
  }

  /** An `output` event. */
  add(data: IOutputEventData): void {
    if (!data || !data.output) {
      return;
    }
    const displayId = data.display_id ?? null;
    if (data.update) {
      if (displayId) {
        const o = data.output as IOutput & {
          data?: unknown;
          metadata?: unknown;
        };
        for (const outs of this._cells.values()) {
          for (const shown of outs) {
            if (shown.displayId === displayId) {
              shown.output = {
                ...shown.output,
                data: { ...((o.data as object) ?? {}) },
                metadata: { ...((o.metadata as object) ?? {}) }
              } as IOutput;
            }
          }
        }
        this._schedule();
      }
      return;
    }
    if (data.output.output_type === 'error') {
      return; // shown with its traceback in the Error section
    }
    const cell = cellKey(data.cell_index);
    const clean = { ...data.output } as IOutput & {
      cell_index?: unknown;
      display_id?: unknown;
    };
    delete clean.cell_index;
    delete clean.display_id;
    let outs = this._cells.get(cell);
    if (!outs) {
      outs = [];
      this._cells.set(cell, outs);
    }
    outs.push({ output: clean, displayId });
    this._schedule();
  }

  /** A `clear` event: that cell's outputs go. */
  clear(cellIndex: number | null | undefined): void {
    if (this._cells.delete(cellKey(cellIndex))) {
      this._schedule();
    }
  }

  /** Replace everything with the server's folded outputs (polling mode). */
  reset(outputs: ITaskOutputs['outputs']): void {
    this._cells.clear();
    for (const output of outputs ?? []) {
      this.add({
        cell_index: output.cell_index ?? null,
        output,
        display_id: output.display_id
      });
    }
    this._render();
  }

  dispose(): void {
    if (this._frame !== null) {
      window.cancelAnimationFrame(this._frame);
      this._frame = null;
    }
    this._model.dispose();
  }

  /** Re-render at most once a frame (a 200-frame animation stays cheap). */
  private _schedule(): void {
    if (this._frame === null) {
      this._frame = window.requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
    }
  }

  private _render(): void {
    if (this._model.isDisposed) {
      return;
    }
    const keys = [...this._cells.keys()].sort((a, b) =>
      a === null ? 1 : b === null ? -1 : a - b
    );
    const list: IOutput[] = [];
    for (const key of keys) {
      for (const shown of this._cells.get(key) ?? []) {
        list.push(shown.output);
      }
    }
    // keep what is unchanged (no flicker); rebuild from the first difference
    const current = this._rendered;
    let same = 0;
    while (
      same < current.length &&
      same < list.length &&
      current[same] === list[same]
    ) {
      same += 1;
    }
    if (same < current.length) {
      if (same === 0) {
        this._model.clear();
      } else {
        const keep = list.slice(0, same);
        this._model.clear();
        keep.forEach(o => this._model.add(o));
      }
    }
    for (let i = same; i < list.length; i++) {
      this._model.add(list[i]);
    }
    this._rendered = list;
    const n = list.length;
    setText(this._title, n ? trans.__('Outputs (%1)', n) : trans.__('Outputs'));
    this._empty.hidden = n > 0;
  }

  private _cells = new Map<CellKey, IShown[]>();
  private _rendered: IOutput[] = [];
  private _model: OutputAreaModel;
  private _title: HTMLElement;
  private _empty: HTMLElement;
  private _frame: number | null = null;
}

function cellKey(index: number | null | undefined): CellKey {
  return typeof index === 'number' ? index : null;
}
