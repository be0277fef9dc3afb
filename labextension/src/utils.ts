/**
 * Formatting helpers shared by the list, the detail view and the status bar.
 */
import {
  checkIcon,
  circleEmptyIcon,
  closeIcon,
  historyIcon,
  LabIcon,
  runningIcon,
  stopIcon
} from '@jupyterlab/ui-components';

import type { ITask, TaskStatus } from './models';

/** Parse an API time (ISO 8601, `Z`) to epoch milliseconds. */
export function parseTime(value: string | null | undefined): number | null {
  if (!value) {
    return null;
  }
  const ms = Date.parse(value);
  return Number.isFinite(ms) ? ms : null;
}

/** 0.4 → "0.4s", 75 → "1m 15s", 4000 → "1h 6m" */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) {
    return '';
  }
  if (seconds < 0) {
    seconds = 0;
  }
  if (seconds < 10) {
    return `${seconds.toFixed(1)}s`;
  }
  if (seconds < 60) {
    return `${Math.round(seconds)}s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes}m ${Math.round(seconds - minutes * 60)}s`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 24) {
    return `${hours}h ${minutes - hours * 60}m`;
  }
  const days = Math.floor(hours / 24);
  return `${days}d ${hours - days * 24}h`;
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
    return 'just now';
  }
  if (s < 60) {
    return `${Math.floor(s)}s ago`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)}m ago`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)}h ago`;
  }
  if (s < 86400 * 30) {
    return `${Math.floor(s / 86400)}d ago`;
  }
  return new Date(ms).toLocaleDateString();
}

/** Local date-time for tooltips and the detail view. */
export function formatTime(time: string | null | undefined): string {
  const ms = parseTime(time);
  return ms === null ? '—' : new Date(ms).toLocaleString();
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

export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined || !Number.isFinite(bytes)) {
    return '—';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value >= 100 || unit === 0 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`;
}

export function formatSeconds(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) {
    return '—';
  }
  if (value < 1) {
    return `${Math.round(value * 1000)} ms`;
  }
  return formatDuration(value);
}

export const STATUS_LABELS: { [K in TaskStatus]: string } = {
  queued: 'Queued',
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
  cancelled: 'Cancelled',
  timed_out: 'Timed out'
};

export function statusIcon(status: TaskStatus): LabIcon {
  switch (status) {
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

/** Remove ANSI escape sequences (colours, cursor moves) from log text. */
export function stripAnsi(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\u001b\[[0-9;?]*[ -/]*[@-~]|\u001b[@-Z\\-_]/g, '');
}

/** A file-name-safe version of a task name. */
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
