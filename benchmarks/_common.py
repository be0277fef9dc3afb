"""Shared plumbing of the benchmark suite: servers, HTTP/SSE clients, samplers, statistics, tables.

Every benchmark module exposes ``run(ctx) -> list[Row]``. ``Context`` owns the temporary
directory and the servers (started on demand, cached by their arguments, always stopped at
the end), so ``run_all.py`` can reuse one server for several benchmarks while each module
still runs on its own (``python benchmarks/bench_latency.py --quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import http.client
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests._server import JupyterServer  # noqa: E402 (after the sys.path line above)

#: Where ``run_all.py --install-peers`` puts jupyter_scheduler (kept out of the main
#: environment: an installed jupyter_scheduler would load into every Jupyter server there).
CACHE_DIR = Path(os.environ.get("TASKRUN_BENCH_CACHE", Path.home() / ".cache" / "jupyter_taskrun-bench"))
PEERS_VENV = CACHE_DIR / "peers-venv"
#: The peers venv's own site-packages: only what the main environment lacks (it sees the
#: main site-packages). It goes on PYTHONPATH of the jupyter-scheduler server only.
DEFAULT_PEERS_DIR = Path(
    os.environ.get(
        "TASKRUN_BENCH_PEERS",
        PEERS_VENV / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages",
    )
)


#: the versions ``install_peers`` installs (committed: a floating install broke the peer row once)
PEERS_CONSTRAINTS = HERE / "peers-constraints.txt"
#: in the peers venv's site-packages: makes this environment's packages visible to its pip
PEERS_PTH = "_taskrun_bench_main_env.pth"


def install_peers() -> Path:
    """Install jupyter_scheduler into a venv that sees this environment's packages, so pip adds
    only what is missing; returns the directory to put on the scheduler server's PYTHONPATH.

    Not ``venv --system-site-packages``: from a venv's Python, that shows the *base* interpreter's
    packages, so pip counted e.g. pydantic as installed while the scheduler server (this
    environment + PYTHONPATH) could not import it: the extension did not load and
    ``GET scheduler/runtime_environments`` answered 404. A .pth file naming this environment's
    site-packages makes pip see exactly what the server will see."""
    import site

    pth = DEFAULT_PEERS_DIR / PEERS_PTH
    if (PEERS_VENV / "bin" / "python").exists() and not pth.exists():
        shutil.rmtree(PEERS_VENV)  # made the old way (--system-site-packages): start again
    if not (PEERS_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    DEFAULT_PEERS_DIR.mkdir(parents=True, exist_ok=True)
    pth.write_text("\n".join(site.getsitepackages()) + "\n")
    pip = [str(PEERS_VENV / "bin" / "python"), "-m", "pip", "install", "-c", str(PEERS_CONSTRAINTS), "jupyter_scheduler"]
    subprocess.run(pip, check=True)
    return DEFAULT_PEERS_DIR


TERMINAL = {"completed", "failed", "cancelled", "timed_out"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- statistics


def percentile(values: Iterable[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100); NaN for no values."""
    xs = sorted(values)
    if not xs:
        return math.nan
    if len(xs) == 1:
        return xs[0]
    k = (len(xs) - 1) * p / 100.0
    lo = math.floor(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if values else math.nan,
        "min": min(values) if values else math.nan,
    }


def fmt_ms(seconds: float) -> str:
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "-"
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:,.0f} ms"
    if ms >= 10:
        return f"{ms:.1f} ms"
    return f"{ms:.2f} ms"


def fmt_ratio(r: float | None) -> str:
    if r is None or math.isnan(r) or math.isinf(r):
        return "-"
    if r >= 10:
        return f"{r:,.0f}x"
    return f"{r:.2f}x"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


# ----------------------------------------------------------------------------- results


@dataclass
class Row:
    """One figure of the final summary."""

    bench: str
    figure: str
    value: str
    target: str = ""
    ok: bool | None = None  # None: informational, or not measurable in this run
    ratio: str = ""  # the figure against its same-run baseline, spelled out
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return {True: "PASS", False: "FAIL", None: "-"}[self.ok]


