/**
 * The detail view's workflow section: what a task waits for, what waits for it,
 * and its tries (retries), each with its live status; a click opens that task.
 *
 * Read from `GET …/tasks/{id}/dependencies` and `…/attempts` when the task
 * changes status; statuses then follow the shared TaskListModel's changes, so
 * nothing polls. Hidden for a task that is in no workflow and was never retried.
 */
import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { isNewer } from './feedutil';
import type { ITask } from './models';
import type { TaskListModel } from './tasklist';
import { formatDuration } from './format';
import { trans } from './i18n';
import { STATUS_LABELS, statusIcon, taskDuration } from './utils';

interface IGraph {
  task_id: string;
  waiting_for: string[];
  depends_on: ITask[];
  dependents: ITask[];
}

export class DependenciesView {
  constructor(
    taskId: string,
    model: TaskListModel,
    openTask: (id: string) => void
  ) {
    this._taskId = taskId;
    this._model = model;
    this._openTask = openTask;
    this.widget = new Widget();
    this.widget.addClass('jp-TaskRun-dependencies');
    this.widget.hide();
    model.taskChanged.connect((_, task) => this._onTask(task), this);
  }

  readonly widget: Widget;

  /** The task itself changed: re-read its graph when its status moved. */
  setTask(task: ITask): void {
    const key = `${task.status}:${task.retried_as ?? ''}`;
    if (key === this._seen) {
      return;
    }
    this._seen = key;
    void this._load(task);
  }

  private async _load(task: ITask): Promise<void> {
    this._loading += 1;
    try {
      const id = encodeURIComponent(this._taskId);
      const graph = await requestAPI<IGraph>(`tasks/${id}/dependencies`);
      const tries =
        task.retry || task.retried_as
          ? (await requestAPI<{ attempts: ITask[] }>(`tasks/${id}/attempts`))
              .attempts
          : [];
      // a change that came while this was read is newer than the answer
      const fresh = (list: ITask[]) =>
        list.map(t => {
          const known = this._recent.get(t.id) ?? this._model.get(t.id);
          return known && isNewer(known, t) ? known : t;
        });
      graph.depends_on = fresh(graph.depends_on);
      graph.dependents = fresh(graph.dependents);
      this._graph = graph;
      this._tries = fresh(tries);
      this._render();
    } catch {
      // an older server without workflows, or the task is gone: no section
      this.widget.hide();
    } finally {
      this._loading -= 1;
      if (!this._loading) {
        this._recent.clear();
      }
    }
  }

  private _onTask(task: ITask): void {
    if (this._loading) {
      this._recent.set(task.id, task);
    }
    const graph = this._graph;
    if (!graph) {
      return;
    }
    let hit = false;
    for (const list of [graph.depends_on, graph.dependents, this._tries]) {
      const i = list.findIndex(t => t.id === task.id);
      if (i >= 0) {
        list[i] = task;
        hit = true;
      }
    }
    if (hit) {
      this._render();
    }
  }

  private _render(): void {
    const graph = this._graph;
    const node = this.widget.node;
    node.textContent = '';
    if (
      !graph ||
      (!graph.depends_on.length &&
        !graph.dependents.length &&
        this._tries.length < 2)
    ) {
      this.widget.hide();
      return;
    }
    this._section(
      node,
      trans.__('Depends on'),
      graph.depends_on,
      graph.waiting_for
    );
    this._section(node, trans.__('Dependents'), graph.dependents, []);
    if (this._tries.length > 1) {
      // the attempt history: each try opens its own detail view (own logs)
      this._section(node, trans.__('Tries'), this._tries, [], true);
    }
    this.widget.show();
  }

  private _section(
    parent: HTMLElement,
    title: string,
    tasks: ITask[],
    waitingFor: string[],
    tries = false
  ): void {
    if (!tasks.length) {
      return;
    }
    const box = document.createElement('div');
    box.className = 'jp-TaskRun-depSection';
    const head = document.createElement('div');
    head.className = 'jp-TaskRun-depTitle';
    head.textContent = title;
    box.appendChild(head);
    for (const task of tasks) {
      const row = document.createElement('button');
      row.type = 'button';
      row.className = `jp-TaskRun-depRow jp-mod-${task.status}`;
      row.dataset.taskId = task.id;
      row.dataset.status = task.status;
      row.title = trans.__('Open %1 (%2)', task.name, task.id);
      const icon = statusIcon(task.status).element({
        tag: 'span',
        className: 'jp-TaskRun-depIcon'
      });
      const name = document.createElement('span');
      name.className = 'jp-TaskRun-depName';
      const tryLabel = task.retry ? ` · try ${task.retry + 1}` : '';
      name.textContent = tries
        ? trans.__('Try %1', (task.retry ?? 0) + 1)
        : `${task.key ?? task.name}${tryLabel}`;
      const status = document.createElement('span');
      status.className = 'jp-TaskRun-depStatus';
      const waits = waitingFor.includes(task.retry_of ?? task.id);
      status.textContent =
        STATUS_LABELS[task.status] + (waits ? trans.__(' · waited for') : '');
      row.append(icon, name, status);
      const duration = taskDuration(task);
      if (tries && duration !== null) {
        const took = document.createElement('span');
        took.className = 'jp-TaskRun-depDuration';
        took.textContent = formatDuration(duration);
        row.appendChild(took);
      }
      row.addEventListener('click', () => this._openTask(task.id));
      box.appendChild(row);
    }
    parent.appendChild(box);
  }

  private _taskId: string;
  private _model: TaskListModel;
  private _loading = 0;
  private _recent = new Map<string, ITask>();
  private _openTask: (id: string) => void;
  private _graph: IGraph | null = null;
  private _tries: ITask[] = [];
  private _seen = '';
}
