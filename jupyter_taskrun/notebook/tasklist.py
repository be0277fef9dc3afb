"""``TaskListPanel``: recent tasks with live statuses, and the ``TaskPanel`` of the one picked.

The list is a ``TaskListModel`` (``panel_model``) kept current by a ``ChangeFollower``
(``panel_transport``: the global ``/taskrun/api/events`` change feed, else re-listing every
``poll_interval`` s) on the kernel's background loop, and rendered by ``panel_view`` at most
every ``render_interval`` s. Names and other task text are escaped; widget traits are only
written under the panel's lock.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import Any

import ipywidgets as widgets

from . import panel_view as view
from .panel_model import TaskListModel
from .panel_transport import (
    BackgroundLoop,
    ChangeFollower,
    RenderThrottle,
    stop_following,
    sync_and_async_clients,
)

__all__ = ["TaskListPanel"]


class TaskListPanel(widgets.VBox):
    """Recent tasks with live statuses (from the global ``/taskrun/api/events`` feed).

    Pick a task in the drop-down and press *Open* to show its ``TaskPanel`` below.
    ``apply_change(change)`` folds one change-feed item in (used by the live thread and tests).
    """

    def __init__(
        self,
        client: Any = None,
        *,
        limit: int = 20,
        status: str | None = None,
        tag: str | None = None,
        start: bool = True,
        transport: str = "auto",
        poll_interval: float = 2.0,
        render_interval: float = 0.25,
        **kwargs: Any,
    ):
        self.client, self.aclient = sync_and_async_clients(client)
        self.transport = transport
        self.poll_interval = poll_interval
        self.render_interval = render_interval
        self.lock = threading.RLock()
        self.model = TaskListModel(limit=limit, status=status, tag=tag)
        self.throttle = RenderThrottle(self.render, render_interval)
        self.mode = "idle"
        self.mode_detail = ""
        self.render_count = 0
        self._future: concurrent.futures.Future | None = None
        self._bg: BackgroundLoop | None = None
        self._closed = False
        self.panels: dict[str, Any] = {}

        self.header = widgets.HTML()
        self.header.add_class("taskrun-list-header")
        self.table = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.table.add_class("taskrun-list")
        self.picker = widgets.Dropdown(options=[], description="Task", layout=widgets.Layout(width="28em"))
        self.open_button = widgets.Button(description="Open", icon="external-link", layout=widgets.Layout(width="auto"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", layout=widgets.Layout(width="auto"))
        self.open_button.on_click(lambda _b: self.open_selected())
        self.refresh_button.on_click(lambda _b: self.reload())
        self.detail = widgets.VBox(layout=widgets.Layout(width="100%"))
        kwargs.setdefault(
            "layout", widgets.Layout(width="100%", padding="6px 10px", border="1px solid var(--jp-border-color2, #ddd)", grid_gap="6px")
        )
        controls = widgets.HBox(
            [self.picker, self.open_button, self.refresh_button], layout=widgets.Layout(grid_gap="6px", align_items="center")
        )
        super().__init__([self.header, self.table, controls, self.detail], **kwargs)
        self.add_class("taskrun-list-panel")
        self.reload(render=False)
        self.render()
        if start:
            self.start()

    # what the model knows, under the names the panel always had
    tasks = property(lambda self: self.model.tasks, doc="``self.model.tasks``: task id → task")
    order = property(lambda self: self.model.order, doc="``self.model.order``: task ids, newest first")
    counts = property(lambda self: self.model.counts, doc="``self.model.counts``: the server's counts")
    limit = property(lambda self: self.model.limit)

    def __repr__(self) -> str:
        return f"<TaskListPanel {len(self.model.order)} tasks>"

    # -- data ------------------------------------------------------------------

    def reload(self, *, render: bool = True) -> None:
        """Re-read the recent tasks and the server's counts."""
        m = self.model
        page = self.client.list(status=m.filter_status, tag=m.filter_tag, limit=m.limit)
        try:
            counts = self.client.status()
        except Exception:  # noqa: BLE001
            counts = {}
        with self.lock:
            m.load(page, counts)
            if render:
                self.render()

    def apply_change(self, change: dict[str, Any]) -> None:
        """Fold one change of the global feed in and render now."""
        with self.lock:
            self.model.apply_change(change)
            self.render()

    # -- rendering -------------------------------------------------------------

    def render(self) -> None:
        """Push the model into the widgets (takes the lock; safe from any thread)."""
        with self.lock:
            if self._closed:
                return
            self.render_count += 1
            self.throttle.rendered()
            self.header.value = view.list_header_html(self.model.counts or {}, self.mode, self.poll_interval)
            self.table.value = view.list_table_html(self.model)
            options = view.list_options(self.model)
            current = self.picker.value
            if list(self.picker.options) != options:
                self.picker.options = options
                if current in self.model.tasks:
                    self.picker.value = current

    _render = render  # the name older code used

    def open_selected(self) -> Any:
        task_id = self.picker.value
        if not task_id:
            return None
        return self.open_task(task_id)

    def open_task(self, task_id: str) -> Any:
        """Show the live ``TaskPanel`` of one task below the list."""
        from .panel import TaskPanel  # panel.py imports this module

        panel = self.panels.get(task_id)
        if panel is None:
            panel = TaskPanel(self.client, task_id, start=self._future is not None)
            self.panels[task_id] = panel
        self.detail.children = (panel,)
        return panel

    # -- background ------------------------------------------------------------

    def start(self) -> None:
        with self.lock:
            if self._future is not None or self._closed:
                return
            self._bg = BackgroundLoop.get()
            self._future = self._bg.submit(ChangeFollower(self).run())

    def stop(self) -> None:
        stop_following(self)

    def close(self) -> None:
        if not hasattr(self, "lock"):
            return super().close()
        self._closed = True
        self.stop()
        for panel in self.panels.values():
            panel.close()
        for w in (self.header, self.table, self.picker, self.open_button, self.refresh_button, self.detail):
            w.close()
        super().close()
