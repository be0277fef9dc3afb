"""Lean lifecycle of single-use task kernels: launch, readiness, death watch, kill.

Why not nbclient's own kernel management: it adds fixed sleeps (0.2 s iopub
flush in ``wait_for_ready``, 0.1 s shutdown polling) and a graceful shutdown
that hangs ~3 s in a fifth of runs. A task kernel is used once and discarded,
so there is nothing to shut down gracefully: we SIGKILL its process group.
Execution itself still goes through nbclient (see ``runner.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import psutil
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager

from ..progress import TASK_KERNEL_ENV
from .durable import TEE_SETUP, DurableOutput
from .flush import LEADING_EDGE_FLUSH
from .forkserver import ForkedProcess, ForkServers, attach
from .processes import descendants, kill_descendants_until_none, process_tree_cpu
from .processes import watch_process_exit as watch_process_exit  # where runner.py imports it from

log = logging.getLogger(__name__)

# jupyter_client's launcher passes close_fds=False; our pass_fds (the tee) turns it back on,
# which is what we want: a kernel inherits no other task's pipes
warnings.filterwarnings("ignore", message="pass_fds overriding close_fds", category=RuntimeWarning)

#: Every task kernel carries this variable: how orphans of a crashed server, and
#: daemons that left the kernel's process group, are found and killed.
KERNEL_MARKER_ENV = TASK_KERNEL_ENV
#: starts tried when a kernel loses the race for its ports
PORT_RACE_ATTEMPTS = 3
#: the default of ``c.TaskRun.kernel_start`` ("fork" / "spawn"), so a test run can pick either
KERNEL_START_ENV = "JUPYTER_TASKRUN_KERNEL_START"


#: kernels this process started, by how ("fallback": spawned by a fork launcher that could not fork
#: them); tests check that each mode really started kernels its way
STARTS = {"fork": 0, "spawn": 0, "fallback": 0}


def default_kernel_start() -> str:
    value = os.environ.get(KERNEL_START_ENV, "fork")
    return value if value in ("fork", "spawn") else "fork"


#: Server credentials a task kernel must not inherit.
SECRET_ENV_VARS = (
    "JUPYTER_TOKEN",
    "JPY_API_TOKEN",
    "JUPYTERHUB_API_TOKEN",
    "JPY_SESSION_NAME",
    "JUPYTER_TASKRUN_TOKEN",
    "JUPYTERHUB_CLIENT_ID",
    "JUPYTERHUB_OAUTH_CALLBACK_URL",
    "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
    "JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES",
)


#: Largest stream message a task kernel sends (characters): ipykernel sends everything written
#: between two flushes as one message, so a fast writer made multi-MB messages that the server
#: parsed and HMAC-checked in one go (a loop stall) and held several times over (memory).
STREAM_CHUNK_CHARS = 64 * 1024

#: Receive high-water mark (messages) of a task client whose kernel applies back-pressure:
#: at most ~STREAM_CHUNK_CHARS * this much output waits in the server; beyond it the kernel waits.
BACKPRESSURE_RCVHWM = 32

#: Run by ipykernel task kernels at start (``IPKernelApp.exec_lines``), names kept private:
#: - output flushed every few ms (ipykernel's default batches 0.2 s);
#: - each flushed stream buffer is sent in chunks of ``chunk`` characters (more if it would take
#:   over 256 messages);
#: - XPUB_NODROP on the IOPub socket (set on its own thread): at the high-water mark the kernel's
#:   IOPub thread waits for the server to read instead of silently dropping output;
#: - PR_SET_CHILD_SUBREAPER (36): orphans of the task's processes are re-parented to the kernel,
#:   not init, so killing the kernel's tree kills daemons too.
#: Each step is guarded: an ipykernel without these internals still runs the task.
IPYKERNEL_TASK_SETUP = """\
import sys as __trs
def __trsetup():
    for out in (__trs.stdout, __trs.stderr):
        out.flush_interval = {flush_interval!r}
        buffers = getattr(out, "_flush_buffers", None)
        if buffers is not None:
            def chunked(buffers=buffers, size={chunk}):
                # at most 256 sends per flush: ipykernel 7 queues even its own IOPub-thread
                # sends on that thread's event pipe (HWM 1000), which a longer burst deadlocks
                for parent, data in buffers():
                    step = max(size, -(-len(data) // 256))
                    for i in range(0, len(data), step):
                        yield parent, data[i:i + step]
            out._flush_buffers = chunked
    try:
        import zmq
        from ipykernel.kernelapp import IPKernelApp
        thread = IPKernelApp.instance().iopub_thread
        thread.schedule(lambda: thread.socket.setsockopt(zmq.XPUB_NODROP, 1))
    except Exception:
        pass
    if __trs.platform.startswith("linux"):
        import ctypes
        ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)
__trsetup()
del __trs, __trsetup"""


class KernelStartError(RuntimeError):
    """The kernel process could not be started or never became ready."""


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "kernel died"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"kernel died: killed by {name} (signal {-returncode})"
    return f"kernel died: exited with code {returncode}"


@dataclass
class TaskKernel:
    """A started, ready kernel that will run exactly one task."""

    km: AsyncKernelManager
    kc: Any
    kernel_name: str
    marker: str
    start_seconds: float
    created: float = field(default_factory=time.monotonic)
    cwd: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    #: pids ever seen below the kernel, so a daemon that called setsid is still killed
    seen_pids: set[int] = field(default_factory=set)
    disposed: bool = False
    #: CPU (user, system) spent before the task, measured while warming (pooled kernels)
    cpu_baseline: tuple[float, float] | None = None
    #: the kernel adopts orphaned descendants (PR_SET_CHILD_SUBREAPER), so its tree holds them all
    subreaper: bool = False
    #: the pipes its output survives in (ipykernel kernels; ``durable.py``)
    durable: DurableOutput | None = None
    #: runs inside the sandbox (``sandbox.py``)
    sandboxed: bool = False

    @property
    def pid(self) -> int | None:
        proc = getattr(self.km.provisioner, "process", None)
        return proc.pid if proc is not None else None

    @property
    def process(self):
        return getattr(self.km.provisioner, "process", None)

    @property
    def forked(self) -> bool:
        """Forked from a fork server (``forkserver.py``), not spawned."""
        return isinstance(self.process, ForkedProcess)

    def returncode(self) -> int | None:
        proc = self.process
        code = proc.poll() if proc is not None else None
        if self.sandboxed and code is not None and 128 < code < 128 + 65:
            return -(code - 128)  # bwrap reports a kernel killed by signal N as 128 + N
        return code

    def is_alive(self) -> bool:
        proc = self.process
        return proc is not None and proc.poll() is None

    def kill_now(self) -> None:
        """SIGKILL the kernel's process group and every descendant; synchronous and cheap.

        Task kernels are child subreapers, so even a double-forked daemon that called
        setsid is still below the kernel when we take this snapshot.
        """
        pid = self.pid
        if pid is None or self.process is None or self.process.returncode is not None:
            return
        if self.subreaper:
            kill_descendants_until_none(pid, self.seen_pids)
        self.seen_pids.update(descendants(pid))
        try:
            os.killpg(pid, signal.SIGKILL)  # kernels start in their own session: pgid == pid
        except (ProcessLookupError, PermissionError):
            pass
        for child in self.seen_pids:
            try:
                os.kill(child, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    async def dispose(self) -> None:
        """Kill (if not yet) and release sockets, ports and the connection file."""
        if self.disposed:
            return
        self.disposed = True
        self.kill_now()
        try:
            self.kc.stop_channels()
        except Exception:  # teardown must not raise
            pass
        with contextlib.suppress(Exception):
            self.kc.context.destroy(linger=0)  # ours (task_client_context), not jupyter_client's
        if self.process is not None:
            await reap(self.process)
        if self.durable is not None:
            self.durable.close()
        if not self.subreaper:
            # no subreaper (not an ipykernel): find escaped daemons by their marker
            await asyncio.to_thread(kill_marked_processes, {self.marker})
        try:
            await self.km.cleanup_resources(restart=False)
        except Exception:
            pass


def kill_marked_processes(markers: Iterable[str] = (), prefix: str | None = None) -> list[int]:
    """Kill processes whose kernel marker is in ``markers`` or starts with ``prefix``."""
    killed: list[int] = []
    if not markers and not prefix:
        return killed
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            value = proc.environ().get(KERNEL_MARKER_ENV)
        except (psutil.Error, OSError):
            continue
        if value is not None and (value in markers or (prefix is not None and value.startswith(prefix))):
            try:
                proc.kill()
                killed.append(proc.pid)
            except psutil.Error:
                pass
    return killed


class KernelLauncher:
    """Starts single-use kernels quickly and waits for the kernel's own readiness signal."""

    def __init__(
        self,
        kernel_spec_manager: Any,
        *,
        base_env: dict[str, str] | None = None,
        flush_interval: float = 0.005,
        start_timeout: float = 60.0,
        server_marker: str = "",
        sandbox: Any = None,
        kernel_start: str | None = None,
        log: logging.Logger = log,
    ):
        self.kernel_spec_manager = kernel_spec_manager
        self.base_env = dict(base_env if base_env is not None else task_base_env())
        self.flush_interval = flush_interval
        self.start_timeout = start_timeout
        self.server_marker = server_marker
        #: a ``sandbox.BwrapSandbox`` wrapping every kernel's command, or None
        self.sandbox = sandbox
        #: "fork": ipykernel kernels are forked from a fork server (``forkserver.py``) where they can be
        self.kernel_start = kernel_start or default_kernel_start()
        self.forkservers = ForkServers(marker_prefix=server_marker, start_timeout=start_timeout, log=log)
        self.log = log

    async def close(self) -> None:
        """Stop the fork servers (their kernels have been disposed of by then)."""
        await self.forkservers.close()

    def _is_ipykernel(self, kernel_name: str) -> bool:
        try:
            spec = self.kernel_spec_manager.get_kernel_spec(kernel_name)
        except Exception:
            return False
        return any("ipykernel" in str(a) for a in spec.argv)

    def _extra_arguments(self, ipykernel: bool) -> list[str]:
        if not ipykernel:
            return []
        # History off: it is useless in a throwaway kernel and its SQLite writer is
        # what makes kernels ignore shutdown requests. The exec line tunes the kernel
        # for task output (see IPYKERNEL_TASK_SETUP) and sends a print after a quiet spell at once
        # (LEADING_EDGE_FLUSH).
        line = IPYKERNEL_TASK_SETUP.format(flush_interval=float(self.flush_interval), chunk=STREAM_CHUNK_CHARS)
        # fds 1 and 2 are the durable pipes (durable.py): ipykernel must not swap its own pipe in
        return [
            "--HistoryManager.enabled=False",
            "--IPKernelApp.capture_fd_output=False",
            f"--IPKernelApp.exec_lines={[line, LEADING_EDGE_FLUSH, TEE_SETUP]!r}",
        ]

    async def start(self, kernel_name: str, *, env: dict[str, str] | None = None, cwd: str | None = None) -> TaskKernel:
        """A started, ready kernel. jupyter_client picks the kernel's ports before the kernel binds
        them, so another process can take one in between ("Address already in use"): that start is
        retried with new ports (a few times), not reported as the task's failure. A kernel that does
        not become ready within ``start_timeout`` is killed and replaced once."""
        for attempt in range(1, PORT_RACE_ATTEMPTS + 1):
            try:
                return await self._start_once(kernel_name, env=env, cwd=cwd)
            except KernelStartError as e:
                # a start that hung (seen rarely in CI under load, cause not found) gets one more try
                retriable = "Address already in use" in str(e) or (attempt == 1 and "did not become ready" in str(e))
                if attempt == PORT_RACE_ATTEMPTS or not retriable:
                    raise
                log.warning("taskrun: kernel start failed (%s; attempt %d), starting a new kernel", e, attempt)
        raise AssertionError("unreachable")

    async def _start_once(self, kernel_name: str, *, env: dict[str, str] | None, cwd: str | None) -> TaskKernel:
        t0 = time.monotonic()
        marker = f"{self.server_marker}:{uuid.uuid4().hex}"
        kernel_env = {**self.base_env, **(env or {}), KERNEL_MARKER_ENV: marker}
        ipykernel = self._is_ipykernel(kernel_name)  # reads the kernel spec: once per start
        # only ipykernel knows to tee into the pipes; other kernels keep the server's stdio
        durable = DurableOutput() if ipykernel else None
        popen: dict[str, Any] = {}
        if durable is not None:
            kernel_env.update(durable.env())
            popen = durable.popen_kwargs()
        km = _manager_class(self.sandbox)(kernel_name=kernel_name, kernel_spec_manager=self.kernel_spec_manager)
        if self.sandbox is not None:
            km.sandbox_cwd = cwd  # type: ignore[attr-defined]  # SandboxedKernelManager
        elif ipykernel and self.kernel_start == "fork":
            attach(km, self.forkservers)  # forks where it can (stock ipykernel argv), else spawns
        try:
            await km.start_kernel(env=kernel_env, cwd=cwd, extra_arguments=self._extra_arguments(ipykernel), **popen)
        except BaseException as e:
            if durable is not None:
                durable.close()
            # also on cancel (server stop): the process may already be spawned. Awaiting here is
            # fine: the cancel has been delivered, and TaskRun.stop() cancels only once.
            await _discard_half_started(km)
            if isinstance(e, Exception):
                raise KernelStartError(f"could not start kernel {kernel_name!r}: {e}") from e
            raise
        if durable is not None:
            durable.close_child_ends()
        kc = km.client(context=task_client_context(backpressure=ipykernel))
        kc.start_channels()
        kernel = TaskKernel(
            km=km,
            kc=kc,
            kernel_name=kernel_name,
            marker=marker,
            start_seconds=0.0,
            cwd=cwd,
            env=dict(env or {}),
            subreaper=sys.platform.startswith("linux") and ipykernel,
            durable=durable,
            sandboxed=self.sandbox is not None,
        )
        try:
            await wait_until_ready(kernel, self.start_timeout)
        except BaseException:
            await kernel.dispose()
            raise
        kernel.start_seconds = time.monotonic() - t0
        STARTS["fork" if kernel.forked else "fallback" if self.kernel_start == "fork" else "spawn"] += 1
        return kernel


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel command runs inside the sandbox (``sandbox.py``)."""

    sandbox: Any = None
    sandbox_cwd: str | None = None

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        cmd = super().format_kernel_cmd(extra_arguments)
        return self.sandbox.wrap(cmd, cwd=self.sandbox_cwd, connection_file=self.connection_file)


def _manager_class(sandbox: Any) -> type[AsyncKernelManager]:
    if sandbox is None:
        return AsyncKernelManager
    return type("BoundSandboxedKernelManager", (SandboxedKernelManager,), {"sandbox": sandbox})


async def reap(proc: Any, timeout: float = 30.0) -> None:
    """Wait for a killed process to exit, without blocking the loop.

    Not the provisioner's 100 ms polling loop: a kernel's slot frees only once it is
    reaped, and a loaded machine can take a while to tear down a big process.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


async def _discard_half_started(km: AsyncKernelManager) -> None:
    """Kill and reap a kernel whose ``start_kernel`` did not return (failed or cancelled)."""
    proc = getattr(km.provisioner, "process", None) if km.provisioner is not None else None
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # kernels start in their own session
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.kill()
        await reap(proc)
    with contextlib.suppress(Exception):
        km.cleanup_connection_file()


def task_client_context(*, backpressure: bool) -> zmq.asyncio.Context:
    """A ZMQ context for one task kernel's client (``TaskKernel.dispose`` destroys it).

    ZMQ's PUB socket silently drops messages past the high-water mark when the
    server reads slower than the kernel prints (GC, a slow request, a locked
    database). Task ipykernels set XPUB_NODROP and send bounded chunks, so a
    bounded receive queue makes the kernel wait instead: no loss, bounded server
    memory. Other kernels cannot be told to wait: their client gets no receive
    high-water mark, so ZMQ's own I/O thread (no GIL) keeps draining them and
    nothing is lost either; the memory is what they printed while the loop was busy.
    """
    ctx = zmq.asyncio.Context()
    ctx.setsockopt(zmq.RCVHWM, BACKPRESSURE_RCVHWM if backpressure else 0)
    return ctx


def _last_words(kernel: TaskKernel) -> str:
    """What a kernel that died while starting wrote to stderr (its traceback), for the error."""
    if kernel.durable is None:
        return ""
    text = "".join(t for name, t in kernel.durable.drain(tee=False) if name == "stderr").strip()
    return f": {text[-2000:]}" if text else ""


def _process_state(pid: int | None) -> str:
    """A process's state and wait channel from /proc ("S (sleeping) in pipe_write"), or "unknown"."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next((line.split(":", 1)[1].strip() for line in f if line.startswith("State:")), "?")
        with open(f"/proc/{pid}/wchan") as f:
            return f"{state} in {f.read().strip() or '-'}"
    except (OSError, TypeError):
        return "unknown"


async def wait_until_ready(kernel: TaskKernel, timeout: float) -> None:
    """Ready = kernel_info replied on shell AND our iopub subscription is live.

    ipykernel >= 7 sends ``iopub_welcome`` as soon as the subscription arrives; for
    older kernels any iopub message (the status of a kernel_info) proves it. No
    fixed sleep: every wait ends on a message.
    """
    kc = kernel.kc
    deadline = time.monotonic() + timeout
    replied = iopub_seen = False
    kc.kernel_info()
    while not (replied and iopub_seen):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            # what it was doing, for the rare hang CI has seen (cause not yet found)
            state = f"kernel_info replied: {replied}, iopub seen: {iopub_seen}, process: {_process_state(kernel.pid)}"
            raise KernelStartError(f"kernel did not become ready within {timeout:g} s ({state}){_last_words(kernel)}")
        if not kernel.is_alive():
            raise KernelStartError(describe_exit(kernel.returncode()) + " while starting" + _last_words(kernel))
        if not replied:
            try:
                msg = await kc.shell_channel.get_msg(timeout=min(1.0, remaining))
            except Empty:
                kc.kernel_info()  # the first request can be lost while the kernel binds
                continue
            if msg["msg_type"] == "kernel_info_reply":
                replied = True
        else:
            try:
                await kc.iopub_channel.get_msg(timeout=min(0.25, remaining))
                iopub_seen = True
            except Empty:
                # slow joiner: our SUB missed the status messages; ask again to get new ones
                kc.kernel_info()
                replied = False


async def execute_silently(kernel: TaskKernel, code: str, timeout: float = 30.0) -> dict[str, Any]:
    """Run setup code that must leave no trace in outputs or history; returns the reply content."""
    kc = kernel.kc
    msg_id = kc.execute(code, silent=True, store_history=False, allow_stdin=False)
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelStartError("kernel did not answer a setup request")
        try:
            msg = await kc.shell_channel.get_msg(timeout=remaining)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") == msg_id:
            return msg["content"]


def task_base_env(extra_secrets: tuple[str, ...] = ()) -> dict[str, str]:
    """The server's environment without its credentials."""
    drop = set(SECRET_ENV_VARS) | set(extra_secrets)
    return {k: v for k, v in os.environ.items() if k not in drop and k != KERNEL_MARKER_ENV}


class KernelPool:
    """Kernels started ahead of time; each is handed out once and never returned.

    Isolation is unchanged from cold starts: a pooled kernel has run nothing but
    one throwaway statement. Replacements start only when asked (after a task
    ends), so warming never competes with a running task for CPU.
    """

    def __init__(self, launcher: KernelLauncher, sizes: dict[str, int], *, cwd: str | None = None, log: logging.Logger = log):
        self.launcher = launcher
        self.cwd = cwd  # where pooled kernels start: tasks running there need no chdir round trip
        self.sizes = {k: v for k, v in sizes.items() if v > 0}
        self.log = log
        self._ready: dict[str, list[TaskKernel]] = {k: [] for k in self.sizes}
        self._starting: dict[str, int] = {k: 0 for k in self.sizes}
        self._tasks: set[asyncio.Task[None]] = set()
        self._disposing: set[asyncio.Task[None]] = set()  # never cancelled: they reap kernels
        self._closed = False
        self.hits = 0
        self.misses = 0

    def take(self, kernel_name: str) -> TaskKernel | None:
        ready = self._ready.get(kernel_name)
        while ready:
            kernel = ready.pop(0)
            if kernel.is_alive():
                self.hits += 1
                return kernel
            self._spawn_dispose(kernel)
        self.misses += 1
        return None

    def fill(self) -> None:
        """Start kernels until every pool is at its size (idempotent)."""
        if self._closed:
            return
        for name, size in self.sizes.items():
            missing = size - len(self._ready[name]) - self._starting[name]
            for _ in range(max(0, missing)):
                self._starting[name] += 1
                t = asyncio.ensure_future(self._warm_one(name))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _warm_one(self, name: str) -> None:
        kernel: TaskKernel | None = None
        try:
            kernel = await self.launcher.start(name, cwd=self.cwd)
            # one throwaway execute: the first execute of a fresh kernel pays one-off costs
            await execute_silently(kernel, "pass")
            kernel.cpu_baseline = process_tree_cpu(kernel.pid) if kernel.pid else None
        except BaseException as e:
            if kernel is not None:  # started but not ready to hand out (cancelled by close, or broken)
                kernel.kill_now()
                self._spawn_dispose(kernel)
            if not isinstance(e, Exception):
                raise
            self.log.warning("taskrun: could not warm a %s kernel: %s", name, e)
            return
        finally:
            self._starting[name] -= 1
        if self._closed:
            await kernel.dispose()
            return
        self._ready[name].append(kernel)

    def _spawn_dispose(self, kernel: TaskKernel) -> None:
        t = asyncio.ensure_future(kernel.dispose())
        self._tasks.add(t)
        self._disposing.add(t)
        t.add_done_callback(self._tasks.discard)
        t.add_done_callback(self._disposing.discard)

    def ready_count(self, kernel_name: str | None = None) -> int:
        if kernel_name is not None:
            return len(self._ready.get(kernel_name, ()))
        return sum(len(v) for v in self._ready.values())

    def markers(self) -> set[str]:
        return {k.marker for ks in self._ready.values() for k in ks}

    async def close(self) -> None:
        self._closed = True
        for t in list(self._tasks):
            if t not in self._disposing:
                t.cancel()
        # cancelled warm-ups dispose of their half-ready kernel: wait for those too
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        kernels = [k for ks in self._ready.values() for k in ks]
        for ks in self._ready.values():
            ks.clear()
        await asyncio.gather(*(k.dispose() for k in kernels), return_exceptions=True)
