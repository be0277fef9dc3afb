"""6. A task printing 200 MB: server RSS growth, longest event-loop stall, total time.

On a fresh server (pool on): a task writes 200 MiB to stdout in 1 MiB writes of 1 KiB lines.
From outside, while it runs: psutil samples the server's RSS every 50 ms, and a client polls
``GET /taskrun/api/status`` every 10 ms on a keep-alive connection, recording each response
time — the longest one bounds the longest event-loop stall. Total = ``POST ?wait`` round trip.

Baselines, same run: the same probe while the server is idle (stall floor), and stock nbclient
executing the same cell in one process (its RSS growth and time: nbclient keeps every output).
"""

from __future__ import annotations

import statistics
import time

from _common import (
    Context,
    Row,
    RssSampler,
    StallProbe,
    emit_table,
    fmt_ms,
    fmt_ratio,
    log,
    ratio,
    run_worker,
    standalone,
    stats,
    submit_wait,
    taskrun_args,
)

MIB = 1024 * 1024


def big_code(mb: int) -> str:
    return f"import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range({mb}):\n    sys.stdout.write(chunk)\n"


def run(ctx: Context) -> list[Row]:
    mb = 200
    srv = ctx.server(*taskrun_args(pool=1), fresh=True)
    try:
        srv.wait_quiet(kernels=1, pool=1)
        submit_wait(srv, {"code": "print(1)"})  # warm-up: first-task costs are not the output's
        srv.wait_quiet(kernels=1, pool=1)
        probe = StallProbe(srv, 0.01)
        rss = RssSampler(srv.pid, 0.05)
        rss.start()
        probe.start()
        time.sleep(ctx.n(1.5, 3.0))
        t0 = time.monotonic()
        log(f"big output: task printing {mb} MiB")
        task, total = submit_wait(srv, {"code": big_code(mb), "name": "bigoutput"}, wait=1800)
        t1 = time.monotonic()
        time.sleep(1.0)
        probe.stop()
        rss.stop()
        rss_end = srv.rss()
    finally:
        ctx.stop_server(srv)
    idle_rss = statistics.median([v for t, v in rss.samples if t < t0] or [rss.samples[0][1]])
    peak = max(v for t, v in rss.samples if t >= t0)
    idle = stats([e for t, e in probe.times if t < t0])
    busy = stats([e for t, e in probe.times if t0 <= t <= t1])
    m = task["metrics"]
    log("big output: stock nbclient baseline")
    try:
        nb = run_worker(["nbclient-bigoutput", "--mb", str(mb)], timeout=1800)
        nb_growth, nb_total = nb["rss_peak"] - nb["rss_base"], nb["total_s"]
    except RuntimeError as e:
        log(f"nbclient baseline failed: {e}")
        nb_growth = nb_total = float("nan")
    growth = peak - idle_rss
    emit_table(
        ["run", "status", "total", "MB/s", "RSS growth (peak)", "longest /status", "/status p99", "probes"],
        [
            [
                f"taskrun, {mb} MiB task",
                task["status"],
                f"{total:.1f}s",
                f"{mb / total:.0f}",
                f"+{growth / MIB:.0f} MiB ({peak / MIB:.0f})",
                fmt_ms(busy["max"]),
                fmt_ms(busy["p99"]),
                busy["n"],
            ],
            ["taskrun, idle (same probe)", "-", "-", "-", "-", fmt_ms(idle["max"]), fmt_ms(idle["p99"]), idle["n"]],
            [
                f"stock nbclient, {mb} MiB cell",
                "-",
                f"{nb_total:.1f}s",
                f"{mb / nb_total:.0f}",
                f"+{nb_growth / MIB:.0f} MiB",
                "-",
                "-",
                "-",
            ],
        ],
        f"6. BIG OUTPUT (stored {m.get('output_bytes', 0) / MIB:.0f} MiB counted, truncated={m.get('output_truncated')}, "
        f"server RSS {rss_end / MIB:.0f} MiB 1 s after)",
    )
    ok_task = task["status"] == "completed"
    return [
        Row("big output", f"{mb} MiB: server RSS growth", f"{growth / MIB:.0f} MiB", "<= 64 MiB", ok_task and growth <= 64 * MIB,
            f"nbclient in-process +{nb_growth / MIB:.0f} MiB ({fmt_ratio(ratio(growth, nb_growth))})"),
        Row("big output", f"{mb} MiB: longest /status response", fmt_ms(busy["max"]), "<= 100 ms", ok_task and busy["max"] <= 0.100,
            f"idle max {fmt_ms(idle['max'])} ({fmt_ratio(ratio(busy['max'], idle['max']))})"),
        Row("big output", f"{mb} MiB: total time", f"{total:.1f}s", "", None,
            f"nbclient {nb_total:.1f}s ({fmt_ratio(ratio(total, nb_total))})"),
    ]  # fmt: skip


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
