/**
 * The create / edit dialog of a schedule: name, cron, time zone, parameters
 * (as the "Run as task" dialog takes them), what to do when a run is still
 * going (overlap) or times were missed (catch up), enabled, callback URL.
 *
 * As the cron or the time zone is typed it shows the server's reading of it
 * (`GET /taskrun/api/schedules/preview`, debounced): the cron in words and
 * the next run times, or, on a 400, the server's message under the field it
 * names, with Save disabled (the Dialog's own validation: a `.jp-mod-error`
 * field). Saving sends the request; a refusal shows the server's message and
 * reopens the dialog with the values kept.
 */
import { Dialog, showErrorMessage } from '@jupyterlab/apputils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { APIError, ScheduleAPI } from './api';
import { trans } from './i18n';
import type { ISchedule, ISchedulePreview, ITaskSubmission } from './models';
import {
  CATCH_UPS,
  catchUpLabel,
  checkCallbackUrl,
  checkParameters,
  fieldOfError,
  formatRunTime,
  formatUntil,
  initialValues,
  IScheduleRaw,
  knownTimeZones,
  OVERLAPS,
  overlapLabel,
  parseScheduleValues
} from './scheduleform';
import type { ScheduleListModel } from './schedulemodel';
import { parametersHint, SubmitKind } from './submit';
import { h, setText } from './utils';

/** A JSON example, not a sentence to translate. */
const PARAMETERS_EXAMPLE = '{"alpha": 0.5, "epochs": 10}';
/** Wait this long after the last keystroke before asking for a preview. */
const PREVIEW_DELAY = 300;

export interface IScheduleDialogOptions {
  model: ScheduleListModel;
  /** The schedule to edit; a new one when absent. */
  schedule?: ISchedule | null;
  /** What a new schedule runs (e.g. `{path}`); the edited one's task otherwise. */
  task?: ITaskSubmission;
  /** What runs, shown under the title. */
  description: string;
  /** The name when the field is left empty. */
  defaultName: string;
  /** Decides the parameters hint. */
  kind: SubmitKind;
}

type FieldInput = HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

class ScheduleBody extends Widget implements Dialog.IBodyWidget<IScheduleRaw> {
  constructor(options: IScheduleDialogOptions, initial: IScheduleRaw) {
    super();
    this.addClass('jp-TaskRun-scheduleDialog');
    this.node.appendChild(
      h('p', 'jp-TaskRun-submitDescription', options.description)
    );
    const grid = h('div', 'jp-TaskRun-form');
    const field = (
      label: string,
      key: keyof IScheduleRaw,
      input: FieldInput,
      hint = '',
      extra: HTMLElement[] = []
    ) => {
      input.name = NAMES[key];
      input.id = `jp-TaskRun-schedule-${input.name}-${Private.nextId()}`;
      const l = h('label', 'jp-TaskRun-formLabel', label);
      l.htmlFor = input.id;
      const box = h('div', 'jp-TaskRun-formField');
      box.dataset.field = NAMES[key];
      const error = h('div', 'jp-TaskRun-fieldError');
      error.hidden = true;
      error.setAttribute('role', 'alert');
      box.append(input, error, ...extra);
      if (hint) {
        box.appendChild(h('div', 'jp-TaskRun-formHint', hint));
      }
      grid.append(l, box);
      this._inputs[key] = input;
      this._errors[key] = error;
    };
    const text = (value: string, placeholder = '') => {
      const input = h('input', 'jp-mod-styled');
      input.value = value;
      input.placeholder = placeholder;
      input.spellcheck = false;
      return input;
    };
    const select = (values: readonly string[], label: (v: any) => string) => {
      const s = h('select', 'jp-mod-styled');
      for (const v of values) {
        const option = h('option', '', label(v));
        option.value = v;
        s.appendChild(option);
      }
      return s;
    };

    field(trans.__('Name'), 'name', text(initial.name, options.defaultName));

    const cron = text(initial.cron, '0 3 * * *');
    cron.required = true;
    cron.classList.add('jp-TaskRun-cronInput');
    this._preview = h('div', 'jp-TaskRun-schedPreview');
    this._preview.setAttribute('aria-live', 'polite');
    field(
      trans.__('Cron'),
      'cron',
      cron,
      trans.__(
        'minute hour day-of-month month day-of-week, e.g. 0 3 * * * or */15 * * * 1-5; or @hourly, @daily, @weekly, @monthly, @yearly.'
      ),
      [this._preview]
    );

    const zone = text(initial.timezone, 'Europe/Berlin');
    const zones = knownTimeZones();
    if (zones.length) {
      const list = h('datalist');
      list.id = `jp-TaskRun-timezones-${Private.nextId()}`;
      list.append(
        ...zones.map(z => {
          const o = h('option');
          o.value = z;
          return o;
        })
      );
      zone.setAttribute('list', list.id);
      grid.appendChild(list);
    }
    field(
      trans.__('Time zone'),
      'timezone',
      zone,
      trans.__('The cron times are in this zone (IANA name).')
    );

    const params = h('textarea', 'jp-mod-styled');
    params.rows = 3;
    params.spellcheck = false;
    params.placeholder = PARAMETERS_EXAMPLE;
    params.value = initial.parameters;
    field(
      trans.__('Parameters'),
      'parameters',
      params,
      parametersHint(options.kind)
    );

    const overlap = select(OVERLAPS, overlapLabel);
    overlap.value = initial.overlap;
    field(
      trans.__('If still running'),
      'overlap',
      overlap,
      trans.__('What a run time does while the previous run has not ended.')
    );
    const catchUp = select(CATCH_UPS, catchUpLabel);
    catchUp.value = initial.catchUp;
    field(
      trans.__('Missed times'),
      'catchUp',
      catchUp,
      trans.__('Times that passed while the server was stopped.')
    );

    const enabled = h('input', 'jp-TaskRun-checkbox');
    enabled.type = 'checkbox';
    enabled.checked = initial.enabled;
    field(
      trans.__('Enabled'),
      'enabled',
      enabled,
      trans.__('Unticked: saved paused; resume it from the Schedules view.')
    );

    const url = text(initial.callbackUrl, 'https://example.org/hook');
    url.type = 'url';
    field(
      trans.__('Callback URL'),
      'callbackUrl',
      url,
      trans.__('Optional: receives a JSON POST when each run finishes.')
    );
    this.node.appendChild(grid);

    cron.addEventListener('input', () => this._schedulePreview());
    zone.addEventListener('input', () => this._schedulePreview());
    zone.addEventListener('change', () => this._schedulePreview());
    params.addEventListener('input', () =>
      this._setError('parameters', checkParameters(params.value))
    );
    url.addEventListener('input', () =>
      this._setError('callbackUrl', checkCallbackUrl(url.value))
    );
    this._setError('parameters', checkParameters(params.value));
  }

