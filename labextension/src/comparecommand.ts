/**
 * The `taskrun:compare` command: opens the Compare view (compare.ts, loaded
 * on first use) for `{tag}` or `{schedule}`; without arguments it takes the
 * sidebar's selected task (its first tag, else its schedule) or asks for a
 * tag. One tab per scope; open tabs are restored with the layout.
 */
import { ILayoutRestorer, JupyterFrontEnd } from '@jupyterlab/application';
import {
  InputDialog,
  MainAreaWidget,
  WidgetTracker
} from '@jupyterlab/apputils';

import { CommandIDs } from './commandids';
import type { CompareView } from './compare';
import { trans } from './i18n';
import type { ITask } from './models';
import type { TaskListModel } from './tasklist';
import type { ICompareScope } from './values';

export interface ICompareCommandOptions {
  model: TaskListModel;
  restorer: ILayoutRestorer | null;
  /** The tasks selected in the sidebar. */
  selected: () => ITask[];
  openTask: (id: string) => void;
  reportError: (title: string, error: unknown) => void;
}

/** The scope a task offers: its first tag, else its schedule. */
function scopeOf(task: ITask | undefined): ICompareScope | null {
  if (task?.tags.length) {
    return { tag: task.tags[0] };
  }
  return task?.schedule_id ? { schedule: task.schedule_id } : null;
}

/** Register the command; returns what opens a scope and the views' tracker. */
export function addCompareCommand(
  app: JupyterFrontEnd,
  options: ICompareCommandOptions
): {
  open: (scope: ICompareScope) => void;
  tracker: WidgetTracker<MainAreaWidget<CompareView>>;
} {
  const { commands, shell } = app;
  const tracker = new WidgetTracker<MainAreaWidget<CompareView>>({
    namespace: 'jupyter-taskrun-compare'
  });

  const show = async (scope: ICompareScope): Promise<void> => {
    const { compareId, createCompareWidget } = await import('./compare');
    const id = compareId(scope);
    const existing = tracker.find(w => w.id === id);
    if (existing && !existing.isDisposed) {
      if (!existing.isAttached) {
        shell.add(existing, 'main');
      }
      shell.activateById(id);
      return;
    }
    const widget = createCompareWidget({
      scope,
      model: options.model,
      openTask: options.openTask,
      onError: options.reportError
    });
    void tracker.add(widget);
    shell.add(widget, 'main');
    shell.activateById(widget.id);
  };
  const open = (scope: ICompareScope): void => {
    show(scope).catch(error =>
      options.reportError(trans.__('Could not open Compare'), error)
    );
  };

  commands.addCommand(CommandIDs.compare, {
    label: args => {
      if (args.tag) {
        return trans.__('Compare Tasks Tagged #%1', String(args.tag));
      }
      if (args.schedule) {
        return trans.__('Compare Runs of the Schedule');
      }
      const scope = scopeOf(options.selected()[0]);
      return scope?.tag
        ? trans.__('Compare Tasks Tagged #%1', scope.tag)
        : scope?.schedule
          ? trans.__('Compare Runs of the Schedule')
          : trans.__('Compare Tasks…');
    },
    caption: trans.__(
      'Tasks sharing a tag or a schedule side by side: status, duration, parameters, recorded values'
    ),
    describedBy: {
      args: {
        type: 'object',
        properties: {
          tag: { type: 'string', description: trans.__('A tag') },
          schedule: { type: 'string', description: trans.__('A schedule id') }
        }
      }
    },
    execute: async args => {
      let scope: ICompareScope | null = null;
      if (typeof args.tag === 'string' && args.tag) {
        scope = { tag: args.tag };
      } else if (typeof args.schedule === 'string' && args.schedule) {
        scope = { schedule: args.schedule };
      } else {
        scope = scopeOf(options.selected()[0]);
      }
      if (!scope) {
        const tags = options.model.knownTags;
        const answer = await InputDialog.getItem({
          title: trans.__('Compare the tasks tagged'),
          items: tags,
          editable: true,
          placeholder: trans.__('a tag')
        });
        const tag = (answer.value ?? '').trim();
        if (!answer.button.accept || !tag) {
          return;
        }
        scope = { tag };
      }
      await show(scope);
    }
  });

  if (options.restorer) {
    void options.restorer.restore(tracker, {
      command: CommandIDs.compare,
      args: w => ({ ...w.content.scope }),
      name: w => w.id
    });
  }
  return { open, tracker };
}
