"""The durable output channel: what a task kernel writes survives the kernel's death.

IOPub alone cannot promise that: output still buffered in the kernel (ipykernel
flushes every few ms) or queued in its ZMQ socket dies with the process. So an
ipykernel task kernel also writes everything into pipes whose read ends belong to
the process running the task (the server, or a Dask worker):

- **file descriptors 1 and 2** are pipes (ipykernel's own fd capture is off), so C-level
  writes, subprocesses and faulthandler's crash report land here at write time;
- **a tee pipe** (``TEE_FD_ENV``) gets every Python-level ``sys.stdout``/``sys.stderr``
  write, synchronously, before ipykernel buffers it: ``OutStream.echo`` is set to a
  writer of framed records (stream tag, length, UTF-8 bytes; each frame at most
  ``PIPE_BUF`` bytes, so frames from threads or forked children never interleave).

A pipe's content outlives its writer, so at death the reader still has it.

Reconciliation, without duplicates: each frame also names the request it was written for
(the msg_id in IOPub's parent header). IOPub delivers a stream's text for one request in
write order, so what IOPub has delivered is always a prefix of the tee's text for that
(stream, request). ``confirm()`` counts what IOPub delivered; ``take_unconfirmed()``
returns the rest for the task's own requests - empty when nothing was lost. Memory stays bounded: the reader stops reading the
tee while more than ``max_pending_chars`` are unconfirmed, which makes the kernel wait
in its write (back-pressure, never loss).
"""

from __future__ import annotations

import codecs
import contextlib
import os
import struct
from collections import deque
from typing import Any

#: the kernel finds the tee's file descriptor number here (see ``TEE_SETUP``)
TEE_FD_ENV = "JUPYTER_TASKRUN_TEE_FD"

#: frame header: stream tag (b"o" stdout, b"e" stderr), parent msg_id length, payload length;
#: then the msg_id of the request the text was written for (IOPub's parent header), then the text
_HEADER = struct.Struct("<cBH")
#: one write() of at most PIPE_BUF bytes to a pipe is atomic (POSIX)
FRAME_MAX = 4096
STREAMS = {b"o": "stdout", b"e": "stderr"}

#: Run in the kernel at start (part of ``IPYKERNEL_TASK_SETUP``): Python-level writes
#: are teed into the pipe; faulthandler reports fatal signals on fd 2 (also a pipe).
TEE_SETUP = """\
def __trtee():
    import faulthandler, os, struct, sys
    fd = os.environ.pop("JUPYTER_TASKRUN_TEE_FD", None)
    if fd is None:
        return
    fd = int(fd)
    os.set_inheritable(fd, False)  # a task's subprocesses write to fds 1 and 2, not here
    header = struct.Struct("<cBH")
    class Tee:
        def __init__(self, out, tag):
            self.out, self.tag = out, tag
        def write(self, text):
            try:
                parent = self.out.parent_header.get("msg_id", "") or ""
            except Exception:
                parent = ""
            pid = parent.encode("utf-8", "replace")[:255]
            room = 4096 - header.size - len(pid)
            data = text.encode("utf-8", "surrogatepass")
            for i in range(0, len(data), room):
                chunk = data[i:i + room]
                frame = header.pack(self.tag, len(pid), len(chunk)) + pid + chunk
                while frame:  # a blocking pipe write of <= PIPE_BUF bytes is whole; loop anyway (EINTR)
                    frame = frame[os.write(fd, frame):]
            return len(text)
        def flush(self):
            pass
    for out, tag in ((sys.stdout, b"o"), (sys.stderr, b"e")):
        if hasattr(out, "echo"):
            out.echo = Tee(out, tag)
    faulthandler.enable(file=sys.__stderr__, all_threads=True)
__trtee()
del __trtee"""


class _Pending:
    """Unconfirmed text of one (stream, request) as a queue of chunks from absolute offset ``base``.

    Appending and dropping a confirmed prefix cost O(chunks touched), never a copy of the whole
    text: the tee may run megabytes ahead of IOPub, and a ``str +=`` / slice per 4 KiB frame
    would make a 30 MB output quadratic.
    """

    __slots__ = ("chunks", "base", "length")

    def __init__(self, base: int = 0):
        self.chunks: deque[str] = deque()
        self.base = base
        self.length = 0

    @property
    def end(self) -> int:
        return self.base + self.length

    def append(self, text: str) -> None:
        if text:
            self.chunks.append(text)
            self.length += len(text)

    def drop_to(self, offset: int) -> None:
        """Forget the text before absolute ``offset``."""
        cut = min(offset - self.base, self.length)
        while cut > 0 and self.chunks:
            head = self.chunks[0]
            if len(head) <= cut:
                self.chunks.popleft()
                cut -= len(head)
                self.base += len(head)
                self.length -= len(head)
            else:
                self.chunks[0] = head[cut:]
                self.base += cut
                self.length -= cut
                cut = 0

    def take(self) -> str:
        text = "".join(self.chunks)
        self.chunks.clear()
        self.base += self.length
        self.length = 0
        return text


