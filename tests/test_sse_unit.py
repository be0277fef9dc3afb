"""Unit tests of ``client/sse.py`` (no server, no socket): the SSE decoder and the stream state machine.

The decoder follows the WHATWG ``text/event-stream`` rules whatever the chunking; the state machine
resumes after the last delivered id, drops what a reconnect replays, and retries within bounds
(a fake clock drives the back-off).
"""

from __future__ import annotations

import pytest

from jupyter_taskrun.client import TaskRunConnectionError, TaskRunHTTPError
from jupyter_taskrun.client.sse import SSE, Backoff, SSEDecoder, StreamState, change_item, task_event_item

STREAM = (
    b": keepalive\n\n"
    b'retry: 2000\nid: 7\nevent: hello\ndata: {"last_event_id": 7}\n\n'
    b"id: 8\nevent: log\ndata: line one\ndata: line two\n\n"
    b": comment between frames\n"
    b"id: 9\ndata: \xc3\xa9t\xc3\xa9\n\n"
    b'event: end\ndata: {"status": "completed"}\n\n'
)
FRAMES = [
    SSE("hello", '{"last_event_id": 7}', "7"),
    SSE("log", "line one\nline two", "8"),
    SSE("message", "\u00e9t\u00e9", "9"),
    SSE("end", '{"status": "completed"}', None),
]


def decode(*chunks: bytes | str) -> tuple[list[SSE], SSEDecoder]:
    decoder = SSEDecoder()
    frames = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames, decoder


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------


def test_frames_fields_comments_and_retry():
    frames, decoder = decode(STREAM)
    assert frames == FRAMES
    assert decoder.retry == 2000
    assert decoder.last_id == "9"  # the stream's last event id; the end frame has none of its own


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline):
    assert decode(STREAM.replace(b"\n", newline))[0] == FRAMES


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_split_anywhere_even_inside_crlf_and_utf8(size, newline):
    data = STREAM.replace(b"\n", newline)
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    assert decode(*chunks)[0] == FRAMES


def test_crlf_split_between_chunks_is_one_line_ending():
    # a CR ending one chunk and the LF opening the next must not make an empty line (a dispatch)
    frames, _ = decode(b"data: a\r", b"\ndata: b\r\n\r\n")
    assert frames == [SSE("message", "a\nb", None)]


def test_text_chunks_too():
    assert decode(STREAM.decode("utf-8"))[0] == FRAMES


def test_heartbeats_and_empty_frames_dispatch_nothing():
    frames, _ = decode(b": keepalive\n\n: keepalive\n\n\n\nevent: log\n\nid: 3\n\n")
    assert frames == []


def test_field_parsing_rules():
    frames, decoder = decode(
        b"\xef\xbb\xbfdata:no space\n\n"  # a leading BOM is dropped; the space after the colon is optional
        b"data:  two spaces\n\n"  # only one space is removed
        b"data\n\n"  # a field with no colon has an empty value
        b"data: x\nunknown: ignored\nevent\n\n"  # unknown fields are ignored; empty event → "message"
        b"id: bad\x00id\ndata: nul\n\n"  # an id containing NUL is ignored
        b"retry: 12s\nretry: 1.5\ndata: r\n\n"  # retry only when all digits
    )
    assert frames == [
        SSE("message", "no space", None),
        SSE("message", " two spaces", None),
        SSE("message", "", None),
        SSE("message", "x", None),
        SSE("message", "nul", None),
        SSE("message", "r", None),
    ]
    assert decoder.last_id is None and decoder.retry is None


def test_an_unfinished_frame_is_not_dispatched():
    frames, _ = decode(b"id: 1\ndata: complete\n\nid: 2\ndata: cut short")
    assert frames == [SSE("message", "complete", "1")]


def test_invalid_utf8_is_replaced_not_fatal():
    assert decode(b"data: \xff\xfe ok\n\n")[0] == [SSE("message", "\ufffd\ufffd ok", None)]


# ---------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------


def test_task_events_and_changes():
    event = {"task_id": "t", "seq": 3, "type": "log", "time": 1.0, "data": {"text": "x"}}
    assert task_event_item(SSE("log", "", "3"), event, "t") is event
    assert task_event_item(SSE("end", "", None), {"status": "failed"}, "t") == {
        "task_id": "t",
        "seq": None,
        "type": "end",
        "time": None,
        "data": {"status": "failed"},
    }
    assert task_event_item(SSE("odd", "", "4"), "text", "t")["seq"] == 4
    assert change_item(SSE("hello", "", "7"), {"last_event_id": 7}) is None
    assert change_item(SSE("status", "", "8"), {"seq": 8}) == {"seq": 8}


# ---------------------------------------------------------------------------
# Resume state machine
# ---------------------------------------------------------------------------


def frame(seq: int, event: str = "log") -> bytes:
    return f'id: {seq}\nevent: {event}\ndata: {{"seq": {seq}}}\n\n'.encode()


def test_resume_point_is_the_last_delivered_id():
    state = StreamState(None)
    assert state.resume() == ({}, {})
    state.opened()
    assert [s.id for s, _ in state.receive(frame(4) + frame(5))] == ["4", "5"]
    assert state.resume() == ({"after": 5}, {"Last-Event-ID": "5"})
    assert StreamState(0).resume() == ({"after": 0}, {"Last-Event-ID": "0"})


