/**
 * The Values section of a task's detail view: one card per name recorded with
 * `record(name, value, step=…)`, showing the latest value and, for a series
 * (two or more numeric recordings), a small line chart by step. It loads
 * `GET …/values` and then follows the task's `value` events live; a reload
 * (the stream ended, a reconnect) replaces what was folded from events, so
 * nothing is counted twice. It also offers "Compare" for the task's tags and
 * schedule (compare.ts).
 */
import { Widget } from '@lumino/widgets';

import { renderValueChart } from './chart';
import { trans } from './i18n';
import type { ITask, IValueEventData, IValuePoint } from './models';
import { ResultsAPI } from './resultsapi';
import { formatValue, numericValue, valueTitle } from './valueutil';
import { h, setText } from './utils';

/** What Compare opens: the tasks sharing a tag, or one schedule's runs. */
export interface ICompareScope {
  tag?: string;
  schedule?: string;
}

export class ValuesView {
  constructor(
    taskId: string,
    openCompare: ((scope: ICompareScope) => void) | null
  ) {
    this._taskId = taskId;
    this._openCompare = openCompare;
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-section');
    this.widget.addClass('jp-TaskRun-valuesSection');
    const bar = h('div', 'jp-TaskRun-sectionBar');
    this._title = h('h2', 'jp-TaskRun-sectionTitle', trans.__('Values'));
    this._compare = h('span', 'jp-TaskRun-compareLinks');
    bar.append(this._title, this._compare);
    this._empty = h(
      'div',
      'jp-TaskRun-logEmpty',
      trans.__(
        'No recorded values. In the task: from jupyter_taskrun import record; record("accuracy", 0.93)'
      )
    );
    this._cards = h('div', 'jp-TaskRun-valueCards');
    this.widget.node.append(bar, this._empty, this._cards);
    this._render();
  }

  readonly widget: Widget;

  /** A fresh copy of the task: its latest values and its tags/schedule. */
  setTask(task: ITask): void {
    for (const [name, value] of Object.entries(task.values ?? {})) {
      if (!this._series.has(name)) {
        this._latest.set(name, value);
      }
    }
    const key = JSON.stringify([task.tags, task.schedule_id ?? null]);
    if (key !== this._compareKey) {
      this._compareKey = key;
      this._renderCompare(task);
    }
    this._schedule();
  }

  /**
   * Every recording from the server: replaces what events brought (events
   * that arrive meanwhile and are not in the answer are applied again).
   */
  async load(): Promise<void> {
    const token = ++this._loadToken;
    this._meanwhile = [];
    try {
      const answer = await ResultsAPI.values(this._taskId);
      if (token !== this._loadToken || this.widget.isDisposed) {
        return;
      }
      const meanwhile = this._meanwhile;
      this._meanwhile = null;
      this._series = new Map(Object.entries(answer.series ?? {}));
      this._seqs = new Set();
      for (const points of this._series.values()) {
        points.forEach(p => this._seqs.add(p.seq));
      }
      this._latest = new Map(Object.entries(answer.values ?? {}));
      meanwhile.forEach(args => this.add(...args));
      this._render();
    } catch {
      this._meanwhile = null; // optional: the cards fill from live events
    }
  }

  /** A `value` event (`seq`: its id on the stream, to skip one seen twice). */
  add(data: IValueEventData, seq: number | null, time: string | null): void {
    if (!data || typeof data.name !== 'string') {
      return;
    }
    this._meanwhile?.push([data, seq, time]);
    if (seq !== null) {
      if (this._seqs.has(seq)) {
        return;
      }
      this._seqs.add(seq);
    }
    const points = this._series.get(data.name) ?? [];
    points.push({
      value: data.value,
      step: typeof data.step === 'number' ? data.step : null,
      time: time ?? '',
      seq: seq ?? 0
    });
    this._series.set(data.name, points);
    this._latest.set(data.name, data.value);
    this._schedule();
  }

  dispose(): void {
    if (this._frame !== null) {
      window.cancelAnimationFrame(this._frame);
      this._frame = null;
    }
  }

  private _schedule(): void {
    if (this._frame === null) {
      this._frame = window.requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
    }
  }