class DurableOutput:
    """The reading side of one kernel's durable pipes (and their creation)."""

    def __init__(self, *, max_pending_chars: int = 8 * 1024 * 1024):
        self.max_pending_chars = max_pending_chars
        self._fds: dict[str, tuple[int, int]] = {}
        for name in ("stdout", "stderr", "tee"):
            r, w = os.pipe()
            os.set_blocking(r, False)
            self._fds[name] = (r, w)
        self._decoders: dict[Any, Any] = {key: codecs.getincrementaldecoder("utf-8")("replace") for key in ("stdout", "stderr")}
        self._frame = b""
        #: per (stream, parent msg_id): tee text not yet confirmed by IOPub
        self._pending: dict[tuple[str, str], _Pending] = {}
        #: per (stream, parent msg_id): how many characters IOPub has delivered
        self._confirmed: dict[tuple[str, str], int] = {}
        #: in which order keys first appeared: unconfirmed text comes back in writing order
        self._order: list[tuple[str, str]] = []
        self.closed = False

    # -- kernel side -----------------------------------------------------------

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the kernel's Popen (through jupyter_client's launcher)."""
        return {"stdout": self._fds["stdout"][1], "stderr": self._fds["stderr"][1], "pass_fds": (self._fds["tee"][1],)}

    def env(self) -> dict[str, str]:
        return {TEE_FD_ENV: str(self._fds["tee"][1])}

    def close_child_ends(self) -> None:
        """After the spawn: only the kernel holds the write ends, so the pipes end with it."""
        for name, (r, w) in list(self._fds.items()):
            if w >= 0:
                with contextlib.suppress(OSError):
                    os.close(w)
                self._fds[name] = (r, -1)

    # -- reading side ----------------------------------------------------------

    def fileno(self, name: str) -> int:
        return self._fds[name][0]

    @property
    def tee_paused(self) -> bool:
        return self.pending_chars() > self.max_pending_chars

    def pending_chars(self) -> int:
        return sum(p.length for p in self._pending.values())

    def drain(self, *, tee: bool = True) -> list[tuple[str, str]]:
        """Read what is available now (never blocks); returns fd 1/2 text as (stream, text).

        Tee frames are absorbed into the unconfirmed text, not returned.
        """
        chunks: list[tuple[str, str]] = []
        if self.closed:
            return chunks
        for name in ("stdout", "stderr"):
            data = self._read_all(self._fds[name][0])
            if data:
                text = self._decoders[name].decode(data)
                if text:
                    chunks.append((name, text))
        if tee:
            data = self._read_all(self._fds["tee"][0], limit=None if not self.tee_paused else 0)
            if data:
                self._absorb_frames(data)
        return chunks

    def _read_all(self, fd: int, limit: int | None = None) -> bytes:
        if limit == 0:
            return b""
        parts: list[bytes] = []
        got = 0
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            parts.append(data)
            got += len(data)
            if got >= (1 << 22):  # at most 4 MiB per call: the loop stays responsive
                break
        return b"".join(parts)

    def _absorb_frames(self, data: bytes) -> None:
        buf = self._frame + data
        pos = 0
        size = _HEADER.size
        while len(buf) - pos >= size:
            tag, plen, length = _HEADER.unpack_from(buf, pos)
            if len(buf) - pos - size < plen + length:
                break
            stream = STREAMS.get(tag)
            parent = buf[pos + size : pos + size + plen].decode("utf-8", "replace")
            payload = buf[pos + size + plen : pos + size + plen + length]
            pos += size + plen + length
            if stream is None:
                continue
            key = (stream, parent)
            decoder = self._decoders.get(key)
            if decoder is None:
                decoder = self._decoders[key] = codecs.getincrementaldecoder("utf-8")("replace")
            self._add_tee(key, decoder.decode(payload))
        self._frame = buf[pos:]

    def _add_tee(self, key: tuple[str, str], text: str) -> None:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
            self._confirmed.setdefault(key, 0)
            self._order.append(key)
        pending.append(text)
        pending.drop_to(self._confirmed[key])  # IOPub may already have delivered it

    def tee_marks(self) -> dict[tuple[str, str], int]:
        """How far each key's Python-level text has been read from the tee (absolute offsets)."""
        return {k: p.end for k, p in self._pending.items() if p.length}

    def delivered(self, marks: dict[tuple[str, str], int]) -> bool:
        """IOPub has delivered every key up to ``marks``."""
        return all(self._confirmed.get(k, 0) >= n for k, n in marks.items())

    def confirm(self, stream: str, text: str, parent: str) -> None:
        """IOPub delivered ``text`` on ``stream`` for the request ``parent`` (a msg_id)."""
        key = (stream, parent or "")
        confirmed = self._confirmed[key] = self._confirmed.get(key, 0) + len(text)
        pending = self._pending.get(key)
        if pending is not None:
            pending.drop_to(confirmed)

    def take_unconfirmed(self, parents: set[str]) -> list[tuple[str, str]]:
        """The Python-level text IOPub never delivered for these requests (the task's cells),
        in writing order; it counts as delivered now. Other requests' text (a kernel's start,
        a pool warm-up) is not the task's."""
        out = []
        for key in self._order:
            pending = self._pending.get(key)
            if pending is not None and pending.length and key[1] in parents:
                out.append((key[0], pending.take()))
                self._confirmed[key] = max(self._confirmed[key], pending.base)
        return out

    def forget(self, parents_to_keep: set[str]) -> None:
        """Drop what is held for other requests: their text is never shown, only bounded."""
        for key, pending in self._pending.items():
            if key[1] not in parents_to_keep:
                pending.take()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for r, w in self._fds.values():
            for fd in (r, w):
                if fd >= 0:
                    with contextlib.suppress(OSError):
                        os.close(fd)
