"""``DaskExecutor``: run tasks on a Dask distributed cluster instead of this machine.

Selected with ``c.TaskRun.executor = "dask"`` plus ``c.TaskRun.dask_scheduler_address``
(a running scheduler) or ``c.TaskRun.dask_cluster_factory`` (import string of a
callable returning a cluster: ``LocalCluster``, ``SLURMCluster``, a gateway cluster...).

How a task travels::

    server loop                           scheduler                 worker (its event loop)
    -----------                           ---------                 -----------------------
    run(job) --client.submit(_worker_main, resources=...)-->  ...  --> fresh kernel on the worker's
                                                                        machine, run_job_in_kernel()
    _on_message <--subscribe_topic(topic)-- topic <--log_event(topic)-- emit(): one message per loop turn
       reorder by per-run counter, then the service's emit (persist-then-publish)
    interrupt_and_kill --client.run(_worker_stop, workers=[w])-------> interrupt, grace, kill_now()
    future cancelled (scheduler/client gone) ----------------------->  watcher sees the key cancelled:
                                                                        kill_now()
    "remove-worker" on the scheduler's "all" topic --> task failed naming the lost worker (or re-run once)

Events: ``Worker.log_event`` goes over the worker's batched stream (2 ms) to the
scheduler, which forwards it on the client's stream (2 ms); both are ordered TCP
streams, measured at a few ms worker → server. Each message still carries a per-run
counter and the server reorders and de-duplicates, so order never depends on it.

Worker side: the task is an ``async def`` executed by Dask in the worker's event
loop (it still takes one of the worker's ``nthreads`` slots); the kernel runs in its
own session, so a tiny per-worker "reaper" process kills the worker's kernels (found
by their marker variable) if the worker process itself dies (SIGKILL, OOM killer).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Float, Int
from traitlets.config import LoggingConfigurable
from traitlets.utils.importstring import import_item

from ..errors import ExecutorUnavailable, TaskRunError
from .executor import Executor, JobResult, KernelCallback, TaskJob, run_job_in_kernel
from .kernels import KERNEL_MARKER_ENV, KernelLauncher, task_base_env
from ..models import TaskStatus
from .runner import Emit, RunOutcome

log = logging.getLogger(__name__)

#: the scheduler's own topic where it announces workers joining and leaving
CLUSTER_TOPIC = "all"


class WorkerLost(TaskRunError):
    """The Dask worker running a task died or left the cluster."""

    reason = "worker-lost"


# --------------------------------------------------------------------------- server side


@dataclass
class _Attempt:
    """One submission of a task to the cluster (a retry after worker loss is a new attempt)."""

    task_id: str
    token: str
    key: str
    emit: Emit
    on_kernel: KernelCallback
    submitted: float = field(default_factory=time.monotonic)
    future: Any = None
    next_n: int = 0
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)
    worker: str | None = None
    host: str | None = None
    started: float | None = None
    other_workers: set[str] = field(default_factory=set)
    kernel_pid: int | None = None
    lost: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    expected: int | None = None
    all_seen: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _TaskState:
    """Per task, across attempts: what the service asked for."""

    stop_grace: float | None = None
    stop_wake: asyncio.Event = field(default_factory=asyncio.Event)
    attempt: _Attempt | None = None


class DaskExecutor(Executor, LoggingConfigurable):
    """Runs each job in a fresh kernel on a Dask worker. Extra settings: ``c.DaskExecutor.*``."""

    kind = "dask"

    connect_timeout = Float(10.0, config=True, help="Seconds one attempt to reach the scheduler may take.")
    unavailable_wait = Float(
        30.0,
        config=True,
        help="While the scheduler is unreachable, how long a task waits for it before failing (ExecutorUnavailable).",
    )
    resource_wait = Float(
        60.0,
        config=True,
        help="How long a task asking for resources no connected worker offers waits for one before failing.",
    )
    drain_timeout = Float(
        5.0, config=True, help="After a task returns, how long to wait for events still in flight from its worker."
    )
    stop_timeout = Float(10.0, config=True, help="Seconds a stop request to a worker may take before falling back.")
    max_dead_tokens = Int(10_000, config=True, help="How many finished runs to remember (to stop late starters).")

    def __init__(self, service: Any, *, launcher_settings: KernelLauncher, **kw: Any):
        kw.setdefault("parent", service)
        super().__init__(**kw)
        self.service = service
        self.scheduler_address: str = getattr(service, "dask_scheduler_address", "") or ""
        self.cluster_factory: str = getattr(service, "dask_cluster_factory", "") or ""
        #: a configuration problem: reported by info() and to every task, the server keeps serving
        self._fatal: str | None = None
        if not self.scheduler_address and not self.cluster_factory:
            self._fatal = (
                'c.TaskRun.executor = "dask" needs c.TaskRun.dask_scheduler_address or c.TaskRun.dask_cluster_factory'
            )
        try:
            import distributed  # noqa: F401
        except ImportError:
            self._fatal = "the Dask executor needs the dask extra: pip install 'jupyter_taskrun[dask]'"
        marker = launcher_settings.server_marker or uuid.uuid4().hex[:12]
        self.topic = f"jupyter-taskrun-{marker}"
        secrets = tuple(getattr(service, "extra_secret_env", ()) or ())
        #: what a worker needs to build its own KernelLauncher (the server's env is not sent:
        #: the kernel inherits the worker's environment, minus credentials, plus the task's env)
        self.worker_settings: dict[str, Any] = {
            "topic": self.topic,
            "flush_interval": launcher_settings.flush_interval,
            "start_timeout": launcher_settings.start_timeout,
            "secrets": list(secrets),
            "pass_credentials": bool(getattr(service, "pass_server_credentials", False)),
        }
        self.client: Any = None
        self.cluster: Any = None
        self._owns_cluster = False
        self._status = "starting"
        self._error: str | None = None
        self._connected = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._comm_seen: Any = None
        self._stopped = False
        self._tasks: dict[str, _TaskState] = {}
        self._attempts: dict[str, _Attempt] = {}  # token -> live attempt
        self._dead: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._bg: set[asyncio.Future[Any]] = set()
        #: workers that ran a task when they left the cluster (shown by info())
        self.lost_workers: list[str] = []
        #: every worker the scheduler removed (bounded); no stop requests are sent there
        self._gone: collections.OrderedDict[str, None] = collections.OrderedDict()

    @property
    def retry_on_worker_loss(self) -> bool:
        return bool(getattr(self.service, "retry_on_worker_loss", False))

    # ------------------------------------------------------------ connection

    async def start(self) -> None:
        """Connect in the background: the server starts even if the scheduler is down."""
        if self._fatal:
            self._status, self._error = "misconfigured", self._fatal
            self.log.error("taskrun: %s", self._fatal)
            return
        if self._supervisor is None:
            self._supervisor = asyncio.ensure_future(self._supervise())

    async def _resolve_address(self) -> str:
        if self.scheduler_address:
            return self.scheduler_address
        if self.cluster is None:
            factory = import_item(self.cluster_factory.replace(":", "."))
            if inspect.iscoroutinefunction(factory):
                cluster = await factory()
            else:
                # a synchronous cluster (LocalCluster(), SLURMCluster()...) blocks while it
                # starts and runs its own loop thread: build it off the server's loop
                cluster = await asyncio.to_thread(factory)
                if inspect.isawaitable(cluster):
                    cluster = await cluster
            self.cluster = cluster
            self._owns_cluster = True
            self.log.info("taskrun: Dask cluster from %s: %r", self.cluster_factory, cluster)
        address = self.cluster if isinstance(self.cluster, str) else getattr(self.cluster, "scheduler_address", None)
        if not address:
            raise TaskRunError(f"{self.cluster_factory} returned {self.cluster!r}, which has no scheduler_address")
        return str(address)

    async def _connect(self) -> None:
        from distributed import Client

        if self._status == "starting":
            self._status = "connecting"  # later attempts keep saying "reconnecting"/"unavailable"
        address = await self._resolve_address()
        client = Client(address, asynchronous=True, set_as_default=False, timeout=self.connect_timeout)
        try:
            await asyncio.wait_for(client, self.connect_timeout + 5)
        except BaseException:
            try:
                await asyncio.wait_for(client.close(), 5)
            except Exception:
                pass
            raise
        self.client = client
        self._subscribe(client)
        self.log.info("taskrun: connected to the Dask scheduler at %s", address)

    def _subscribe(self, client: Any) -> None:
        client.subscribe_topic(self.topic, self._on_message)
        client.subscribe_topic(CLUSTER_TOPIC, self._on_cluster_event)
        self._comm_seen = client.scheduler_comm

    async def _supervise(self) -> None:
        """Keep a connected client: report state for info(), reconnect after scheduler loss."""
        delay = 0.5
        while not self._stopped:
            client = self.client
            if client is None:
                try:
                    await self._connect()
                    delay = 0.5
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    self._status = "unavailable"
                    self._error = f"cannot reach the Dask scheduler at {self._where()}: {type(e).__name__}: {e}"
                    self._connected.clear()
                    self.log.warning("taskrun: %s; retrying in %.1f s", self._error, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                continue
            status = getattr(client, "status", "running")
            if status == "running":
                if client.scheduler_comm is not self._comm_seen:
                    self.log.info("taskrun: reconnected to the Dask scheduler at %s", self._where())
                    self._subscribe(client)  # a new scheduler knows nothing of our topics
                if not self._connected.is_set():
                    self._status, self._error = "connected", None
                    self._connected.set()
            elif status in ("connecting", "newly-created"):
                if self._connected.is_set():
                    self._error = f"lost the connection to the Dask scheduler at {self._where()}; reconnecting"
                    self.log.warning("taskrun: %s", self._error)
                self._status = "reconnecting"
                self._connected.clear()
            else:  # closing/closed: the client gave up reconnecting; build a new one
                self._connected.clear()
                self._status = "unavailable"
                self._error = self._error or f"lost the Dask scheduler at {self._where()}"
                self.client = None
                try:
                    await client.close()
                except Exception:
                    pass
                continue
            await asyncio.sleep(0.1)

    def _where(self) -> str:
        if self.scheduler_address:
            return self.scheduler_address
        addr = getattr(self.cluster, "scheduler_address", None) if self.cluster is not None else None
        return addr or f"the cluster from {self.cluster_factory}"

    async def _ready_client(self, state: _TaskState) -> Any:
        """The connected client, or ExecutorUnavailable once ``unavailable_wait`` is over."""
        if self._connected.is_set() and self.client is not None:
            if self.client.scheduler_comm is not self._comm_seen:
                self._subscribe(self.client)  # reconnected between two supervisor checks
            return self.client
        if self._fatal:
            raise ExecutorUnavailable(self._fatal)
        waiter = asyncio.ensure_future(self._connected.wait())
        stopper = asyncio.ensure_future(state.stop_wake.wait())
        try:
            await asyncio.wait({waiter, stopper}, timeout=self.unavailable_wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if state.stop_grace is not None:
            raise TaskRunError("stopped before the task reached the Dask cluster")
        if not self._connected.is_set() or self.client is None:
            detail = self._error or f"the Dask scheduler at {self._where()} is not connected"
            raise ExecutorUnavailable(f"Dask executor unavailable for {self.unavailable_wait:g} s: {detail}")
        if self.client.scheduler_comm is not self._comm_seen:
            self._subscribe(self.client)
        return self.client

    async def stop(self) -> None:
        self._stopped = True
        for state in self._tasks.values():
            if state.stop_grace is None:
                state.stop_grace = 0.0
                state.stop_wake.set()
        sends = [asyncio.ensure_future(self._stop_attempt(a, 0.0)) for a in list(self._attempts.values())]
        pending = sends + list(self._bg)
        if pending:
            # bounded: closing the client below releases every key anyway, and a worker-side
            # run whose key is released kills its kernel by itself
            await asyncio.wait(pending, timeout=self.stop_timeout)
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
        client, self.client = self.client, None
        self._connected.clear()
        self._status = "stopped"
        if client is not None:
            try:
                # closing the client releases its keys: any worker-side run still alive
                # sees its key cancelled and kills its kernel
                await asyncio.wait_for(client.close(), 10)
            except Exception as e:
                self.log.warning("taskrun: closing the Dask client: %s", e)
        if self._owns_cluster and self.cluster is not None and not isinstance(self.cluster, str):
            cluster, self.cluster = self.cluster, None
            try:
                if getattr(cluster, "asynchronous", False):
                    await cluster.close()
                else:
                    await asyncio.to_thread(cluster.close)
            except Exception as e:
                self.log.warning("taskrun: closing the Dask cluster: %s", e)

    # ------------------------------------------------------------------ runs

    async def run(self, job: TaskJob, emit: Emit, on_kernel: KernelCallback) -> JobResult:
        state = self._tasks.setdefault(job.task_id, _TaskState())
        lost: list[str] = []
        try:
            while True:
                client = await self._ready_client(state)
                if job.resources:
                    await self._wait_for_resources(client, job.resources, state)
                attempt = _Attempt(
                    task_id=job.task_id,
                    token=uuid.uuid4().hex,
                    key="",
                    emit=emit,
                    on_kernel=on_kernel,
                )
                attempt.key = f"taskrun-{job.task_id}-{attempt.token[:8]}"
                kind, value = await self._run_attempt(client, job, attempt, state)
                if kind == "result":
                    result: JobResult = value
                    result.metrics["dask_attempts"] = len(lost) + 1
                    if lost:
                        result.metrics["lost_workers"] = list(lost)
                    return result
                # the worker was lost
                lost.append(value)
                if self.retry_on_worker_loss and len(lost) == 1 and state.stop_grace is None and not self._stopped:
                    self.log.warning("taskrun: task %s lost Dask worker %s; running it again", job.task_id, value)
                    emit(
                        "log",
                        {
                            "stream": "stderr",
                            "text": f"[jupyter_taskrun] Dask worker {value} was lost while running this task; "
                            "running it again (attempt 2 of 2)\n",
                        },
                    )
                    continue
                again = " again" if len(lost) > 1 else ""
                raise WorkerLost(f"Dask worker {value} was lost{again} while running the task")
        finally:
            self._tasks.pop(job.task_id, None)

    async def _run_attempt(self, client: Any, job: TaskJob, attempt: _Attempt, state: _TaskState) -> tuple[str, Any]:
        """Submit once; returns ("result", JobResult) or ("lost", worker address); raises otherwise."""
        if state.stop_grace is not None:
            raise TaskRunError("stopped before the task reached the Dask cluster")
        self._attempts[attempt.token] = attempt
        state.attempt = attempt
        clean = False
        try:
            attempt.future = client.submit(
                _worker_main,
                job,
                attempt.token,
                attempt.key,
                self.worker_settings,
                key=attempt.key,
                pure=False,
                resources=dict(job.resources) or None,
                retries=0,
            )
            waiter = asyncio.ensure_future(_outcome(attempt.future))
            try:
                await asyncio.wait({waiter, attempt.lost}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                waiter.cancel()
                raise
            if not waiter.done():
                waiter.cancel()
                return "lost", attempt.lost.result()
            kind, value = waiter.result()
            if kind == "ok":
                result: JobResult = value["result"]
                await self._drain(attempt, int(value["sent"]))
                clean = True
                result.worker = result.worker or attempt.worker
                if attempt.started is not None:
                    result.metrics["dask_wait"] = round(attempt.started - attempt.submitted, 6)
                return "result", result
            if attempt.lost.done():
                return "lost", attempt.lost.result()
            if kind == "cancelled":
                reason = getattr(value, "reason", "") or ""
                if "scheduler" in reason:
                    where = f" (on worker {attempt.worker})" if attempt.worker else ""
                    msg = f"lost the connection to the Dask scheduler at {self._where()} while the task was running"
                    raise ExecutorUnavailable(msg + where)
                if state.stop_grace is not None:
                    raise TaskRunError("stopped before the task started on a Dask worker")
                raise TaskRunError(f"the Dask cluster cancelled the task ({reason or 'no reason given'})")
            exc = value
            if type(exc).__name__ == "KilledWorker":
                last = getattr(exc, "last_worker", None)
                addr = getattr(last, "address", None) or attempt.worker or "?"
                return "lost", addr
            where = attempt.worker or "a Dask worker"
            raise TaskRunError(f"{type(exc).__name__} on {where}: {exc}")
        finally:
            self._attempts.pop(attempt.token, None)
            if not clean:
                self._forget(attempt.token)
                # the run may still be alive somewhere (starting, rescheduled, or orphaned):
                # stop it and drop the future, without making the caller wait for either
                self._spawn(self._stop_attempt(attempt, 0.0, cancel_future=True))
            elif attempt.future is not None:
                attempt.future.release()

    async def _drain(self, attempt: _Attempt, sent: int) -> None:
        """Wait until every event the worker sent has been passed on (they normally already are)."""
        attempt.expected = sent
        if attempt.next_n >= sent:
            return
        attempt.all_seen.clear()
        try:
            await asyncio.wait_for(attempt.all_seen.wait(), self.drain_timeout)
        except asyncio.TimeoutError:
            missing = sent - attempt.next_n
            self.log.warning(
                "taskrun: %d event message(s) of task %s never arrived from %s",
                missing,
                attempt.task_id,
                attempt.worker,
            )
            for n in sorted(attempt.pending):  # deliver what did arrive, in order
                self._apply(attempt, attempt.pending.pop(n))

    async def _wait_for_resources(self, client: Any, resources: dict[str, float], state: _TaskState) -> None:
        deadline = time.monotonic() + self.resource_wait
        offered: dict[str, Any] = {}
        while True:
            try:
                info = await asyncio.wait_for(client.scheduler.identity(n_workers=-1), self.connect_timeout)
            except Exception as e:
                raise ExecutorUnavailable(f"cannot ask the Dask scheduler for its workers: {e}") from None
            offered = {addr: w.get("resources") or {} for addr, w in (info.get("workers") or {}).items()}
            if any(all(res.get(k, 0) >= v for k, v in resources.items()) for res in offered.values()):
                return
            if time.monotonic() >= deadline or state.stop_grace is not None:
                break
            try:
                await asyncio.wait_for(state.stop_wake.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
        if state.stop_grace is not None:
            raise TaskRunError("stopped while waiting for a Dask worker with the requested resources")
        have = {a: r for a, r in offered.items() if r} or "none"
        raise TaskRunError(
            f"no Dask worker offers the resources {resources} (waited {self.resource_wait:g} s; workers offer: {have})"
        )

    # ---------------------------------------------------------------- events

    def _on_message(self, event: Any) -> None:
        """A worker-side message, in the server loop (called by the Dask client's report stream)."""
        try:
            _ts, msg = event
            token = msg["run"]
        except Exception:
            return
        attempt = self._attempts.get(token)
        if attempt is None:
            if token in self._dead and msg.get("k") == "start" and msg.get("worker"):
                # a run we already gave up on (e.g. rescheduled by Dask after a worker loss)
                self._spawn(self._send_stop(msg["worker"], token, 0.0))
            return
        n = int(msg.get("n", -1))
        if n < attempt.next_n:
            return  # duplicate
        if n > attempt.next_n:
            attempt.pending[n] = msg
            return
        self._apply(attempt, msg)
        while attempt.next_n in attempt.pending:
            self._apply(attempt, attempt.pending.pop(attempt.next_n))

    def _apply(self, attempt: _Attempt, msg: dict[str, Any]) -> None:
        attempt.next_n = max(attempt.next_n, int(msg.get("n", 0))) + 1
        kind = msg.get("k")
        try:
            if kind == "ev":
                for type_, data in json.loads(msg["e"]):
                    attempt.emit(type_, data)
            elif kind == "kernel":
                # the pid is only meaningful on the worker's machine: never hand it to code that
                # could signal a local process with it (the call still lets the service stop a
                # task that was cancelled while its kernel was starting)
                attempt.kernel_pid = msg.get("pid")
                attempt.on_kernel(None)
            elif kind == "start":
                worker = msg.get("worker")
                if attempt.worker is None:
                    attempt.worker = worker
                    attempt.host = msg.get("host")
                    attempt.started = time.monotonic()
                    state = self._tasks.get(attempt.task_id)
                    if state is not None and state.stop_grace is not None:
                        self._spawn(self._send_stop(worker, attempt.token, state.stop_grace))
                elif worker != attempt.worker:
                    # Dask re-ran it elsewhere: the first worker is gone (its loss event may
                    # still be on its way); this copy is stopped once the attempt is dropped
                    attempt.other_workers.add(worker)
                    if not attempt.lost.done():
                        attempt.lost.set_result(attempt.worker)
        except Exception:
            self.log.exception("taskrun: could not handle a %s message of task %s", kind, attempt.task_id)
        if attempt.expected is not None and attempt.next_n >= attempt.expected:
            attempt.all_seen.set()

    def _on_cluster_event(self, event: Any) -> None:
        try:
            _ts, msg = event
        except Exception:
            return
        if not isinstance(msg, dict) or not msg.get("worker"):
            return
        address = msg["worker"]
        if msg.get("action") == "add-worker":
            self._gone.pop(address, None)  # a worker back on the same address
            return
        if msg.get("action") != "remove-worker":
            return
        self._gone[address] = None
        while len(self._gone) > 1000:
            self._gone.popitem(last=False)
        hit = False
        for attempt in list(self._attempts.values()):
            if attempt.worker == address and not attempt.lost.done():
                attempt.lost.set_result(address)
                hit = True
        if hit:
            self.lost_workers = (self.lost_workers + [address])[-20:]
            self.log.warning("taskrun: Dask worker %s left the cluster while running task(s)", address)

    # ----------------------------------------------------------------- stops

    async def interrupt_and_kill(self, task_id: str, grace: float) -> None:
        state = self._tasks.get(task_id)
        if state is None:
            return
        if state.stop_grace is not None and state.stop_grace <= grace:
            return
        state.stop_grace = grace
        state.stop_wake.set()
        attempt = state.attempt
        if attempt is not None and attempt.token in self._attempts:
            await self._stop_attempt(attempt, grace)

    def kill(self, task_id: str) -> None:
        self._spawn(self.interrupt_and_kill(task_id, 0.0))

    async def _stop_attempt(self, attempt: _Attempt, grace: float, *, cancel_future: bool = False) -> None:
        """Stop a run wherever it is: on its worker if it started there, else drop its future."""
        client = self.client
        stopped = False
        for worker in filter(None, {attempt.worker, *attempt.other_workers}):
            if worker in self._gone:
                continue  # nobody there to ask (and a request would wait for a connect timeout)
            stopped = await self._send_stop(worker, attempt.token, grace) or stopped
        if (cancel_future or not stopped) and attempt.future is not None and client is not None:
            # not started yet (or its worker is unreachable): cancelling the key makes the
            # scheduler drop it, and a worker-side run that is alive sees it cancelled
            try:
                await asyncio.wait_for(client.cancel([attempt.future], force=True, reason="jupyter_taskrun stop"), 5)
            except Exception:
                pass

    async def _send_stop(self, worker: str, token: str, grace: float) -> bool:
        client = self.client
        if client is None or not self._connected.is_set():
            return False
        try:
            res = await asyncio.wait_for(
                client.run(_worker_stop, token, float(grace), workers=[worker], on_error="return"), self.stop_timeout
            )
        except Exception as e:
            self.log.debug("taskrun: stop request to %s failed: %s", worker, e)
            return False
        return res.get(worker) is True

    # ------------------------------------------------------------------ misc

    def _forget(self, token: str) -> None:
        self._dead[token] = None
        while len(self._dead) > self.max_dead_tokens:
            self._dead.popitem(last=False)

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def release(self, task_id: str) -> None:
        """The worker killed the kernel before returning and reaps it there."""

    def info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind,
            "scheduler": self._where(),
            "status": self._status,
            "connected": self._connected.is_set(),
            "error": self._error,
            "topic": self.topic,
            "retry_on_worker_loss": self.retry_on_worker_loss,
            "running": {a.task_id: a.worker for a in self._attempts.values()},
        }
        if self.cluster_factory:
            info["cluster_factory"] = self.cluster_factory
        client = self.client
        if client is not None and self._connected.is_set():
            try:
                ident = client.scheduler_info()
                info["workers"] = ident.get("n_workers", len(ident.get("workers") or {}))
                info["threads"] = ident.get("total_threads")
            except Exception:
                pass
            try:
                info["dashboard"] = client.dashboard_link
            except Exception:
                pass
        if self.lost_workers:
            info["lost_workers"] = list(self.lost_workers)
        return info


