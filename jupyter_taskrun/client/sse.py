"""Server-Sent Events, without I/O: the frame decoder and the resume / reconnect state machine.

Both clients (``sync.py``, ``aio.py``) do only the I/O of an event stream (open a connection, read
bytes, sleep) and leave every decision to the objects here, so the two cannot drift apart and the
rules are unit-tested without a server (``tests/test_sse_unit.py``).

``SSEDecoder`` follows the WHATWG ``text/event-stream`` rules: lines end in CRLF, LF or CR (also when
a CRLF is split between two chunks); a leading BOM is dropped; ``:`` lines are comments (keep-alives);
``data`` lines join with ``\\n``; a frame without data dispatches nothing; ``id`` containing NUL is
ignored; ``retry`` is kept only when it is all digits; a field name with no colon has an empty value;
an unfinished frame at the end of the stream is dropped. Bytes may be fed in pieces of any size,
even inside a UTF-8 sequence.

``StreamState`` guarantees, for one logical stream across any number of connections:

* **resume**: every reconnection asks for what follows the last *delivered* sequence number
  (``?after=N`` and ``Last-Event-ID: N``);
* **no duplicate**: a frame whose own ``id`` is not above the last delivered one is dropped
  (replayed after a reconnect). Frames with no ``id`` of their own (``end``) neither move the
  resume point nor are mistaken for duplicates;
* **bounded retrying**: the first connection's failure is final (the caller learns at once that the
  URL, token or task is wrong); later ones retry after 0.1 s doubling to 5 s (at least the server's
  ``Retry-After``, at most 30 s of it), only for connection failures and ``429/502/503/504``, and give
  up with ``TaskRunConnectionError`` after ``reconnect_budget`` seconds of failing; the caller's
  ``deadline`` bounds everything (``TimeoutError``).
"""

from __future__ import annotations

import codecs
import json
import re
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import TaskRunConnectionError, TaskRunHTTPError

__all__ = ["SSE", "Backoff", "SSEDecoder", "StreamState", "change_item", "task_event_item"]


class SSE(NamedTuple):
    """One dispatched frame. ``id`` is the frame's own ``id`` field (None without one)."""

    event: str
    data: str
    id: str | None


_LINE_END = re.compile(r"\r\n|\r|\n")


