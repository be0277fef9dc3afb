"""``WebhookNotifier``: when a task with a ``callback_url`` ends, the server POSTs a signed summary.

Guarantees:

* **Checked at submission.** ``check_url`` (called by ``TaskRun.validate``, so by submit, batch,
  rerun and the scheduler's firings) accepts only an ASCII ``http://`` or ``https://`` URL without
  credentials whose host matches a pattern of ``c.TaskRun.webhook_allowed_hosts`` (fnmatch, any
  case); anything else is ``InvalidSubmission`` (400) naming ``callback_url``, and nothing is stored.
* **Never in the way.** ``on_terminal`` (a ``TaskRecorder.on_terminal`` listener) only builds the
  body and starts a background asyncio task. At most ``MAX_CONCURRENT`` deliveries talk to
  receivers at once; each attempt is bounded by ``c.TaskRun.webhook_timeout`` (connect, send,
  answer). The client is a small HTTP/1.1 one on asyncio streams (no redirects followed: one could
  lead to a host the allow-list refuses), because cancelling it closes its socket at once; a
  cancelled tornado ``AsyncHTTPClient`` fetch keeps its connection task running until its timeout.
* **Signed, stable body.** Every attempt sends the same bytes; ``X-Taskrun-Signature: sha256=<hex>``
  is their HMAC-SHA256 with ``c.TaskRun.webhook_secret`` (GitHub's form; no header when the secret
  is empty, with one warning in the log); ``X-Taskrun-Delivery`` is one uuid per delivery, the same
  on its retries, so a receiver can drop duplicates.
* **Retried with back-off.** A non-2xx answer or a network error is retried
  ``c.TaskRun.webhook_retries`` times, after ``c.TaskRun.webhook_retry_delay`` seconds, doubling.
* **Recorded.** Each attempt is a ``notification`` event of the task, stored like any event (so
  ``GET …/tasks/{id}/events`` replays it): ``{"url"`` (without query, fragment and userinfo)``,
  "attempt", "status"`` (HTTP status or null)``, "ok", "error"`` (null or why)``, "next_retry_in"``
  (seconds, or null: no more attempts)``}``. A task deleted meanwhile gets no more events. The URL
  is checked again when the task ends (the settings may have changed since): a refused one is not
  sent, and its one event (``"attempt": 0``) says why.
* **Clean stop.** ``stop()`` cancels the deliveries still pending (in flight or waiting to retry);
  each records a last event (``"error": "not delivered: the server stopped"``). Deliveries live in
  memory only: one pending at a stop is not resumed by the next start.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import json
import ssl
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import InvalidSubmission, StoreBusy, TaskNotFound, TaskRunError
from ..models import EventType, Task, isotime

if TYPE_CHECKING:
    from .service import TaskRun

#: the ``event`` of the payload and the ``X-Taskrun-Event`` header
TASK_FINISHED = "task.finished"
#: deliveries talking to receivers at once; the others wait for a turn (their timeout starts then)
MAX_CONCURRENT = 16
#: deliveries kept in memory at once; past it a new one is dropped (and logged), not queued
MAX_PENDING = 10_000
#: longest line of a receiver's answer read, and longest body read (then ignored)
MAX_RESPONSE_HEAD = 64 * 1024
STOPPED = "not delivered: the server stopped"


def check_callback_url(url: Any, allowed_hosts: list[str]) -> None:
    """Raise ``InvalidSubmission`` naming ``callback_url`` unless ``url`` may receive webhooks."""
    if url is None:
        return
    if not isinstance(url, str):
        raise InvalidSubmission("'callback_url' must be a string")
    if not url.isascii() or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidSubmission("'callback_url' must be ASCII without spaces (percent-encode the path, punycode the host)")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (a bad port raises here)
    except ValueError as e:
        raise InvalidSubmission(f"'callback_url' is not a valid URL: {e}") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "a relative URL"
        raise InvalidSubmission(f"'callback_url' must be an http:// or https:// URL ({scheme} is not allowed)")
    if "@" in parts.netloc:
        raise InvalidSubmission("'callback_url' must not contain credentials (user:password@); receivers check X-Taskrun-Signature")
    host = (parts.hostname or "").lower()
    if not host:
        raise InvalidSubmission("'callback_url' names no host")
    if not any(fnmatch.fnmatchcase(host, pattern.lower()) for pattern in allowed_hosts):
        raise InvalidSubmission(f"'callback_url' may not target {host!r}: the host is not in c.TaskRun.webhook_allowed_hosts")


def shown_url(url: str) -> str:
    """``url`` as events show it: without query, fragment and userinfo (they may hold tokens)."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def signature(secret: str, body: bytes) -> str:
    """The ``X-Taskrun-Signature`` value: ``sha256=`` + HMAC-SHA256 of the raw body, hex."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class DeliveryFailed(Exception):
    """An attempt got no HTTP status (the receiver's answer was not HTTP/1.x)."""


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` to ``url`` over HTTP/1.1 and return the answer's status code.

    One connection per attempt (``Connection: close``); the answer's headers and a short body are
    read, then the connection is closed. No redirects, no proxies. Cancelled, it aborts the
    connection at once.
    """
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme.lower() == "https"
    host = parts.hostname or ""
    context = ssl.create_default_context() if https else None
    reader, writer = await asyncio.open_connection(host, parts.port or (443 if https else 80), ssl=context, limit=MAX_RESPONSE_HEAD)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port is not None else "")
        lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", f"Content-Length: {len(body)}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise DeliveryFailed("the receiver closed the connection without an answer")
        words = status_line.split(None, 2)
        if len(words) < 2 or not words[0].startswith(b"HTTP/1.") or not words[1].isdigit():
            raise DeliveryFailed(f"the answer is not HTTP/1.x: {status_line[:80]!r}")
    except BaseException:
        writer.transport.abort()
        raise
    try:  # read the rest of a short answer, so that closing sends no reset; its content does not matter
        length = 0
        while (line := await reader.readline()).strip():
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                length = int(value.strip())
        if 0 < length <= MAX_RESPONSE_HEAD:
            await reader.readexactly(length)
    except (OSError, ValueError, asyncio.IncompleteReadError):
        pass
    except BaseException:
        writer.transport.abort()
        raise
    writer.close()
    return int(words[1])


@dataclass
class Delivery:
    """One webhook of one task's end: its body and headers are fixed once, for every attempt."""

    task: Task
    url: str
    body: bytes
    headers: dict[str, str]
    #: attempts made, or started (the current one while it is in flight)
    attempt: int = 0


class WebhookNotifier:
    """The service's webhooks (``TaskRun.webhooks``): checks ``callback_url`` s, delivers on task ends."""

    def __init__(self, service: TaskRun):
        self.service = service
        self.log = service.log
        self._pending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)
        self._stopped = False
        self._warned_unsigned = False
        service.recorder.on_terminal.append(self.on_terminal)

    def check_url(self, url: Any) -> None:
        """Raise ``InvalidSubmission`` (400) naming ``callback_url`` unless this server may POST to ``url``."""
        check_callback_url(url, list(self.service.webhook_allowed_hosts))

    # ------------------------------------------------------------ building

    def links(self, task: Task) -> dict[str, str]:
        base = self.service.public_url.rstrip("/")
        task_url = f"{base}/taskrun/api/tasks/{task.id}"
        return {"task": task_url, "logs": f"{task_url}/logs"}

    def payload(self, task: Task) -> dict[str, Any]:
        """The JSON a receiver gets (``docs/API_CONTRACT.md``, "Webhooks")."""
        duration = None
        if task.started_at is not None and task.finished_at is not None:
            duration = round(task.finished_at - task.started_at, 6)
        summary = {
            "id": task.id,
            "name": task.name,
            "status": task.status.value,
            "exit_code": task.exit_code,
            "error": task.error,
            "created_at": isotime(task.created_at),
            "started_at": isotime(task.started_at),
            "finished_at": isotime(task.finished_at),
            "duration": duration,
            "metrics": task.metrics,
            "schedule_id": getattr(task, "schedule_id", None),  # set by the scheduler on the tasks it makes
            "tags": list(task.tags),
            "attempt": task.attempt,
        }
        return {"event": TASK_FINISHED, "task": summary, "links": self.links(task)}

    def delivery(self, task: Task, url: str) -> Delivery:
        body = json.dumps(self.payload(task), separators=(",", ":"), allow_nan=False, default=str).encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"jupyter-taskrun/{__version__}",
            "X-Taskrun-Event": TASK_FINISHED,
            "X-Taskrun-Delivery": str(uuid.uuid4()),
        }
        secret = self.service.webhook_secret
        if secret:
            headers["X-Taskrun-Signature"] = signature(secret, body)
        elif not self._warned_unsigned:
            self._warned_unsigned = True
            self.log.warning("taskrun: c.TaskRun.webhook_secret is not set: webhooks are sent unsigned (no X-Taskrun-Signature)")
        return Delivery(task=task, url=url, body=body, headers=headers)

    # ---------------------------------------------------------- delivering

    def on_terminal(self, task: Task) -> None:
        """The recorder's listener: start delivering, if the task asked for it. Returns at once."""
        url = (task.submission or {}).get("callback_url")
        if not url:
            return
        if self._stopped:
            self.log.info("taskrun: task %s ended while the server stops: its webhook is not sent", task.id)
            return
        try:  # the settings may have changed since it was submitted (a restart with a stricter allow-list)
            self.check_url(url)
        except InvalidSubmission as e:
            self.log.warning("taskrun: the webhook of task %s is not sent: %s", task.id, e)
            self._record(
                Delivery(task=task, url=url, body=b"", headers={}), status=None, ok=False, error=f"not sent: {e}", next_retry_in=None
            )
            return
        if len(self._pending) >= MAX_PENDING:
            self.log.warning("taskrun: %d webhooks already pending: the one of task %s is dropped", MAX_PENDING, task.id)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a task ended outside the server's loop (a test's direct call): nothing can deliver
            return
        job = loop.create_task(self._deliver(self.delivery(task, url)), name=f"taskrun-webhook-{task.id}")
        self._pending.add(job)
        job.add_done_callback(self._pending.discard)

    async def _deliver(self, delivery: Delivery) -> None:
        service = self.service
        backing_off = False
        try:
            while True:
                delivery.attempt += 1
                backing_off = False
                status, error = await self._attempt(delivery)
                ok = status is not None and 200 <= status < 300
                retry_in = None
                if not ok and delivery.attempt <= service.webhook_retries:
                    retry_in = round(service.webhook_retry_delay * 2 ** (delivery.attempt - 1), 6)
                self._record(delivery, status=status, ok=ok, error=error, next_retry_in=retry_in)
                if retry_in is None:
                    if not ok:
                        self.log.warning(
                            "taskrun: webhook of task %s to %s failed %d time(s), giving up: %s",
                            delivery.task.id, shown_url(delivery.url), delivery.attempt, error,
                        )  # fmt: skip
                    return
                backing_off = True
                await asyncio.sleep(retry_in)
        except asyncio.CancelledError:
            if backing_off:
                delivery.attempt += 1  # the next attempt, which will not be made
            self._record(delivery, status=None, ok=False, error=STOPPED, next_retry_in=None)
            raise

    async def _attempt(self, delivery: Delivery) -> tuple[int | None, str | None]:
        """One POST: (status, None) for an HTTP answer (the error says which, if not 2xx), else (None, why)."""
        timeout = self.service.webhook_timeout
        async with self._slots:
            try:
                status = await asyncio.wait_for(post(delivery.url, delivery.body, delivery.headers), timeout)
            except asyncio.TimeoutError:
                return None, f"no answer within {timeout:g} s (c.TaskRun.webhook_timeout)"
            except (OSError, DeliveryFailed, ValueError, UnicodeError) as e:  # ssl.SSLError is an OSError
                return None, f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        return status, None if 200 <= status < 300 else f"HTTP {status}"

    def _record(self, delivery: Delivery, **data: Any) -> None:
        """The attempt as a ``notification`` event of the task (stored with the next batch)."""
        task = delivery.task
        try:
            self.service.store.get_task(task.id)
        except TaskNotFound:
            return  # deleted meanwhile: its events went with it
        except StoreBusy:
            pass  # locked by another connection: the event waits in the recorder's batch like any other
        except TaskRunError:
            return  # the store cannot be read (closed at a stop): an event could never be written
        try:
            url = shown_url(delivery.url)
        except ValueError:
            url = None
        event = {"url": url, "attempt": delivery.attempt, **data}
        self.service.recorder.emit(task, EventType.NOTIFICATION, event)

    @property
    def pending(self) -> int:
        """Deliveries not finished yet (in flight or waiting to retry)."""
        return len(self._pending)

    async def stop(self) -> None:
        """Cancel every pending delivery (each records why); later task ends send nothing."""
        self._stopped = True
        jobs = [job for job in self._pending if not job.done()]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