def test_no_duplicate_after_reconnect_and_the_id_carries_over():
    state = StreamState(2, stop_event="end")
    state.opened()
    assert [p["seq"] for _, p in state.receive(frame(3) + frame(4) + b'id: 5\ndata: {"se')] == [3, 4]
    state.read_failed(ConnectionError("reset"))  # the connection drops inside frame 5
    assert state.lost() == pytest.approx(0.1)
    assert state.resume() == ({"after": 4}, {"Last-Event-ID": "4"})
    state.opened()  # a new connection: the half frame is gone, the server replays from 3
    items = state.receive(frame(3) + frame(4) + frame(5) + frame(6))
    assert [p["seq"] for _, p in items] == [5, 6]
    # the end frame carries no id of its own: neither a duplicate nor a move of the resume point
    items = state.receive(b'event: end\ndata: {"status": "completed"}\n\n' + frame(7))
    assert [s.event for s, _ in items] == ["end"] and state.ended
    assert state.last == 6


def test_seq_from_the_payload_when_the_frame_has_no_id():
    state = StreamState(None)
    state.opened()
    items = state.receive(b'data: {"seq": 1}\n\ndata: {"seq": 1}\n\ndata: {"seq": 2}\n\ndata: plain\n\n')
    assert [p if isinstance(p, str) else p["seq"] for _, p in items] == [1, 2, "plain"]


def test_first_connection_failure_is_final():
    state = StreamState(0)
    with pytest.raises(TaskRunConnectionError, match="cannot open the event stream"):
        state.open_failed(ConnectionRefusedError(), "http://x/")
    refusal = TaskRunHTTPError(503, "unavailable", "busy")
    with pytest.raises(TaskRunHTTPError):
        state.open_failed(refusal, "http://x/")


def test_later_failures_retry_only_what_is_retryable():
    state = StreamState(0)
    state.opened()
    assert state.open_failed(ConnectionRefusedError(), "http://x/") == pytest.approx(0.1)
    assert state.open_failed(TaskRunHTTPError(429, "too-many-streams", "busy"), "http://x/") == pytest.approx(0.2)
    with pytest.raises(TaskRunHTTPError):
        state.open_failed(TaskRunHTTPError(404, "not-found", "gone"), "http://x/")
    state.opened()  # success resets the back-off
    assert state.open_failed(ConnectionResetError(), "http://x/") == pytest.approx(0.1)


def test_no_reconnect_means_a_drop_is_final():
    state = StreamState(0, reconnect=False)
    state.opened()
    state.read_failed(ConnectionError("the server closed the event stream"))
    with pytest.raises(TaskRunConnectionError, match="interrupted.*closed"):
        state.lost()
    with pytest.raises(TaskRunConnectionError):
        state.open_failed(ConnectionRefusedError(), "http://x/")


def test_deadline_bounds_reads_and_reconnects():
    clock = FakeClock()
    state = StreamState(0, deadline=clock.now + 10, read_timeout=60, clock=clock)
    assert state.connect_timeout(30) == pytest.approx(10)
    state.opened()
    assert state.read_timeout() == pytest.approx(10)
    clock.now += 9.95
    assert state.read_timeout() == pytest.approx(0.05)
    state.read_failed(ConnectionError("reset"))
    assert state.lost() == pytest.approx(0.05)  # a retry delay never passes the deadline
    clock.now += 1
    with pytest.raises(TimeoutError):
        state.read_timeout()
    with pytest.raises(TimeoutError):
        state.read_failed(TimeoutError())
    with pytest.raises(TimeoutError):
        state.open_failed(ConnectionRefusedError(), "http://x/")
    assert state.connect_timeout(30) == pytest.approx(0.01)
    assert StreamState(0, read_timeout=60).read_timeout() == 60


# ---------------------------------------------------------------------------
# Back-off bounds
# ---------------------------------------------------------------------------


def test_backoff_doubles_to_five_seconds_and_resets():
    clock = FakeClock()
    backoff = Backoff(budget=1000, clock=clock)
    delays = [backoff.next_delay(ConnectionError(), None) for _ in range(9)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])
    backoff.reset()
    assert backoff.next_delay(ConnectionError(), None) == pytest.approx(0.1)


def test_backoff_honours_retry_after_up_to_thirty_seconds():
    backoff = Backoff(budget=1000, clock=FakeClock())
    assert backoff.next_delay(TaskRunHTTPError(429, "busy", "busy", retry_after=2), None) == 2
    assert backoff.next_delay(TaskRunHTTPError(503, "busy", "busy", retry_after=3600), None) == 30
    assert backoff.next_delay(TaskRunHTTPError(503, "busy", "busy"), None) == pytest.approx(0.4)


def test_backoff_gives_up_after_its_budget():
    clock = FakeClock()
    backoff = Backoff(budget=30, clock=clock)
    backoff.next_delay(ConnectionError(), None)
    clock.now += 30
    backoff.next_delay(ConnectionError(), None)  # still within the budget
    clock.now += 0.5
    with pytest.raises(TaskRunConnectionError, match="not re-established within 30 s: refused"):
        backoff.next_delay(ConnectionRefusedError("refused"), None)


def test_backoff_respects_the_deadline():
    clock = FakeClock()
    backoff = Backoff(budget=1000, clock=clock)
    assert backoff.next_delay(TaskRunHTTPError(503, "busy", "busy", retry_after=20), clock.now + 1.5) == 1.5
    with pytest.raises(TimeoutError):
        backoff.next_delay(ConnectionError(), clock.now)
