"""A Server-Sent Events parser (the WHATWG ``text/event-stream`` format), fed line by line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

MESSAGE = "message"


@dataclass(frozen=True)
class SseEvent:
    """One dispatched event: its type (``message`` unless named), data lines joined by ``\\n``,
    and the last event id seen on the stream."""

    event: str
    data: str
    id: Optional[str] = None
    retry_ms: Optional[int] = None


class SseParser:
    """Turns lines (without their line terminator) into events.

    Comment lines (keep-alives) are skipped; an event is dispatched at the blank line that ends
    it, and only if it carried data.
    """

    def __init__(self) -> None:
        self._event = ""
        self._data: List[str] = []
        self._last_id: Optional[str] = None
        self._retry: Optional[int] = None

    def feed(self, line: str) -> Optional[SseEvent]:
        """Takes one line; returns the event it completes, if any."""
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            if value.isdigit():
                self._retry = int(value)
        return None

    def _dispatch(self) -> Optional[SseEvent]:
        if not self._data:
            self._event = ""
            return None
        ev = SseEvent(
            event=self._event or MESSAGE,
            data="\n".join(self._data),
            id=self._last_id,
            retry_ms=self._retry,
        )
        self._event = ""
        self._data = []
        return ev
