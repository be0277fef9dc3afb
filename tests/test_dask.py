"""Dask executor (issue 7): a real ``dask scheduler`` and real ``dask worker`` processes on 127.0.0.1.

Every test goes through the real REST/SSE API of a real Jupyter server configured with
``c.TaskRun.executor = "dask"`` and ``c.DaskExecutor.*``. Workers run without a nanny, so a task kernel's parent
process *is* the worker process (that is how "it ran on the worker" is checked), and a
SIGKILL to that process is a real worker loss.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

pytest.importorskip("distributed")

pytestmark = pytest.mark.dask

REPO = Path(__file__).resolve().parents[1]

SCHEDULER = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]
#: warm-up: import the task code at start (the scheduler unpickles task graphs; workers run them)
PRELOAD = ["--preload", "jupyter_taskrun.dask_executor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaskProcesses:
    """A scheduler and workers as subprocesses; everything started here is killed in ``close()``."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self.addresses: dict[str, str] = {}
        self._procs: list[subprocess.Popen] = []
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), self.env.get("PYTHONPATH")]))
        self.env["PYTHONUNBUFFERED"] = "1"

    def _spawn(self, cmd: list[str], name: str) -> subprocess.Popen:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn([*SCHEDULER, "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard", *PRELOAD], "scheduler")

    def start_worker(self, name: str, resources: str | None = None) -> subprocess.Popen:
        cmd = [*WORKER, self.address, "--name", name, "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1"]
        cmd += ["--no-dashboard", "--memory-limit", "0", "--death-timeout", "60"]
        cmd += PRELOAD
        if resources:
            cmd += ["--resources", resources]
        proc = self._spawn(cmd, name)
        self.workers[name] = proc
        return proc

    def wait_workers(self, names: list[str], timeout: float = 60) -> dict[str, str]:
        """Block until the named workers are registered; returns name -> address."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=timeout) as client:
            while True:
                found = {w["name"]: a for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
                if all(n in found for n in names):
                    self.addresses.update({n: found[n] for n in names})
                    return {n: found[n] for n in names}
                for n in names:
                    if self.workers[n].poll() is not None:
                        raise RuntimeError(f"worker {n} exited: {(self.log_dir / f'{n}.log').read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers {names} not up after {timeout}s (have {sorted(found)})")
                time.sleep(0.1)

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.kill()
        self.scheduler.wait(10)

    def close(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    @property
    def worker_pids(self) -> dict[int, str]:
        return {p.pid: name for name, p in self.workers.items()}


WORKERS = {"w1": None, "w2": None, "victim": "VICTIM=1", "r1": "RETRY=1", "r2": "RETRY=1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One scheduler and single-thread workers, shared by the module, all started at once.

    "w1", "w2": plain workers. "victim" (resource VICTIM=1), "r1" and "r2" (RETRY=1): the
    workers the worker-loss tests kill; tasks that ask for those resources can only go there.
    """
    procs = DaskProcesses(tmp_path_factory.mktemp("dask"))
    try:
        procs.start_scheduler()
        for name, resources in WORKERS.items():
            procs.start_worker(name, resources)
        procs.wait_workers(list(WORKERS))
        yield procs
    finally:
        procs.close()


@pytest.fixture
def dask_executor_config(request) -> dict[str, Any]:
    """``c.DaskExecutor`` settings; indirect parametrize picks a variant ("retry", "lonely", "factory").

    ``unavailable_wait`` and ``resource_wait`` fail fast in tests where the real defaults wait long.
    """
    variant = getattr(request, "param", None)
    config: dict[str, Any] = {"unavailable_wait": 3.0, "resource_wait": 1.0}
    if variant == "factory":
        config["cluster_factory"] = "tests.test_dask:small_cluster"
    elif variant == "lonely":
        config["scheduler_address"] = request.getfixturevalue("lonely_scheduler").address
    else:
        config["scheduler_address"] = request.getfixturevalue("cluster").address
    if variant == "retry":
        config["retry_on_worker_loss"] = True
    return config


@pytest.fixture
def jp_server_config(jp_server_config, dask_executor_config):
    from traitlets.config import Config

    jp_server_config["DaskExecutor"] = Config(dask_executor_config)
    return jp_server_config


