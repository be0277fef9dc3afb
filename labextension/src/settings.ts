/**
 * The user's settings of the extension (schema/plugin.json, edited in Lab's
 * Settings Editor), as one module-level object every view reads.
 *
 * Guarantees: `settings.current` is always complete and valid (a missing or
 * malformed field falls back to its default), and `settings.changed` fires
 * after every change, so that views apply a change live, without a reload.
 */
import type { ISettingRegistry } from '@jupyterlab/settingregistry';
import { ISignal, Signal } from '@lumino/signaling';

export type NotifyLevel = 'all' | 'failed' | 'none';
export type ListColumn =
  'duration' | 'age' | 'ended' | 'owner' | 'tags' | 'progress';

export const LIST_COLUMNS: readonly ListColumn[] = [
  'duration',
  'age',
  'ended',
  'owner',
  'tags',
  'progress'
];

export interface ITaskRunSettings {
  notifications: NotifyLevel;
  notifyOtherClients: boolean;
  /** seconds */
  refreshInterval: number;
  standby: 'when-hidden' | 'never';
  defaultKernel: string;
  /** seconds; 0: none */
  defaultTimeout: number;
  defaultTags: string[];
  defaultPriority: number | null;
  columns: ListColumn[];
  valueColumns: string[];
  confirmDelete: boolean;
}

export const DEFAULT_SETTINGS: ITaskRunSettings = {
  notifications: 'all',
  notifyOtherClients: true,
  refreshInterval: 2,
  standby: 'when-hidden',
  defaultKernel: '',
  defaultTimeout: 0,
  defaultTags: [],
  defaultPriority: null,
  columns: [...LIST_COLUMNS],
  valueColumns: [],
  confirmDelete: true
};

const strings = (v: unknown): string[] | null =>
  Array.isArray(v) && v.every(x => typeof x === 'string') ? v : null;

/** A complete settings object from whatever the registry holds. */
export function normalize(raw: { [k: string]: unknown }): ITaskRunSettings {
  const d = DEFAULT_SETTINGS;
  const num = (v: unknown, fallback: number, min: number) =>
    typeof v === 'number' && Number.isFinite(v) && v >= min ? v : fallback;
  const columns = strings(raw.columns);
  return {
    notifications: ['all', 'failed', 'none'].includes(
      raw.notifications as string
    )
      ? (raw.notifications as NotifyLevel)
      : d.notifications,
    notifyOtherClients:
      typeof raw.notifyOtherClients === 'boolean'
        ? raw.notifyOtherClients
        : d.notifyOtherClients,
    refreshInterval: num(raw.refreshInterval, d.refreshInterval, 1),
    standby: raw.standby === 'never' ? 'never' : 'when-hidden',
    defaultKernel:
      typeof raw.defaultKernel === 'string'
        ? raw.defaultKernel
        : d.defaultKernel,
    defaultTimeout: num(raw.defaultTimeout, d.defaultTimeout, 0),
    defaultTags: strings(raw.defaultTags) ?? d.defaultTags,
    defaultPriority: Number.isInteger(raw.defaultPriority)
      ? (raw.defaultPriority as number)
      : null,
    columns: columns
      ? (columns.filter(c =>
          LIST_COLUMNS.includes(c as ListColumn)
        ) as ListColumn[])
      : d.columns,
    valueColumns: (strings(raw.valueColumns) ?? d.valueColumns).slice(0, 6),
    confirmDelete:
      typeof raw.confirmDelete === 'boolean'
        ? raw.confirmDelete
        : d.confirmDelete
  };
}

class TaskRunSettings {
  get current(): ITaskRunSettings {
    return this._current;
  }

  get changed(): ISignal<this, ITaskRunSettings> {
    return this._changed;
  }

  /** Follow the registry's settings of the plugin (live). */
  follow(settings: ISettingRegistry.ISettings): void {
    this._settings = settings;
    const apply = () => {
      this._current = normalize(
        settings.composite as unknown as { [k: string]: unknown }
      );
      this._changed.emit(this._current);
    };
    settings.changed.connect(apply);
    apply();
  }

  /** Change one setting (saved in the user's settings; `changed` follows). */
  async set<K extends keyof ITaskRunSettings>(
    key: K,
    value: ITaskRunSettings[K]
  ): Promise<void> {
    if (this._settings) {
      await this._settings.set(key, value as never);
    } else {
      this._current = { ...this._current, [key]: value };
      this._changed.emit(this._current);
    }
  }

  private _current: ITaskRunSettings = { ...DEFAULT_SETTINGS };
  private _settings: ISettingRegistry.ISettings | null = null;
  private _changed = new Signal<this, ITaskRunSettings>(this);
}

export const settings = new TaskRunSettings();
