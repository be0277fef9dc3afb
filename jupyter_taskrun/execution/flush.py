"""Leading-edge output flushing for task kernels (ipykernel's ``OutStream``), as an exec line.

ipykernel sends printed text ``flush_interval`` after the *first* write of a batch, so every
``print`` of a task that prints now and then waits the whole interval (5 ms in task kernels:
print -> SSE p50 5.8 ms, of which 5 ms was this timer). ``LEADING_EDGE_FLUSH`` changes when,
not how: after a quiet interval, the batch is flushed as soon as a line is complete (a newline
is buffered; ``print`` writes its text and its ``"\\n"`` separately, so flushing at the first
write would split every line in two messages). Otherwise a batch goes out ``flush_interval``
after its first write, as in stock ipykernel, so a chatty task keeps ipykernel's rate of at most
one stream message per ``flush_interval`` per stream and the chunking of ``IPYKERNEL_TASK_SETUP``,
and a sparse one sends each line at once.

Lines stay whole under load. A batch that ends mid-line waits for the newline (re-checked every
``flush_interval``) up to ``PARTIAL_LINE_WAIT`` after its first write, stock ipykernel's own
interval: with a 5 ms interval, a kernel descheduled for 5 ms between ``print``'s two writes would
otherwise send the text and its newline apart, with other streams' lines in between. A line that
never ends (``end=""``, ``"\\r"`` progress bars) goes out after that wait. A timer whose batch an
earlier flush already sent does nothing (in stock ipykernel it fires anyway, into the next batch).

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
    PARTIAL_LINE_WAIT = 0.2  # ipykernel's default flush_interval
    needed = ("_schedule_flush", "_flush", "_flush_pending", "_io_loop", "pub_thread", "_buffers", "_buffer_lock", "_is_master_process")
    for out in (__trs.stdout, __trs.stderr):
        if not all(hasattr(out, a) for a in needed):
            continue
        def flushed(out=out, flush=out._flush):
            out._taskrun_flushed_at = time.monotonic()
            out._taskrun_eager = False
            out._taskrun_seen = {}
            out._taskrun_gen += 1
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
        def mid_line(out=out):
            with out._buffer_lock:
                for buf in out._buffers.values():
                    end = buf.tell()
                    if end:
                        buf.seek(end - 1)
                        last = buf.read(1)
                        if last != "\\n":
                            return True
            return False
        def schedule(out=out, line_done=line_done, mid_line=mid_line):
            # called after every write (ipykernel's write buffers, then asks for a flush)
            if not out._flush_pending:
                out._flush_pending = True
                out._taskrun_eager = time.monotonic() - out._taskrun_flushed_at >= out.flush_interval
                def timer(gen=out._taskrun_gen, began=time.monotonic()):
                    # a flush since this timer was set sent its text, and the next write set a timer
                    # of its own: this one firing early in that batch would split a print in two
                    if out._taskrun_gen != gen:
                        return
                    # a line being written (its newline not there yet: the writer may be descheduled
                    # between print's two writes) waits for its end, up to stock ipykernel's interval
                    if time.monotonic() - began < PARTIAL_LINE_WAIT and mid_line():
                        out._io_loop.call_later(out.flush_interval, timer)
                        return
                    out._flush()
                def in_thread():
                    out._io_loop.call_later(out.flush_interval, timer)
                out.pub_thread.schedule(in_thread)
            if out._taskrun_eager and out._is_master_process() and line_done():
                out._taskrun_eager = False
                out.pub_thread.schedule(out._flush)
        out._taskrun_flushed_at = 0.0
        out._taskrun_eager = False
        out._taskrun_seen = {}
        out._taskrun_gen = 0
        out._flush = flushed
        out._schedule_flush = schedule
__trflush()
del __trs, __trflush"""
