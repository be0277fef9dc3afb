"""What the JupyterLab browser tests share: the Tasks sidebar's selectors and small waits."""

from __future__ import annotations

import time
import uuid
from typing import Any

PANEL = "#jupyter-taskrun-panel"
PANEL_TAB = '.lm-TabBar-tab[data-id="jupyter-taskrun-panel"]'


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def open_panel(page: Any) -> Any:
    panel = page.locator(PANEL)
    if not panel.is_visible():
        page.locator(PANEL_TAB).click()
    panel.wait_for(state="visible")
    # the panel switches from standby to the live stream when shown
    page.wait_for_selector(f'{PANEL} .jp-TaskRun-live[data-mode="stream"]', timeout=15000)
    return panel


def row(page: Any, task_id: str) -> Any:
    return page.locator(f'{PANEL} .jp-TaskRun-row[data-task-id="{task_id}"]')


def toolbar_button(page: Any, task_id: str, name: str) -> Any:
    """A toolbar button of a task's detail view, by its toolbar item name."""
    return page.locator(f'#jupyter-taskrun-detail-{task_id} .jp-Toolbar-item[data-jp-item-name="{name}"] jp-button')


def wait_enabled(page: Any, task_id: str, name: str, timeout: float = 15000) -> None:
    page.wait_for_selector(
        f'#jupyter-taskrun-detail-{task_id} .jp-Toolbar-item[data-jp-item-name="{name}"] jp-button[aria-disabled="false"]',
        timeout=timeout,
    )


def clear_field(field: Any) -> None:
    """Empty a text input as a user does. Playwright's ``fill("")`` selects the text, then presses
    Delete on whatever has the focus by then: a focus change in between (a notification, a
    re-render) leaves the text there, so it is checked and done again."""
    for _ in range(5):
        field.fill("")
        if field.input_value() == "":
            return
        time.sleep(0.1)
    raise AssertionError(f"could not empty {field}: {field.input_value()!r}")


def wait_until(predicate: Any, timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s: {what} (last: {last!r})")
