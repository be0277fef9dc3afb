"""4. SSE fan-out: 1,000 concurrent subscribers on one task emitting ~200 events.

All subscribers connect (real HTTP, raw asyncio sockets, in ``CLIENT_PROCS`` client processes of
250 each, so the client side is not the bottleneck: their CPU is reported) before the task's first
print, then the task prints ``TS i time.time()`` 200 times. Checked per subscriber: HTTP 200,
every line, event ids 1..last with no gap or duplicate, and the ``end`` event. Latency is
arrival − printed timestamp over every (subscriber, line). Server RSS is sampled with psutil
on the server pid. The server runs with ``--TaskRun.max_streams_per_user=2000``; the open-files
limit is raised for this process and the server.

Baseline, same run: the same task with a single subscriber (one client process) on the same server.
Also reported: socket reads per subscriber (how far the server coalesced its writes: one per event
when it keeps up, fewer, larger ones when it does not).
"""

from __future__ import annotations

import asyncio

from _common import (
    Context,
    Row,
    RssSampler,
    emit_table,
    fmt_ms,
    fmt_ratio,
    log,
    ratio,
    stamped_run,
    standalone,
    stats,
    taskrun_args,
)

SUBSCRIBERS = 1000
LINES = 200
INTERVAL = 0.02
MB = 1024 * 1024
#: client processes sharing the subscribers (asyncio, raw sockets; ~250 each)
CLIENT_PROCS = 4


def run(ctx: Context) -> list[Row]:
    srv = ctx.server(*taskrun_args(pool=1))
    log("fan-out: 1 subscriber (baseline)")
    one = asyncio.run(stamped_run(srv, subscribers=1, lines=LINES, interval=INTERVAL, procs=1))
    log(f"fan-out: {SUBSCRIBERS} subscribers")
    rss = RssSampler(srv.pid, 0.05)
    rss_before = srv.rss()
    rss.start()
    try:
        many = asyncio.run(stamped_run(srv, subscribers=SUBSCRIBERS, lines=LINES, interval=INTERVAL, procs=CLIENT_PROCS))
    finally:
        rss.stop()
    rss_after = srv.rss()
    s1, sn = stats(one["latencies"]), stats(many["latencies"])
    all_ok = many["complete"] == SUBSCRIBERS and one["complete"] == 1
    rows = []
    for label, r, s in (("1 subscriber", one, s1), (f"{SUBSCRIBERS} subscribers", many, sn)):
        rows.append([
            label, f"{r['stored_lines']}/{LINES}", f"{r['delivered']}/{r['subscribers']}", r["events"], s["n"],
            fmt_ms(s["p50"]), fmt_ms(s["p99"]), fmt_ms(s["max"]), f"{r['connect_s']:.1f}s",
            f"{r['chunks_per_sub']:.0f}",
            f"{r['client_procs']} x {r['client_cpu_max_s']:.1f}s max ({r['client_cpu_s']:.1f}s) / {r['stream_s']:.1f}s",
        ])  # fmt: skip
    emit_table(
        [
            "subscribers",
            "lines stored",
            "got all stored",
            "events",
            "lines recv",
            "p50",
            "p99",
            "max",
            "connect",
            "reads/sub",
            "client procs x CPU (sum) / stream time",
        ],
        rows,
        f"4. SSE FAN-OUT (server RSS: {rss_before / MB:.0f} MiB before, peak {rss.peak / MB:.0f} MiB, "
        f"{rss_after / MB:.0f} MiB after)" + (f"\n   problems: {many['problems']}" if many["problems"] else ""),
    )
    if many["client_cpu_max_s"] > 0.8 * many["stream_s"]:
        print("   note: a client process was CPU-bound; latencies include its own queueing", flush=True)
    return [
        Row("fan-out", f"{SUBSCRIBERS} subscribers: complete deliveries", f"{many['complete']}/{SUBSCRIBERS}",
            "all", all_ok, f"{many['events']} events each; {many['stored_lines']}/{LINES} lines stored by the server"),
        Row("fan-out", f"{SUBSCRIBERS} subscribers: p99 latency", fmt_ms(sn["p99"]), "<= 100 ms",
            all_ok and sn["p99"] <= 0.100, f"1 subscriber p99 {fmt_ms(s1['p99'])} ({fmt_ratio(ratio(sn['p99'], s1['p99']))}); "
            f"client CPU {many['client_cpu_s']:.1f}s in {many['client_procs']} processes over {many['stream_s']:.1f}s",
            raw=sn),
        Row("fan-out", "server RSS peak (growth)", f"{rss.peak / MB:.0f} MiB (+{(rss.peak - rss_before) / MB:.0f})", "", None,
            f"before {rss_before / MB:.0f} MiB"),
    ]  # fmt: skip


if __name__ == "__main__":
    standalone(run, __doc__.splitlines()[0])