class SSEDecoder:
    """Incremental parser of ``text/event-stream``: feed bytes (or text) in any pieces, get frames."""

    def __init__(self) -> None:
        #: the stream's last event ID buffer (inherited by frames without an id, as in EventSource)
        self.last_id: str | None = None
        #: the server's reconnection time hint (ms), if it sent one
        self.retry: int | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._partial = ""
        self._after_cr = False  # the last piece ended in CR: a LF opening the next one belongs to it
        self._started = False
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, chunk: bytes | str) -> list[SSE]:
        """The frames completed by ``chunk`` (possibly none), in order."""
        text = self._utf8.decode(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk
        if not text:
            return []
        if not self._started:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        if self._after_cr and text.startswith("\n"):
            text = text[1:]
        self._after_cr = text.endswith("\r")
        lines = _LINE_END.split(self._partial + text)
        self._partial = lines.pop()  # the unfinished last line ("" when the chunk ended a line)
        frames = []
        for line in lines:
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        return frames

    def _line(self, line: str) -> SSE | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # comment / keep-alive
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\x00" not in value:
            self._id = self.last_id = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> SSE | None:
        frame = None
        if self._data:
            frame = SSE(self._event or "message", "\n".join(self._data), self._id)
        self._event, self._data, self._id = "", [], None
        return frame


def int_id(value: Any) -> int | None:
    """A sequence number from an SSE id or a JSON ``seq`` (None if it is not one)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return None


def decode_payload(sse: SSE) -> Any:
    """The frame's JSON data, or its text when it is not JSON."""
    try:
        return json.loads(sse.data)
    except ValueError:
        return sse.data


def task_event_item(sse: SSE, payload: Any, task_id: str) -> dict[str, Any]:
    """A task stream frame as the event dict ``{"task_id", "seq", "type", "time", "data"}``."""
    if sse.event == "end":
        data = payload if isinstance(payload, dict) else {"status": payload}
        return {"task_id": task_id, "seq": None, "type": "end", "time": None, "data": data}
    if isinstance(payload, dict) and "type" in payload and "data" in payload:
        return payload
    return {"task_id": task_id, "seq": int_id(sse.id), "type": sse.event, "time": None, "data": payload}


#: protocol-level events of the change feed (e.g. ``hello`` carries the resume point of a fresh
#: client); they move the resume point but are not changes
FEED_CONTROL_EVENTS = {"hello"}


def change_item(sse: SSE, payload: Any) -> dict[str, Any] | None:
    """A change feed frame as the change dict, or None for protocol frames."""
    if sse.event in FEED_CONTROL_EVENTS or not isinstance(payload, dict):
        return None
    return payload


#: refusals worth retrying when re-opening a dropped stream (429: the server may not have
#: noticed the old connection is gone and still counts it against the per-user stream limit)
RETRYABLE_STATUSES = {429, 502, 503, 504}


class Backoff:
    """Reconnection delays: 0.1 s doubling to 5 s; gives up after ``budget`` s of failures.

    The server's ``retry:`` hint (2 s on the change feed, meant for browsers' EventSource) is not
    used: a drop is usually a proxy or network blip, and resuming fast costs nothing.
    """

    FIRST = 0.1
    MAX = 5.0
    #: a server's Retry-After is honoured up to this many seconds
    MAX_RETRY_AFTER = 30.0

    def __init__(self, budget: float, clock: Callable[[], float] = time.monotonic):
        self.budget = budget
        self.clock = clock
        self.reset()

    def reset(self) -> None:
        self.delay = self.FIRST
        self.failing_since: float | None = None

    def next_delay(self, error: BaseException, deadline: float | None) -> float:
        """Seconds to wait before the next attempt; raises when it is time to give up."""
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.budget:
            raise TaskRunConnectionError(f"event stream lost and not re-established within {self.budget:g} s: {describe(error)}") from error
        if deadline is not None and now >= deadline:
            raise TimeoutError("timed out while reconnecting the event stream")
        delay = self.delay
        if isinstance(error, TaskRunHTTPError) and error.retry_after:
            delay = max(delay, min(error.retry_after, self.MAX_RETRY_AFTER))
        self.delay = min(self.delay * 2, self.MAX)
        if deadline is not None:
            delay = min(delay, max(0.0, deadline - now))
        return delay


def describe(error: BaseException | None) -> str:
    """An error as text, never empty (``str(TimeoutError())`` is)."""
    if error is None:
        return "stream closed"
    return str(error) or type(error).__name__


class StreamState:
    """The resume / reconnect state machine of one logical event stream (see the module docstring).

    A client's loop: ``resume()`` → open with ``connect_timeout()``; on failure sleep
    ``open_failed(e, url)``; else ``opened()``, then repeatedly read with ``read_timeout()`` and
    pass the bytes to ``receive()`` (yield what it returns; stop once ``ended``), or on a read error
    / EOF call ``read_failed(e)``; after a lost connection sleep ``lost()`` and start over.
    Every method that can end the stream raises instead of returning.
    """

    def __init__(
        self,
        after: int | None,
        *,
        reconnect: bool = True,
        deadline: float | None = None,
        reconnect_budget: float = 30.0,
        read_timeout: float = 60.0,
        stop_event: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        #: the last delivered sequence number (the resume point)
        self.last: int | None = after
        self.reconnect = reconnect
        self.deadline = deadline
        self.stream_read_timeout = read_timeout
        self.stop_event = stop_event
        self.backoff = Backoff(reconnect_budget, clock)
        self.clock = clock
        #: a connection was opened once: from then on failures are retried
        self.connected = False
        #: the stop event was delivered: the stream is over
        self.ended = False
        self.decoder = SSEDecoder()
        self._error: BaseException | None = None

    # -- connecting ------------------------------------------------------

    def resume(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Query parameters and headers of the next connection."""
        if self.last is None:
            return {}, {}
        return {"after": self.last}, {"Last-Event-ID": str(self.last)}

    def _past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def connect_timeout(self, limit: float) -> float:
        """``limit``, shortened to what is left before the deadline."""
        if self.deadline is None:
            return limit
        return max(0.01, min(limit, self.deadline - self.clock()))

    def open_failed(self, error: BaseException, url: str) -> float:
        """Seconds to wait before retrying a failed connection; raises if it must not be retried."""
        if isinstance(error, TaskRunHTTPError):
            if not self.connected or not self.reconnect or error.status not in RETRYABLE_STATUSES:
                raise error
            return self.backoff.next_delay(error, self.deadline)
        if self._past_deadline():
            raise TimeoutError("timed out connecting to the event stream") from None
        if not self.connected or not self.reconnect:
            raise TaskRunConnectionError(f"cannot open the event stream at {url}: {describe(error)}") from None
        return self.backoff.next_delay(error, self.deadline)

    def opened(self) -> None:
        """A connection is established (its frames start afresh; the resume point stays)."""
        self.connected = True
        self.backoff.reset()
        self.decoder = SSEDecoder()
        self._error = None

    # -- reading -----------------------------------------------------------

    def read_timeout(self) -> float:
        """How long the next read may wait: silence this long means a dead connection."""
        if self.deadline is None:
            return self.stream_read_timeout
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise TimeoutError("timed out waiting for task events")
        return min(self.stream_read_timeout, remaining)

    def receive(self, chunk: bytes | str) -> list[tuple[SSE, Any]]:
        """The new ``(frame, payload)`` pairs in ``chunk``, up to and including the stop event."""
        out = []
        for sse in self.decoder.feed(chunk):
            payload = decode_payload(sse)
            if not self.accept(sse, payload):
                continue
            out.append((sse, payload))
            if self.stop_event is not None and sse.event == self.stop_event:
                self.ended = True
                break
        return out

    def accept(self, sse: SSE, payload: Any) -> bool:
        """True if the frame is new (and moves the resume point); False for one already delivered."""
        seq = int_id(sse.id)
        if seq is None and isinstance(payload, dict):
            seq = int_id(payload.get("seq"))
        if seq is None:
            return True
        if self.last is not None and seq <= self.last:
            return False
        self.last = seq
        return True

    def read_failed(self, error: BaseException) -> None:
        """The connection broke (or ended, or fell silent); raises TimeoutError past the deadline."""
        if self._past_deadline():
            raise TimeoutError("timed out waiting for task events") from None
        self._error = error

    def lost(self) -> float:
        """Seconds to wait before reconnecting; raises if the stream must not be resumed."""
        if not self.reconnect:
            raise TaskRunConnectionError(f"event stream interrupted: {describe(self._error)}")
        return self.backoff.next_delay(self._error or ConnectionError("stream closed"), self.deadline)
