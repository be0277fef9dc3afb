"""``DaskExecutor``: run tasks on a Dask distributed cluster instead of this machine.

Server side (``dask_worker.py`` is what runs on the workers). Selected with
``c.TaskRun.executor = "dask"`` (or ``c.TaskRun.executor_class``) plus
``c.DaskExecutor.scheduler_address`` (a running scheduler) or ``c.DaskExecutor.cluster_factory``
(import string of a callable returning a cluster: ``LocalCluster``, ``SLURMCluster``, a
gateway cluster...). Settings: ``c.DaskExecutor.*`` (see docs/DASK.md).

How a task travels::

    server loop                           scheduler                 worker (its event loop)
    -----------                           ---------                 -----------------------
    run(job) --client.submit(worker_main, resources=...)--->  ...  --> fresh kernel on the worker's
                                                                        machine, run_job_in_kernel()
    _on_message <--subscribe_topic(topic)-- topic <--log_event(topic)-- emit(): one message per loop turn
       reorder by per-run counter, then the service's emit (persist-then-publish)
    interrupt_and_kill --client.run(worker_stop, workers=[w])--------> interrupt, grace, kill_now()
    future cancelled (scheduler/client gone) ----------------------->  watcher sees the key cancelled:
                                                                        kill_now()
    "remove-worker" on the scheduler's "all" topic --> task failed naming the lost worker (or re-run once)

Events: ``Worker.log_event`` goes over the worker's batched stream (2 ms) to the
scheduler, which forwards it on the client's stream (2 ms); both are ordered TCP
streams, measured at a few ms worker -> server. Each message still carries a per-run
counter and the server reorders and de-duplicates, so order never depends on it.
The connection itself (connect in the background, reconnect, resubscribe) is
``SchedulerConnection`` (``dask_connection.py``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from traitlets import Bool, Float, Int, Unicode

from ..errors import ExecutorUnavailable, TaskRunError
from .artifacts import read_inputs
from .dask_connection import SchedulerConnection
from .dask_worker import worker_main, worker_stop
from .executor import Executor, ExecutorContext, JobResult, KernelCallback, TaskJob
from .runner import Emit

#: the scheduler's own topic where it announces workers joining and leaving
CLUSTER_TOPIC = "all"


class WorkerLost(TaskRunError):
    """The Dask worker running a task died or left the cluster."""

    reason = "worker-lost"


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


class DaskExecutor(Executor):
    """Runs each job in a fresh kernel on a Dask worker. Settings: ``c.DaskExecutor.*``."""

    kind = "dask"

    scheduler_address = Unicode("", config=True, help="Address of a running Dask scheduler (tcp://host:8786). Set this or cluster_factory.")
    cluster_factory = Unicode(
        "",
        config=True,
        help="Import string ('module:callable') of a callable, sync or async, returning a Dask cluster "
        "(LocalCluster, SLURMCluster, a gateway cluster...). The server starts it in the background, uses its "
        "scheduler_address and closes it when it stops. Used when scheduler_address is empty.",
    )
    retry_on_worker_loss = Bool(
        False,
        config=True,
        help="Re-run a task once, from the start, if its Dask worker dies or leaves; else the task fails naming the worker.",
    )
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
    drain_timeout = Float(5.0, config=True, help="After a task returns, how long to wait for events still in flight from its worker.")
    stop_timeout = Float(10.0, config=True, help="Seconds a stop request to a worker may take before falling back.")
    max_dead_tokens = Int(10_000, config=True, help="How many finished runs to remember (to stop late starters).")

    def __init__(self, context: ExecutorContext, **kw: Any):
        super().__init__(context, **kw)
        #: a configuration problem: reported by info() and to every task, the server keeps serving
        self._fatal: str | None = None
        if not self.scheduler_address and not self.cluster_factory:
            self._fatal = 'c.TaskRun.executor = "dask" needs c.DaskExecutor.scheduler_address or c.DaskExecutor.cluster_factory'
        try:
            import distributed  # noqa: F401
        except ImportError:
            self._fatal = "the Dask executor needs the dask extra: pip install 'jupyter_taskrun[dask]'"
        launcher = context.launcher
        marker = launcher.server_marker or uuid.uuid4().hex[:12]
        self.topic = f"jupyter-taskrun-{marker}"
        #: what a worker needs to build its own KernelLauncher (the server's env is not sent:
        #: the kernel inherits the worker's environment, minus credentials, plus the task's env)
        self.worker_settings: dict[str, Any] = {
            "topic": self.topic,
            "flush_interval": launcher.flush_interval,
            "start_timeout": launcher.start_timeout,
            "kernel_start": launcher.kernel_start,  # c.TaskRun.kernel_start, on the worker's machine too
            "secrets": list(context.secret_env),
            "pass_credentials": bool(context.pass_credentials),
        }
        self.connection = SchedulerConnection(
            self.scheduler_address,
            self.cluster_factory,
            connect_timeout=self.connect_timeout,
            topics={self.topic: self._on_message, CLUSTER_TOPIC: self._on_cluster_event},
            log=self.log,
        )
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
    def cluster(self) -> Any:
        """The cluster ``cluster_factory`` built (None with a scheduler address)."""
        return self.connection.cluster

    # ------------------------------------------------------------ connection

    async def start(self) -> None:
        """Connect in the background: the server starts even if the scheduler is down."""
        if self._fatal:
            self.connection.status, self.connection.error = "misconfigured", self._fatal
            self.log.error("taskrun: %s", self._fatal)
            return
        self.connection.start()

    async def _ready_client(self, state: _TaskState) -> Any:
        """The connected client, or ExecutorUnavailable once ``unavailable_wait`` is over."""
        if self._fatal:
            raise ExecutorUnavailable(self._fatal)
        client = await self.connection.ready_client(self.unavailable_wait, state.stop_wake)
        if state.stop_grace is not None:
            raise TaskRunError("stopped before the task reached the Dask cluster")
        if client is None:
            detail = self.connection.error or f"the Dask scheduler at {self.connection.where()} is not connected"
            raise ExecutorUnavailable(f"Dask executor unavailable for {self.unavailable_wait:g} s: {detail}")
        return client

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
        await self.connection.close()

    # ------------------------------------------------------------------ runs

    async def run(self, job: TaskJob, emit: Emit, on_kernel: KernelCallback) -> JobResult:
        state = self._tasks.setdefault(job.task_id, _TaskState())
        lost: list[str] = []
        if job.inputs and job.staged_inputs is None:  # the worker cannot read the server's files: send them
            try:
                job.staged_inputs = await asyncio.to_thread(read_inputs, job.context["cwd"], job.inputs, job.max_staged_input_bytes)
            except (OSError, ValueError) as e:
                raise TaskRunError(f"cannot stage the task's inputs: {e}") from None
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
                worker_main,
                job,
                attempt.token,
                attempt.key,
                self.worker_settings,
                key=attempt.key,
                pure=False,
                resources=dict(job.resources) or None,
                retries=0,
            )
            waiter: asyncio.Future[Any] = asyncio.ensure_future(_outcome(attempt.future))
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
                    msg = f"lost the connection to the Dask scheduler at {self.connection.where()} while the task was running"
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
        raise TaskRunError(f"no Dask worker offers the resources {resources} (waited {self.resource_wait:g} s; workers offer: {have})")

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
                worker = str(msg.get("worker") or "")
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
        client = self.connection.client
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
        client = self.connection.usable_client()
        if client is None:
            return False
        try:
            res = await asyncio.wait_for(
                client.run(worker_stop, token, float(grace), workers=[worker], on_error="return"), self.stop_timeout
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
            "scheduler": self.connection.where(),
            "status": self.connection.status,
            "connected": self.connection.connected.is_set(),
            "error": self.connection.error,
            "topic": self.topic,
            "retry_on_worker_loss": self.retry_on_worker_loss,
            "running": {a.task_id: a.worker for a in self._attempts.values()},
        }
        if self.cluster_factory:
            info["cluster_factory"] = self.cluster_factory
        client = self.connection.usable_client()
        if client is not None:
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