async def _outcome(future: Any) -> tuple[str, Any]:
    """("ok", value) / ("error", exception) / ("cancelled", FutureCancelledError) of a Dask future."""
    from distributed.client import FutureCancelledError

    try:
        return "ok", await future.result()
    except FutureCancelledError as e:
        return "cancelled", e
    except asyncio.CancelledError:
        if future.cancelled():
            return "cancelled", getattr(getattr(future, "_state", None), "exception", None)
        raise
    except Exception as e:
        return "error", e


# --------------------------------------------------------------------------- worker side

#: runs alive in this worker process, by token (for _worker_stop)
_ACTIVE: dict[str, _WorkerRun] = {}
_LAUNCHERS: dict[tuple[Any, ...], KernelLauncher] = {}
_DISPOSALS: set[asyncio.Future[Any]] = set()
_MARKER: tuple[int, str] | None = None
_REAPER: subprocess.Popen | None = None


def _worker_marker() -> str:
    """Marks every kernel this worker process starts ("<marker>:<uuid>", see KernelLauncher).

    Per process (a forked worker gets its own), so a reaper only ever kills its worker's kernels.
    """
    global _MARKER, _REAPER, _LAUNCHERS
    if _MARKER is None or _MARKER[0] != os.getpid():
        if _MARKER is not None:  # forked: the parent's reaper and launchers are not ours
            _REAPER, _LAUNCHERS = None, {}
        _MARKER = (os.getpid(), f"taskrun-dask-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    return _MARKER[1]


#: runs in its own session; when the worker process dies, kills every process carrying one
#: of this worker's kernel markers (kernels, and whatever they forked)
_REAPER_CODE = r"""
import os, select, sys, time
import psutil
pid, prefix, var = int(sys.argv[1]), sys.argv[2] + ":", sys.argv[3]
try:
    fd = os.pidfd_open(pid)
    select.select([fd], [], [])
except (AttributeError, OSError):
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.1)
me = os.getpid()
for _ in range(3):
    for p in psutil.process_iter(["pid"]):
        if p.pid == me:
            continue
        try:
            if p.environ().get(var, "").startswith(prefix):
                p.kill()
        except (psutil.Error, OSError):
            pass
    time.sleep(0.2)
"""


def _ensure_reaper() -> None:
    global _REAPER
    marker = _worker_marker()
    if _REAPER is not None and _REAPER.poll() is None:
        return
    _REAPER = subprocess.Popen(
        [sys.executable, "-c", _REAPER_CODE, str(os.getpid()), marker, KERNEL_MARKER_ENV],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _launcher(settings: dict[str, Any]) -> KernelLauncher:
    marker = _worker_marker()
    key = (
        settings["flush_interval"],
        settings["start_timeout"],
        tuple(settings["secrets"]),
        settings["pass_credentials"],
    )
    launcher = _LAUNCHERS.get(key)
    if launcher is None:
        from jupyter_client.kernelspec import KernelSpecManager

        if settings["pass_credentials"]:
            base_env = dict(os.environ)
        else:
            base_env = task_base_env(tuple(settings["secrets"]))
        base_env.pop(KERNEL_MARKER_ENV, None)
        launcher = KernelLauncher(
            KernelSpecManager(),
            base_env=base_env,
            flush_interval=settings["flush_interval"],
            start_timeout=settings["start_timeout"],
            server_marker=marker,
            log=log,
        )
        _LAUNCHERS[key] = launcher
    return launcher


class _WorkerRun:
    """One attempt of one task inside a worker process."""

    def __init__(self, worker: Any, job: TaskJob, token: str, key: str, settings: dict[str, Any]):
        self.worker = worker
        self.job = job
        self.token = token
        self.key = key
        self.settings = settings
        self.topic = settings["topic"]
        self.n = 0
        self.batch: list[list[Any]] = []
        self.flush_handle: asyncio.Handle | None = None
        self.kernel: Any = None
        self.stop_grace: float | None = None
        self.finished = asyncio.Event()
        self._stopper: asyncio.Future[Any] | None = None

    # -- messages to the server ---------------------------------------------------

    def send(self, kind: str, **fields: Any) -> None:
        msg = {"run": self.token, "task": self.job.task_id, "n": self.n, "k": kind, **fields}
        self.n += 1
        try:
            self.worker.log_event(self.topic, msg)
        except Exception:  # worker closing: the server notices the gap and the lost worker
            log.exception("taskrun: could not send a %s message of task %s", kind, self.job.task_id)

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """The runner's emit: events of one loop turn travel as one message."""
        self.batch.append([str(type), data])
        if self.flush_handle is None:
            self.flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self.flush_handle is not None:
            self.flush_handle.cancel()
            self.flush_handle = None
        if self.batch:
            batch, self.batch = self.batch, []
            self.send("ev", e=json.dumps(batch, default=str))

    # -- stopping -----------------------------------------------------------------

    def request_stop(self, grace: float) -> None:
        if self.stop_grace is not None and grace >= self.stop_grace:
            return
        self.stop_grace = grace
        kernel = self.kernel
        if kernel is None:
            return  # not started yet: execute() checks stop_grace once it is
        if grace <= 0:
            kernel.kill_now()
        elif self._stopper is None:
            self._stopper = asyncio.ensure_future(self._interrupt_then_kill(grace))

    async def _interrupt_then_kill(self, grace: float) -> None:
        kernel = self.kernel
        try:
            await kernel.km.interrupt_kernel()
        except Exception:
            pass
        try:
            await asyncio.wait_for(self.finished.wait(), grace)
        except asyncio.TimeoutError:
            pass
        kernel.kill_now()

    async def _watch_key(self) -> None:
        """Future cancellation reaches the kernel: the server stopped wanting this key."""
        try:
            tasks = self.worker.state.tasks
        except AttributeError:
            return
        while True:
            await asyncio.sleep(0.1)
            ts = tasks.get(self.key)
            if ts is None or getattr(ts, "state", None) in ("cancelled", "released", "forgotten"):
                self.request_stop(0.0)
                return

    # -- the run ------------------------------------------------------------------

    async def execute(self) -> dict[str, Any]:
        worker, job = self.worker, self.job
        self.send("start", worker=worker.address, host=socket.gethostname(), pid=os.getpid(), name=str(worker.name))
        _ensure_reaper()
        launcher = _launcher(self.settings)
        cwd = job.context.get("cwd")
        tmp = None
        if not cwd or not os.path.isdir(cwd):
            # the server's folder does not exist here (no shared file system): a scratch one
            tmp = cwd = tempfile.mkdtemp(prefix="taskrun-")
        job.context = {**job.context, "cwd": cwd}
        watcher = asyncio.ensure_future(self._watch_key())
        kernel = None
        try:
            if self.stop_grace is None:
                kernel = await launcher.start(job.kernel_name, env=job.env, cwd=cwd)
                self.kernel = kernel
                self.send("kernel", pid=kernel.pid)
            if kernel is None or self.stop_grace is not None:
                if kernel is not None:
                    kernel.kill_now()
                reason = "stopped before its kernel started"
                error = {
                    "ename": "TaskStopped",
                    "evalue": reason,
                    "traceback": [],
                    "cell_index": None,
                    "reason": reason,
                }
                result = JobResult(
                    outcome=RunOutcome(TaskStatus.FAILED, error=error),
                    notebook=job.notebook,
                    metrics={},
                )
            else:
                result = await run_job_in_kernel(kernel, job, self.emit, log=log)
            self.finished.set()
            result.worker = worker.address
            result.metrics.update(
                worker=worker.address,
                worker_name=str(worker.name),
                worker_host=socket.gethostname(),
                pooled_kernel=False,
                dask_key=self.key,
            )
            if tmp is not None:
                result.metrics["worker_cwd"] = tmp
            self.flush()
            return {"result": result, "sent": self.n}
        finally:
            self.finished.set()
            watcher.cancel()
            if self._stopper is not None:
                self._stopper.cancel()
            try:
                self.flush()
            except Exception:
                pass
            if kernel is not None:
                kernel.kill_now()
                # reap off the critical path: the result goes back now, the worker cleans up
                t = asyncio.ensure_future(_dispose(kernel, tmp))
                _DISPOSALS.add(t)
                t.add_done_callback(_DISPOSALS.discard)
            elif tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


async def _dispose(kernel: Any, tmp: str | None) -> None:
    try:
        await kernel.dispose()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def dask_setup(server: Any) -> None:
    """Preload hook: ``dask worker|scheduler ... --preload jupyter_taskrun.dask_executor``.

    Optional, and only a warm-up: importing this module pays the import of the task-running
    code (nbclient, jupyter_client) when the process starts rather than at the first task.
    The scheduler needs it too: it unpickles every submitted task graph, so it imports
    jupyter_taskrun when the first task arrives. On a worker it also starts the kernel reaper.
    """
    if type(server).__name__ == "Worker":
        _ensure_reaper()


async def _worker_main(job: TaskJob, token: str, key: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The Dask task: run ``job`` in a fresh kernel on this worker's machine."""
    from distributed import get_worker

    run = _WorkerRun(get_worker(), job, token, key, settings)
    _ACTIVE[token] = run
    try:
        return await run.execute()
    finally:
        _ACTIVE.pop(token, None)


async def _worker_stop(token: str, grace: float) -> bool:
    """Run on a worker by ``Client.run``: interrupt, wait ``grace`` s, then kill the run's kernel."""
    run = _ACTIVE.get(token)
    if run is None:
        return False
    run.request_stop(grace)
    return True
