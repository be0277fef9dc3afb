/**
 * The "Run as task" dialog: kernel, timeout, parameters (JSON) and tags.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { KernelSpec } from '@jupyterlab/services';
import type { PartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';

import { trans } from './i18n';
import { ITaskSubmission } from './models';
import { h } from './utils';

/** The options the dialog adds to a submission. */
export type SubmitOptions = Pick<
  ITaskSubmission,
  'name' | 'kernel_name' | 'timeout' | 'parameters' | 'tags'
>;

export interface ISubmitDialogOptions {
  /** Dialog title, e.g. `Run “analysis.ipynb” as a task` */
  title: string;
  /** What will run, shown under the title */
  description: string;
  defaultName: string;
  /** Preselected kernel (e.g. the notebook's); '' = server default */
  defaultKernel: string;
  kernelspecs: KernelSpec.ISpecModels | null | undefined;
}

interface IRawValues {
  name: string;
  kernel: string;
  timeout: string;
  parameters: string;
  tags: string;
}

const LAST_KEY = 'jupyter-taskrun:last-submit-options';

class SubmitBody extends Widget implements Dialog.IBodyWidget<IRawValues> {
  constructor(options: ISubmitDialogOptions, initial: IRawValues) {
    super();
    this.addClass('jp-TaskRun-submitDialog');
    const node = this.node;
    node.appendChild(
      h('p', 'jp-TaskRun-submitDescription', options.description)
    );

    this._name = h('input', 'jp-mod-styled');
    this._name.name = 'name';
    this._name.value = initial.name;
    this._name.placeholder = options.defaultName;

    this._kernel = h('select', 'jp-mod-styled');
    this._kernel.name = 'kernel_name';
    const specs = options.kernelspecs;
    const defaultName = specs?.default ?? '';
    const defaultSpec = defaultName
      ? specs?.kernelspecs[defaultName]
      : undefined;
    const serverDefault = h(
      'option',
      '',
      defaultSpec
        ? trans.__('Server default (%1)', defaultSpec.display_name)
        : trans.__('Server default')
    );
    serverDefault.value = '';
    this._kernel.appendChild(serverDefault);
    const names = Object.keys(specs?.kernelspecs ?? {}).sort();
    for (const name of names) {
      const spec = specs?.kernelspecs[name];
      const option = h('option', '', spec?.display_name ?? name);
      option.value = name;
      this._kernel.appendChild(option);
    }
    if (initial.kernel && !names.includes(initial.kernel)) {
      const option = h('option', '', initial.kernel);
      option.value = initial.kernel;
      this._kernel.appendChild(option);
    }
    this._kernel.value = initial.kernel;

    this._timeout = h('input', 'jp-mod-styled');
    this._timeout.name = 'timeout';
    this._timeout.type = 'number';
    this._timeout.min = '0';
    this._timeout.step = 'any';
    this._timeout.placeholder = trans.__('none');
    this._timeout.value = initial.timeout;

    this._parameters = h('textarea', 'jp-mod-styled');
    this._parameters.name = 'parameters';
    this._parameters.rows = 3;
    // eslint-disable-next-line jupyter/no-untranslated-string -- an example value, not prose
    this._parameters.placeholder = '{"alpha": 0.5, "epochs": 10}';
    this._parameters.value = initial.parameters;
    this._parameters.spellcheck = false;

    this._tags = h('input', 'jp-mod-styled');
    this._tags.name = 'tags';
    // eslint-disable-next-line jupyter/no-untranslated-string -- example tags, not prose
    this._tags.placeholder = 'nightly, experiment-1';
    this._tags.value = initial.tags;

    const grid = h('div', 'jp-TaskRun-form');
    const field = (label: string, input: HTMLElement, hint = '') => {
      const l = h('label', 'jp-TaskRun-formLabel', label);
      const id = `jp-TaskRun-field-${input.getAttribute('name')}-${Private.nextId()}`;
      input.id = id;
      l.htmlFor = id;
      const box = h('div', 'jp-TaskRun-formField');
      box.appendChild(input);
      if (hint) {
        box.appendChild(h('div', 'jp-TaskRun-formHint', hint));
      }
      grid.append(l, box);
    };
    field(trans.__('Name'), this._name);
    field(trans.__('Kernel'), this._kernel);
    field(
      trans.__('Timeout (s)'),
      this._timeout,
      trans.__('Whole task; empty for no limit.')
    );
    field(
      trans.__('Parameters'),
      this._parameters,
      trans.__('JSON object, injected after the cell tagged “parameters”.')
    );
    field(trans.__('Tags'), this._tags, trans.__('Comma separated.'));
    node.appendChild(grid);
  }

