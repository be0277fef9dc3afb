"""2. Kernel ``print`` → SSE client latency.

A task prints ``TS i time.time()`` every 10 ms for ~3 s; a real HTTP SSE client (raw asyncio
socket, chunked decoding, connected before the first print) stamps each chunk on arrival;
latency = arrival − printed timestamp (same machine, same clock). A line counts as arrived
when the chunk holding its newline does (log chunks are not line-aligned).

Baseline, same run: a stock kernel (ipykernel's default 0.2 s output batching) read directly
over ZMQ with jupyter_client in one process — no server in between.
"""

from __future__ import annotations

import asyncio

from _common import (
    Context,
    Row,
    emit_table,
    fmt_ms,
    fmt_ratio,
    log,
    ratio,
    run_worker,
    stamped_run,
    standalone,
    stats,
    taskrun_args,
)

LINES = 300
INTERVAL = 0.01


def run(ctx: Context) -> list[Row]:
    srv = ctx.server(*taskrun_args(pool=1))
    lat: list[float] = []
    problems: list[str] = []
    runs = ctx.n(1, 3)
    for i in range(runs):
        log(f"streaming: run {i + 1}/{runs}")
        r = asyncio.run(stamped_run(srv, subscribers=1, lines=LINES, interval=INTERVAL))
        lat += r["latencies"]
        problems += r["problems"]
    log("streaming: stock kernel read directly (baseline)")
    base = run_worker(["direct-stream", "--lines", str(LINES), "--interval", str(INTERVAL)], timeout=180)["latencies"]
    s, b = stats(lat), stats(base)
    emit_table(
        ["path (print every 10 ms)", "lines", "p50", "p95", "max", "p50 vs baseline"],
        [
            [
                "taskrun: kernel -> server -> SSE client",
                s["n"],
                fmt_ms(s["p50"]),
                fmt_ms(s["p95"]),
                fmt_ms(s["max"]),
                fmt_ratio(ratio(s["p50"], b["p50"])),
            ],
            ["stock kernel -> jupyter_client (no server)", b["n"], fmt_ms(b["p50"]), fmt_ms(b["p95"]), fmt_ms(b["max"]), "1.00x"],
        ],
        "2. STREAMING" + (f"  (delivery problems: {problems})" if problems else ""),
    )
    vs = f"stock direct p50 {fmt_ms(b['p50'])} ({fmt_ratio(ratio(b['p50'], s['p50']))} slower)"
    delivered = not problems and s["n"] == LINES * runs
    return [
        Row("streaming", "print -> SSE p50", fmt_ms(s["p50"]), "<= 5 ms", delivered and s["p50"] <= 0.005, vs, raw=s),
        Row("streaming", "print -> SSE p95", fmt_ms(s["p95"]), "", None, f"stock direct p95 {fmt_ms(b['p95'])}"),
        Row("streaming", "print -> SSE max", fmt_ms(s["max"]), "<= 25 ms", delivered and s["max"] <= 0.025,
            f"stock direct max {fmt_ms(b['max'])}"),
    ]  # fmt: skip


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
