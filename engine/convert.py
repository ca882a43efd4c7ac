"""``convert.markdown_to_html`` and ``convert.render_handlebars_template``: rendered in the
parent, in threads off the Trio loop.

Markdown is CommonMark plus tables, strikethrough, footnotes and task lists (markdown-it-py
and its plugins).  Raw HTML in the input passes through, as in CommonMark and the original; a
script rendering untrusted Markdown must sanitise it.  Handlebars templates are rendered by
dotpromptz-handlebars, a pure-Python implementation of Handlebars' semantics (HTML-escaping
``{{x}}``, ``{{{raw}}}``, ``#if``/``#unless``/``#each``/``#with``, ``else``, ``this``,
``@index``, ``../``).  The errors are the original's strings.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Final

import trio
from dotpromptz_handlebars import Handlebars
from markdown_it import MarkdownIt
from mdit_py_plugins.footnote import footnote_plugin
from mdit_py_plugins.tasklists import tasklists_plugin

MAX_INPUT_BYTES: Final = 1_000_000
EMPTY: Final = "Error: Markdown input cannot be empty"
TOO_LARGE: Final = f"Error: Markdown input too large (max {MAX_INPUT_BYTES} bytes)"

TEMPLATE_EMPTY: Final = "Error: Template cannot be empty"
TEMPLATE_TOO_LARGE: Final = f"Error: Template too large (max {MAX_INPUT_BYTES} bytes)"

METHODS: Final = frozenset({"convert.markdown_to_html", "convert.render_handlebars_template"})

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


def render_handlebars_template(template: str, data_json: str) -> str:
    """Render synchronously, or return the original's error string."""
    if not template.strip():
        return TEMPLATE_EMPTY
    if len(template.encode("utf-8", "surrogatepass")) > MAX_INPUT_BYTES:
        return TEMPLATE_TOO_LARGE
    try:
        data = json.loads(data_json) if data_json.strip() else {}
    except (ValueError, RecursionError) as exc:
        return f"Error: Invalid JSON data: {str(exc)[:200]}"
    engine = Handlebars(escape_html=True, strict=False)
    try:
        renderer = engine.compile(template)
    except Exception as exc:  # the library reports template faults with several types
        return f"Error: Template compilation error: {str(exc)[:200]}"
    try:
        return str(renderer(data))
    except Exception as exc:
        return f"Error: Template rendering error: {str(exc)[:200]}"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


async def call(name: str, args: list[Any]) -> str:
    first = _text(args[0] if args else None)
    if name == "convert.render_handlebars_template":
        data = _text(args[1] if len(args) > 1 else None)
        return await trio.to_thread.run_sync(
            render_handlebars_template, first, data, limiter=_limiter
        )
    return await trio.to_thread.run_sync(markdown_to_html, first, limiter=_limiter)
