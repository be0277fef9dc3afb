/**
 * The "Run as task" dialog: the options the `%%taskrun` magic and the REST
 * API have (kernel, timeouts, parameters, tags, environment, working folder,
 * priority, memory limit and, for scripts, command-line arguments). The
 * parameters hint says what parameters are for what runs (a notebook's cell
 * tagged "parameters", variables set before a script). The last values are
 * remembered per file (submitform.ts).
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { KernelSpec } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { trans } from './i18n';
import {
  IRawValues,
  loadRemembered,
  parseSubmitValues,
  remember,
  SubmitKind,
  SubmitOptions
} from './submitform';
import { h } from './utils';

export type { SubmitKind, SubmitOptions } from './submitform';
export { parseSubmitValues } from './submitform';

export interface ISubmitDialogOptions {
  /** Dialog title, e.g. `Run “analysis.ipynb” as a task` */
  title: string;
  /** What will run, shown under the title */
  description: string;
  defaultName: string;
  /** Preselected kernel (e.g. the notebook's); '' = server default */
  defaultKernel: string;
  kernelspecs: KernelSpec.ISpecModels | null | undefined;
  /** What runs: a notebook, a `.py` script, cells, or several files */
  kind?: SubmitKind;
  /** The files whose last values are remembered (the first one's are shown) */
  rememberKeys?: string[];
}

/** What the parameters are for each kind of run (see execution/submission.py). */
export function parametersHint(kind: SubmitKind): string {
  switch (kind) {
    case 'script':
      return trans.__(
        'JSON object: each key becomes a Python variable, set before the first line of the script runs. Command-line arguments go in Arguments.'
      );
    case 'cells':
      return trans.__(
        'JSON object: each key becomes a variable, set before the first cell runs.'
      );
    case 'files':
      return trans.__(
        'JSON object: in a notebook, injected after the cell tagged “parameters” (first when there is none); in a script, variables set before its first line.'
      );
    default:
      return trans.__(
        'JSON object, injected as a cell after the cell tagged “parameters” (first when there is none).'
      );
  }
}

class SubmitBody extends Widget implements Dialog.IBodyWidget<IRawValues> {
  constructor(options: ISubmitDialogOptions, initial: IRawValues) {
    super();
    const kind = options.kind ?? 'notebook';
    this.addClass('jp-TaskRun-submitDialog');
    this.node.dataset.kind = kind;
    this.node.appendChild(
      h('p', 'jp-TaskRun-submitDescription', options.description)
    );
    const grid = h('div', 'jp-TaskRun-form');
    const field = (
      label: string,
      key: keyof IRawValues,
      input: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
      hint = ''
    ) => {
      input.name = NAMES[key];
      input.classList.add('jp-mod-styled');
      input.value = initial[key];
      const l = h('label', 'jp-TaskRun-formLabel', label);
      input.id = `jp-TaskRun-field-${input.name}-${Private.nextId()}`;
      l.htmlFor = input.id;
      const box = h('div', 'jp-TaskRun-formField');
      box.appendChild(input);
      if (hint) {
        box.appendChild(h('div', 'jp-TaskRun-formHint', hint));
      }
      grid.append(l, box);
      this._inputs[key] = input;
    };
    const text = (placeholder = '') => {
      const input = h('input');
      input.placeholder = placeholder;
      input.spellcheck = false;
      return input;
    };
    const number = (placeholder: string, step = 'any') => {
      const input = text(placeholder);
      input.type = 'number';
      input.step = step;
      return input;
    };
    const area = (placeholder: string) => {
      const input = h('textarea');
      input.rows = 3;
      input.placeholder = placeholder;
      input.spellcheck = false;
      return input;
    };

    field(trans.__('Name'), 'name', text(options.defaultName));
    field(
      trans.__('Kernel'),
      'kernel',
      this._kernelSelect(options, initial.kernel)
    );
    if (kind === 'script' || kind === 'files') {
      field(
        trans.__('Arguments'),
        'args',
        text('--epochs 10 --out "my results"'),
        kind === 'files'
          ? trans.__(
              'For .py scripts only: sys.argv[1:], split as a shell does (quotes keep spaces).'
            )
          : trans.__(
              'sys.argv[1:], split as a shell does (quotes keep spaces).'
            )
      );
    }
    field(
      trans.__('Parameters'),
      'parameters',
      area('{"alpha": 0.5, "epochs": 10}'),
      parametersHint(kind)
    );
    field(
      trans.__('Timeout (s)'),
      'timeout',
      number(trans.__('none')),
      trans.__('Whole task; empty for no limit.')
    );
    field(
      trans.__('Cell timeout (s)'),
      'cellTimeout',
      number(trans.__('none')),
      trans.__('Each cell; empty for no limit.')
    );
    field(
      trans.__('Environment'),
      'env',
      area('OMP_NUM_THREADS=4\nDATA_DIR=/data'),
      trans.__("One KEY=VALUE per line, added to the kernel's environment.")
    );
    field(
      trans.__('Working folder'),
      'cwd',
      text(
        kind === 'cells' || kind === 'notebook'
          ? trans.__('server root')
          : trans.__("the file's folder")
      ),
      trans.__('Relative to the server root.')
    );
    const priority = number('0', '1');
    priority.min = '-1000';
    priority.max = '1000';
    field(
      trans.__('Priority'),
      'priority',
      priority,
      trans.__('-1000 to 1000; higher runs first among queued tasks.')
    );
    field(
      trans.__('Memory limit'),
      'memoryLimit',
      text(trans.__('server default')),
      trans.__('e.g. 2 GiB or 512M (units of 1024), or bytes.')
    );
    field(
      trans.__('Tags'),
      'tags',
      text('nightly, experiment-1'),
      trans.__('Comma separated.')
    );
    this.node.appendChild(grid);
  }

