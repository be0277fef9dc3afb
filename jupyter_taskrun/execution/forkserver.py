"""Forked task kernels (``c.TaskRun.kernel_start = "fork"``): ipykernel imported once, a fresh fork per task.

A spawned kernel spends ~0.5 s of CPU importing ipykernel, IPython, zmq and tornado before it
can answer. A *fork server* (one per Python executable and start-relevant environment) imports
them once; each task kernel is then ``os.fork()`` of it. Guarantees:

- **Fresh process, no user state.** The fork server runs no user code, creates no ZMQ context
  or socket, no event loop and no thread (checked before every fork: ``/proc/self/task`` must
  hold one thread, else it refuses and the kernel is spawned). The kernel's sockets, threads
  and loop are created after the fork by ``IPKernelApp`` with the argv a spawned kernel gets
  (``-f <connection file>`` and ``KernelLauncher._extra_arguments``), the same ``sys.argv``
  (ipykernel_launcher's path first), ``sys.path``, working folder and environment.
- **Own session.** The child calls ``setsid()`` before the server hears of it: pgid == pid, so
  ``killpg`` and interrupts reach its whole group, as with a spawned kernel.
- **Durable output kept** (``durable.py``): fds 1, 2 and the tee are the server's pipe write ends,
  passed with SCM_RIGHTS; the fork server closes its copies right after the fork, so only the
  kernel holds them and the pipes end with it. No other descriptor of the fork server (its
  socket, another kernel's pipes) stays open in the kernel.
- **Found like a spawned kernel.** ``/proc/<pid>/environ`` shows the kernel's own marker
  (written over the fork server's same-length placeholder), so marker scans find it and its
  non-exec children; ``/proc/<pid>/cmdline`` reads ``python -m ipykernel_launcher -f ...``
  (cut to the fork server's argv length).
- **Death and exit status.** The server watches the pid itself (pidfd works for non-children);
  a zombie's status is read from ``/proc/<pid>/stat``, and the fork server, which reaps its
  children, sends every exit status back: "killed by SIGKILL" reads as for a spawned kernel.
- **Lifetime.** The fork server ends when the server closes its socket or dies (EOF), killing
  any kernel it still has; a kernel exits when its fork server is gone (ipykernel's parent poller).

Differences that remain: kernels of one fork server share the string hash seed (``random`` is
reseeded at fork by CPython). Spawned instead (``KernelLauncher`` decides): kernels that are not
``python -m ipykernel_launcher -f {connection_file}``, the bwrap sandbox, a fork server that
cannot start. A task environment that changes start-relevant variables (``PYTHON*``, ``LD_*``,
locale, ``JUPYTER*``...) gets its own fork server (at most ``MAX_SERVERS``, oldest closed first).

This file runs in the kernel's Python too (``BOOT`` executes it there): stdlib imports only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger("jupyter_taskrun.execution.forkserver")

#: = ``kernels.KERNEL_MARKER_ENV`` and ``durable.TEE_FD_ENV`` (not imported: see the docstring)
MARKER_ENV = "JUPYTER_TASKRUN_KERNEL"
TEE_FD_ENV = "JUPYTER_TASKRUN_TEE_FD"
#: the fork server's marker ends with this; each kernel writes its own uuid over it
PLACEHOLDER = "0" * 32
#: what a kernel imports by itself up to its first reply (measured), imported once here
PRELOAD = (
    "ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell", "ipykernel.debugger",
    "IPython.core.completerlib", "IPython.core.debugger", "IPython.extensions.storemagic",
    "tornado.platform.asyncio", "tornado.queues", "psutil", "ctypes", "faulthandler",
)  # fmt: skip
#: variables read when the interpreter starts or a module is imported: another value, another fork server
START_ENV_PREFIXES = ("PYTHON", "LD_", "LC_", "LANG", "JUPYTER", "IPYTHON", "JPY_", "PYDEVD", "MPL")
MAX_SERVERS = 4
#: ``python -c BOOT <this file> <socket fd>``: no "ipykernel" in it, so it is never counted as a kernel
BOOT = "import sys;del sys.path[0];p=sys.argv[1];exec(compile(open(p).read(),p,'exec'),{'__name__':'__taskrun_forkserver__'})"


class ForkUnavailable(RuntimeError):
    """This kernel cannot be forked (the fork server could not start, died or refused): spawn it."""


def forkable(cmd: list[str]) -> bool:
    """A stock ipykernel command line: ``<python> -m ipykernel_launcher -f <file> [args]``."""
    return len(cmd) >= 5 and cmd[1:4] == ["-m", "ipykernel_launcher", "-f"]


def fingerprint(python: str, env: dict[str, str]) -> tuple[Any, ...]:
    relevant = {k: v for k, v in env.items() if k.startswith(START_ENV_PREFIXES) and not k.startswith("JUPYTER_TASKRUN_")}
    relevant.pop("JPY_PARENT_PID", None)
    return (os.path.realpath(python), tuple(sorted(relevant.items())))


# ----------------------------------------------------------------------------- the fork server process


def _send(sock: socket.socket, msg: dict[str, Any]) -> None:
    sock.sendall(json.dumps(msg).encode())


def _serve() -> None:
    sock = socket.socket(fileno=int(sys.argv[2]))
    sock.setblocking(True)
    problem = ""
    before = set(os.environ)
    stderr = os.dup(2)
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), 2)  # debugpy's import-time warning is the kernels' to print, not ours
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001 - a kernel without the module imports it itself, or fails as spawned
            if name.startswith("ipykernel.kernelapp"):
                problem = f"cannot import {name}: {e}"
    os.dup2(stderr, 2)
    os.close(stderr)
    # variables an import sets if unset (debugpy: PYDEVD_USE_FRAME_EVAL): a spawned kernel's imports set them too
    defaults = {k: v for k, v in os.environ.items() if k not in before}
    areas = _areas()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake select(); reaping is in the loop
    _send(sock, {"op": "ready", "pid": os.getpid(), "error": problem})
    children: set[int] = set()
    try:
        while not problem:
            ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
            with contextlib.suppress(OSError):
                while os.read(wake_r, 512):
                    pass
            _reap(sock, children)
            if sock.fileno() in ready:
                data, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 8)
                if not data:
                    break  # the server closed the socket, or died
                req = json.loads(data)
                try:
                    pid = _fork({**req, "defaults": defaults}, fds, (sock.fileno(), wake_r, wake_w), areas)
                    children.add(pid)
                    _send(sock, {"op": "forked", "id": req["id"], "pid": pid})
                except _Refused as e:
                    _send(sock, {"op": "error", "id": req["id"], "error": str(e), "refused": True})
                except Exception as e:  # noqa: BLE001 - the child failed (its cwd, say): tell the server
                    _send(sock, {"op": "error", "id": req["id"], "error": f"{type(e).__name__}: {e}"})
                finally:
                    for fd in fds:
                        with contextlib.suppress(OSError):
                            os.close(fd)
    except (BrokenPipeError, ConnectionError):
        pass
    finally:
        for pid in children:  # no kernel outlives its fork server
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class _Refused(RuntimeError):
    pass


def _reap(sock: socket.socket, children: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        _send(sock, {"op": "exit", "pid": pid, "status": status})


def _stat_fields(pid: int | str) -> list[bytes]:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rfind(b")") + 2 :].split()  # fields from the 3rd (state) on


def _areas() -> tuple[int, int, int, int]:
    """(argv start, argv end, address of the marker's value, its length) in this process's memory."""
    try:
        fields = _stat_fields("self")
        arg_start, arg_end, env_start, env_end = (int(x) for x in fields[45:49])
        import ctypes

        block = ctypes.string_at(env_start, env_end - env_start)
    except (OSError, ValueError, IndexError):
        return (0, 0, 0, 0)
    key = f"{MARKER_ENV}=".encode()
    at = 0 if block.startswith(key) else block.find(b"\0" + key) + 1
    if at == 0 and not block.startswith(key):
        return (arg_start, arg_end, 0, 0)
    start = at + len(key)
    end = block.find(b"\0", start)
    return (arg_start, arg_end, env_start + start, (end if end >= 0 else len(block)) - start)


def _fork(req: dict[str, Any], fds: list[int], close_in_child: tuple[int, ...], areas: tuple[int, int, int, int]) -> int:
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise _Refused(f"the fork server has {threads} threads: forking it is unsafe")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()  # else the child would write the fork server's buffered text again
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the kernel
        os.close(r)
        try:
            _child(req, fds, w, close_in_child, areas)
        except BaseException as e:  # noqa: BLE001 - report why, then die
            with contextlib.suppress(Exception):
                os.write(w, f"{type(e).__name__}: {e}".encode()[:2000])
        os._exit(1)
    os.close(w)
    got = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the child writes one NUL once set up, then closes
        if select.select([r], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            got += chunk
    os.close(r)
    if got != b"\0":
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        raise RuntimeError(got.decode("utf-8", "replace") or "the kernel process ended while starting")
    return pid


def _child(req: dict[str, Any], fds: list[int], ready_w: int, close: tuple[int, ...], areas: tuple[int, int, int, int]) -> None:
    os.setsid()
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for fd in close:
        os.close(fd)
    out, err, *rest = fds
    os.dup2(out, 1)
    os.dup2(err, 2)
    for fd in (out, err):
        if fd > 2:
            os.close(fd)
    env = dict(req["env"])
    env.pop(TEE_FD_ENV, None)
    if rest:
        env[TEE_FD_ENV] = str(rest[0])  # its number here, not in the server
    env["JPY_PARENT_PID"] = str(os.getppid())
    for key, value in req["defaults"].items():
        env.setdefault(key, value)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    _retitle(areas, req["argv"], env.get(MARKER_ENV, ""))
    import importlib.util

    spec = importlib.util.find_spec("ipykernel_launcher")
    sys.argv = [spec.origin if spec and spec.origin else "ipykernel_launcher", *req["argv"][3:]]
    os.write(ready_w, b"\0")
    os.close(ready_w)
    from ipykernel.kernelapp import IPKernelApp

    code = 0
    try:
        IPKernelApp.launch_instance(argv=sys.argv[1:], parent_handle=os.getppid())
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - as a Python process would: traceback, exit 1
        import traceback

        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _retitle(areas: tuple[int, int, int, int], argv: list[str], marker: str) -> None:
    import ctypes

    arg_start, arg_end, value_at, value_len = areas
    size = arg_end - arg_start
    if size > 1:
        title = b"\0".join(a.encode("utf-8", "replace") for a in argv)[: size - 1]
        ctypes.memmove(arg_start, title.ljust(size, b"\0"), size)
    mark = marker.encode()
    if value_at and len(mark) == value_len:
        ctypes.memmove(value_at, mark, value_len)


# ----------------------------------------------------------------------------- the server side


def _proc_exit(pid: int) -> tuple[str, int | None]:
    """("alive" | "zombie" | "gone", the zombie's wait status from /proc/<pid>/stat)."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return "gone", None
    if fields[0] in (b"Z", b"X"):
        try:
            return "zombie", int(fields[49])
        except (IndexError, ValueError):
            return "zombie", None
    return "alive", None


class ForkedProcess:
    """A ``Popen``-like view of a kernel the fork server forked (it is not our child)."""

    stdin = stdout = stderr = None

    def __init__(self, server: ForkServer, pid: int):
        self.server = server
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.server.pump()
        if self.returncode is None:
            state, status = _proc_exit(self.pid)
            if state == "zombie" and status:  # 0 may mean "not allowed to read": ask the fork server
                self._set(status)
            elif state != "alive":
                self.server.pump(wait=1.0)  # reaped: its status is on its way
                if self.returncode is None and state == "gone":
                    log.warning("taskrun: exit status of forked kernel %d lost (its fork server is gone)", self.pid)
                    self.returncode = -signal.SIGKILL
        return self.returncode

    def _set(self, status: int) -> None:
        try:
            self.returncode = os.waitstatus_to_exitcode(status)
        except ValueError:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["forked kernel"], timeout or 0)
            time.sleep(0.005)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class ForkServer:
    """One fork server process and the kernels it forked; used from the event loop's thread."""

    def __init__(self, python: str, env: dict[str, str], marker_prefix: str):
        self.python = python
        self.env = {k: v for k, v in env.items() if k != TEE_FD_ENV}
        self.env[MARKER_ENV] = f"{marker_prefix}:{PLACEHOLDER}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.pid: int | None = None
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._kernels: dict[int, ForkedProcess] = {}
        self._next = 0
        #: fork requests whose caller was cancelled: the kernel is killed as soon as its pid comes
        self._abandoned: set[int] = set()
        self._reading: asyncio.AbstractEventLoop | None = None
        self.dead = False

    async def start(self, timeout: float) -> None:
        """Start the process (once) and wait for its imports; ``ForkUnavailable`` if it cannot."""
        if self._ready is None:
            self._ready = asyncio.ensure_future(self._start(timeout))
            self._ready.add_done_callback(lambda f: f.cancelled() or f.exception())  # awaited by whoever waits
        await asyncio.shield(self._ready)

    async def _start(self, timeout: float) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [self.python, "-c", BOOT, os.path.abspath(__file__), str(theirs.fileno())],
                env=self.env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True, cwd=os.getcwd(),
            )  # fmt: skip
        except OSError as e:
            ours.close()
            raise ForkUnavailable(f"cannot start a fork server: {e}") from e
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        try:
            msg = await self._wait_for(-1, timeout)
        except ForkUnavailable:
            await self.close()
            raise
        if msg.get("error"):
            await self.close()
            raise ForkUnavailable(msg["error"])
        self.pid = msg["pid"]

    async def _wait_for(self, key: int, timeout: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        fut = self._pending[key] = loop.create_future()
        if self._reading is not loop and self.sock is not None:
            if self._reading is not None:
                with contextlib.suppress(Exception):
                    self._reading.remove_reader(self.sock.fileno())
            loop.add_reader(self.sock.fileno(), self.pump)
            self._reading = loop
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.dead = True
            raise ForkUnavailable(f"the fork server did not answer within {timeout:g} s") from None
        except asyncio.CancelledError:
            self._abandoned.add(key)
            raise
        finally:
            self._pending.pop(key, None)

    def pump(self, wait: float = 0.0) -> None:
        """Handle every message waiting on the socket (or the first within ``wait`` seconds)."""
        sock = self.sock
        if sock is None:
            return
        if wait and not self.dead:
            select.select([sock], [], [], wait)
        while True:
            try:
                data = sock.recv(1 << 16)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            msg = json.loads(data)
            if msg["op"] == "exit":
                proc = self._kernels.pop(msg["pid"], None)
                if proc is not None:
                    proc._set(msg["status"])
                continue
            if msg["op"] == "forked" and msg["id"] in self._abandoned:
                self._abandoned.discard(msg["id"])
                for kill in (os.killpg, os.kill):  # its start was cancelled: nobody will dispose of it
                    with contextlib.suppress(OSError):
                        kill(msg["pid"], signal.SIGKILL)
                continue
            fut = self._pending.get(msg.get("id", -1) if msg["op"] != "ready" else -1)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    def _lost(self) -> None:
        self.dead = True
        if self._reading is not None and self.sock is not None:
            with contextlib.suppress(Exception):
                self._reading.remove_reader(self.sock.fileno())
            self._reading = None
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ForkUnavailable("the fork server is gone"))
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    async def fork(self, cmd: list[str], env: dict[str, str], cwd: str, fds: list[int], timeout: float) -> ForkedProcess:
        if self.dead or self.sock is None:
            raise ForkUnavailable("the fork server is gone")
        self._next += 1
        key = self._next
        req = {"id": key, "argv": cmd, "env": env, "cwd": cwd}
        try:
            socket.send_fds(self.sock, [json.dumps(req).encode()], fds)
        except OSError as e:
            self._lost()
            raise ForkUnavailable(f"cannot reach the fork server: {e}") from e
        msg = await self._wait_for(key, timeout)
        if msg["op"] == "error":
            if msg.get("refused"):
                raise ForkUnavailable(msg["error"])
            raise OSError(msg["error"])
        proc = self._kernels[msg["pid"]] = ForkedProcess(self, msg["pid"])
        return proc

    async def close(self) -> None:
        """Close the socket (the fork server kills what it still runs, then exits) and reap it."""
        if self.sock is not None:
            self.pump()
            self._lost()
        proc = self.proc
        if proc is None:
            return
        for _ in range(250):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.02)
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.kill()
        await asyncio.to_thread(proc.wait)


