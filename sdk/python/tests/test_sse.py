"""The Server-Sent Events parser, on its own."""

from __future__ import annotations

from typing import List

from baton._sse import SseEvent, SseParser


def parse(text: str) -> List[SseEvent]:
    parser = SseParser()
    out = []
    for line in text.splitlines():
        ev = parser.feed(line)
        if ev is not None:
            out.append(ev)
    return out


def test_events_are_dispatched_at_blank_lines_with_their_data_lines_joined() -> None:
    text = 'event: transition\ndata: {"a":\ndata:1}\n\n: keep-alive\n\ndata: plain\nid: 7\n\n'
    assert parse(text) == [
        SseEvent("transition", '{"a":\n1}'),
        SseEvent("message", "plain", id="7"),
    ]


def test_crlf_lines_fields_without_space_and_events_without_data() -> None:
    text = "event: lagged\r\n\r\nevent:lagged\r\ndata:12\r\nretry: 500\r\nbogus: x\r\n\r\n"
    assert parse(text) == [SseEvent("lagged", "12", retry_ms=500)]


def test_an_unfinished_event_is_not_dispatched() -> None:
    assert parse("event: transition\ndata: {}\n") == []
