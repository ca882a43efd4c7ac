"""The JavaScript solutions the benchmarks deploy."""

from __future__ import annotations

__all__ = ["hello_script", "padded_script", "runaway_script"]


def hello_script(path: str) -> str:
    """A route whose handler returns a short string: the engine's cheapest useful request."""
    return (
        "function hello(context) {\n"
        '  return "hello";\n'
        "}\n"
        "function init(context) {\n"
        f'  routeRegistry.registerRoute("{path}", "hello", "GET");\n'
        "}\n"
    )


def runaway_script(path: str) -> str:
    """A route whose handler never returns: only the pool's deadline (SIGKILL) ends it."""
    return (
        "function spin(context) {\n"
        "  while (true) {}\n"
        "}\n"
        "function init(context) {\n"
        f'  routeRegistry.registerRoute("{path}", "spin", "GET");\n'
        "}\n"
    )


def padded_script(path: str, total_bytes: int) -> str:
    """A script of exactly ``total_bytes`` (ASCII) with the same small handler whatever the size.

    The padding is live data, not only a comment: ~40 % a string constant and ~30 % an array
    literal, both held by globals the handler reads (so the engine cannot get away with
    skipping them), the rest a block comment.  Only evaluation should pay for the size; the
    handler's cost must not depend on it.
    """
    head = "// Padding for the script-size benchmark; the handler is the same at every size.\n"
    handler = (
        "function handle(context) {\n"
        '  return "ok " + PAD_TEXT.length + " " + PAD_TABLE.length;\n'
        "}\n"
        "function init(context) {\n"
        f'  routeRegistry.registerRoute("{path}", "handle", "GET");\n'
        "}\n"
    )
    text_open, text_close = 'const PAD_TEXT = "', '";\n'
    table_open, table_close = "const PAD_TABLE = [", "];\n"
    comment_open, comment_close = "/*", "*/\n"
    fixed = "".join(
        [head, handler, text_open, text_close, table_open, table_close, comment_open, comment_close]
    )
    room = total_bytes - len(fixed)
    if room < 0:
        raise ValueError(f"a script needs at least {len(fixed)} bytes")
    text = ("abcdefghijklmnopqrstuvwxyz0123456789" * (room // 36 + 1))[: room * 4 // 10]
    numbers: list[str] = []
    table_bytes, table_room = 0, room * 3 // 10
    while True:
        item = f"{len(numbers) * 7919 % 100003},"
        if table_bytes + len(item) > table_room:
            break
        numbers.append(item)
        table_bytes += len(item)
    comment = "=" * (room - len(text) - table_bytes)
    script = "".join(
        [
            head,
            text_open,
            text,
            text_close,
            table_open,
            "".join(numbers),
            table_close,
            comment_open,
            comment,
            comment_close,
            handler,
        ]
    )
    assert len(script.encode("ascii")) == total_bytes
    return script