class ForkServers:
    """The fork servers of one ``KernelLauncher``, by fingerprint; started on first use."""

    def __init__(self, *, marker_prefix: str = "", start_timeout: float = 60.0, log: logging.Logger = log):
        self.marker_prefix = marker_prefix
        self.start_timeout = start_timeout
        self.log = log
        self.servers: dict[tuple[Any, ...], ForkServer] = {}
        self._broken: set[tuple[Any, ...]] = set()
        self.forks = 0

    async def fork(self, cmd: list[str], env: dict[str, str], cwd: str | None, fds: list[int]) -> ForkedProcess | None:
        """A forked kernel for this command, or None: spawn it instead (logged once per fingerprint)."""
        if not forkable(cmd):
            return None
        key = fingerprint(cmd[0], env)
        if key in self._broken:
            return None
        server = self.servers.get(key)
        if server is None or server.dead:
            while len(self.servers) >= MAX_SERVERS:
                oldest = next(iter(self.servers))
                await self.servers.pop(oldest).close()
            server = self.servers[key] = ForkServer(cmd[0], env, self.marker_prefix)
        try:
            await server.start(self.start_timeout)
            proc = await server.fork(cmd, env, cwd or os.getcwd(), fds, self.start_timeout)
        except ForkUnavailable as e:
            if server.pid is None:
                self._broken.add(key)  # it never started: don't try again for every kernel
            self.servers.pop(key, None)
            await server.close()
            self.log.warning("taskrun: cannot fork this kernel (%s); spawning it instead", e)
            return None
        self.forks += 1
        return proc

    def pids(self) -> list[int]:
        return [s.pid for s in self.servers.values() if s.pid is not None and not s.dead]

    async def close(self) -> None:
        servers = list(self.servers.values())
        self.servers.clear()
        await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)


