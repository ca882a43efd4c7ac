"""``convert.markdown_to_html``: Markdown rendered in the parent, off the Trio loop.

CommonMark plus tables, strikethrough, footnotes and task lists (markdown-it-py and its
plugins).  Raw HTML in the input passes through, as in CommonMark and the original; a script
rendering untrusted Markdown must sanitise it.  The errors are the original's strings.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import trio
from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.tasklists import tasklists_plugin

MAX_INPUT_BYTES: Final = 1_000_000
EMPTY: Final = "Error: Markdown input cannot be empty"
TOO_LARGE: Final = f"Error: Markdown input too large (max {MAX_INPUT_BYTES} bytes)"

METHODS: Final = frozenset({"convert.markdown_to_html"})

_local = threading.local()
# Rendering a large document takes real CPU: a few at a time, in threads.
_limiter = trio.CapacityLimiter(2)


def _renderer() -> MarkdownIt:
    # One parser per thread: parsers keep state between the calls of one render.
    renderer: MarkdownIt | None = getattr(_local, "renderer", None)
    if renderer is None:
        renderer = (
            MarkdownIt("commonmark", {"html": True})
            .enable(["table", "strikethrough"])
            .use(footnote_plugin)
            .use(tasklists_plugin)
        )
        _local.renderer = renderer
    return renderer


def markdown_to_html(markdown: str) -> str:
    """Render synchronously, or return the original's error string."""
    if not markdown.strip():
        return EMPTY
    if len(markdown.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        return TOO_LARGE
    return str(_renderer().render(markdown))


async def call(name: str, args: list[Any]) -> str:
    text = args[0] if args else None
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    return await trio.to_thread.run_sync(markdown_to_html, text, limiter=_limiter)
