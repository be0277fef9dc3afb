/**
 * Helpers shared by the list, the detail view and the status bar: times and
 * ages, status labels and icons, small DOM builders. Durations, byte sizes,
 * ANSI stripping and the executed-notebook name follow the one convention in
 * format.ts.
 */
import {
  checkIcon,
  circleEmptyIcon,
  closeIcon,
  historyIcon,
  LabIcon,
  pauseIcon,
  runningIcon,
  stopIcon
} from '@jupyterlab/ui-components';

import { EMPTY } from './format';
import { trans } from './i18n';
import type { ITask, TaskStatus } from './models';

/** Parse an API time (ISO 8601, `Z`) to epoch milliseconds. */
export function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

/** "just now", "5s ago", "3m ago", "2h ago", "4d ago", or a date. */
export function formatAge(
  time: string | null | undefined,
  now = Date.now()
): string {
  const ms = parseTime(time);
  if (ms === null) {
    return '';
  }
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 5) {
    return trans.__('just now');
  }
  if (s < 60) {
    return trans.__('%1s ago', Math.floor(s));
  }
  if (s < 3600) {
    return trans.__('%1m ago', Math.floor(s / 60));
  }
  if (s < 86400) {
    return trans.__('%1h ago', Math.floor(s / 3600));
  }
  if (s < 86400 * 30) {
    return trans.__('%1d ago', Math.floor(s / 86400));
  }
  return new Date(ms).toLocaleDateString();
}

/** Local date-time for tooltips and the detail view. */
export function formatTime(time: string | null | undefined): string {
  const ms = parseTime(time);
  return ms === null ? EMPTY : new Date(ms).toLocaleString();
}

/** Wall time of a task: finished-started, or running so far. */
export function taskDuration(task: ITask, now = Date.now()): number | null {
  const started = parseTime(task.started_at);
  if (started === null) {
    return null;
  }
  const finished = parseTime(task.finished_at);
  return ((finished ?? now) - started) / 1000;
}

/** The statuses' names, translated when read (after the plugin set the translator). */
export const STATUS_LABELS: { readonly [K in TaskStatus]: string } = {
  get waiting() {
    return trans.__('Waiting');
  },
  get queued() {
    return trans.__('Queued');
  },
  get running() {
    return trans.__('Running');
  },
  get completed() {
    return trans.__('Completed');
  },
  get failed() {
    return trans.__('Failed');
  },
  get cancelled() {
    return trans.__('Cancelled');
  },
  get timed_out() {
    return trans.__('Timed out');
  }
};

export function statusIcon(status: TaskStatus): LabIcon {
  switch (status) {
    case 'waiting':
      return pauseIcon;
    case 'queued':
      return circleEmptyIcon;
    case 'running':
      return runningIcon;
    case 'completed':
      return checkIcon;
    case 'failed':
      return closeIcon;
    case 'cancelled':
      return stopIcon;
    case 'timed_out':
      return historyIcon;
    default:
      return circleEmptyIcon;
  }
}

/** Fraction 0..1 of a task's progress, or null when unknown. */
export function progressFraction(task: ITask): number | null {
  const p = task.progress;
  if (!p || p.total === null || p.total === undefined || !(p.total > 0)) {
    return null;
  }
  return Math.max(0, Math.min(1, p.value / p.total));
}

/** A file-name-safe version of a task name (for the downloaded log). */
export function safeFileName(name: string): string {
  const cleaned = name
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, 60);
  return cleaned || 'task';
}

/**
 * A new `<span>` holding the icon. (`LabIcon.element({container})` would
 * replace the container's own classes, so icons always get their own node.)
 */
export function iconNode(
  icon: LabIcon,
  className = '',
  title?: string
): HTMLElement {
  return icon.element({
    tag: 'span',
    className: `jp-TaskRun-icon ${className}`.trim(),
    title
  });
}

/** Create an element with a class and optional text. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text?: string
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (className) {
    el.className = className;
  }
  if (text !== undefined) {
    el.textContent = text;
  }
  return el;
}

/** Set text only when it changed (avoids needless layout work). */
export function setText(el: HTMLElement, text: string): void {
  if (el.textContent !== text) {
    el.textContent = text;
  }
}