  getValue(): IRawValues {
    return {
      name: this._name.value,
      kernel: this._kernel.value,
      timeout: this._timeout.value,
      parameters: this._parameters.value,
      tags: this._tags.value
    };
  }

  private _name: HTMLInputElement;
  private _kernel: HTMLSelectElement;
  private _timeout: HTMLInputElement;
  private _parameters: HTMLTextAreaElement;
  private _tags: HTMLInputElement;
}

/** Turn the raw form values into submission options, or explain what is wrong. */
export function parseSubmitValues(
  raw: IRawValues,
  defaultName: string
): { options: SubmitOptions } | { error: string } {
  const options: SubmitOptions = {};
  options.name = raw.name.trim() || defaultName;
  if (raw.kernel) {
    options.kernel_name = raw.kernel;
  }
  const timeout = raw.timeout.trim();
  if (timeout) {
    const value = Number(timeout);
    if (!Number.isFinite(value) || value <= 0) {
      return {
        error: trans.__('Timeout must be a positive number of seconds.')
      };
    }
    options.timeout = value;
  }
  const params = raw.parameters.trim();
  if (params) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(params);
    } catch (e) {
      return {
        error: trans.__(
          'Parameters are not valid JSON: %1',
          (e as Error).message
        )
      };
    }
    if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) {
      return {
        error: trans.__(
          'Parameters must be a JSON object, e.g. {"alpha": 0.5}.'
        )
      };
    }
    const bad = Object.keys(parsed).filter(
      k => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)
    );
    if (bad.length) {
      return {
        error: trans.__(
          'Parameter names must be Python identifiers: %1',
          bad.join(', ')
        )
      };
    }
    options.parameters = parsed as PartialJSONObject;
  }
  const tags = raw.tags
    .split(',')
    .map(t => t.trim())
    .filter(Boolean);
  if (tags.length) {
    options.tags = [...new Set(tags)];
  }
  return { options };
}

/**
 * Ask for the submission options. Resolves to null when cancelled; invalid
 * input shows the reason and reopens the dialog with the values kept.
 */
export async function askSubmitOptions(
  options: ISubmitDialogOptions
): Promise<SubmitOptions | null> {
  const last = loadLast();
  let values: IRawValues = {
    name: '',
    kernel: options.defaultKernel,
    timeout: last.timeout ?? '',
    parameters: '',
    tags: last.tags ?? ''
  };
  for (;;) {
    const body = new SubmitBody(options, values);
    const result = await showDialog<IRawValues>({
      title: options.title,
      body,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: trans.__('Run') })
      ],
      focusNodeSelector: 'input[name="name"]'
    });
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    const parsed = parseSubmitValues(values, options.defaultName);
    if ('error' in parsed) {
      await showErrorMessage(trans.__('Invalid task options'), parsed.error);
      continue;
    }
    saveLast({ timeout: values.timeout, tags: values.tags });
    return parsed.options;
  }
}

function loadLast(): { timeout?: string; tags?: string } {
  try {
    const raw = window.localStorage.getItem(LAST_KEY);
    const value = raw ? (JSON.parse(raw) as unknown) : {};
    return value && typeof value === 'object'
      ? (value as { timeout?: string; tags?: string })
      : {};
  } catch {
    return {};
  }
}

function saveLast(value: { timeout: string; tags: string }): void {
  try {
    window.localStorage.setItem(LAST_KEY, JSON.stringify(value));
  } catch {
    // not important
  }
}

namespace Private {
  let counter = 0;
  export function nextId(): number {
    counter += 1;
    return counter;
  }
}