  getValue(): IRawValues {
    const out = {} as IRawValues;
    for (const key of Object.keys(NAMES) as Array<keyof IRawValues>) {
      out[key] = this._inputs[key]?.value ?? '';
    }
    return out;
  }

  private _kernelSelect(
    options: ISubmitDialogOptions,
    initial: string
  ): HTMLSelectElement {
    const select = h('select');
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
    select.appendChild(serverDefault);
    const names = Object.keys(specs?.kernelspecs ?? {}).sort();
    for (const name of names) {
      const spec = specs?.kernelspecs[name];
      const option = h('option', '', spec?.display_name ?? name);
      option.value = name;
      select.appendChild(option);
    }
    if (initial && !names.includes(initial)) {
      const option = h('option', '', initial);
      option.value = initial;
      select.appendChild(option);
    }
    return select;
  }

  private _inputs: {
    [K in keyof IRawValues]?:
      HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;
  } = {};
}

/** The `name` attribute of each field: the API's field names (tests find them so). */
const NAMES: { [K in keyof IRawValues]: string } = {
  name: 'name',
  kernel: 'kernel_name',
  timeout: 'timeout',
  cellTimeout: 'cell_timeout',
  parameters: 'parameters',
  tags: 'tags',
  env: 'env',
  cwd: 'cwd',
  priority: 'priority',
  memoryLimit: 'memory_limit',
  args: 'args'
};

/**
 * Ask for the submission options. Resolves to null when cancelled; invalid
 * input shows the reason and reopens the dialog with the values kept.
 */
export async function askSubmitOptions(
  options: ISubmitDialogOptions
): Promise<SubmitOptions | null> {
  const kind = options.kind ?? 'notebook';
  const keys = options.rememberKeys ?? [];
  let values = loadRemembered(keys[0] ?? '', { kernel: options.defaultKernel });
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
    const parsed = parseSubmitValues(values, options.defaultName, kind);
    if ('error' in parsed) {
      await showErrorMessage(trans.__('Invalid task options'), parsed.error);
      continue;
    }
    remember(keys, values);
    return parsed.options;
  }
}

namespace Private {
  let counter = 0;
  export function nextId(): number {
    counter += 1;
    return counter;
  }
}
