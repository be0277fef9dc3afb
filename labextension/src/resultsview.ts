/**
 * What a task gave back, for its detail view (detail.ts): the Values section
 * (values.ts, shown under the header) and the Files section (files.ts, under
 * the outputs), fed by the same task copies and events as the rest of the view.
 */
import { FilesView } from './files';
import type { ITask, ITaskFiles, IValueEventData } from './models';
import { ICompareScope, ValuesView } from './values';

export type { ICompareScope } from './values';

export class ResultsView {
  constructor(
    taskId: string,
    options: {
      onError: (title: string, error: unknown) => void;
      openCompare?: (scope: ICompareScope) => void;
    }
  ) {
    this.values = new ValuesView(taskId, options.openCompare ?? null);
    this.files = new FilesView(taskId, options.onError);
  }

  readonly values: ValuesView;
  readonly files: FilesView;

  setTask(task: ITask): void {
    this.values.setTask(task);
    this.files.setTask(task);
  }

  /** A task event; the ones of other sections are ignored. */
  event(
    kind: string,
    payload: unknown,
    time: string | null,
    seq: number | null
  ): void {
    if (kind === 'value') {
      this.values.add(payload as IValueEventData, seq, time);
    } else if (kind === 'artifacts') {
      this.files.artifacts(payload as Partial<ITaskFiles>);
    }
  }

  /** Re-read everything (the stream ended, or a REST poll). */
  load(): void {
    void this.values.load();
    void this.files.load();
  }

  dispose(): void {
    this.values.dispose();
    this.files.dispose();
  }
}
