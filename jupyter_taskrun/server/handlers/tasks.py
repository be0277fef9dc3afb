"""REST handlers for tasks: parse → call the TaskRun service → serialise."""

from __future__ import annotations

import errno
import json
import os
import re
import urllib.parse
from typing import Any

from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import authorized
from tornado import web

from ...errors import InvalidSubmission, TaskStateConflict
from ...execution.submission import resolve_path
from ...models import TaskStatus
from ..cleanup import MAX_CLEAR
from ..results import parse_sort, parse_where
from .base import TaskRunHandler, TaskRunHTTPError, query_time

_STATUSES = {s.value for s in TaskStatus}
#: ``GET /tasks?sort=``: a task field (``-`` first: descending), besides ``values.NAME``
_FIELD_SORTS = ("created", "name", "status", "duration", "finished")
MAX_WAIT = 3600.0


#: query parameters ``DELETE /tasks`` knows (and the credentials a request may carry in its URL)
_CLEAR_PARAMS = {"status", "before", "owner", "limit", "token", "_xsrf"}


class TasksHandler(TaskRunHandler):
    """``/taskrun/api/tasks``: list, submit, and delete finished tasks by filter."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        status = self.query("status")
        statuses = None
        if status:
            statuses = [s for s in status.split(",") if s]
            bad = [s for s in statuses if s not in _STATUSES]
            if bad:
                raise TaskRunHTTPError(400, f"unknown status {bad[0]!r}; use one of {', '.join(sorted(_STATUSES))}", "invalid")
        owner = self.query("owner")
        if not await self.sees_all():
            owner = self.username
        sort = self.query("sort")
        field_sort = (sort.lstrip("-"), sort.startswith("-")) if sort and sort.lstrip("-") in _FIELD_SORTS else None
        if sort and field_sort is None and not sort.lstrip("-").startswith("values."):
            raise InvalidSubmission(
                f"'sort' must be one of {', '.join(_FIELD_SORTS)} or values.NAME (a leading '-': descending), not {sort[:100]!r}"
            )
        if sort and sort.startswith("--"):
            raise InvalidSubmission(f"'sort' takes one leading '-', not {sort[:100]!r}")
        tasks, cursor = self.taskrun.list(
            status=statuses,
            tag=self.query("tag") or None,
            owner=owner or None,
            name=self.query("name") or None,
            schedule=self.query("schedule") or None,
            limit=int(self.query_number("limit", 50, minimum=1, maximum=500, integer=True)),
            cursor=self.query("cursor") or None,
            sort_value=None if field_sort else parse_sort(sort),
            sort_field=field_sort,
            created_after=query_time(self.query("created_after"), "created_after"),
            created_before=query_time(self.query("created_before"), "created_before"),
            where_values=parse_where(self.query("where")),
            latest_attempts=self._latest_attempts(),
        )
        self.write_json({"tasks": [self.task_json(t) for t in tasks], "next_cursor": cursor})

    def _latest_attempts(self) -> bool:
        """``?attempts=latest`` (default: a retried try is left out, its last try shown) or ``all``."""
        attempts = self.query("attempts", "latest")  # an empty value is refused, not taken for the default
        if attempts not in ("latest", "all"):
            raise TaskRunHTTPError(400, "'attempts' must be latest or all", "invalid")
        return attempts == "latest"

    @web.authenticated
    @authorized
    async def post(self) -> None:
        wait = self.query_number("wait", None, maximum=MAX_WAIT)
        task = await self.taskrun.submit(self.json_body(), owner=self.username)
        await self._reply_created(task, wait)

    @web.authenticated
    @authorized
    async def delete(self) -> None:
        """``?status=completed,failed&before=<ISO 8601>&limit=N``: the caller's finished tasks;
        an admin (``taskrun:all``) may name another user with ``owner``."""
        # JupyterLab's ServerConnection appends a blank ``&<milliseconds>`` cache-buster to requests:
        # a valueless all-digit key is that, not a filter
        query = self.request.query_arguments
        unknown = sorted(k for k in set(query) - _CLEAR_PARAMS if not (k.isdigit() and not any(query[k])))
        if unknown:
            raise InvalidSubmission(f"unknown query parameter(s): {', '.join(unknown)}; use status, before, owner, limit")
        owner = self.query("owner") or self.username
        if owner != self.username and not await self.sees_all():
            raise TaskRunHTTPError(403, "you may only delete your own tasks", "forbidden")
        statuses = [s for s in (self.query("status") or "").split(",") if s]
        before = query_time(self.query("before"), "before")
        limit = int(self.query_number("limit", MAX_CLEAR, minimum=1, maximum=MAX_CLEAR, integer=True))
        result = await self.taskrun.clear_finished(owner, statuses, before, limit)
        self.write_json(result.to_dict())

    async def _reply_created(self, task: Any, wait: float | None) -> None:
        base = self.base_url.rstrip("/")
        self.set_header("Location", f"{base}/taskrun/api/tasks/{task.id}")
        if wait:
            task = await self.taskrun.wait(task.id, wait)
            self.write_json(self.task_json(task), 200 if task.status.is_terminal else 202)
            return
        self.write_json(self.task_json(task), 201)


class BatchHandler(TaskRunHandler):
    """``/taskrun/api/tasks/batch``: several submissions, all validated before any is queued."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        body = self.json_body()
        items = body.get("tasks") if isinstance(body, dict) else body
        if isinstance(body, dict) and set(body) - {"tasks"}:
            raise InvalidSubmission(f"unknown field(s): {', '.join(sorted(set(body) - {'tasks'}))}")
        if not isinstance(items, list):
            raise InvalidSubmission('the body must be {"tasks": [submission, ...]}')
        tasks = await self.taskrun.submit_batch(items, owner=self.username)
        self.write_json({"tasks": [self.task_json(t) for t in tasks]}, 201)


