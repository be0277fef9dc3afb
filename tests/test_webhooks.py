"""Webhooks when tasks end (issue 14): a task's ``callback_url`` gets a signed POST with its summary.

Through real parts: the in-process Jupyter server with real kernels delivers to a real HTTP receiver
(``http.server`` in a thread of the test process, on 127.0.0.1), and the test reads what arrived.
Covered: the payload and its signature, retries with growing delays and one ``notification`` event
per attempt (stored after the task ended, replayed by ``GET …/events``), giving up, a receiver that
hangs (nothing waits for it, and a server stop cancels it cleanly), and refused callback URLs
(400 naming ``callback_url``, nothing stored).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import socket
import sqlite3
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tornado.httpclient import AsyncHTTPClient

from jupyter_taskrun.server.webhooks import STOPPED

from .helpers import assert_json_error, db_count, task_count, wait_for

SECRET = "s3cret-for-tests"
BASE_CONFIG = {
    "webhook_secret": SECRET,
    "webhook_retry_delay": 0.2,
    "webhook_timeout": 60.0,  # the hanging receiver holds its request until the test stops the server
    "webhook_allowed_hosts": ["127.0.0.1", "localhost"],
}
PAYLOAD_TASK_KEYS = {
    "id", "name", "status", "exit_code", "error", "created_at", "started_at", "finished_at",
    "duration", "metrics", "schedule_id", "tags", "attempt",
}  # fmt: skip


@pytest.fixture
def taskrun_config(request) -> dict[str, Any]:
    """This module's ``c.TaskRun`` settings; ``parametrize("taskrun_config", [...], indirect=True)`` adds to them."""
    return {**BASE_CONFIG, **getattr(request, "param", {})}


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a held request answered after the server aborted the connection: a broken pipe, expected


class Receiver:
    """A webhook receiver on 127.0.0.1 in its own threads; its answer depends on the path:

    ``/ok…`` 200 · ``/fail…`` 500 · ``/flaky/<n>/…`` 500 for the first n requests, then 200 ·
    ``/hang…`` holds the request until ``release`` is set (at most 30 s), then 200.
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.holding = 0
        self.seen: collections.Counter[str] = collections.Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802  (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": body, "t": time.monotonic(), "wall": time.time()}
                    )
                    receiver.seen[self.path] += 1
                    n = receiver.seen[self.path]
                code = 200
                if self.path.startswith("/fail"):
                    code = 500
                elif self.path.startswith("/flaky/"):
                    code = 500 if n <= int(self.path.split("/")[2]) else 200
                elif self.path.startswith("/hang"):
                    with receiver.lock:
                        receiver.holding += 1
                    receiver.release.wait(30)
                    with receiver.lock:
                        receiver.holding -= 1
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="webhook-receiver", daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["path"] == path]

    async def wait(self, path: str, n: int, timeout: float = 30) -> list[dict[str, Any]]:
        return await wait_for(lambda: (got := self.received(path)) and len(got) >= n and got, timeout, what=f"{n} request(s) to {path}")


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.release.set()
    r.httpd.shutdown()
    r.httpd.server_close()


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def unique(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


async def notifications(api, task_id: str) -> list[dict[str, Any]]:
    """The task's ``notification`` events as ``GET …/events`` (SSE) replays them."""
    return [e["data"] for e in await api.events(task_id) if e["type"] == "notification"]