  private _render(): void {
    if (this.widget.isDisposed) {
      return;
    }
    const names = [...this._latest.keys()].sort();
    this._empty.hidden = names.length > 0;
    setText(
      this._title,
      names.length ? trans.__('Values (%1)', names.length) : trans.__('Values')
    );
    const seen = new Set<string>();
    let previous: HTMLElement | null = null;
    for (const name of names) {
      seen.add(name);
      let card = this._cardNodes.get(name);
      if (!card) {
        card = h('div', 'jp-TaskRun-valueCard');
        card.dataset.name = name;
        this._cardNodes.set(name, card);
      }
      this._renderCard(card, name);
      const expected: ChildNode | null = previous
        ? previous.nextSibling
        : this._cards.firstChild;
      if (expected !== card) {
        this._cards.insertBefore(card, expected);
      }
      previous = card;
    }
    for (const [name, card] of this._cardNodes) {
      if (!seen.has(name)) {
        card.remove();
        this._cardNodes.delete(name);
      }
    }
  }

  private _renderCard(card: HTMLElement, name: string): void {
    const latest = this._latest.get(name);
    const points = this._series.get(name) ?? [];
    const numeric = points
      .map((p, i) => ({ p, i, y: numericValue(p.value) }))
      .filter(x => x.y !== null);
    const series = numeric.length >= 2;
    const key = JSON.stringify([latest, points.length, series]);
    if (card.dataset.key === key) {
      return;
    }
    card.dataset.key = key;
    card.classList.toggle('jp-mod-series', series);
    const value = h('div', 'jp-TaskRun-valueLatest', formatValue(latest, 60));
    value.title = valueTitle(name, latest);
    const parts: HTMLElement[] = [
      h('div', 'jp-TaskRun-valueName', name),
      value
    ];
    if (series) {
      const chart = h('div', 'jp-TaskRun-valueChartBox');
      chart.appendChild(
        renderValueChart(
          numeric.map(x => ({ x: x.p.step ?? x.i, y: x.y as number })),
          name,
          v => formatValue(v, 10)
        )
      );
      const last = points[points.length - 1];
      parts.push(
        chart,
        h(
          'div',
          'jp-TaskRun-valueMeta',
          last.step !== null
            ? trans.__('%1 points · step %2', points.length, last.step)
            : trans.__('%1 points', points.length)
        )
      );
    }
    card.replaceChildren(...parts);
  }

  private _renderCompare(task: ITask): void {
    const open = this._openCompare;
    this._compare.replaceChildren();
    if (!open) {
      return;
    }
    const link = (label: string, title: string, scope: ICompareScope) => {
      const b = h('button', 'jp-TaskRun-linkButton jp-TaskRun-compareLink');
      b.textContent = label;
      b.title = title;
      b.dataset.scope = scope.tag ? `tag:${scope.tag}` : 'schedule';
      b.addEventListener('click', () => open(scope));
      this._compare.appendChild(b);
    };
    if (task.tags.length || task.schedule_id) {
      this._compare.appendChild(
        h('span', 'jp-TaskRun-compareLabel', trans.__('Compare:'))
      );
    }
    for (const tag of task.tags) {
      link(
        `#${tag}`,
        trans.__('Compare the tasks tagged %1 side by side', tag),
        { tag }
      );
    }
    if (task.schedule_id) {
      link(
        trans.__('this schedule’s runs'),
        trans.__('Compare the runs of the schedule that made this task'),
        { schedule: task.schedule_id }
      );
    }
  }

  private _taskId: string;
  private _openCompare: ((scope: ICompareScope) => void) | null;
  private _series = new Map<string, IValuePoint[]>();
  private _latest = new Map<string, unknown>();
  private _seqs = new Set<number>();
  private _cardNodes = new Map<string, HTMLElement>();
  private _loadToken = 0;
  private _meanwhile: Array<
    [IValueEventData, number | null, string | null]
  > | null = null;
  private _compareKey = '';
  private _frame: number | null = null;
  private _title: HTMLElement;
  private _compare: HTMLElement;
  private _empty: HTMLElement;
  private _cards: HTMLElement;
}