class TaskHandler(TaskRunHandler):
    """``/taskrun/api/tasks/{id}``: read and delete."""

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        task = await self.visible_task(task_id)
        wait = self.query_number("wait", None, maximum=MAX_WAIT)
        if wait:  # long poll: answer as soon as the task ends
            task = await self.taskrun.wait(task_id, wait)
        self.write_json(self.task_json(task))

    @web.authenticated
    @authorized
    async def delete(self, task_id: str) -> None:
        await self.visible_task(task_id)
        await self.taskrun.delete(task_id)
        self.set_status(204)
        self.finish()


class CancelHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        await self.visible_task(task_id)
        cascade = self.query("cascade") or "0"
        if cascade not in ("0", "1", "true", "false"):
            raise TaskRunHTTPError(400, "'cascade' must be 1 or 0", "invalid")
        task = await self.taskrun.cancel(task_id, cascade=cascade in ("1", "true"))
        self.write_json(self.task_json(task), 202)


class RerunHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        await self.visible_task(task_id)
        task = await self.taskrun.rerun(task_id, owner=self.username)
        self.set_header("Location", f"{self.base_url.rstrip('/')}/taskrun/api/tasks/{task.id}")
        self.write_json(self.task_json(task), 201)


class LogsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        stream = self.query("stream")
        if stream not in (None, "stdout", "stderr"):
            raise TaskRunHTTPError(400, "'stream' must be stdout or stderr", "invalid")
        offset = int(self.query_number("offset", 0, integer=True))
        data = self.taskrun.logs(task_id, stream, offset)
        self.set_header("X-Log-Offset", str(offset + len(data)))
        self.finish(data, set_content_type="text/plain; charset=utf-8")


class OutputsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json({"outputs": self.taskrun.outputs(task_id)})


def content_disposition(stem: str, suffix: str) -> str:
    """RFC 6266 ``attachment`` with an ASCII ``filename`` and the exact UTF-8 ``filename*``."""
    stem = "".join(ch for ch in stem if ch.isprintable() and ch not in '/\\"') or "task"
    ascii_stem = re.sub(r"[^A-Za-z0-9._ ()-]+", "_", stem).strip(" ._") or "task"
    full = f"{stem}{suffix}"
    return f"attachment; filename=\"{ascii_stem}{suffix}\"; filename*=UTF-8''{urllib.parse.quote(full, safe='')}"


#: one path component / a whole path longer than this cannot be a file name (Linux NAME_MAX, PATH_MAX)
NAME_MAX = 255
PATH_MAX = 4096


