"""Server-sent events encoding (protocol without I/O)."""

from __future__ import annotations

import json
from typing import Any


def sse_event(event: str | None, data: Any, *, event_id: str | None = None) -> bytes:
    """One SSE event; ``data`` that is not a string is sent as compact JSON.  Multi-line data
    becomes several ``data:`` lines, as the SSE format requires."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines: list[str] = []
    if event_id is not None:
        lines.append(f"id: {_single_line(event_id)}")
    if event is not None:
        lines.append(f"event: {_single_line(event)}")
    lines.extend(
        f"data: {line}" for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    )
    return ("\n".join(lines) + "\n\n").encode()


def sse_comment(text: str) -> bytes:
    return f": {_single_line(text)}\n\n".encode()


def _single_line(text: str) -> str:
    return text.replace("\r", " ").replace("\n", " ")