async def test_signed_payload_with_absolute_links_and_a_stored_event(api, receiver, jp_serverapp, jp_auth_header):
    ok_path, fail_path = unique("/ok"), unique("/ok")
    done = await api.run(code="print('hi')", name="nightly", tags=["report"], callback_url=receiver.url(ok_path) + "?token=abc")
    failed = await api.run(code="raise ValueError('boom')", callback_url=receiver.url(fail_path))
    [hit] = await receiver.wait(ok_path + "?token=abc", 1)

    headers = hit["headers"]
    assert headers["Content-Type"] == "application/json" and headers["X-Taskrun-Event"] == "task.finished"
    uuid.UUID(headers["X-Taskrun-Delivery"])
    expected = "sha256=" + hmac.new(SECRET.encode(), hit["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Taskrun-Signature"], expected)

    payload = json.loads(hit["body"])
    assert payload["event"] == "task.finished" and set(payload["task"]) == PAYLOAD_TASK_KEYS
    summary = payload["task"]
    assert summary["id"] == done["id"] and summary["name"] == "nightly" and summary["tags"] == ["report"]
    assert (summary["status"], summary["error"], summary["attempt"]) == ("completed", None, 1)
    for key in ("exit_code", "created_at", "started_at", "finished_at", "metrics", "schedule_id"):
        assert summary[key] == done[key], key
    assert 0 < summary["duration"] < 120
    assert hit["wall"] >= epoch(done["finished_at"])  # sent once the task had ended

    # the links are absolute, point at this server (base_url included) and work
    base = jp_serverapp.connection_url
    assert base.startswith("http://") and base.endswith(jp_serverapp.base_url)
    assert payload["links"] == {"task": f"{base}taskrun/api/tasks/{done['id']}", "logs": f"{base}taskrun/api/tasks/{done['id']}/logs"}
    client = AsyncHTTPClient()
    task_resp = await client.fetch(payload["links"]["task"], headers=jp_auth_header)
    assert json.loads(task_resp.body)["id"] == done["id"]
    logs_resp = await client.fetch(payload["links"]["logs"], headers=jp_auth_header)
    assert logs_resp.body == b"hi\n"

    [failed_hit] = await receiver.wait(fail_path, 1)
    failed_summary = json.loads(failed_hit["body"])["task"]
    assert failed_summary["status"] == "failed" and failed_summary["error"]["ename"] == "ValueError"
    assert failed_summary["exit_code"] == failed["exit_code"]

    # the attempt is an event of the finished task, stored: the event stream replays it (no query in the url)
    events = await notifications(api, done["id"])
    assert events == [{"url": receiver.url(ok_path), "attempt": 1, "status": 200, "ok": True, "error": None, "next_retry_in": None}]
    task = await api.get(done["id"])
    assert task["status"] == "completed" and task["finished_at"] == done["finished_at"]


async def test_retries_with_doubling_delays_one_event_per_attempt(api, receiver):
    flaky, failing = unique("/flaky/2"), unique("/fail")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused_url = f"http://127.0.0.1:{closed.getsockname()[1]}/hook"  # bound, never listening: refused
    try:
        tasks = [
            await api.submit(code="1", callback_url=receiver.url(flaky)),
            await api.submit(code="2", callback_url=receiver.url(failing)),
            await api.submit(code="3", callback_url=refused_url),
        ]
        for t in tasks:
            await api.wait(t["id"])
        hits = await receiver.wait(flaky, 3)
        await receiver.wait(failing, 4)  # retries 3: four attempts, then it gives up

        # one delivery: the same bytes and delivery id each time, each retry waiting twice as long
        assert len({h["body"] for h in hits}) == 1 and len({h["headers"]["X-Taskrun-Delivery"] for h in hits}) == 1
        assert hits[1]["t"] - hits[0]["t"] >= 0.2 and hits[2]["t"] - hits[1]["t"] >= 0.4

        events = await wait_for(lambda: _events_when(api, tasks[0]["id"], 3), 10, what="3 notification events")
        assert [(e["attempt"], e["status"], e["ok"], e["error"], e["next_retry_in"]) for e in events] == [
            (1, 500, False, "HTTP 500", 0.2),
            (2, 500, False, "HTTP 500", 0.4),
            (3, 200, True, None, None),
        ]
        events = await wait_for(lambda: _events_when(api, tasks[1]["id"], 4), 10, what="4 notification events")
        assert [(e["status"], e["ok"], e["next_retry_in"]) for e in events] == [
            (500, False, 0.2),
            (500, False, 0.4),
            (500, False, 0.8),
            (500, False, None),
        ]
        events = await wait_for(lambda: _events_when(api, tasks[2]["id"], 4), 10, what="4 refused attempts")
        assert all(e["status"] is None and not e["ok"] and "Refused" in e["error"] for e in events), events
        assert [e["next_retry_in"] for e in events] == [0.2, 0.4, 0.8, None]
        await asyncio.sleep(1.0)  # nothing after giving up
        assert len(receiver.received(failing)) == 4 and len(await notifications(api, tasks[1]["id"])) == 4
    finally:
        closed.close()


async def _events_when(api, task_id: str, n: int) -> list[dict[str, Any]] | None:
    events = await notifications(api, task_id)
    return events if len(events) >= n else None