class NotebookHandler(TaskRunHandler):
    """The executed notebook: ``GET`` downloads it (read-only); ``POST {"path", "overwrite"}``
    writes a copy into the server's contents (XSRF-checked like every POST)."""

    async def _notebook(self, task_id: str) -> tuple[Any, dict[str, Any]]:
        task = await self.visible_task(task_id)
        nb = self.taskrun.executed_notebook(task_id)
        if nb is None:
            raise TaskStateConflict(f"task {task_id} has no executed notebook yet ({task.status.value})")
        return task, nb

    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        if self.query("save") is not None:
            # saving changes state: never on a GET (GET is not XSRF-checked)
            self.set_header("Allow", "GET, POST")
            raise TaskRunHTTPError(
                405, f'saving is a POST: POST {self.request.path} with {{"path": "...", "overwrite": false}}', "method-not-allowed"
            )
        form = self.query("format") or "ipynb"
        if form not in ("ipynb", "html"):
            raise TaskRunHTTPError(400, "'format' must be ipynb or html", "invalid")
        no_input = self.query("no_input") or "0"
        if no_input not in ("0", "1", "true", "false"):
            raise TaskRunHTTPError(400, "'no_input' must be 1 or 0", "invalid")
        task, nb = await self._notebook(task_id)
        stem = os.path.splitext(os.path.basename(task.name.replace("\\", "/")))[0] or "task"
        if form == "html":  # nbconvert, off the loop (server/results.py); sandboxed: outputs are the task's HTML
            html = await self.taskrun.results.notebook_html(nb, no_input in ("1", "true"))
            self.set_header("Content-Disposition", content_disposition(stem[:100], f"-{task.id[:8]}.html"))
            self.set_header("Content-Security-Policy", "sandbox allow-scripts")
            self.finish(html, set_content_type="text/html; charset=utf-8")
            return
        self.set_header("Content-Disposition", content_disposition(stem[:100], f"-{task.id[:8]}.ipynb"))
        self.finish(json.dumps(nb), set_content_type="application/x-ipynb+json")

    @web.authenticated
    @authorized
    async def post(self, task_id: str) -> None:
        body = self.json_body()
        if not isinstance(body, dict):
            raise InvalidSubmission('the body must be {"path": "....ipynb", "overwrite": false}')
        unknown = set(body) - {"path", "overwrite"}
        if unknown:
            raise InvalidSubmission(f"unknown field(s): {', '.join(sorted(unknown))}")
        path, overwrite = body.get("path"), body.get("overwrite", False)
        if not isinstance(path, str) or not path.strip("/"):
            raise InvalidSubmission("'path' must be a server-relative .ipynb path")
        if not isinstance(overwrite, bool):
            raise InvalidSubmission("'overwrite' must be true or false")
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSubmission("'path' must be valid Unicode") from None
        _, nb = await self._notebook(task_id)
        await self._save(nb, path, overwrite)  # not stripped: an absolute path is refused, not made relative

    async def _save(self, nb: dict[str, Any], path: str, overwrite: bool) -> None:
        if not path.endswith(".ipynb"):
            raise InvalidSubmission("'path' must name a .ipynb file")
        if len(path.encode("utf-8")) > PATH_MAX or any(len(p.encode("utf-8")) > NAME_MAX for p in path.split("/")):
            raise InvalidSubmission(f"'path' is too long (at most {NAME_MAX} bytes per name, {PATH_MAX} in all)")
        # same root rule as task paths: nothing outside the server root, symlinks included
        resolve_path(self.taskrun.root_dir, path, must_exist=False)
        parent = os.path.dirname(path)
        if parent:
            resolve_path(self.taskrun.root_dir, parent, want_dir=True)
        cm = self.contents_manager
        # the contents manager's rules: no hidden files unless allow_hidden (the async manager
        # would write .hidden/x.ipynb and then answer 404 for it)
        if not getattr(cm, "allow_hidden", False) and await ensure_async(cm.is_hidden(path)):
            raise TaskRunHTTPError(400, f"{path!r} is hidden; the server does not allow hidden files", "path-not-allowed")
        if not overwrite and await ensure_async(cm.exists(path)):
            raise TaskRunHTTPError(409, f'{path!r} already exists; send "overwrite": true to replace it', "exists")
        model = {"type": "notebook", "format": "json", "content": nb}
        try:
            saved = await ensure_async(cm.save(model, path))
        except (OSError, web.HTTPError) as e:
            raise _save_error(e, path) from None
        base = self.base_url.rstrip("/")
        self.set_header("Location", f"{base}/api/contents/{urllib.parse.quote(saved.get('path', path))}")
        self.write_json({"path": saved.get("path", path)}, 201)


def _save_error(e: BaseException, path: str) -> BaseException:
    """Map a failed write to a JSON 4xx/5xx: a full disk is 507, a too-long name 400."""
    # the atomic writer fails twice (ENOSPC writing the temporary file, then ENOENT renaming it):
    # look at every OSError in the chain
    errnos: set[int] = set()
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno is not None:
            errnos.add(cur.errno)
        stack += [cur.__cause__, cur.__context__]
    if errnos & {errno.ENOSPC, errno.EDQUOT}:
        return TaskRunHTTPError(507, f"cannot save {path!r}: no space left on the server's disk", "insufficient-storage")
    if errno.ENAMETOOLONG in errnos:
        return TaskRunHTTPError(400, f"cannot save {path!r}: the name is too long", "invalid")
    if errnos & {errno.EACCES, errno.EPERM, errno.EROFS}:
        return TaskRunHTTPError(403, f"cannot save {path!r}: not writable", "forbidden")
    return e


def _is_async(fn: Any) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)


class MetricsHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self, task_id: str) -> None:
        await self.visible_task(task_id)
        self.write_json(self.taskrun.metrics(task_id))


class StatusHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.write_json(self.taskrun.status(None if await self.sees_all() else self.username))


class OpenAPIHandler(TaskRunHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        from .openapi import load_spec

        self.write_json(load_spec())


class NotFoundHandler(TaskRunHandler):
    """Unknown paths under the API: 403 without auth (as every route), else a JSON 404."""

    def _not_found(self) -> None:
        raise TaskRunHTTPError(404, f"no such endpoint: {self.request.path}", "not-found")

    @web.authenticated
    @authorized
    async def get(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    async def head(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    async def post(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    async def put(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    async def patch(self, *args: Any) -> None:
        self._not_found()

    @web.authenticated
    @authorized
    async def delete(self, *args: Any) -> None:
        self._not_found()
