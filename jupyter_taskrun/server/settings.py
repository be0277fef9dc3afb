"""``TaskRunSettings``: every ``c.TaskRun.*`` setting, with its help text, in one place.

``TaskRun`` (``service.py``) inherits them, so ``c.TaskRun.<name>`` configures each; this module
holds no behaviour beyond trait defaults and the deprecation warning of old names.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_core.paths import jupyter_data_dir
from traitlets import Bool, Dict, Enum, Float, Int, List, Type, Unicode, Union, default, observe
from traitlets.config import LoggingConfigurable

from ..execution.executor import Executor, LocalExecutor
from ..execution.kernels import KERNEL_START_ENV, default_kernel_start

#: ``c.TaskRun.executor`` values and the ``executor_class`` each stands for
EXECUTOR_SHORTHANDS = {
    "local": "jupyter_taskrun.execution.executor.LocalExecutor",
    "dask": "jupyter_taskrun.execution.dask_executor.DaskExecutor",
}

#: deprecated ``c.TaskRun.<name>`` -> the ``c.DaskExecutor.<name>`` it maps to
DEPRECATED_EXECUTOR_ALIASES = {
    "dask_scheduler_address": "scheduler_address",
    "dask_cluster_factory": "cluster_factory",
    "retry_on_worker_loss": "retry_on_worker_loss",
}


class TaskRunSettings(LoggingConfigurable):
    """The settings of the task runner (configured as ``c.TaskRun.*``)."""

    max_concurrent_tasks = Int(2, config=True, help="How many tasks run at once (one kernel each).")
    sandbox = Enum(
        ["none", "bwrap"],
        "none",
        config=True,
        help="Run each task kernel in a sandbox: 'bwrap' (Debian's bubblewrap) gives it a private /proc "
        "and /tmp, hides the server's runtime and data folders (token, task store), and makes everything "
        "but its working folder and sandbox_writable_paths read-only. See jupyter_taskrun/sandbox.py.",
    )
    kernel_start = Enum(
        ["fork", "spawn"],
        config=True,
        help="How task kernels start. 'spawn': a new Python process per kernel (jupyter_client). 'fork': "
        "stock ipykernel kernels are forked from a fork server that imported ipykernel once (one per Python "
        "and start-relevant environment), faster to start (benchmarks/bench_latency.py: about half the cold start of a spawned kernel) and cheaper in CPU; kernels it cannot "
        "fork (other kernel specs, the bwrap sandbox) are spawned. See jupyter_taskrun/execution/forkserver.py. "
        f"Default: ${KERNEL_START_ENV} if set, else 'fork'.",
    )

    @default("kernel_start")
    def _kernel_start_default(self) -> str:
        return default_kernel_start()

    sandbox_writable_paths = List(Unicode(), config=True, help="Absolute folders a sandboxed task may write besides its working folder.")
    max_queued_tasks = Int(10_000, config=True, help="Bound of the waiting queue; submissions beyond it get 429 with Retry-After.")
    db_path = Unicode(config=True, help="SQLite file holding tasks, events and artifacts.")

    @default("db_path")
    def _db_path_default(self) -> str:
        return os.path.join(jupyter_data_dir(), "taskrun", "tasks.sqlite3")

    default_kernel_name = Unicode("", config=True, help="Kernel for tasks that name none (empty: the server's default kernel).")
    default_timeout = Float(0.0, config=True, help="Whole-task timeout in seconds for tasks that give none (0: no limit).")
    default_cell_timeout = Float(0.0, config=True, help="Per-cell timeout in seconds when a task gives none (0: none).")
    retain_days = Float(30.0, config=True, help="Finished tasks older than this many days are pruned (0: keep).")
    kernel_pool_size = Union(
        [Int(), Dict(value_trait=Int(), key_trait=Unicode())],
        default_value=1,
        config=True,
        help="Warm kernels kept ready: an int for the default kernel, or {kernel_name: n}. 0 disables the pool.",
    )
    output_flush_interval = Float(0.005, config=True, help="Seconds between output flushes in task kernels (ipykernel's default is 0.2).")
    interrupt_grace = Float(0.5, config=True, help="On cancel/timeout, seconds between interrupting a kernel and killing it.")
    max_output_bytes = Int(64 * 1024 * 1024, config=True, help="Stored output per task; beyond it output is dropped with a marker event.")
    max_notebook_stream_bytes = Int(
        4 * 1024 * 1024, config=True, help="Stream text kept in the executed notebook (the logs keep up to max_output_bytes)."
    )
    memory_limit = Int(0, config=True, help="Default per-task memory limit in bytes for the kernel's process tree (0: none).")
    metrics_interval = Float(0.5, config=True, help="Seconds between CPU/memory samples of a task's kernel.")
    kernel_start_timeout = Float(60.0, config=True, help="Seconds a kernel may take to become ready.")
    max_request_bytes = Int(16 * 1024 * 1024, config=True, help="Largest accepted request body in bytes.")
    sse_keepalive_interval = Float(15.0, config=True, help="Seconds between SSE keep-alive comments.")
    max_streams_per_user = Int(100, config=True, help="Live SSE/WebSocket streams one user may hold open at once.")
    pass_server_credentials = Bool(
        False, config=True, help="Let task kernels inherit the server's tokens (JUPYTER_TOKEN, ...). Off by default."
    )
    extra_secret_env = List(Unicode(), config=True, help="More environment variable names to strip from task kernels.")
    executor_class = Type(
        default_value=LocalExecutor,
        klass=Executor,
        config=True,
        help="The Executor subclass that runs tasks: LocalExecutor (this machine), DaskExecutor (a Dask "
        "cluster, settings c.DaskExecutor.*) or your own. Built once as executor_class(ExecutorContext, "
        "parent=TaskRun), so its settings are its own traits. Unset: c.TaskRun.executor picks it; set, it wins.",
    )

    @default("executor_class")
    def _executor_class_default(self) -> str:
        return EXECUTOR_SHORTHANDS[self.executor]

    executor = Enum(
        list(EXECUTOR_SHORTHANDS),
        "local",
        config=True,
        help="Shorthand for executor_class: 'local' (LocalExecutor) or 'dask' (DaskExecutor).",
    )
    dask_scheduler_address = Unicode("", config=True, help="Deprecated: use c.DaskExecutor.scheduler_address.")
    dask_cluster_factory = Unicode("", config=True, help="Deprecated: use c.DaskExecutor.cluster_factory.")
    retry_on_worker_loss = Bool(False, config=True, help="Deprecated: use c.DaskExecutor.retry_on_worker_loss.")
    store_busy_timeout = Float(
        5.0,
        config=True,
        help="Seconds a submission, rerun or delete waits for a database locked by another connection "
        "before it is refused with 503 (the server keeps serving meanwhile).",
    )
    max_cells = Int(2000, config=True, help="Most cells one task may have ('cells', an inline or a file notebook); more: 400.")
    stop_grace = Float(
        5.0,
        config=True,
        help="Seconds a cancelled or timed-out task's runner may take to end after its kernel was told to stop; "
        "then the task is ended anyway (its runner is abandoned and its kernel killed).",
    )
    requeue_interrupted = Bool(
        False,
        config=True,
        help="Re-queue every task that was running when the server stopped, at-least-once (like Celery's "
        "acks_late): it runs again from the start, its 'attempt' counting the runs. Off: only tasks "
        "submitted with requeue_on_restart: true are re-queued; the others fail 'interrupted'.",
    )
    max_workflow_tasks = Int(
        500,
        config=True,
        help="How many tasks one workflow batch may hold with the existing tasks it depends on "
        "(depends_on); a larger graph is refused with 400 and nothing stored.",
    )
    max_requeue_attempts = Int(
        3,
        config=True,
        help="How many times one task is re-queued after server stops (requeue_interrupted or "
        "requeue_on_restart); the next interruption fails it 'interrupted'. 0: never re-queue.",
    )
    emit_task_events = Bool(
        False,
        config=True,
        help="Emit task status events (id, name, owner, reason) on jupyter_server's event bus. Off by default: "
        "every user allowed to subscribe to /api/events/subscribe would see every user's tasks.",
    )

    # JupyterHub activity
    report_activity = Bool(
        True,
        config=True,
        help="While tasks run (or wait in a queue that is not paused), report activity in the server's "
        "last-activity time (/api/status 'last_activity', which JupyterHub's idle culler reads), so an "
        "idle server with work in flight is not culled. See jupyter_taskrun/server/activity.py.",
    )
    activity_interval = Float(
        60.0,
        min=0.1,
        config=True,
        help="Seconds between activity reports while tasks are in flight (JupyterHub's single-user server "
        "forwards the last activity to the Hub every 300 s by default, JUPYTERHUB_ACTIVITY_INTERVAL).",
    )

    # webhooks (server/webhooks.py): a task's callback_url gets a signed POST when the task ends
    webhook_secret = Unicode(
        "",
        config=True,
        help="Key of the HMAC-SHA256 signature of webhook bodies (header X-Taskrun-Signature: sha256=<hex>). "
        "Empty: deliveries are sent unsigned (a warning is logged once).",
    )
    webhook_retries = Int(3, config=True, help="Extra attempts of a webhook delivery after a failure (non-2xx answer or network error).")
    webhook_retry_delay = Float(
        1.0, config=True, help="Seconds before the first retry of a failed webhook delivery; each further retry waits twice as long."
    )
    webhook_timeout = Float(10.0, config=True, help="Seconds one webhook attempt may take (connecting and answering).")
    webhook_allowed_hosts = List(
        Unicode(),
        default_value=["*"],
        config=True,
        help="Host names a callback_url may target, as fnmatch patterns (e.g. ['hooks.example.org', '*.internal']); "
        "a submission naming another host is refused with 400.",
    )
    public_url = Unicode(
        "",
        config=True,
        help="The server's URL as others reach it, base_url included (e.g. https://hub.example.org/user/alice/): "
        "the links in webhook payloads start with it. Empty: the server's own connection URL.",
    )

    # schedules (server/scheduler.py)
    schedule_timezone = Unicode(
        "", config=True, help="Time zone of schedules that name none, as an IANA name (empty: the server's own zone)."
    )
    schedule_misfire_grace = Float(
        60.0,
        config=True,
        help="Seconds a firing may be late and still run as usual; a later one (the server was down, its clock "
        "jumped) is missed, and the schedule's catch_up decides: run_once fires once for the latest missed time, skip none.",
    )

    # variables (server/variables.py): %%taskrun --in / --out, variables_in / variables_out
    max_variable_bytes = Int(
        32 * 1024 * 1024,
        config=True,
        help="Largest pickle of one variable sent into a task (variables_in, decoded; also bounded by max_request_bytes) "
        "or back from it (variables_out). A bigger one is refused whole (400 at submission; at the end the variable "
        "carries the error and the task ends as it would have), never cut. Stored in the task database.",
    )
    max_task_variable_bytes = Int(
        128 * 1024 * 1024,
        config=True,
        help="Largest total of one task's pickled variables, in and out each; past it, variables are refused as by max_variable_bytes.",
    )

    # recorded values and artifacts (server/results.py, execution/artifacts.py): record(), outputs, inputs
    max_artifact_bytes = Int(
        32 * 1024 * 1024,
        config=True,
        help="Largest file a task's 'outputs' may collect; a bigger one is listed as refused (GET .../files), never cut.",
    )
    max_task_artifact_bytes = Int(
        128 * 1024 * 1024,
        config=True,
        help="Largest total of one task's collected 'outputs' files; files past it are listed as refused. Stored in the task database.",
    )
    max_artifacts = Int(1000, config=True, help="Most files one task's 'outputs' may collect; more are listed as refused.")
    max_staged_input_bytes = Int(
        256 * 1024 * 1024,
        config=True,
        help="Largest total of a Dask task's 'inputs', copied to its worker; past it the task fails naming the cap.",
    )

    @observe(*DEPRECATED_EXECUTOR_ALIASES)
    def _deprecated_executor_option(self, change: Any) -> None:
        self.__dict__.setdefault("_deprecated_set", set()).add(change.name)
        new = DEPRECATED_EXECUTOR_ALIASES[change.name]
        self.log.warning("taskrun: c.TaskRun.%s is deprecated; use c.DaskExecutor.%s", change.name, new)
