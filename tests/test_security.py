"""Security (issue 8): authentication on every route, XSRF, secrets kept from task kernels,
owners isolated from each other, and paths confined to the server root."""

from __future__ import annotations

import asyncio
import json
import os
import warnings
from typing import Any

import pytest
from jupyter_server.auth.authorizer import Authorizer
from jupyter_server.auth.identity import IdentityProvider, User
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect
from traitlets.config import Config

from jupyter_taskrun.server.handlers import handler_routes

from .helpers import TERMINAL, RawSSE, task_count

# ---------------------------------------------------------------------------
# a multi-user server: the user comes from a header, only "admin" may see everyone's tasks
# ---------------------------------------------------------------------------


class HeaderIdentityProvider(IdentityProvider):
    """Test identity: ``X-Test-User: alice`` is alice; no header is nobody (403)."""

    def get_user(self, handler):
        name = handler.request.headers.get("X-Test-User")
        return User(username=name) if name else None

    def is_token_authenticated(self, handler) -> bool:
        # a header credential, like an API token: not a browser cookie, so no XSRF token is needed
        return handler.request.headers.get("X-Test-User") is not None


class AdminSeesAllAuthorizer(Authorizer):
    def is_authorized(self, handler, user, action, resource):
        if resource == "taskrun:all":
            return user.username == "admin"
        return True


class AsyncAdminSeesAllAuthorizer(Authorizer):
    """The same policy, answered asynchronously (jupyter_server allows both)."""

    async def is_authorized(self, handler, user, action, resource):
        await asyncio.sleep(0)
        if resource == "taskrun:all":
            return user.username == "admin"
        return True


@pytest.fixture
def authorizer_class():
    return AdminSeesAllAuthorizer