async def test_a_hanging_receiver_delays_nothing_and_a_stop_cancels_it(api, receiver, taskrun, db_path):
    hang, ok = unique("/hang"), unique("/ok")
    first = await api.run(code="print('first')", callback_url=receiver.url(hang))
    [held] = await receiver.wait(hang, 1)
    # the task had ended before its webhook was sent: the receiver cannot have delayed it
    assert receiver.holding == 1 and first["status"] == "completed" and held["wall"] >= epoch(first["finished_at"])

    # while the receiver holds on: the server answers, another task runs and its own webhook arrives
    t0 = time.monotonic()
    code, _, _ = await api.call("GET", "status")
    assert code == 200 and time.monotonic() - t0 < 2.0
    second = await api.run(code="print('second')", callback_url=receiver.url(ok))
    assert second["status"] == "completed"
    await receiver.wait(ok, 1)
    assert receiver.holding == 1 and taskrun.webhooks.pending == 1

    # a server stop does not wait for the receiver: the delivery is cancelled and says so
    t0 = time.monotonic()
    await taskrun.stop()
    assert time.monotonic() - t0 < 10
    assert taskrun.webhooks.pending == 0
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("taskrun-webhook-")]
    db = sqlite3.connect(db_path)
    try:
        rows = db.execute("SELECT data FROM events WHERE task_id=? AND type='notification' ORDER BY seq", (first["id"],)).fetchall()
    finally:
        db.close()
    assert [json.loads(r[0]) for r in rows] == [
        {"url": receiver.url(hang), "attempt": 1, "status": None, "ok": False, "error": STOPPED, "next_retry_in": None}
    ]


BAD_CALLBACKS = [
    ("https://example.org/hook", "not in c.TaskRun.webhook_allowed_hosts"),
    ("http://127.0.0.1.example.org/hook", "webhook_allowed_hosts"),
    ("ftp://127.0.0.1/hook", "must be an http:// or https:// URL"),
    ("file:///etc/passwd", "must be an http:// or https:// URL"),
    ("http://user:pw@127.0.0.1/hook", "must not contain credentials"),
    ("http://127.0.0.1:99999/hook", "not a valid URL"),
    ("http://127.0.0.1/a b", "without spaces"),
    ("http://127.0.0.1/" + "x" * 2048, "longer than 2048"),
    (5, "must be a string"),
]


async def test_refused_callback_urls_are_400_and_store_nothing(api, db_path, receiver, taskrun):
    before = await task_count(api)
    stored = db_count(db_path)
    for url, words in BAD_CALLBACKS:
        code, data, _ = await api.call("POST", "tasks", {"code": "1", "callback_url": url})
        assert_json_error(code, data, 400, "invalid")
        assert "'callback_url'" in data["message"] and words in data["message"], (url, data)
    code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"code": "1"}, {"code": "2", "callback_url": "https://example.org/"}]})
    assert_json_error(code, data, 400, "invalid")
    assert data["message"].startswith("tasks[1]: 'callback_url'")
    assert await task_count(api) == before and db_count(db_path) == stored
    # an allowed host written in another case is the same host
    path = unique("/ok")
    await api.run(code="1", callback_url=f"http://LOCALHOST:{receiver.port}{path}")
    await receiver.wait(path, 1)

    # checked again when the task ends: a host refused since it was submitted gets nothing, the event says why
    taskrun.pause()
    late_path = unique("/ok")
    late = await api.submit(code="1", callback_url=receiver.url(late_path))
    taskrun.webhook_allowed_hosts = ["hooks.example.org"]
    taskrun.resume()
    await api.wait(late["id"])
    [event] = await notifications(api, late["id"])
    assert event["attempt"] == 0 and not event["ok"] and event["error"].startswith("not sent: 'callback_url' may not target '127.0.0.1'")
    assert receiver.received(late_path) == []


@pytest.mark.parametrize("taskrun_config", [{"webhook_secret": "", "public_url": "https://hub.example.org/user/alice/"}], indirect=True)
async def test_public_url_sets_the_links_and_no_secret_sends_no_signature(api, receiver):
    path = unique("/ok")
    task = await api.run(code="1", callback_url=receiver.url(path))
    [hit] = await receiver.wait(path, 1)
    assert "X-Taskrun-Signature" not in hit["headers"]
    links = json.loads(hit["body"])["links"]
    assert links["task"] == f"https://hub.example.org/user/alice/taskrun/api/tasks/{task['id']}"
