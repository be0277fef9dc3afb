/**
 * Cancelling a task that other tasks wait for (workflows): every cancel in Lab
 * (the detail view's button, a sidebar row's button, the row menu, the Running
 * panel) goes through `confirmCancel`.
 *
 * Guarantees: when the task has waiting dependents (direct or not, as the
 * server counts them: `GET …/dependencies` → `cascade`), a dialog offers
 * "Cancel N waiting dependents too" (`POST …/cancel?cascade=1`), cancelling
 * only this task, or not cancelling; with none, the task is cancelled with no
 * question, as before. An older server without workflows is a plain cancel.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';

import { requestAPI, withQuery } from './api';
import { trans } from './i18n';
import type { ITask } from './models';

const CASCADE = 'jp-TaskRun-cascade';

/** The ids a cascading cancel of the task would cancel too ([]: none, or an older server). */
export async function waitingDependents(id: string): Promise<string[]> {
  try {
    const graph = await requestAPI<{ cascade?: string[] }>(
      `tasks/${encodeURIComponent(id)}/dependencies`
    );
    return graph.cascade ?? [];
  } catch {
    return [];
  }
}

/** Cancel the task, asking first about its waiting dependents; null: the user kept it. */
export async function confirmCancel(
  id: string,
  name?: string
): Promise<ITask | null> {
  const cascade = await askCascade(id, name);
  return cascade === null ? null : cancelTask(id, cascade);
}

/**
 * Whether a cancel of the task cancels its waiting dependents too: asks when
 * there are some (false, with no question, when there are none); null: the
 * user chose not to cancel at all.
 */
export async function askCascade(
  id: string,
  name?: string
): Promise<boolean | null> {
  const waiting = await waitingDependents(id);
  let cascade = false;
  if (waiting.length) {
    const result = await showDialog({
      title: trans.__('Cancel task'),
      body: trans._n(
        '%1 waiting task depends on “%2”. Cancel it too? Otherwise it ends cancelled when “%2” does, or runs anyway if it was submitted with on_dependency_failure “run”.',
        '%1 waiting tasks depend on “%2”. Cancel them too? Otherwise they end cancelled when “%2” does, or run anyway if they were submitted with on_dependency_failure “run”.',
        waiting.length,
        name ?? id
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Do not cancel') }),
        Dialog.okButton({ label: trans.__('Cancel this task only') }),
        Dialog.warnButton({
          label: trans._n(
            'Cancel %1 waiting dependent too',
            'Cancel %1 waiting dependents too',
            waiting.length
          ),
          actions: [CASCADE]
        })
      ],
      defaultButton: 2
    });
    if (!result.button.accept) {
      return null;
    }
    cascade = result.button.actions.includes(CASCADE);
  }
  return cascade;
}

/** `POST …/cancel`, with `?cascade=1`: its waiting dependents first. */
export function cancelTask(id: string, cascade: boolean): Promise<ITask> {
  return requestAPI<ITask>(
    withQuery(`tasks/${encodeURIComponent(id)}/cancel`, {
      cascade: cascade ? '1' : undefined
    }),
    {
      method: 'POST',
      body: '{}',
      headers: { 'Content-Type': 'application/json' }
    }
  );
}