def table(headers: list[str], rows: list[list[Any]], title: str | None = None) -> str:
    cells = [[str(c).replace("\n", " | ") for c in r] for r in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    if title:
        out.append(title)
    sep = "  "
    out.append(sep.join(h.ljust(w) for h, w in zip(cells[0], widths)))
    out.append(sep.join("-" * w for w in widths))
    for r in cells[1:]:
        out.append(sep.join(c.ljust(w) for c, w in zip(r, widths)))
    return "\n".join(out)


def emit_table(headers: list[str], rows: list[list[Any]], title: str) -> None:
    print("\n" + table(headers, rows, title), flush=True)


# ----------------------------------------------------------------------------- limits & load


def raise_nofile(want: int = 16384) -> int:
    """Raise the soft open-files limit (children, i.e. the servers, inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def machine_load() -> str:
    la = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1/5/15 min)"


# ----------------------------------------------------------------------------- HTTP


class Http:
    """A keep-alive HTTP/1.1 connection to one server (one per thread): low, steady client overhead."""

    def __init__(self, port: int, token: str, timeout: float = 120.0):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.connect()
            import socket

            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.conn

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, Any, float]:
        """Returns (status, parsed JSON or bytes, seconds from send to the whole body read)."""
        data = None
        headers = {"Authorization": f"token {self.token}"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in (0, 1):
            conn = self._connect()
            if timeout is not None:
                conn.sock.settimeout(timeout)
            t0 = time.perf_counter()
            try:
                conn.request(method, "/" + path.lstrip("/"), body=data, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, ConnectionError, OSError):
                self.close()
                if attempt:
                    raise
                continue
            elapsed = time.perf_counter() - t0
            if timeout is not None and conn.sock is not None:
                conn.sock.settimeout(self.timeout)
            ctype = resp.getheader("Content-Type", "")
            parsed: Any = raw
            if "json" in ctype and raw:
                parsed = json.loads(raw)
            return resp.status, parsed, elapsed
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        status, parsed, _ = self.request(method, path, body, timeout)
        if status >= 400:
            raise RuntimeError(f"{method} {path} -> {status}: {parsed!r:.300}")
        return parsed

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


# ----------------------------------------------------------------------------- servers


class BenchServer(JupyterServer):
    """tests._server.JupyterServer plus: extra extensions / PYTHONPATH, RSS, kernel counting."""

    def __init__(
        self,
        base_dir: Path,
        *,
        extra_args: tuple[str, ...] = (),
        extensions: dict[str, bool] | None = None,
        extra_path: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout: float = 120.0,
    ):
        super().__init__(base_dir, extra_args=extra_args, start_timeout=start_timeout)
        self.extra_path = list(extra_path or [])
        self.extra_env = dict(extra_env or {})
        if extensions is not None:
            (self.config_dir / "jupyter_server_config.json").write_text(json.dumps({"ServerApp": {"jpserver_extensions": extensions}}))
        self._http: Http | None = None

    @property
    def env(self) -> dict[str, str]:
        env = {**super().env, **self.extra_env}
        if self.extra_path:
            env["PYTHONPATH"] = os.pathsep.join([*self.extra_path, env.get("PYTHONPATH", "")])
        return env

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def http(self) -> Http:
        if self._http is None:
            self._http = Http(self.port, self.token)
        return self._http

    def client(self) -> Http:
        """A new connection (for use from another thread)."""
        return Http(self.port, self.token)

    def rss(self) -> int:
        return psutil.Process(self.pid).memory_info().rss

    def kernel_pids(self) -> list[int]:
        try:
            procs = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []
        out = []
        for p in procs:
            try:
                if p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline()):
                    out.append(p.pid)
            except psutil.Error:
                pass
        return out

    def status(self) -> dict[str, Any]:
        return self.http.json("GET", "taskrun/api/status")

    def pool_ready(self) -> int:
        return int(((self.status().get("executor") or {}).get("pool") or {}).get("ready", 0))

    def wait_quiet(self, *, kernels: int, pool: int = 0, timeout: float = 120.0) -> float:
        """Wait until exactly ``kernels`` kernel processes live and ``pool`` are ready; returns seconds waited."""
        t0 = time.monotonic()
        while True:
            st = self.status()
            ready = int(((st.get("executor") or {}).get("pool") or {}).get("ready", 0))
            if st.get("running", 0) == 0 and ready >= pool and len(self.kernel_pids()) == kernels:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"server not quiet after {timeout:.0f}s: status={st}, kernels={self.kernel_pids()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None
        super().stop()


class Context:
    """What one benchmark run shares: options, a temp dir, cached servers."""

    def __init__(self, *, quick: bool = False, keep: bool = False, peers_dir: Path = DEFAULT_PEERS_DIR, cache: bool = True):
        self.quick = quick
        self.keep = keep
        self.peers_dir = Path(peers_dir)
        self.cache = cache
        self.cache_dir = CACHE_DIR
        self.tmp = Path(tempfile.mkdtemp(prefix="taskrun-bench-"))
        self._servers: dict[tuple[Any, ...], BenchServer] = {}
        self._n = 0
        self.nofile = raise_nofile()

    def server(self, *args: str, fresh: bool = False, prepare: Callable[[BenchServer], None] | None = None, **kw: Any) -> BenchServer:
        """A started taskrun server with these extra ``--`` args (cached unless ``fresh``).

        ``prepare(srv)`` runs before the server starts (e.g. to fill its SQLite file); it implies ``fresh``.
        """
        fresh = fresh or prepare is not None
        key = (args, tuple(sorted((k, repr(v)) for k, v in kw.items())))
        if not fresh and key in self._servers:
            return self._servers[key]
        self._n += 1
        base = self.tmp / f"server{self._n}"
        srv = BenchServer(base, extra_args=tuple(args), **kw)
        if prepare is not None:
            prepare(srv)
        t0 = time.monotonic()
        log(f"starting server {self._n}: {' '.join(args) or '(defaults)'}")
        try:
            srv.start()
        except Exception as e:  # noqa: BLE001 - its port was taken before it bound it (a kernel's ZMQ socket, say)
            log(f"server {self._n} did not start ({type(e).__name__}: {str(e)[:80]}); once more on another port")
            srv.stop()
            srv = BenchServer(base, extra_args=tuple(args), **kw)
            if prepare is not None:
                prepare(srv)
            srv.start()
        log(f"server {self._n} up in {time.monotonic() - t0:.1f}s (pid {srv.pid})")
        self._servers[key if not fresh else (key, self._n)] = srv
        return srv

    def stop_server(self, srv: BenchServer) -> None:
        for k, v in list(self._servers.items()):
            if v is srv:
                del self._servers[k]
        srv.stop()

    def close(self) -> None:
        for srv in list(self._servers.values()):
            try:
                srv.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning up
                log(f"stopping a server failed: {e}")
        self._servers.clear()
        # safety net: anything still running from our temp dir (servers, kernels: their
        # connection files live in each server's runtime dir) is a leak; kill and say so
        leaked = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if str(self.tmp) in " ".join(proc.info["cmdline"] or ()):
                    proc.kill()
                    leaked.append(proc.pid)
            except psutil.Error:
                pass
        if leaked:
            log(f"WARNING: killed {len(leaked)} leftover process(es) of this run: {leaked}")
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp}")

    def n(self, quick: int, full: int) -> int:
        return quick if self.quick else full


# ----------------------------------------------------------------------------- tasks


def submit_wait(srv: BenchServer, body: dict[str, Any], wait: float = 600.0) -> tuple[dict[str, Any], float]:
    """POST ?wait and return (task, seconds from send to response)."""
    status, task, elapsed = srv.http.request("POST", f"taskrun/api/tasks?wait={wait:g}", body, timeout=wait + 30)
    if status not in (200, 202):
        raise RuntimeError(f"submit -> {status}: {task!r:.300}")
    return task, elapsed


def submit(srv: BenchServer, body: dict[str, Any]) -> dict[str, Any]:
    return srv.http.json("POST", "taskrun/api/tasks", body)


def wait_task(srv: BenchServer, task_id: str, timeout: float = 600.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        task = srv.http.json("GET", f"taskrun/api/tasks/{task_id}?wait=60", timeout=90)
        if task["status"] in TERMINAL:
            return task
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} not finished after {timeout}s: {task['status']}")


# ----------------------------------------------------------------------------- samplers


class Sampler(threading.Thread):
    """Calls ``fn`` every ``interval`` seconds in a thread, keeping (time, value)."""

    def __init__(self, fn: Callable[[], Any], interval: float):
        super().__init__(daemon=True)
        self.fn = fn
        self.interval = interval
        self.samples: list[tuple[float, Any]] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            try:
                self.samples.append((time.monotonic(), self.fn()))
            except Exception:  # noqa: BLE001 - the process may be going away
                pass
            self._stop_evt.wait(self.interval)

    def stop(self) -> list[tuple[float, Any]]:
        self._stop_evt.set()
        self.join(10)
        return self.samples


class RssSampler(Sampler):
    def __init__(self, pid: int, interval: float = 0.05):
        proc = psutil.Process(pid)
        super().__init__(lambda: proc.memory_info().rss, interval)

    @property
    def peak(self) -> int:
        return max((v for _, v in self.samples), default=0)


class StallProbe(threading.Thread):
    """From outside the server: GET /taskrun/api/status every ``interval`` s on a keep-alive
    connection, recording each response time. A long response = the server's loop was busy."""

    def __init__(self, srv: BenchServer, interval: float = 0.01):
        super().__init__(daemon=True)
        self.http = srv.client()
        self.interval = interval
        self.times: list[tuple[float, float]] = []  # (monotonic start, seconds)
        self.errors = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            t0 = time.monotonic()
            try:
                status, _, elapsed = self.http.request("GET", "taskrun/api/status", timeout=60)
                if status != 200:
                    self.errors += 1
                self.times.append((t0, elapsed))
            except Exception:  # noqa: BLE001
                self.errors += 1
            rest = self.interval - (time.monotonic() - t0)
            if rest > 0:
                self._stop_evt.wait(rest)

    def stop(self) -> list[float]:
        self._stop_evt.set()
        self.join(70)
        self.http.close()
        return [e for _, e in self.times]


# ----------------------------------------------------------------------------- peer worker


def run_worker(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``benchmarks/_peers.py ARGS`` in its own session; its last stdout line is JSON.

    On timeout or error the whole process group (kernels included) is killed.
    """
    cmd = [sys.executable, str(HERE / "_peers.py"), *args]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, env=env or dict(os.environ), text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        proc.communicate()
        raise RuntimeError(f"peer worker {args[0]} timed out after {timeout:.0f}s") from None
    finally:
        _kill_tree(proc.pid)
    lines = [ln for ln in out.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"peer worker {args[0]} failed ({proc.returncode}):\n{err[-2000:]}")
    return json.loads(lines[-1])


def _kill_tree(pid: int) -> None:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        kids = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    for k in kids:
        try:
            k.kill()
        except psutil.Error:
            pass


# ----------------------------------------------------------------------------- SSE client


class SSEClient(asyncio.Protocol):
    """A bare HTTP/1.1 SSE client: records every received chunk with its arrival time.

    Parsing happens after the run (``frames()``) so the client spends as little CPU as
    possible while events arrive — with 1,000 of them in one process that matters.
    """

    def __init__(self, request: bytes, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.chunks: list[tuple[float, bytes]] = []
        self.first = loop.create_future()
        self.done = loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.chunks.append((time.time(), data))
        if not self.first.done():
            self.first.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.first.done():
            self.first.set_exception(exc or ConnectionError("closed before any data"))
        if not self.done.done():
            self.done.set_result(None)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- parsing after the fact

    def frames(self) -> tuple[int, list[tuple[float, dict[str, str]]]]:
        """(HTTP status, [(arrival time of the frame's last byte, {field: value})])."""
        raw = b"".join(c for _, c in self.chunks)
        ends = []
        pos = 0
        for _t, c in self.chunks:
            pos += len(c)
            ends.append(pos)
        times = [t for t, _ in self.chunks]

        def time_at(raw_pos: int) -> float:
            return times[bisect.bisect_right(ends, raw_pos)]

        head_end = raw.find(b"\r\n\r\n")
        if head_end < 0:
            return 0, []
        head = raw[:head_end].decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        chunked = any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower() for h in head[1:])
        # body bytes with, for each segment, the raw offset it came from
        body = bytearray()
        segs: list[tuple[int, int]] = []  # (body_start, raw_start)
        p = head_end + 4
        if chunked:
            while p < len(raw):
                eol = raw.find(b"\r\n", p)
                if eol < 0:
                    break
                size = int(raw[p:eol].split(b";")[0], 16)
                if size == 0:
                    break
                segs.append((len(body), eol + 2))
                body += raw[eol + 2 : eol + 2 + size]
                p = eol + 2 + size + 2
        else:
            segs.append((0, p))
            body += raw[p:]
        seg_starts = [s for s, _ in segs]

        def raw_pos(body_pos: int) -> int:
            i = bisect.bisect_right(seg_starts, body_pos) - 1
            b0, r0 = segs[i]
            return r0 + (body_pos - b0)

        out = []
        text = bytes(body)
        start = 0
        while True:
            end = text.find(b"\n\n", start)
            if end < 0:
                break
            frame = text[start:end].decode("utf-8")
            fields: dict[str, str] = {}
            for line in frame.split("\n"):
                if not line or line.startswith(":"):
                    continue
                k, _, v = line.partition(":")
                v = v.removeprefix(" ")
                fields[k] = fields[k] + "\n" + v if k in fields else v
            if fields:
                out.append((time_at(raw_pos(end + 1)), fields))
            start = end + 2
        return status, out


def sse_request_for(port: int, token: str, path: str) -> bytes:
    return (
        f"GET /{path.lstrip('/')} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: token {token}\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()


async def open_sse(req: bytes, port: int, n: int, *, batch: int = 64) -> list[SSEClient]:
    """Open ``n`` SSE connections sending ``req`` (in batches: the listen backlog is finite) and wait for their first bytes."""
    loop = asyncio.get_running_loop()
    clients: list[SSEClient] = []

    async def one() -> SSEClient:
        for attempt in range(5):
            try:
                _, proto = await loop.create_connection(lambda: SSEClient(req, loop), "127.0.0.1", port)
                await asyncio.wait_for(asyncio.shield(proto.first), 60)
                return proto
            except (OSError, asyncio.TimeoutError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * (attempt + 1))
        raise AssertionError("unreachable")

    for i in range(0, n, batch):
        clients += await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    return clients


def stamped_lines(frames: list[tuple[float, dict[str, str]]], tag: str = "TS") -> tuple[list[tuple[int, float, float]], list[int], bool]:
    """From a task's SSE frames: [(line index, printed time, arrival time)], the event ids, saw 'end'.

    Log chunks are not line-aligned: a line arrives when the chunk holding its newline does.
    """
    buf = ""
    lines = []
    ids = []
    ended = False
    for t, f in frames:
        ev = f.get("event")
        if ev == "end":
            ended = True
            continue
        if "id" in f:
            ids.append(int(f["id"]))
        if ev != "log":
            continue
        data = json.loads(f["data"])["data"]
        if data.get("stream") != "stdout":
            continue
        buf += data["text"]
        *complete, buf = buf.split("\n")
        for line in complete:
            parts = line.split()
            if len(parts) == 3 and parts[0] == tag:
                lines.append((int(parts[1]), float(parts[2]), t))
    return lines, ids, ended


def stamp_code(n: int, interval: float, gate: str | None = None, pre_sleep: float = 0.0) -> str:
    """Task code printing ``TS i time.time()`` n times every ``interval`` s (after an optional gate file)."""
    lines = ["import time, os"]
    if gate:
        lines.append(f"while not os.path.exists({gate!r}): time.sleep(0.005)")
    if pre_sleep:
        lines.append(f"time.sleep({pre_sleep!r})")
    lines += [
        f"for i in range({n}):",
        "    print(f'TS {i} {time.time():.6f}')",
        f"    time.sleep({interval!r})",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def standalone(run: Callable[[Context], list[Row]], description: str) -> None:
    """``python benchmarks/bench_X.py [--quick]``: run one benchmark and print its summary."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--quick", action="store_true", help="fewer repetitions (a sanity run)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (server logs)")
    ap.add_argument("--peers-dir", type=Path, default=DEFAULT_PEERS_DIR, help="where jupyter_scheduler may be installed")
    ap.add_argument("--no-cache", action="store_true", help="rebuild cached fixtures (the 100k-task store)")
    a = ap.parse_args()
    ctx = Context(quick=a.quick, keep=a.keep, peers_dir=a.peers_dir, cache=not a.no_cache)
    print(f"machine: {machine_load()}", flush=True)
    try:
        rows = run(ctx)
    finally:
        ctx.close()
    print_summary(rows)
    print(f"machine after: {machine_load()}", flush=True)


def print_summary(rows: list[Row]) -> None:
    emit_table(
        ["benchmark", "figure", "value", "vs baseline (same run)", "target", "result"],
        [[r.bench, r.figure, r.value, r.ratio, r.target, r.verdict] for r in rows],
        "SUMMARY",
    )


# ----------------------------------------------------------------------------- server flavours


def taskrun_args(pool: int = 1, concurrency: int = 2, *extra: str) -> tuple[str, ...]:
    """The server flavours the benchmarks share (same args = same cached server in run_all)."""
    return (
        f"--TaskRun.kernel_pool_size={pool}",
        f"--TaskRun.max_concurrent_tasks={concurrency}",
        "--TaskRun.max_streams_per_user=2000",
        # a row that does not say "forked" measures spawned kernels (the default is "fork")
        *(() if any(a.startswith("--TaskRun.kernel_start=") for a in extra) else ("--TaskRun.kernel_start=spawn",)),
        *extra,
    )


#: what makes a server fork its task kernels: the setting, and the variable that is its default
FORK_ARGS = ("--TaskRun.kernel_start=fork",)
FORK_ENV = {"JUPYTER_TASKRUN_KERNEL_START": "fork"}


def fork_server(ctx: Context, pool: int, concurrency: int = 2) -> BenchServer:
    """A taskrun server whose task kernels are forked (``c.TaskRun.kernel_start = "fork"``)."""
    return ctx.server(*taskrun_args(pool, concurrency, *FORK_ARGS), extra_env=FORK_ENV)


def check_forked(srv: BenchServer) -> None:
    """Raise unless the server runs a fork server (its kernels really were forked)."""
    try:
        kids = psutil.Process(srv.pid).children(recursive=True)
        found = any("forkserver.py" in " ".join(k.cmdline()) for k in kids)
    except psutil.Error:
        found = False
    if not found:
        raise RuntimeError("kernel_start=fork: the server runs no fork server, its kernels were spawned")


# ----------------------------------------------------------------------------- stamped streaming run


def client_procs(srv: BenchServer, path: str, subscribers: int, procs: int, timeout: float) -> list[subprocess.Popen[str]]:
    """Start ``procs`` client processes (``_sse_clients.py``) sharing ``subscribers`` SSE streams of
    ``path``; return once each has every stream open (its ``ready`` line)."""
    counts = [subscribers // procs + (i < subscribers % procs) for i in range(procs)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(HERE / "_sse_clients.py"), str(srv.port), srv.token, path, str(n), str(timeout)],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        for n in counts
        if n
    ]
    for w in workers:
        assert w.stdout is not None
        if w.stdout.readline().strip() != "ready":
            for other in workers:
                _kill_tree(other.pid)
            raise RuntimeError(f"SSE client process {w.pid} failed to connect (exit {w.wait()})")
    return workers


def client_results(workers: list[subprocess.Popen[str]], timeout: float) -> list[dict[str, Any]]:
    """Each client process's JSON result (see ``_sse_clients.py``); kills them all on failure."""
    out = []
    try:
        for w in workers:
            stdout, _ = w.communicate(timeout=timeout)
            lines = [ln for ln in stdout.splitlines() if ln.strip()]
            if w.returncode != 0 or not lines:
                raise RuntimeError(f"SSE client process {w.pid} failed (exit {w.returncode})")
            out.append(json.loads(lines[-1]))
    finally:
        for w in workers:
            _kill_tree(w.pid)
    return out


async def stamped_run(srv: BenchServer, *, subscribers: int, lines: int, interval: float, pool: int = 1, procs: int = 0) -> dict[str, Any]:
    """Run a task printing ``TS i time.time()`` lines, followed by ``subscribers`` SSE clients
    connected before the first print (the task waits on a gate file); parse what each received.

    ``procs`` 0: the clients run in this process (asyncio); else in that many client processes
    (``_sse_clients.py``), so that with many subscribers the client side is not what is measured.
    ``client_cpu_s`` is their CPU (user+system) while the task streamed: all of them together,
    ``client_cpu_max_s`` the busiest one's."""
    import uuid

    srv.wait_quiet(kernels=pool, pool=pool)
    gate = srv.root / f"gate-{uuid.uuid4().hex}"
    task = submit(srv, {"code": stamp_code(lines, interval, gate=str(gate)), "name": "stream-bench"})
    task_id = task["id"]
    deadline = time.monotonic() + 120
    while task["status"] == "queued":
        if time.monotonic() > deadline:
            raise RuntimeError("stream task never started")
        await asyncio.sleep(0.01)
        task = srv.http.json("GET", f"taskrun/api/tasks/{task_id}")
    if task["status"] != "running":
        raise RuntimeError(f"stream task ended early: {task['status']} {task.get('error')}")
    path = f"taskrun/api/tasks/{task_id}/events"
    timeout = lines * interval * 10 + 120
    t0 = time.monotonic()
    results: list[dict[str, Any]] = []
    if procs:
        workers = client_procs(srv, path, subscribers, procs, timeout)
        connect_s = time.monotonic() - t0
        t1 = time.monotonic()
        gate.touch()
        per_proc = await asyncio.to_thread(client_results, workers, timeout + 30)
        stream_s = time.monotonic() - t1
        cpus = [r["cpu_s"] for r in per_proc]
        results = [c for r in per_proc for c in r["clients"]]
    else:
        me = psutil.Process()
        clients = await open_sse(sse_request_for(srv.port, srv.token, path), srv.port, subscribers)
        connect_s = time.monotonic() - t0
        cpu0 = sum(me.cpu_times()[:2])
        t1 = time.monotonic()
        gate.touch()
        try:
            await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), timeout=timeout)
        finally:
            for c in clients:
                c.close()
        stream_s = time.monotonic() - t1
        cpus = [sum(me.cpu_times()[:2]) - cpu0]
        for c in clients:
            status, frames = c.frames()
            got, ids, ended = stamped_lines(frames)
            results.append({"status": status, "lines": got, "ids": ids, "ended": ended, "chunks": len(c.chunks)})
    final = srv.http.json("GET", f"taskrun/api/tasks/{task_id}")
    # what the server itself kept of the task's output (independent of any subscriber)
    _, log_bytes, _ = srv.http.request("GET", f"taskrun/api/tasks/{task_id}/logs")
    stored = [int(p[1]) for p in (ln.split() for ln in log_bytes.decode().splitlines()) if len(p) == 3 and p[0] == "TS"]
    latencies: list[float] = []
    complete = delivered = 0
    problems: list[str] = []
    if stored != list(range(lines)):
        problems.append(
            f"the server stored {len(stored)}/{lines} printed lines of a task that ended "
            f"{final['status']} (output lost before any subscriber could get it)"
        )
    for i, c in enumerate(results):
        status, got, ids, ended = c["status"], c["lines"], c["ids"], c["ended"]
        idx = [g[0] for g in got]
        # delivered: every stored event exactly once, in order, then 'end'
        ok = status == 200 and ended and idx == stored and ids == list(range(1, final["last_event_id"] + 1))
        if ok:
            delivered += 1
            complete += stored == list(range(lines))
        elif len(problems) < 5:
            problems.append(
                f"client {i}: http {status}, end={ended}, {len(set(idx))}/{len(stored)} stored lines, "
                f"ids {ids[:1]}..{ids[-1:]} ({len(ids)}) vs last {final['last_event_id']}"
            )
        latencies += [arrived - printed for _, printed, arrived in got]
    return {
        "task": final,
        "latencies": latencies,
        "complete": complete,
        "delivered": delivered,
        "stored_lines": len(stored),
        "subscribers": subscribers,
        "problems": problems,
        "connect_s": connect_s,
        "stream_s": stream_s,
        "client_cpu_s": sum(cpus),
        "client_cpu_max_s": max(cpus),
        "client_procs": max(1, procs),
        # socket reads per subscriber (~ the server's writes to it, coalesced under load): load-independent-ish
        "chunks_per_sub": sum(c["chunks"] for c in results) / max(1, len(results)),
        "events": final["last_event_id"],
    }