@pytest.fixture
def secret_env(monkeypatch):
    """Credentials in the server's environment, set before the server (and TaskRun) start."""
    values = {
        "JUPYTER_TOKEN": "secret-jupyter-token",
        "JPY_API_TOKEN": "secret-jpy-api-token",
        "JUPYTERHUB_API_TOKEN": "secret-hub-token",
        "JUPYTERHUB_CLIENT_ID": "secret-hub-client",
        "JUPYTER_TASKRUN_TOKEN": "secret-taskrun-token",
        "MY_DB_PASSWORD": "secret-db-password",
        "HARMLESS_SETTING": "visible",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def jp_server_config(taskrun_config, db_path, request):
    settings = {"db_path": db_path, "kernel_pool_size": 0, **taskrun_config}
    server: dict[str, Any] = {"jpserver_extensions": {"jupyter_taskrun": True}}
    if "multiuser" in request.fixturenames:
        server["identity_provider_class"] = HeaderIdentityProvider
        server["authorizer_class"] = request.getfixturevalue("authorizer_class")
    if "secret_env" in request.fixturenames:
        request.getfixturevalue("secret_env")
    return Config({"ServerApp": server, "TaskRun": settings})


@pytest.fixture
def multiuser():
    return True


async def fetch(
    api, method: str, path: str, *, headers: dict | None = None, body: Any = None, params: dict | None = None, raw: bytes | None = None
):
    """A request with exactly the given headers (no automatic token)."""
    if raw is None and body is not None:
        raw = json.dumps(body).encode()
    if raw is None and method in ("POST", "PUT", "PATCH"):
        raw = b""
    req = HTTPRequest(
        api.url(path, params),
        method=method,
        headers=headers or {},
        body=raw,
        allow_nonstandard_methods=True,
        request_timeout=60,
        follow_redirects=False,
    )
    resp = await AsyncHTTPClient().fetch(req, raise_error=False)
    text = resp.body.decode("utf-8", "replace") if resp.body else ""
    data = json.loads(text) if text and "json" in resp.headers.get("Content-Type", "") else text
    return resp.code, data, resp.headers


def as_user(name: str) -> dict[str, str]:
    return {"X-Test-User": name}


# ---------------------------------------------------------------------------
# authentication on every route
# ---------------------------------------------------------------------------


def all_routes(tid: str) -> list[tuple[str, str]]:
    return [
        ("GET", "tasks"),
        ("POST", "tasks"),
        ("POST", "tasks/batch"),
        ("GET", f"tasks/{tid}"),
        ("DELETE", f"tasks/{tid}"),
        ("POST", f"tasks/{tid}/cancel"),
        ("POST", f"tasks/{tid}/rerun"),
        ("GET", f"tasks/{tid}/logs"),
        ("GET", f"tasks/{tid}/outputs"),
        ("GET", f"tasks/{tid}/notebook"),
        ("GET", f"tasks/{tid}/metrics"),
        ("GET", f"tasks/{tid}/events"),
        ("GET", "events"),
        ("GET", "status"),
        ("GET", "openapi.json"),
    ]


@pytest.mark.parametrize("credentials", ["none", "wrong-token", "token-in-wrong-header"])
async def test_every_route_refuses_requests_without_valid_auth(api, credentials):
    task = await api.run(code="print('mine')")
    tid = task["id"]
    headers = {
        "none": {},
        "wrong-token": {"Authorization": "token not-the-token"},
        "token-in-wrong-header": {"X-Token": api.headers["Authorization"].split()[1]},
    }[credentials]
    before = await task_count(api)
    for method, path in all_routes(tid):
        body = {"code": "print('pwned')"} if method == "POST" and path.startswith("tasks") else None
        if path == "tasks/batch":
            body = {"tasks": [{"code": "print('pwned')"}]}
        code, data, _ = await fetch(api, method, path, headers=headers, body=body)
        assert code == 403, (method, path, code, data)
        assert "mine" not in str(data)
    # SSE, read raw: refused before any event is sent
    for path in (f"tasks/{tid}/events", "events"):
        sse = await RawSSE(api.url(path), headers).connect()
        assert sse.status == 403 and b"event:" not in sse.body
        await sse.close()
    # WebSocket: the handshake is refused
    url = api.url(f"tasks/{tid}/ws").replace("http://", "ws://")
    with pytest.raises(HTTPClientError) as exc:
        await websocket_connect(HTTPRequest(url, headers=headers))
    assert exc.value.code == 403
    # ... with the same JSON error body as every other route (as the OpenAPI document says)
    refusal = await fetch(api, "GET", f"tasks/{tid}/ws", headers=headers)
    assert refusal[0] == 403 and refusal[1].get("reason") == "forbidden", refusal
    # nothing changed: no task created, cancelled, rerun or deleted
    assert await task_count(api) == before
    assert (await api.get(tid))["status"] == "completed"


async def test_routes_pass_jupyter_server_auth_checks(jp_serverapp):
    """Every handler method is decorated so jupyter_server emits no JupyterServerAuthWarning."""
    web_app = jp_serverapp.web_app
    missing = []
    for pattern, handler in handler_routes():
        missing += web_app._check_handler_auth(pattern, handler)
    assert missing == []
    from jupyter_server.utils import JupyterServerAuthWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        web_app.add_handlers(
            ".*$", [(web_app.settings["base_url"] + "taskrun-check" + p[len("/taskrun") :], h) for p, h in handler_routes()]
        )
    assert not [w for w in caught if issubclass(w.category, JupyterServerAuthWarning)]


async def test_browser_post_with_cookie_but_without_xsrf_is_refused(api):
    # a token-authenticated request makes the server set its login cookie, as for a browser
    code, _, headers = await fetch(api, "GET", "status", headers=api.headers)
    assert code == 200
    cookies = [c.split(";", 1)[0] for c in headers.get_list("Set-Cookie")]
    login = [c for c in cookies if c.startswith("username-")]
    assert login, cookies
    before = await task_count(api)
    cookie_only = {"Cookie": login[0]}
    # reads with the cookie work (same-origin GET)...
    assert (await fetch(api, "GET", "tasks", headers=cookie_only))[0] == 200
    # ...but a state-changing POST without the XSRF token is refused
    for path, body in (("tasks", {"code": "print('csrf')"}), ("tasks/batch", {"tasks": [{"code": "1"}]})):
        code, data, _ = await fetch(api, "POST", path, headers=cookie_only, body=body)
        assert code == 403, (path, code, data)
    # a cross-site page that also forges a wrong XSRF pair is refused too
    forged = {"Cookie": f"{login[0]}; _xsrf=2|aaaa|bbbb|1", "X-XSRFToken": "2|cccc|dddd|1", "Origin": "http://evil.example"}
    code, _, _ = await fetch(api, "POST", "tasks", headers=forged, body={"code": "1"})
    assert code in (403, 404)
    assert await task_count(api) == before
    # the same cookie with the real XSRF token (as JupyterLab sends it) is accepted
    login_page = HTTPRequest(f"http://127.0.0.1:{api.port}{api.base_url}login", follow_redirects=False)
    headers = (await AsyncHTTPClient().fetch(login_page, raise_error=False)).headers
    xsrf = [c.split(";", 1)[0] for c in headers.get_list("Set-Cookie") if c.startswith("_xsrf=")]
    assert xsrf, headers.get_list("Set-Cookie")
    ok_headers = {"Cookie": f"{login[0]}; {xsrf[0]}", "X-XSRFToken": xsrf[0].split("=", 1)[1]}
    code, data, _ = await fetch(api, "POST", "tasks", headers=ok_headers, body={"code": "print('legit')"})
    assert code == 201, data
    assert (await api.wait(data["id"]))["status"] == "completed"


# ---------------------------------------------------------------------------
# secrets are not inherited by task kernels
# ---------------------------------------------------------------------------

ENV_DUMP = "import os, json, sys\nprint(json.dumps({'env': dict(os.environ), 'argv': open('/proc/self/cmdline').read()}))"


def env_of(logs: str) -> dict[str, Any]:
    return json.loads(logs)


@pytest.mark.parametrize("taskrun_config", [{"extra_secret_env": ["MY_DB_PASSWORD"]}])
async def test_task_kernels_do_not_inherit_server_credentials(api, secret_env, jp_serverapp):
    assert os.environ["JUPYTER_TOKEN"] == "secret-jupyter-token"  # the server really has them
    server_token = jp_serverapp.identity_provider.token
    for kind in ("fresh", "with-env"):
        body = {"code": ENV_DUMP}
        if kind == "with-env":
            body["env"] = {"TASK_VAR": "1"}
        task = await api.run(**body)
        assert task["status"] == "completed", task
        _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
        seen = env_of(logs)
        env = seen["env"]
        for name in (
            "JUPYTER_TOKEN",
            "JPY_API_TOKEN",
            "JUPYTERHUB_API_TOKEN",
            "JUPYTERHUB_CLIENT_ID",
            "JUPYTER_TASKRUN_TOKEN",
            "MY_DB_PASSWORD",
        ):
            assert name not in env, f"{name} leaked into a task kernel ({kind})"
        values = " ".join(env.values()) + seen["argv"]
        assert "secret-" not in values
        assert server_token not in values
        assert env.get("HARMLESS_SETTING") == "visible"  # ordinary settings are kept
        if kind == "with-env":
            assert env["TASK_VAR"] == "1"


@pytest.mark.parametrize("taskrun_config", [{"pass_server_credentials": True}])
async def test_passing_credentials_is_an_explicit_opt_in(api, secret_env):
    task = await api.run(code=ENV_DUMP)
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert env_of(logs)["env"].get("JUPYTERHUB_API_TOKEN") == "secret-hub-token"


# ---------------------------------------------------------------------------
# owners
# ---------------------------------------------------------------------------

LONG = "import time\nfrom jupyter_taskrun import progress\nprogress(1, 10, 'alice-private-progress')\nprint('alice-private-output', flush=True)\ntime.sleep(60)"


async def submit_as(api, user: str, **body) -> dict:
    code, data, _ = await fetch(api, "POST", "tasks", headers=as_user(user), body=body)
    assert code == 201, data
    return data


@pytest.mark.parametrize(
    "authorizer_class",
    [
        AdminSeesAllAuthorizer,
        AsyncAdminSeesAllAuthorizer,
    ],
)
async def test_users_see_and_control_only_their_own_tasks(api, multiuser, authorizer_class):
    alice = await submit_as(api, "alice", code=LONG, name="alice-job")
    bob = await submit_as(api, "bob", code="print('bob')", name="bob-job")
    assert alice["owner"] == "alice" and bob["owner"] == "bob"
    a = alice["id"]
    # lists: own tasks only, whatever ?owner= says
    for params in ({}, {"owner": "alice"}, {"name": "alice"}):
        code, data, _ = await fetch(api, "GET", "tasks", headers=as_user("bob"), params=params)
        assert code == 200 and all(t["owner"] == "bob" for t in data["tasks"]), data
    # every per-task route answers 404 for someone else's task (no existence leak)
    for method, path in [
        ("GET", f"tasks/{a}"), ("GET", f"tasks/{a}/logs"), ("GET", f"tasks/{a}/outputs"),
        ("GET", f"tasks/{a}/notebook"), ("GET", f"tasks/{a}/metrics"), ("POST", f"tasks/{a}/cancel"),
        ("POST", f"tasks/{a}/rerun"), ("DELETE", f"tasks/{a}"),
    ]:  # fmt: skip
        code, data, _ = await fetch(api, method, path, headers=as_user("bob"))
        assert code == 404, (method, path, code, data)
        assert "alice-private" not in json.dumps(data)
    sse = await RawSSE(api.url(f"tasks/{a}/events"), as_user("bob")).connect()
    assert sse.status == 404
    await sse.close()
    url = api.url(f"tasks/{a}/ws").replace("http://", "ws://")
    with pytest.raises(HTTPClientError) as exc:
        await websocket_connect(HTTPRequest(url, headers=as_user("bob")))
    assert exc.value.code == 404
    # alice herself sees her task; the admin sees everyone's and may cancel alice's
    code, data, _ = await fetch(api, "GET", f"tasks/{a}", headers=as_user("alice"))
    assert code == 200
    code, data, _ = await fetch(api, "GET", "tasks", headers=as_user("admin"))
    assert {t["owner"] for t in data["tasks"]} >= {"alice", "bob"}
    code, data, _ = await fetch(api, "POST", f"tasks/{a}/cancel", headers=as_user("admin"))
    assert code == 202
    code, data, _ = await fetch(api, "GET", f"tasks/{a}", headers=as_user("alice"), params={"wait": 30})
    assert data["status"] == "cancelled"
    # and nobody at all: 403
    assert (await fetch(api, "GET", "tasks"))[0] == 403


async def test_change_feed_shows_only_own_tasks(api, multiuser):
    alice = await submit_as(api, "alice", code=LONG)
    for _ in range(200):
        _code, data, _ = await fetch(api, "GET", f"tasks/{alice['id']}", headers=as_user("alice"))
        if data.get("progress"):
            break
        await asyncio.sleep(0.05)
    bob = await submit_as(api, "bob", code="print('bob')")
    frames = []
    sse = await RawSSE(api.url("events", {"after": 0}), as_user("bob")).connect()
    while True:
        frame = await sse.next_frame(10)
        frames.append(frame)
        if frame["event"] == "status" and frame["data"]["task_id"] == bob["id"] and frame["data"]["data"]["status"] in TERMINAL:
            break
    await sse.close()
    assert any(f["data"]["task_id"] == bob["id"] for f in frames)
    leaked = [f for f in frames if f["data"]["task_id"] == alice["id"]]
    assert not leaked, f"bob's feed shows alice's task: {leaked[0]}"
    await fetch(api, "POST", f"tasks/{alice['id']}/cancel", headers=as_user("alice"))


# ---------------------------------------------------------------------------
# paths stay inside the server root
# ---------------------------------------------------------------------------


@pytest.fixture
def outside(jp_root_dir, tmp_path):
    """A script, a folder and symlinks that lead out of the server root."""
    out = tmp_path / "outside"
    out.mkdir()
    marker = out / "ran.txt"
    (out / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('escaped')\n")
    (out / "evil.ipynb").write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}))
    (jp_root_dir / "link.py").symlink_to(out / "evil.py")
    (jp_root_dir / "linkdir").symlink_to(out, target_is_directory=True)
    (jp_root_dir / "inside").mkdir()
    (jp_root_dir / "inside" / "ok.py").write_text("print('inside')\n")
    return {"dir": out, "marker": marker}


