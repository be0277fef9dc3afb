/**
 * Status-bar item: running and queued task counts; a click opens the panel.
 */
import { Widget } from '@lumino/widgets';

import { trans } from './i18n';
import { tasksIcon } from './icons';
import { ICounts } from './models';
import { TaskListModel } from './tasklist';
import { h, iconNode, setText } from './utils';

export class TaskStatusItem extends Widget {
  constructor(model: TaskListModel, onClick: () => void) {
    super();
    this._model = model;
    this.addClass('jp-TaskRun-statusItem');
    this.node.title = trans.__(
      'Background tasks (jupyter_taskrun): click to show the Tasks panel'
    );
    this.node.setAttribute('role', 'button');
    this.node.appendChild(iconNode(tasksIcon, 'jp-TaskRun-statusItemIcon'));
    this._label = h('span', 'jp-TaskRun-statusItemLabel');
    this.node.appendChild(this._label);
    this.node.addEventListener('click', onClick);
    model.countsChanged.connect(this._update, this);
    this._update(model, model.counts);
  }

  override dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._model.countsChanged.disconnect(this._update, this);
    super.dispose();
  }

  private _update(_: TaskListModel, counts: ICounts): void {
    setText(this._label, `${counts.running} running · ${counts.queued} queued`);
    this.toggleClass('jp-mod-busy', counts.running + counts.queued > 0);
  }

  private _model: TaskListModel;
  private _label: HTMLElement;
}
