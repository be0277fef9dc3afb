"""Live ipywidgets for tasks: ``TaskPanel`` (one task) and ``TaskListPanel`` (recent tasks, ``tasklist``).

Both are pure-Python composites of stock ipywidgets (no front-end code to install), fed from the
server's event streams *in the kernel*. The work is split in rooms:

* ``panel_model``: events and task objects folded into plain state (no widgets, no I/O);
* ``panel_view``: that state as HTML (escaped; outputs through the sanitiser ``panel_render``);
  ``panel_results``: a card per ``record()``ed value (a chart per series) and the ``--out`` line;
* ``panel_transport``: the background thread, the event stream, the polling fallback, the
  render throttle (at most ~10 renders per second, ``render_interval``);
* here: the widgets, their wiring, and the buttons (cancel, rerun, open the executed notebook,
  load the ``--out`` variables into the notebook: ``TaskHandle.pull``, so unpickled in this kernel only).

Task outputs are untrusted (an admin may open another user's task): each is shown as sanitised,
script-free HTML in one ``widgets.HTML``, never in a ``widgets.Output`` (which Lab renders
trusted). ``clear`` events drop a cell's shown outputs (``clear_output``); the log keeps everything.
Widget traits are only ever written under the panel's lock.

Theme and keyboard: colours are JupyterLab's ``--jp-*`` variables (``panel_view.PANEL_STYLE``, which
the panel carries in a hidden ``widgets.HTML``), so it follows Light, Dark and high-contrast
themes; every control is a real button or link (Tab, Enter, Space) named by its text and tooltip.

For tests and for replaying a finished task: ``TaskPanel(client, task_id, start=False)`` then
``panel.apply_event(event)`` for each event, and inspect ``child.get_state()``.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from typing import Any

import ipywidgets as widgets

from ..formatting import executed_notebook_name
from . import panel_view as view
from .panel_model import ACTIVE, TERMINAL, TaskPanelModel
from .panel_render import render_output, sanitize_html
from .panel_results import results_html, values_html
from .panel_transport import (
    BackgroundLoop,
    RenderThrottle,
    TaskFollower,
    short_error,
    stop_following,
    sync_and_async_clients,
)
from .panel_view import STATUS_COLORS
from .tasklist import TaskListPanel

__all__ = ["STATUS_COLORS", "TaskListPanel", "TaskPanel", "sanitize_html"]


def _model_attribute(name: str) -> property:
    return property(lambda self: getattr(self.model, name), doc=f"``self.model.{name}`` (read-only)")


class TaskPanel(widgets.VBox):
    """A live panel of one task: status, progress, elapsed time, logs, outputs, metrics, actions.

    ``TaskPanel(client, task_id)`` starts following the task at once; ``start=False``
    builds it idle (call ``start()`` later, or feed events with ``apply_event``).
    ``client`` is a ``TaskRunClient`` or ``AsyncTaskRunClient`` (``None``: discover the server).
    ``transport="poll"`` skips streaming and polls every ``poll_interval`` seconds.
    What it knows is ``panel.model`` (a ``TaskPanelModel``).
    """

    def __init__(
        self,
        client: Any = None,
        task_id: str | None = None,
        *,
        task: dict[str, Any] | None = None,
        start: bool = True,
        transport: str = "auto",
        poll_interval: float = 2.0,
        render_interval: float = 0.1,
        max_log_chars: int = 50_000,
        max_outputs: int = 100,
        **kwargs: Any,
    ):
        if task_id is None and task is None:
            raise TypeError("TaskPanel needs a task id")
        if transport not in ("auto", "stream", "poll"):
            raise ValueError("transport must be 'auto', 'stream' or 'poll'")
        self.client, self.aclient = sync_and_async_clients(client)
        if task is None:
            task = self.client.get(task_id)
        self.task_id: str = task_id or task["id"]
        self.transport = transport
        self.poll_interval = poll_interval
        self.render_interval = render_interval
        self.lock = threading.RLock()
        self.model = TaskPanelModel({**task, "id": self.task_id}, max_log_chars=max_log_chars, max_outputs=max_outputs)
        self.throttle = RenderThrottle(self.render, render_interval)
        self.mode = "idle"  # idle | stream | poll | done | closed
        self.mode_detail = ""
        self.notice = ""
        self._notice_error = False
        self.saved_path: str | None = None
        self.reruns: list[TaskPanel] = []
        self.render_count = 0
        self.done_event = threading.Event()
        self._future: concurrent.futures.Future | None = None
        self._closed = False
        self._bg: BackgroundLoop | None = None
        self._rendered_outputs_version = -1
        self._rendered_error: Any = None
        self._rendered_log_total = -1
        self._rendered_values_version = -1
        #: the ``--out`` variables assigned into the notebook (by the button, ``load_results`` or ``--wait``)
        self.loaded: list[str] = []
        self._output_widgets: dict[int, tuple[dict[str, Any], widgets.HTML]] = {}
        self._build(kwargs)
        self.render()
        if start:
            self.start()

    def _build(self, kwargs: dict[str, Any]) -> None:
        def html(css_class: str | None = None, **layout: Any) -> widgets.HTML:
            w = widgets.HTML(layout=widgets.Layout(**layout))
            if css_class:
                w.add_class(css_class)
            return w

        def row(children: list[Any], **layout: Any) -> widgets.HBox:
            return widgets.HBox(children, layout=widgets.Layout(align_items="center", **layout))

        self.title_html = html(flex="1 1 auto")
        self.badge = html("taskrun-badge")
        self.elapsed_label = html("taskrun-elapsed")
        self.queue_label = html("taskrun-queue")
        self.mode_label = html()
        header = row([self.title_html, self.queue_label, self.elapsed_label, self.badge], width="100%", grid_gap="10px")
        self.progress_bar = widgets.FloatProgress(
            value=0.0, min=0.0, max=1.0, tooltip="Task progress", layout=widgets.Layout(flex="1 1 auto", width="auto")
        )
        self.progress_bar.add_class("taskrun-progress")
        self.progress_label = html(min_width="14em")
        self.progress_row = row([self.progress_bar, self.progress_label], width="100%", grid_gap="8px", display="none")
        self.log_view = html("taskrun-log", width="100%")
        self.follow_toggle = widgets.ToggleButton(
            value=True,
            description="Follow",
            icon="arrow-down",
            tooltip="Follow the end of the log (off: the log stays where you scrolled it)",
            layout=widgets.Layout(width="auto", height="24px"),
        )
        self.follow_toggle.observe(self._on_follow, "value")
        self.log_header = html()
        self.log_box = widgets.VBox(
            [row([self.log_header, self.follow_toggle], grid_gap="8px"), self.log_view], layout=widgets.Layout(width="100%", display="none")
        )
        # task outputs are untrusted: sanitised HTML, one widgets.HTML each, never a (trusted) widgets.Output
        self.outputs_view = widgets.VBox(layout=widgets.Layout(width="100%", display="none"))
        self.outputs_view.add_class("taskrun-outputs")
        self.error_html = html()
        self.traceback_view = html("taskrun-traceback", width="100%")
        self.error_view = widgets.VBox([self.error_html, self.traceback_view], layout=widgets.Layout(width="100%", display="none"))
        self.error_view.add_class("taskrun-error")
        self.metrics_view = html("taskrun-metrics")
        btn = widgets.Layout(width="auto")
        # record()ed values: a card each (a chart for a series); --out variables: a line and a button
        self.values_view = html("taskrun-values-view", width="100%", display="none")
        self.results_label = html(flex="0 1 auto")
        self.load_button = widgets.Button(
            description="Load into notebook",
            icon="download",
            layout=widgets.Layout(width="auto"),
            tooltip="Assign the variables this task sent back (--out) in this notebook's namespace",
        )
        self.load_button.on_click(lambda _b: self.load_results())
        self.results_row = row([self.results_label, self.load_button], width="100%", grid_gap="8px", display="none")
        self.results_row.add_class("taskrun-results-row")
        self.cancel_button = widgets.Button(
            description="Cancel", icon="stop", button_style="danger", layout=btn, tooltip="Cancel this task"
        )
        self.rerun_button = widgets.Button(description="Rerun", icon="redo", layout=btn, tooltip="Run this task again, as a new task")
        self.notebook_button = widgets.Button(
            description="Open executed notebook", icon="book", layout=btn, tooltip="Save the executed notebook next to this one and link it"
        )
        self.cancel_button.on_click(lambda _b: self.cancel())
        self.rerun_button.on_click(lambda _b: self.rerun())
        self.notebook_button.on_click(lambda _b: self.open_notebook())
        self.link_view = html("taskrun-notice", flex="1 1 auto")
        actions = row(
            [self.cancel_button, self.rerun_button, self.notebook_button, self.link_view],
            width="100%",
            grid_gap="6px",
            flex_flow="row wrap",
        )
        self.rerun_box = widgets.VBox(layout=widgets.Layout(width="100%"))
        kwargs.setdefault(
            "layout", widgets.Layout(width="100%", padding="6px 10px", border="1px solid var(--jp-border-color2, #ddd)", grid_gap="6px")
        )
        footer = row([self.metrics_view, self.mode_label], justify_content="space-between", width="100%")
        # the theme's classes (a <style> applies wherever it sits; the box itself takes no room)
        self.style_view = widgets.HTML(view.PANEL_STYLE, layout=widgets.Layout(display="none"))
        super().__init__(
            [
                self.style_view,
                header,
                self.progress_row,
                self.log_box,
                self.outputs_view,
                self.values_view,
                self.error_view,
                self.results_row,
                footer,
                actions,
                self.rerun_box,
            ],
            **kwargs,
        )
        self.add_class("taskrun-panel")

    # what the model knows, under the names panels always had
    task = _model_attribute("task")
    status = _model_attribute("status")
    last_seq = _model_attribute("last_seq")
    events_seen = _model_attribute("events_seen")
    log_buffer = _model_attribute("log_buffer")
    outputs = _model_attribute("outputs")
    samples = _model_attribute("samples")
    metrics = _model_attribute("metrics")
    progress = _model_attribute("progress")
    error = _model_attribute("error")
    reason = _model_attribute("reason")
    result = _model_attribute("result")
    cell_index = _model_attribute("cell_index")
    truncated = _model_attribute("truncated")
    done = _model_attribute("done")

    # ------------------------------------------------------------------ public API

    def start(self) -> None:
        """Follow the task in the background (stream, else poll) until it ends."""
        with self.lock:
            if self._future is not None or self._closed:
                return
            if self.model.caught_up:
                self.mode = "done"
                self.done_event.set()
                self.render()
                return
            self._bg = BackgroundLoop.get()
            self._future = self._bg.submit(TaskFollower(self).run())

    def stop(self) -> None:
        """Stop following (closes the event stream); the panel keeps what it shows."""
        stop_following(self)

    def close(self) -> None:
        if not hasattr(self, "lock"):  # failed half-way through __init__
            return super().close()
        self._closed = True
        self.stop()
        self.mode = "closed"
        for child in self._all_widgets():
            child.close()
        for panel in self.reruns:
            panel.close()
        super().close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the panel has seen the task finish (True) or ``timeout`` s passed (False)."""
        return self.done_event.wait(timeout)

    def apply_event(self, event: dict[str, Any]) -> None:
        """Fold one task event (as ``stream_events`` yields it) into the panel and render now."""
        with self.lock:
            self.model.apply_event(event)
            self.render()

    def refresh(self) -> None:
        """Re-read the task from the server (status, progress, metrics, error) and render."""
        task = self.client.get(self.task_id)
        with self.lock:
            self.model.apply_task(task)
            self.render()

    def outputs_html(self) -> list[str]:
        """The HTML each shown output is rendered to (what the browser receives), in order."""
        return [w.value for w in self.outputs_view.children]

    # -- actions (button callbacks; run in the kernel's main thread, never raise) --

    def cancel(self) -> None:
        try:
            task = self._call_server("cancel", self.task_id)
        except Exception as e:  # noqa: BLE001 - shown to the user, never raised into a callback
            self.set_notice(f"cancel failed: {self._why(e)}", error=True)
            return
        with self.lock:
            self.notice = "cancellation requested"
            if task.get("status") in TERMINAL:
                self.model.apply_task(task)
            self.render()

    def rerun(self) -> TaskPanel | None:
        try:
            new = self._call_server("rerun", self.task_id)
        except Exception as e:  # noqa: BLE001
            self.set_notice(f"rerun failed: {self._why(e)}", error=True)
            return None
        panel = TaskPanel(
            self.client,
            new["id"],
            task=new,
            start=True,
            transport=self.transport,
            poll_interval=self.poll_interval,
            render_interval=self.render_interval,
            max_log_chars=self.model.log_buffer.max_chars,
            max_outputs=self.model.max_outputs,
        )
        with self.lock:
            self.reruns.append(panel)
            self.rerun_box.children = (*self.rerun_box.children, panel)
            self.notice = f"rerun as task {new['id'][:8]}"
            self.render()
        return panel

    def open_notebook(self, path: str | None = None) -> str | None:
        """Save the executed notebook into the server's contents and show a link to it."""
        from ..client import TaskRunHTTPError

        name = executed_notebook_name(self.model.task.get("name"), self.task_id)
        path = path or self._default_notebook_path(name)
        try:
            saved = self.client.notebook(self.task_id, save=path)
        except Exception as e:  # noqa: BLE001
            if isinstance(e, TaskRunHTTPError) and e.status == 409:
                saved = {"path": path}  # saved by an earlier click: a finished task's notebook does not change
            elif path != name and "path" in str(e).lower():
                try:  # the folder next to this notebook is not writable/visible: use the root
                    saved = self.client.notebook(self.task_id, save=name)
                except Exception as e2:  # noqa: BLE001
                    self.set_notice(f"could not save the notebook: {short_error(e2)}", error=True)
                    return None
            else:
                self.set_notice(f"could not save the notebook: {short_error(e)}", error=True)
                return None
        with self.lock:
            self.saved_path = saved.get("path", path)
            self.notice = ""
            self.render()
        return self.saved_path

    def load_results(self, namespace: dict[str, Any] | None = None) -> list[str] | None:
        """Assign the ``--out`` variables the task sent back in ``namespace`` (default: the notebook's,
        as ``TaskHandle.pull``); the button's action. Returns the names, or None (the notice says why)."""
        from .handle import TaskHandle

        ready, _failed = self.model.results()
        if not ready:
            self.set_notice("no results to load", error=True)
            return None
        try:
            names = TaskHandle(self.client, self.task_id).pull(ready, namespace=namespace, timeout=30)
        except Exception as e:  # noqa: BLE001 - shown to the user, never raised into a callback
            self.set_notice(f"could not load the results: {short_error(e)}", error=True)
            return None
        self.note_loaded(names)
        return names

    def note_loaded(self, names: list[str]) -> None:
        """Say these results are in the notebook now (``%%taskrun --wait`` assigned them)."""
        with self.lock:
            self.loaded = list(dict.fromkeys([*self.loaded, *names]))
            self.notice = ""
            self.render()

    def _call_server(self, method: str, *args: Any) -> Any:
        """A client call; when the server cannot be reached or refuses the token (restarted on another
        port, or with a new token), look for it again (runtime info, environment) and retry once."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError

        try:
            return getattr(self.client, method)(*args)
        except (TaskRunConnectionError, TaskRunHTTPError) as e:
            if isinstance(e, TaskRunHTTPError) and e.status not in (401, 403):
                raise
            if not self._rediscover():
                raise
        return getattr(self.client, method)(*args)

    def _rediscover(self) -> bool:
        from ..client import TaskRunClient, discover_server

        try:
            info = discover_server()
        except Exception:  # noqa: BLE001 - no server found: keep the old one, say why
            return False
        if (info.url, info.token) == (self.client.url, self.client.token):
            return False
        self.client, self.aclient = sync_and_async_clients(TaskRunClient(info.url, info.token))
        return True

    def _why(self, e: BaseException) -> str:
        """A failed action's reason as the user needs it (what to do after a server restart)."""
        from ..client import TaskRunConnectionError, TaskRunHTTPError

        again = "show the task again with %taskrun panel " + self.task_id[:8]
        if isinstance(e, TaskRunConnectionError):
            return (
                f"the Jupyter server at {self.client.url} cannot be reached (stopped or restarted elsewhere?); "
                f"once it is back, press again, or {again}"
            )
        if isinstance(e, TaskRunHTTPError) and e.status in (401, 403):
            return f"the Jupyter server at {self.client.url} refused this panel's token (restarted with a new token?); {again}"
        if isinstance(e, TaskRunHTTPError) and e.status == 404:
            return f"task {self.task_id[:8]} is not on this server (any more)"
        return short_error(e)

    def _default_notebook_path(self, name: str) -> str:
        """Next to the notebook this kernel belongs to (``JPY_SESSION_NAME``), else the server root."""
        folder = ""
        session = os.environ.get("JPY_SESSION_NAME") or ""
        root = getattr(self.client, "server_root", None)
        if session:
            if os.path.isabs(session):
                if root:
                    try:
                        rel = os.path.relpath(os.path.dirname(session), root)
                    except ValueError:
                        rel = ".."
                    folder = "" if rel.startswith("..") or rel == "." else rel
            else:
                folder = os.path.dirname(session)
        folder = folder.replace(os.sep, "/").strip("/")
        return f"{folder}/{name}" if folder else name

    # -- notices (also used by the follower) --

    def set_notice(self, text: str, *, error: bool = False) -> None:
        with self.lock:
            self.notice = text
            self._notice_error = error
            self.render()

    def clear_notice(self, text: str) -> None:
        """Drop the notice if it still says ``text`` (caller holds the lock)."""
        if self.notice == text:
            self.notice = ""

    # ------------------------------------------------------------------ rendering

    def render(self) -> None:
        """Push the model into the widgets (takes the lock; safe from any thread)."""
        with self.lock:
            if self._closed:
                return
            self.throttle.rendered()
            self.render_count += 1
            self._render_widgets()

    _render = render  # the name tests and older code used

    def _render_widgets(self) -> None:
        model, status = self.model, self.model.status
        self.title_html.value = view.title_html(model)
        self.badge.value = view.status_html(model)
        self.layout.border_left = f"4px solid {STATUS_COLORS.get(status, STATUS_COLORS['queued'])}"
        self.elapsed_label.value = view.elapsed_html(model)
        self.queue_label.value = view.queue_html(model)
        bar = view.progress_bar_state(model)
        if bar:
            self.progress_bar.max = bar["max"]
            self.progress_bar.value = bar["value"]
            self.progress_bar.bar_style = bar["bar_style"]
            self.progress_label.value = view.progress_text_html(model)
            self.progress_row.layout.display = "flex"
        else:
            self.progress_row.layout.display = "none"
        log = model.log_buffer
        if log.total:
            self.log_box.layout.display = "flex"
            self.log_header.value = view.log_header_html(model)
            if (self.follow_toggle.value or model.done) and self._rendered_log_total != log.total:
                self._rendered_log_total = log.total
                self.log_view.value = view.log_box_html(log)
        if model.outputs_version != self._rendered_outputs_version:
            self._rendered_outputs_version = model.outputs_version
            self._render_outputs()
        self._render_error()
        self._render_results()
        self.metrics_view.value = view.metrics_html(model)
        self.mode_label.value = "" if model.done else view.mode_html(self.mode, self.mode_detail, self.poll_interval)
        # a finished log no longer moves: nothing to follow
        self.follow_toggle.layout.display = "none" if model.done else ""
        if self.notice == "cancellation requested" and model.done:
            self.notice = ""  # the outcome is in the badge and the error head now
        self.cancel_button.disabled = status not in ACTIVE
        self.notebook_button.disabled = not model.done
        self.rerun_button.disabled = False
        link = view.notebook_link_html(self.client.url, self.saved_path) if self.saved_path else ""
        self.link_view.value = link + (view.notice_html(self.notice, error=self._notice_error) if self.notice else "")

    def _render_error(self) -> None:
        model = self.model
        key = (model.status, repr(model.error), model.reason)
        if key == self._rendered_error:
            return
        self._rendered_error = key
        head = view.error_head_html(model)
        self.error_html.value = head
        traceback = (model.error or {}).get("traceback") or []
        self.traceback_view.value = view.traceback_html(traceback) if head and traceback else ""
        self.traceback_view.layout.display = "flex" if head and traceback else "none"
        self.error_view.layout.display = "flex" if head else "none"

    def _render_results(self) -> None:
        model = self.model
        if model.values_version != self._rendered_values_version:
            self._rendered_values_version = model.values_version
            self.values_view.value = values_html(model)
            self.values_view.layout.display = "flex" if self.values_view.value else "none"
        line = results_html(model, self.loaded)
        if line != self.results_label.value:
            self.results_label.value = line
        ready, _failed = model.results()
        self.results_row.layout.display = "flex" if line else "none"
        self.load_button.layout.display = "" if ready else "none"
        self.load_button.description = "Load again" if ready and set(ready) <= set(self.loaded) else "Load into notebook"

    def _render_outputs(self) -> None:
        """One ``widgets.HTML`` of sanitised HTML per shown output; unchanged outputs keep theirs."""
        cache = self._output_widgets
        children = []
        for out in self.model.outputs:
            key = out.get("_key", id(out))
            entry = cache.get(key)
            if entry is None:
                w = widgets.HTML(render_output(out), layout=widgets.Layout(width="100%"))
                w.add_class("taskrun-output")
                cache[key] = (out, w)
            else:
                shown, w = entry
                if shown is not out:
                    w.value = render_output(out)
                    cache[key] = (out, w)
            children.append(w)
        keep = {out.get("_key", id(out)) for out in self.model.outputs}
        for key in [k for k in cache if k not in keep]:
            cache.pop(key)[1].close()
        self.outputs_view.children = tuple(children)
        self.outputs_view.layout.display = "flex" if children else "none"

    def _on_follow(self, change: dict[str, Any]) -> None:
        if change["new"]:
            with self.lock:
                self._rendered_log_total = -1
                self.render()

    def _all_widgets(self) -> list[widgets.Widget]:
        out: list[widgets.Widget] = []

        def walk(w: widgets.Widget) -> None:
            for child in getattr(w, "children", ()):
                if isinstance(child, TaskPanel):
                    continue
                out.append(child)
                walk(child)

        walk(self)
        return out

    def __repr__(self) -> str:
        return f"<TaskPanel {self.task_id[:8]} {self.status}>"