async def test_path_cwd_and_save_cannot_leave_the_root(api, jp_root_dir, outside):
    out = outside["dir"]
    rel_out = os.path.relpath(out / "evil.py", jp_root_dir)
    bad_paths = [
        rel_out,
        str(out / "evil.py"),
        "link.py",
        "linkdir/evil.py",
        "inside/../../outside/evil.py",
        "~/evil.py",
        "./../outside/evil.ipynb",
    ]
    bad_dirs = ["..", str(out), "linkdir", "inside/../..", "/", "~"]
    before = await task_count(api)
    for p in bad_paths:
        code, data, _ = await api.call("POST", "tasks", {"path": p})
        assert code == 400 and data["reason"] == "path-not-allowed", (p, code, data)
    for d in bad_dirs:
        code, data, _ = await api.call("POST", "tasks", {"code": "import os; print(os.getcwd())", "cwd": d})
        assert code == 400 and data["reason"] == "path-not-allowed", (d, code, data)
    code, data, _ = await api.call("POST", "tasks/batch", {"tasks": [{"path": "inside/ok.py"}, {"path": "link.py"}]})
    assert code == 400
    assert await task_count(api) == before
    # saving the executed notebook (POST .../notebook)
    task = await api.run(path="inside/ok.py")
    assert task["status"] == "completed"
    tid = task["id"]
    for target in ["../x.ipynb", str(out / "x.ipynb"), "linkdir/x.ipynb", "inside/../../x.ipynb", "linkdir/sub/x.ipynb"]:
        code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": target})
        assert code == 400 and data["reason"] == "path-not-allowed", (target, code, data)
    assert sorted(p.name for p in out.iterdir()) == ["evil.ipynb", "evil.py"]
    assert not (jp_root_dir.parent / "x.ipynb").exists()
    code, data, _ = await api.call("POST", f"tasks/{tid}/notebook", {"path": "inside/saved.ipynb"})
    assert code == 201 and (jp_root_dir / "inside" / "saved.ipynb").exists()
    assert not outside["marker"].exists()


async def test_path_swapped_for_a_symlink_after_submission_is_refused_at_run_time(api, taskrun, jp_root_dir, outside):
    taskrun.pause()
    job = jp_root_dir / "inside" / "job.py"
    job.write_text("print('the real job')\n")
    task = await api.submit(path="inside/job.py")
    job.unlink()
    job.symlink_to(outside["dir"] / "evil.py")  # swapped while queued
    taskrun.resume()
    done = await api.wait(task["id"])
    assert done["status"] == "failed", done
    assert "outside the server root" in done["error"]["reason"]
    assert not outside["marker"].exists(), "a script outside the root was executed"