def attach(km: Any, servers: ForkServers) -> None:
    """Make ``km`` (an AsyncKernelManager, not started) launch its kernel through ``servers``;
    a kernel that cannot be forked is spawned by jupyter_client as usual."""
    import uuid

    from jupyter_client.provisioning.local_provisioner import LocalProvisioner

    class ForkProvisioner(LocalProvisioner):  # type: ignore[misc]
        async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
            fds = [kwargs.get("stdout"), kwargs.get("stderr"), *kwargs.get("pass_fds", ())]
            proc = None
            if all(isinstance(fd, int) for fd in fds) and len(fds) == 3:
                proc = await servers.fork(cmd, dict(kwargs["env"]), kwargs.get("cwd"), fds)  # type: ignore[arg-type]
            if proc is None:
                return await super().launch_kernel(cmd, **kwargs)
            self.process = proc  # type: ignore[assignment]  # Popen-like
            self.pid = self.pgid = proc.pid  # it called setsid() before we heard of it
            self.cwd = kwargs.get("cwd")
            return self.connection_info

    km.kernel_id = km.kernel_id or str(uuid.uuid4())
    km.provisioner = ForkProvisioner(kernel_id=km.kernel_id, kernel_spec=km.kernel_spec, parent=km)


if __name__ == "__taskrun_forkserver__":
    _serve()
