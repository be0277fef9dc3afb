"""A client process of the fan-out benchmark: N raw-socket SSE subscribers on one task's stream.

``python benchmarks/_sse_clients.py PORT TOKEN PATH N TIMEOUT`` opens N connections (asyncio,
``_common.SSEClient``: it only stamps chunks while events arrive, parsing happens after), prints
``ready`` once every one has its first bytes, waits until every stream ends (or TIMEOUT seconds),
then prints one JSON line: this process's CPU seconds from ``ready`` to the end, the stream time,
and per client its HTTP status, the stamped lines ``[index, printed, arrived]``, the event ids, whether
``end`` came and how many chunks (socket reads) it took. Several of these share the subscribers so
that the client side is not the bottleneck of what is measured (``_common.stamped_run``).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time

from _common import open_sse, sse_request_for, stamped_lines


def cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def main(port: int, token: str, path: str, n: int, timeout: float) -> dict[str, object]:
    clients = await open_sse(sse_request_for(port, token, path), port, n)
    cpu0, t0 = cpu_seconds(), time.monotonic()
    print("ready", flush=True)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), timeout)
    finally:
        for c in clients:
            c.close()
    cpu, stream_s = cpu_seconds() - cpu0, time.monotonic() - t0
    out = []
    for c in clients:
        status, frames = c.frames()
        lines, ids, ended = stamped_lines(frames)
        out.append({"status": status, "lines": lines, "ids": ids, "ended": ended, "chunks": len(c.chunks)})
    return {"cpu_s": cpu, "stream_s": stream_s, "clients": out}


if __name__ == "__main__":
    port, token, path, n, timeout = sys.argv[1:6]
    result = asyncio.run(main(int(port), token, path, int(n), float(timeout)))
    print(json.dumps(result), flush=True)
