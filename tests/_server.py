"""Test helpers: a real ``jupyter server`` (or ``jupyter lab``) subprocess with jupyter_taskrun, and a TCP proxy.

The client and CLI tests need a real TCP port reachable from other processes (the CLI runs as
a subprocess, the sync client uses urllib), and the browser tests need a real ``jupyter lab``,
so they start their own server rather than the in-process pytest-jupyter one. ``JupyterServer``
is the one launcher for all of them (the ``server_factory`` fixture in ``conftest.py`` wraps it).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A ``python -m jupyter_server`` subprocess on 127.0.0.1 with a random port and token.

    ``app="jupyterlab"`` runs ``python -m jupyterlab`` instead; ``taskrun`` settings become
    ``--TaskRun.<name>=<value>`` arguments; ``start()`` returns once ``ready_path`` answers 200.
    Its own root, runtime and config directories and its database live under ``base_dir``.
    """

    def __init__(
        self,
        base_dir: Path,
        *,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 60.0,
        taskrun: dict[str, object] | None = None,
        app: str = "jupyter_server",
        ready_path: str = "api/status",
    ):
        self.base = Path(base_dir)
        self.root = self.base / "root"
        self.runtime_dir = self.base / "runtime"
        self.config_dir = self.base / "config"
        for d in (self.root, self.runtime_dir, self.config_dir):
            d.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_taskrun": True}}})
        )
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}/"
        self.db_path = self.base / "db.sqlite3"
        self.log_path = self.base / "server.log"
        self.extra_args = (*(f"--TaskRun.{k}={v}" for k, v in (taskrun or {}).items()), *extra_args)
        self.start_timeout = start_timeout
        self.app = app
        self.ready_path = ready_path
        self.proc: subprocess.Popen | None = None
        self._children: set[int] = set()

    @property
    def env(self) -> dict[str, str]:
        """Environment for the server and for CLI subprocesses that should find it by runtime info."""
        env = dict(os.environ)
        for key in ("JUPYTER_TASKRUN_URL", "JUPYTER_TASKRUN_TOKEN", "JUPYTER_TOKEN", "JPY_PARENT_PID"):
            env.pop(key, None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["JUPYTER_RUNTIME_DIR"] = str(self.runtime_dir)
        env["JUPYTER_CONFIG_DIR"] = str(self.config_dir)
        env["PYTHONUNBUFFERED"] = "1"
        # faulthandler on: a test that sees the server stall can SIGABRT it and read every thread's
        # stack in server.log (``dump_stacks``)
        env["PYTHONFAULTHANDLER"] = "1"
        return env

    def start(self) -> JupyterServer:
        cmd = [
            sys.executable,
            "-m",
            self.app,
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--ServerApp.open_browser=False",
            "--allow-root",
            "--no-browser",
            f"--TaskRun.db_path={self.db_path}",
            *self.extra_args,
        ]
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.app} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                status, _ = self.request("GET", self.ready_path, timeout=2)
                if status == 200:
                    break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.app} did not answer {self.ready_path} in {self.start_timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return self

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 10) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={"Authorization": f"token {self.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def taskrun_ready(self) -> tuple[bool, str]:
        try:
            status, body = self.request("GET", "taskrun/api/status")
        except OSError as e:
            return False, str(e)
        return status == 200, f"GET /taskrun/api/status -> {status} {body[:200]!r}"

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        try:
            import psutil

            self._children = {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except Exception:
            self._children = set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        # kernels the server started and failed to stop (it would be a server bug; don't leak them)
        for pid in self._children:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self._log.close()

    def __enter__(self) -> JupyterServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def taskrun_server(base_dir: Path, **options: Any) -> Iterator[JupyterServer]:
    """A started server whose taskrun API answers (else the test fails, with the server's log); stopped after."""
    import pytest

    with JupyterServer(base_dir, **options) as srv:
        ok, detail = srv.taskrun_ready()
        if not ok:
            pytest.fail(f"the taskrun API is not available: {detail}\n{srv.log_tail()}")
        yield srv


class TCPProxy:
    """A real TCP proxy on 127.0.0.1 whose live connections can be cut on demand (``drop()``)."""

    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1", *, block: bytes | None = None):
        self.upstream = (upstream_host, upstream_port)
        #: cut, without forwarding, every connection whose first bytes contain this (e.g. b"/events")
        self.block = block
        self.blocked = 0
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.connections = 0
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            client.settimeout(10)
            first = client.recv(65536)
            client.settimeout(None)
            if not first or (self.block is not None and self.block in first):
                with self._lock:
                    self.blocked += bool(first)
                client.shutdown(socket.SHUT_RDWR)
                client.close()
                return
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
            upstream.sendall(first)
        except OSError:
            client.close()
            return
        with self._lock:
            self.connections += 1
            self._pairs.append((client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop(self) -> int:
        """Cut every live connection (both sides), as a network failure would; returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
        return len(pairs)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        self.drop()


def dump_stacks(server: JupyterServer, lines: int = 120) -> str:
    """Abort a stalled server and return the end of its log: faulthandler's stack of every thread."""
    import signal
    import time

    try:
        os.kill(server.proc.pid, signal.SIGABRT)
    except (ProcessLookupError, AttributeError):
        return ""
    time.sleep(1.0)
    text = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])
