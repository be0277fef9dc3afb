"""Leading-edge output flushing for task kernels (ipykernel's ``OutStream``), as an exec line.

ipykernel sends printed text ``flush_interval`` after the *first* write of a batch, so every
``print`` of a task that prints now and then waits the whole interval (5 ms in task kernels:
print -> SSE p50 5.8 ms, of which 5 ms was this timer). ``LEADING_EDGE_FLUSH`` changes when,
not how: after a quiet interval, the batch is flushed as soon as a line is complete (a newline
is buffered; ``print`` writes its text and its ``"\\n"`` separately, so flushing at the first
write would split every line in two messages). A partial line still goes out after
``flush_interval``, as in stock ipykernel, and writes within the interval after a flush wait for
its end. So a chatty task keeps ipykernel's rate of about one stream message per
``flush_interval`` per stream (an early flush's own timer can add one more in that interval) and
the chunking of ``IPYKERNEL_TASK_SETUP``, and a sparse one sends each line at once.

``write`` itself is not wrapped: IPython re-binds it around every cell
(``InteractiveShell._tee``). ipykernel's ``write`` calls ``_schedule_flush`` after buffering
each write, which is where this looks, reading only what was written since its last look.
Flushes still happen on the IOPub thread; only ipykernel's master process (not a forked child,
which ipykernel flushes its own way) is changed.

It must run after ``IPYKERNEL_TASK_SETUP`` (``kernels.py``), in the same
``--IPKernelApp.exec_lines``; an ipykernel without these internals is left as it is.
"""

from __future__ import annotations

LEADING_EDGE_FLUSH = """\
import sys as __trs
def __trflush():
    import time
    needed = ("_schedule_flush", "_flush", "_flush_pending", "_io_loop", "pub_thread", "_buffers", "_buffer_lock", "_is_master_process")
    for out in (__trs.stdout, __trs.stderr):
        if not all(hasattr(out, a) for a in needed):
            continue
        def flushed(out=out, flush=out._flush):
            out._taskrun_flushed_at = time.monotonic()
            out._taskrun_eager = False
            out._taskrun_seen = {}
            flush()
        def line_done(out=out):
            # only what was written since the last look: a long partial line is not re-read per write
            with out._buffer_lock:
                for buf in out._buffers.values():
                    start, end = out._taskrun_seen.get(id(buf), 0), buf.tell()
                    if end > start:
                        buf.seek(start)
                        new = buf.read()
                        buf.seek(end)
                        out._taskrun_seen[id(buf)] = end
                        if "\\n" in new:
                            return True
            return False
        def schedule(out=out, line_done=line_done):
            # called after every write (ipykernel's write buffers, then asks for a flush)
            if not out._flush_pending:
                out._flush_pending = True
                eager = out._taskrun_eager = time.monotonic() - out._taskrun_flushed_at >= out.flush_interval
                def in_thread():
                    # eager: a partial line waits the whole interval, as in stock ipykernel; else what is left of it
                    wait = out.flush_interval if eager else out.flush_interval - (time.monotonic() - out._taskrun_flushed_at)
                    out._io_loop.call_later(max(0.0, wait), out._flush)
                out.pub_thread.schedule(in_thread)
            if out._taskrun_eager and out._is_master_process() and line_done():
                out._taskrun_eager = False
                out.pub_thread.schedule(out._flush)
        out._taskrun_flushed_at = 0.0
        out._taskrun_eager = False
        out._taskrun_seen = {}
        out._flush = flushed
        out._schedule_flush = schedule
__trflush()
del __trs, __trflush"""
