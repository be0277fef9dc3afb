"""``execution/flush.py``: a print after a quiet interval is sent at once, a chatty one is still
batched (at most one stream message per ``flush_interval``), nothing is lost or reordered.

Real ipykernel kernels over ZMQ (jupyter_client), each with the task kernels' own setup line
(``IPYKERNEL_TASK_SETUP``), compared in the same test with and without ``LEADING_EDGE_FLUSH``.
The intervals are long (0.2 s, 1 s) so that the assertions hold on a loaded machine.
"""

from __future__ import annotations

import time

import pytest
from jupyter_client.manager import AsyncKernelManager

from jupyter_taskrun.execution.flush import LEADING_EDGE_FLUSH
from jupyter_taskrun.execution.kernels import IPYKERNEL_TASK_SETUP, STREAM_CHUNK_CHARS

pytestmark = pytest.mark.timeout(180)


async def run_cell(code: str, flush_interval: float, leading_edge: bool) -> list[tuple[float, str]]:
    """(arrival time, text) of every stdout message the cell sends."""
    lines = [IPYKERNEL_TASK_SETUP.format(flush_interval=flush_interval, chunk=STREAM_CHUNK_CHARS)]
    if leading_edge:
        lines.append(LEADING_EDGE_FLUSH)
    km = AsyncKernelManager(kernel_name="python3")
    await km.start_kernel(
        extra_arguments=["--HistoryManager.enabled=False", "--IPKernelApp.capture_fd_output=False", f"--IPKernelApp.exec_lines={lines!r}"]
    )
    kc = km.client()
    kc.start_channels()
    try:
        await kc.wait_for_ready(timeout=60)
        msg_id = kc.execute(code)
        out = []
        while True:
            msg = await kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
                out.append((time.time(), msg["content"]["text"]))
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return out
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


# quiet for longer than the interval first (the kernel flushed at its start), then one print
SPARSE = "import time\ntime.sleep(1.2)\nprint(repr(time.time()))\ntime.sleep(1.5)"


async def test_a_print_after_a_quiet_interval_is_sent_at_once():
    stock = await run_cell(SPARSE, 1.0, leading_edge=False)
    edge = await run_cell(SPARSE, 1.0, leading_edge=True)
    (t_stock, text_stock), (t_edge, text_edge) = stock[0], edge[0]
    # stock ipykernel: the text waits for the 1 s timer; leading edge: it goes out right away
    assert t_stock - float(text_stock) >= 0.9
    assert t_edge - float(text_edge) < 0.5


CHATTY = "import time\nt = time.time()\ni = 0\nwhile time.time() - t < 1.0:\n    print(i)\n    i += 1\n    time.sleep(0.001)"


async def test_a_chatty_task_is_still_batched_and_nothing_is_lost():
    for leading_edge in (False, True):
        msgs = await run_cell(CHATTY, 0.2, leading_edge=leading_edge)
        numbers = [int(x) for x in "".join(t for _, t in msgs).split()]
        assert numbers == list(range(len(numbers))) and len(numbers) > 100
        # one message per 0.2 s over ~1 s of printing, plus the end-of-cell flush (and one of slack)
        assert len(msgs) <= 1.0 / 0.2 + 3, (leading_edge, len(msgs))


# each print after a quiet spell: its text and its newline (two writes) go out as one message
SPACED = (
    "import sys, time\nfor i in range(6):\n    time.sleep(0.3)\n    print('line', i, repr(time.time()))\n"
    "time.sleep(0.3)\nsys.stdout.write('partial ' + repr(time.time()))\ntime.sleep(0.6)"
)


async def test_each_spaced_print_is_one_whole_line_sent_at_once():
    stock = await run_cell(SPACED, 0.2, leading_edge=False)
    edge = await run_cell(SPACED, 0.2, leading_edge=True)
    lines = [f"line {i}" for i in range(6)] + ["partial"]
    assert [t.rsplit(" ", 1)[0] for _, t in stock] == lines
    assert [t.rsplit(" ", 1)[0] for _, t in edge] == lines  # the same messages as stock
    assert all(t.endswith("\n") for _, t in edge[:-1])
    # a partial line (no newline yet) still waits for the interval, as in stock ipykernel
    at, text = edge[-1]
    assert at - float(text.split()[-1]) >= 0.15, edge[-1]
    stock, edge = stock[:-1], edge[:-1]
    lag_stock = sorted(at - float(t.split()[-1]) for at, t in stock)
    lag_edge = sorted(at - float(t.split()[-1]) for at, t in edge)
    # stock waits for the 0.2 s timer (but the last line, flushed by the cell's end)
    assert lag_stock[len(lag_stock) // 2] >= 0.15, lag_stock
    assert lag_edge[len(lag_edge) // 2] < 0.1, lag_edge


# a line sent at once (t = 0), then within the interval (1 s) a print begun by a write with no
# newline (t = 0.5) and ended after the first line's timer is due (t = 1.25): that timer's batch
# was sent already, so it must not send the half-written line
BEGUN_AFTER_A_FLUSH = (
    "import sys, time\ntime.sleep(1.2)\nprint('first')\ntime.sleep(0.5)\n"
    "sys.stdout.write('second ' + repr(time.time()))\ntime.sleep(0.75)\nprint(' end')\ntime.sleep(1.0)"
)


async def test_a_timer_of_an_already_sent_batch_does_not_split_the_next_line():
    edge = await run_cell(BEGUN_AFTER_A_FLUSH, 1.0, leading_edge=True)
    texts = [t for _, t in edge]
    assert texts[0] == "first\n", texts
    # the next line is one message, sent the interval after its first write (as a batch in stock ipykernel)
    assert len(texts) == 2 and texts[1].startswith("second ") and texts[1].endswith(" end\n"), texts
    at, text = edge[1]
    assert at - float(text.split()[1]) >= 0.9, edge


# a line whose writer is held up between its two writes for 20 intervals (as a descheduled kernel
# is, under load), then a line that never ends (a progress bar's "\r" line)
HELD_UP_MID_LINE = (
    "import sys, time\ntime.sleep(0.5)\nsys.stdout.write('half')\ntime.sleep(0.1)\nsys.stdout.write(' line\\n')\n"
    "time.sleep(0.3)\nsys.stdout.write('\\r50% ' + repr(time.time()))\ntime.sleep(1.0)"
)


async def test_a_line_held_up_mid_way_stays_whole_and_an_endless_one_still_goes_out():
    stock = await run_cell(HELD_UP_MID_LINE, 0.005, leading_edge=False)
    edge = await run_cell(HELD_UP_MID_LINE, 0.005, leading_edge=True)
    # stock ipykernel at a 5 ms interval sends the text and its newline apart
    assert [t for _, t in stock][:2] == ["half", " line\n"], stock
    assert edge[0][1] == "half line\n", edge
    # the endless line waits for its newline at most about stock ipykernel's 0.2 s interval
    at, text = edge[1]
    assert text.startswith("\r50% ") and 0.15 <= at - float(text.split()[1]) < 0.8, edge