  getValue(): IScheduleRaw {
    const value = (key: keyof IScheduleRaw): string =>
      this._inputs[key]?.value ?? '';
    return {
      name: value('name'),
      cron: value('cron'),
      timezone: value('timezone'),
      parameters: value('parameters'),
      overlap: value('overlap') as IScheduleRaw['overlap'],
      catchUp: value('catchUp') as IScheduleRaw['catchUp'],
      enabled: (this._inputs.enabled as HTMLInputElement).checked,
      callbackUrl: value('callbackUrl')
    };
  }

  /** Show a refusal of the server under the field it names. */
  showServerError(message: string): void {
    this._setError(fieldOfError(message), message);
  }

  protected override onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    this._schedulePreview(0);
  }

  override dispose(): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
      this._timer = null;
    }
    super.dispose();
  }

  private _schedulePreview(delay = PREVIEW_DELAY): void {
    if (this._timer !== null) {
      window.clearTimeout(this._timer);
    }
    this._timer = window.setTimeout(() => {
      this._timer = null;
      void this._updatePreview();
    }, delay);
  }

  private async _updatePreview(): Promise<void> {
    const cron = (this._inputs.cron?.value ?? '').trim();
    const timezone = (this._inputs.timezone?.value ?? '').trim();
    const token = ++this._token;
    if (!cron) {
      this._setError('cron', '');
      this._setError('timezone', '');
      this._renderPreview(null, '');
      return;
    }
    this._preview.classList.add('jp-mod-loading');
    try {
      const preview = await ScheduleAPI.preview(cron, timezone);
      if (token !== this._token || this.isDisposed) {
        return;
      }
      this._setError('cron', '');
      this._setError('timezone', '');
      this._renderPreview(preview, '');
    } catch (error) {
      if (token !== this._token || this.isDisposed) {
        return;
      }
      this._setError('cron', '');
      this._setError('timezone', '');
      if (error instanceof APIError && error.status === 400) {
        this._setError(fieldOfError(error.message), error.message);
        this._renderPreview(null, '');
      } else {
        // no preview (the server is away): saving still checks the cron
        const message = error instanceof Error ? error.message : String(error);
        this._renderPreview(
          null,
          trans.__('No preview of the next runs: %1', message)
        );
      }
    } finally {
      if (token === this._token) {
        this._preview.classList.remove('jp-mod-loading');
      }
    }
  }

  private _renderPreview(preview: ISchedulePreview | null, note: string): void {
    const node = this._preview;
    node.replaceChildren();
    if (note) {
      node.appendChild(h('div', 'jp-TaskRun-schedPreviewNote', note));
    }
    if (!preview) {
      node.hidden = !note;
      return;
    }
    node.hidden = false;
    node.appendChild(
      h('div', 'jp-TaskRun-schedPreviewDescription', preview.description)
    );
    if (preview.next_runs.length) {
      node.appendChild(
        h('div', 'jp-TaskRun-schedPreviewTitle', trans.__('Next runs'))
      );
      const list = h('ol', 'jp-TaskRun-schedPreviewRuns');
      const now = Date.now();
      for (const run of preview.next_runs) {
        const item = h('li', '', formatRunTime(run, preview.timezone));
        item.dataset.time = run;
        item.appendChild(
          h('span', 'jp-TaskRun-schedUntil', ` · ${formatUntil(run, now)}`)
        );
        list.appendChild(item);
      }
      node.appendChild(list);
    } else {
      node.appendChild(
        h(
          'div',
          'jp-TaskRun-schedPreviewNote',
          trans.__('This cron never fires.')
        )
      );
    }
  }

  /** Mark a field invalid ('' clears), and let the Dialog re-check Save. */
  private _setError(key: keyof IScheduleRaw, message: string): void {
    const input = this._inputs[key];
    const error = this._errors[key];
    if (!input || !error) {
      return;
    }
    setText(error, message);
    error.hidden = !message;
    input.classList.toggle('jp-mod-error', !!message);
    input.setAttribute('aria-invalid', String(!!message));
    // the Dialog disables its accept button while a `.jp-mod-error` is inside;
    // it re-checks on `input` events
    this.node.dispatchEvent(new Event('input', { bubbles: true }));
  }

  private _inputs: { [K in keyof IScheduleRaw]?: FieldInput } = {};
  private _errors: { [K in keyof IScheduleRaw]?: HTMLElement } = {};
  private _preview: HTMLElement;
  private _timer: number | null = null;
  private _token = 0;
}