@pytest.fixture
def taskrun_config(request) -> dict[str, Any]:
    """``c.TaskRun`` settings: the shorthand for ``executor_class = DaskExecutor``, plus an (indirect)
    parameter's settings."""
    return {"executor": "dask", **getattr(request, "param", {})}


@pytest.fixture
def lonely_scheduler(tmp_path):
    """A scheduler of its own (no workers yet), for the test that kills it."""
    procs = DaskProcesses(tmp_path)
    procs.start_scheduler()
    procs.start_worker("early-worker")
    yield procs
    procs.close()


# ----------------------------------------------------------------------------- helpers


async def wait_connected(api, workers: int | None = None, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, status, _ = await api.call("GET", "status")
        assert code == 200
        ex = status["executor"]
        if ex.get("connected") and (workers is None or ex.get("workers") == workers):
            return ex
        assert time.monotonic() < deadline, f"executor never connected: {ex}"
        await asyncio.sleep(0.1)


async def wait_for_log(api, task_id: str, needle: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        _, logs, _ = await api.call("GET", f"tasks/{task_id}/logs")
        if needle in logs:
            return logs
        task = await api.get(task_id)
        assert task["status"] in ("queued", "running"), task
        assert time.monotonic() < deadline, f"{needle!r} never logged; logs: {logs!r}"
        await asyncio.sleep(0.05)


async def process_gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        await asyncio.sleep(0.02)
    return False


def pid_line(logs: str) -> tuple[int, int]:
    """(kernel pid, the pid of the process that started it) from a line 'pids <pid> <ppid>'."""
    for line in logs.splitlines():
        if line.startswith("pids "):
            _, pid, ppid = line.split()
            return int(pid), int(ppid)
    raise AssertionError(f"no pid line in {logs!r}")


#: the kernel's pid and its starter's: its parent, or its fork server's parent (a forked kernel's
#: parent is the worker's fork server, c.TaskRun.kernel_start = "fork")
PIDS = (
    "import os, time\n_p = os.getppid()\n"
    "if b'__taskrun_forkserver__' in open(f'/proc/{_p}/cmdline', 'rb').read():\n"
    "    _p = int(open(f'/proc/{_p}/stat').read().rsplit(')', 1)[1].split()[1])\n"
    "print('pids', os.getpid(), _p, flush=True)\n"
)


# ------------------------------------------------------------------------------- tests


async def test_task_runs_on_a_worker_with_live_ordered_events(api, cluster):
    ex = await wait_connected(api, workers=len(WORKERS))
    assert ex["kind"] == "dask" and ex["scheduler"] == cluster.address
    code = (
        PIDS
        + "for i in range(60):\n    print(i, flush=True)\n    time.sleep(0.005)\n"
        + "time.sleep(1.5)\nprint('late', flush=True)\n6 * 7"
    )
    task = await api.submit(code=code, name="on-a-worker")
    arrivals: list[float] = []

    def stamp(frames):
        while len(arrivals) < len(frames):
            arrivals.append(time.monotonic())
        return False

    frames = await api.sse(f"tasks/{task['id']}/events", stop=stamp)
    events = [(f, t) for f, t in zip(frames, arrivals, strict=False) if f["event"] != "end" and f.get("data") is not None]
    task = await api.get(task["id"])
    assert task["status"] == "completed", task
    assert task["result"]["data"]["text/plain"] == "42"

    # it ran on a worker: the kernel's parent is a dask worker process, not this (server) process
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    pid, ppid = pid_line(logs)
    assert ppid != os.getpid() and ppid in cluster.worker_pids, (ppid, cluster.worker_pids)
    name = cluster.worker_pids[ppid]
    assert task["executor"] == "dask"
    assert task["worker"] == cluster.addresses[name]
    assert task["metrics"]["worker"] == cluster.addresses[name]
    assert task["metrics"]["dask_attempts"] == 1
    assert await process_gone(pid, within=5)  # disposed after the task

    # every event, in order, nothing lost or doubled: seq is 1..N with no gap
    seqs = [f["data"]["seq"] for f, _ in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert logs == f"pids {pid} {ppid}\n" + "".join(f"{i}\n" for i in range(60)) + "late\n"
    streamed = "".join(f["data"]["data"]["text"] for f, _ in events if f["data"]["type"] == "log")
    assert streamed == logs
    types = [f["data"]["type"] for f, _ in events]
    assert types[0] == "status" and types[-1] == "status"
    assert "cell" in types and "metrics" in types and "result" in types

    # live: "59" reached the SSE client well before "late" (printed 1.5 s later) and the end
    # a print's text and its newline may arrive in two log events, so look in the text streamed so far
    def arrival_of(text: str) -> float:
        so_far = ""
        for f, t in events:
            if f["data"]["type"] == "log":
                so_far += f["data"]["data"]["text"]
                if text in so_far:
                    return t
        raise AssertionError(f"{text!r} never streamed")

    assert arrival_of("late") - arrival_of("59\n") > 0.75, task["metrics"]


@pytest.mark.parametrize("taskrun_config", [{"kernel_start": "fork"}, {"kernel_start": "spawn"}], indirect=True)
async def test_workers_start_kernels_as_the_server_is_configured(api, cluster, taskrun_config):
    """``c.TaskRun.kernel_start`` reaches the workers (whatever their own environment says): a forked
    kernel's parent is the worker's fork server, a spawned one's the worker itself."""
    await wait_connected(api, workers=len(WORKERS))
    code = (
        "import os\n_p = os.getppid()\nprint('forked', b'__taskrun_forkserver__' in open(f'/proc/{_p}/cmdline', 'rb').read(), flush=True)\n"
    )
    task = await api.run(code=code)
    assert task["status"] == "completed", task["error"]
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == f"forked {taskrun_config['kernel_start'] == 'fork'}\n", logs


async def test_two_tasks_run_at_once_on_different_workers(api, cluster, tmp_path):
    await wait_connected(api, workers=len(WORKERS))

    def code(me: str) -> str:
        # a rendezvous: each task waits until the other one is running too
        return PIDS + (
            f"import pathlib\nd = pathlib.Path({str(tmp_path)!r})\n(d / {me!r}).touch()\n"
            "deadline = time.time() + 60\n"
            "while not ((d / 'a').exists() and (d / 'b').exists()):\n"
            "    assert time.time() < deadline, 'the other task never ran at the same time'\n"
            "    time.sleep(0.02)\n"
            "time.sleep(1)\nprint('met', time.time(), flush=True)\n"
        )

    a = await api.submit(code=code("a"), name="a")
    b = await api.submit(code=code("b"), name="b")
    ta, tb = await asyncio.gather(api.wait(a["id"]), api.wait(b["id"]))
    assert ta["status"] == tb["status"] == "completed", (ta["error"], tb["error"])
    parents = []
    for t in (ta, tb):
        _, logs, _ = await api.call("GET", f"tasks/{t['id']}/logs")
        parents.append(pid_line(logs)[1])
        assert "met " in logs
    assert parents[0] != parents[1] and set(parents) <= set(cluster.worker_pids), (parents, cluster.worker_pids)
    assert ta["worker"] != tb["worker"]
    # both were running at once: neither finished before the other started
    assert ta["started_at"] < tb["finished_at"] and tb["started_at"] < ta["finished_at"]


async def test_cancel_and_timeout_kill_the_remote_kernels(api, cluster):
    # both at once, on two workers; the timeout is generous because a loaded CI machine can
    # take seconds to start a kernel, and the timer runs from the task's start
    timed = await api.submit(code=PIDS + "time.sleep(60)", timeout=12, name="timed")
    task = await api.submit(code=PIDS + "time.sleep(60)", name="cancelled")
    logs = await wait_for_log(api, task["id"], "pids ")
    pid, ppid = pid_line(logs)
    assert ppid in cluster.worker_pids
    code, _, _ = await api.call("POST", f"tasks/{task['id']}/cancel")
    assert code == 202
    task = await api.wait(task["id"], 20)
    assert task["status"] == "cancelled"
    assert task["error"]["reason"] == "cancelled by user"
    assert await process_gone(pid, within=5)
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs.startswith("pids ")  # output from before the cancel is kept

    timed = await api.wait(timed["id"], 40)
    assert timed["status"] == "timed_out"
    assert "timeout" in timed["error"]["reason"]
    _, logs, _ = await api.call("GET", f"tasks/{timed['id']}/logs")
    pid, ppid = pid_line(logs)
    assert ppid in cluster.worker_pids
    assert await process_gone(pid, within=5)


async def test_sigkill_of_the_worker_fails_the_task_naming_it(api, cluster):
    victim, address = cluster.workers["victim"], cluster.addresses["victim"]
    await wait_connected(api)
    # the resource hint maps to Dask's resources=: only the victim offers VICTIM
    task = await api.submit(code=PIDS + "time.sleep(60)", resources={"VICTIM": 1})
    logs = await wait_for_log(api, task["id"], "pids ")
    pid, ppid = pid_line(logs)
    assert ppid == victim.pid
    t0 = time.monotonic()
    victim.send_signal(signal.SIGKILL)
    task = await api.wait(task["id"], 30)
    assert task["status"] == "failed", task
    reason = task["error"]["reason"]
    assert address in reason and "lost" in reason, reason
    assert time.monotonic() - t0 < 10
    # the orphaned kernel does not outlive its worker
    assert await process_gone(pid, within=5)
    _, status, _ = await api.call("GET", "status")
    assert address in status["executor"].get("lost_workers", [])
    # the server keeps serving and the other workers keep working
    after = await api.run(code="print('fine')")
    assert after["status"] == "completed" and after["worker"] != address


@pytest.mark.parametrize("dask_executor_config", [pytest.param("retry", id="retry_on_worker_loss")], indirect=True)
async def test_worker_loss_reruns_once_when_configured(api, cluster, taskrun):
    assert taskrun.executor_impl.retry_on_worker_loss
    try:
        await _rerun_once(api, cluster, {n: cluster.addresses[n] for n in ("r1", "r2")})
    finally:
        for name in ("r1", "r2"):
            cluster.workers[name].kill()


async def _rerun_once(api, cluster, addresses: dict[str, str]) -> None:
    await wait_connected(api)
    task = await api.submit(code=PIDS + "time.sleep(4)\nprint('done', flush=True)", resources={"RETRY": 1})
    logs = await wait_for_log(api, task["id"], "pids ")
    pid, ppid = pid_line(logs)
    first = cluster.worker_pids[ppid]
    cluster.workers[first].send_signal(signal.SIGKILL)
    task = await api.wait(task["id"], 60)
    assert task["status"] == "completed", task
    other = {"r1": "r2", "r2": "r1"}[first]
    assert task["worker"] == addresses[other]
    assert task["metrics"]["dask_attempts"] == 2
    assert task["metrics"]["lost_workers"] == [addresses[first]]
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert f"Dask worker {addresses[first]} was lost" in logs
    assert logs.count("pids ") == 2 and logs.endswith("done\n")
    assert await process_gone(pid, within=5)


async def test_resources_no_worker_offers_fail_clearly(api, cluster):
    await wait_connected(api)
    task = await api.run(code="print('never')", resources={"NO_SUCH_THING": 1}, wait_s=30)
    assert task["status"] == "failed"
    assert "no Dask worker offers the resources" in task["error"]["reason"]


@pytest.mark.parametrize("dask_executor_config", [pytest.param("lonely", id="own-scheduler")], indirect=True)
async def test_scheduler_loss_is_reported_and_tasks_fail_clearly_then_recover(api, taskrun, lonely_scheduler):
    procs = lonely_scheduler
    await asyncio.to_thread(procs.wait_workers, ["early-worker"])
    await wait_connected(api, timeout=60)
    running = await api.submit(code=PIDS + "time.sleep(60)")
    pid, _ = pid_line(await wait_for_log(api, running["id"], "pids "))
    procs.kill_scheduler()
    procs.start_worker("late-worker")  # waits for a scheduler to come back (its start-up overlaps the outage)
    deadline = time.monotonic() + 10
    while True:
        _, status, _ = await api.call("GET", "status")
        ex = status["executor"]
        if not ex["connected"]:
            break
        assert time.monotonic() < deadline, ex
        await asyncio.sleep(0.05)
    assert ex["status"] in ("reconnecting", "unavailable") and procs.address in (ex["error"] or ""), ex
    # the task that was running fails clearly, and its kernel does not outlive the outage
    running = await api.wait(running["id"], 30)
    assert running["status"] == "failed"
    assert "lost the connection to the Dask scheduler" in running["error"]["reason"], running["error"]
    assert await process_gone(pid, within=10)
    # a task submitted meanwhile fails clearly after c.DaskExecutor.unavailable_wait (3 s here)
    t0 = time.monotonic()
    task = await api.run(code="print('x')", wait_s=30)
    assert task["status"] == "failed"
    assert "Dask executor unavailable" in task["error"]["reason"], task["error"]
    assert procs.address in task["error"]["reason"]
    assert time.monotonic() - t0 < 10
    # the scheduler comes back: the executor reconnects (and resubscribes) by itself
    procs.start_scheduler()
    await asyncio.to_thread(procs.wait_workers, ["late-worker"])
    await wait_connected(api, workers=1, timeout=60)
    task = await api.run(code="print('back')")
    assert task["status"] == "completed", task
    _, logs, _ = await api.call("GET", f"tasks/{task['id']}/logs")
    assert logs == "back\n"  # events flow again over the new scheduler


def small_cluster():
    """A ``c.DaskExecutor.cluster_factory`` for the test below: an in-process LocalCluster."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")


@pytest.mark.parametrize("dask_executor_config", [pytest.param("factory", id="cluster-factory")], indirect=True)
async def test_cluster_factory(api, taskrun):
    ex = await wait_connected(api, workers=1, timeout=60)
    assert ex["cluster_factory"] == "tests.test_dask:small_cluster"
    task = await api.run(code="print('from a LocalCluster')")
    assert task["status"] == "completed", task
    assert task["worker"] and task["worker"].startswith(("inproc://", "tcp://"))
    cluster = taskrun.executor_impl.cluster
    await taskrun.stop()
    assert cluster.status.name == "closed"


async def test_server_stop_kills_running_remote_kernels(api, taskrun, cluster):
    task = await api.submit(code=PIDS + "time.sleep(60)")
    pid, ppid = pid_line(await wait_for_log(api, task["id"], "pids "))
    assert ppid in cluster.worker_pids
    await taskrun.stop()
    assert await process_gone(pid, within=10)


def _service(tmp_path, settings: dict[str, Any], dask_settings: dict[str, Any] | None = None, db: str = "tasks"):
    """A ``TaskRun`` built from config, without a server (nothing is started)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from traitlets.config import Config

    from jupyter_taskrun.server.service import TaskRun

    config = Config({"TaskRun": {"db_path": str(tmp_path / f"{db}.sqlite3"), **settings}, "DaskExecutor": dask_settings or {}})
    log = logging.getLogger("test-taskrun-config")
    return TaskRun(config=config, log=log, root_dir=str(tmp_path), kernel_spec_manager=KernelSpecManager())


def test_deprecated_taskrun_dask_options_map_to_dask_executor(tmp_path, caplog):
    from jupyter_taskrun.execution.dask_executor import DaskExecutor

    old = {"dask_scheduler_address": "tcp://127.0.0.1:1", "dask_cluster_factory": "old:factory", "retry_on_worker_loss": True}
    with caplog.at_level(logging.WARNING, logger="test-taskrun-config"):
        service = _service(tmp_path, {"executor": "dask", **old}, {"cluster_factory": "new:factory"})
    try:
        ex = service.executor_impl
        assert isinstance(ex, DaskExecutor) and ex.kind == "dask"
        assert ex.scheduler_address == "tcp://127.0.0.1:1" and ex.retry_on_worker_loss is True
        assert ex.cluster_factory == "new:factory"  # the c.DaskExecutor name wins over the alias
        for name in old:
            assert f"c.TaskRun.{name} is deprecated" in caplog.text
    finally:
        service.store.close()


def test_executor_class_trait_and_its_shorthand(tmp_path, caplog):
    from jupyter_taskrun.execution.dask_executor import DaskExecutor
    from jupyter_taskrun.execution.executor import LocalExecutor
    from jupyter_taskrun.server.app import TaskRunApp

    with caplog.at_level(logging.WARNING, logger="test-taskrun-config"):
        by_class = _service(tmp_path, {"executor_class": DaskExecutor}, {"scheduler_address": "tcp://127.0.0.1:2"})
    local = _service(tmp_path, {}, db="local")
    try:
        assert isinstance(by_class.executor_impl, DaskExecutor)
        assert by_class.executor_impl.scheduler_address == "tcp://127.0.0.1:2"
        assert "deprecated" not in caplog.text
        assert type(local.executor_impl) is LocalExecutor
    finally:
        by_class.store.close()
        local.store.close()
    # its settings are listed with the extension's (--help-all, generated config)
    assert DaskExecutor in TaskRunApp.classes
    assert DaskExecutor.class_traits(config=True)["scheduler_address"].help