/** The `name` attribute of each field: the API's field names (tests find them so). */
const NAMES: { [K in keyof IScheduleRaw]: string } = {
  name: 'name',
  cron: 'cron',
  timezone: 'timezone',
  parameters: 'parameters',
  overlap: 'overlap',
  catchUp: 'catch_up',
  enabled: 'enabled',
  callbackUrl: 'callback_url'
};

/**
 * Ask for a schedule and save it (create or edit). Resolves to the saved
 * schedule, or null when cancelled.
 */
export async function editSchedule(
  options: IScheduleDialogOptions
): Promise<ISchedule | null> {
  const schedule = options.schedule ?? null;
  const base = schedule?.task ?? options.task ?? {};
  let values = initialValues(schedule, options.defaultName);
  let serverError = '';
  for (;;) {
    const body = new ScheduleBody(options, values);
    if (serverError) {
      body.showServerError(serverError);
    }
    const dialog = new Dialog<IScheduleRaw>({
      title: schedule
        ? trans.__('Edit Schedule “%1”', schedule.name)
        : trans.__('New Schedule'),
      body,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: trans.__('Save') })
      ],
      focusNodeSelector: 'input[name="cron"]'
    });
    const result = await dialog.launch();
    if (!result.button.accept || !result.value) {
      return null;
    }
    values = result.value;
    serverError = '';
    const parsed = parseScheduleValues(
      values,
      base,
      options.defaultName,
      schedule?.name ?? ''
    );
    if ('error' in parsed) {
      // (Enter in a field accepts even while Save is disabled)
      serverError = parsed.error;
      continue;
    }
    try {
      return schedule
        ? await options.model.update(schedule.id, parsed.input)
        : await options.model.create(parsed.input);
    } catch (error) {
      if (
        error instanceof APIError &&
        error.status >= 400 &&
        error.status < 500
      ) {
        serverError = error.message;
        await showErrorMessage(
          trans.__('The schedule was not saved'),
          error.message
        );
        continue;
      }
      throw error;
    }
  }
}

namespace Private {
  let counter = 0;
  export function nextId(): number {
    counter += 1;
    return counter;
  }
}
