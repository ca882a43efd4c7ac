"""The ``aiwebengine`` command: ``serve``, ``deploy``, ``logs`` and ``stream``.

``serve`` runs the same application as ``hypercorn --worker-class trio 'engine.app:create_app()'``
in-process, with the configuration checked before any port is bound.  ``deploy`` and ``logs``
are thin clients of the ``/engine`` API; ``stream`` prints the messages of any stream, over
server-sent events (``http(s)://``) or WebSocket (``ws(s)://``).
"""

from __future__ import annotations

import argparse
import codecs
import json
import math
import os
import re
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from engine.config import Config, ConfigError, load_config

DEFAULT_SERVER = "http://127.0.0.1:3000"
TOKEN_ENV_NAMES = ("AIWEBENGINE_TOKEN", "AIWEBENGINE_SECURITY__ADMIN_TOKEN")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiwebengine", description="Self-hosted engine for JavaScript web solutions."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the engine")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default 3000; 0 = any free port)")
    serve.add_argument("--data-dir", type=Path, help="where the database lives (default ./data)")
    serve.add_argument("--config", type=Path, help="a TOML configuration file")
    serve.add_argument("--profile", choices=["development", "production"])

    deploy = commands.add_parser("deploy", help="upload a script and show its init() outcome")
    deploy.add_argument("file", type=Path)
    deploy.add_argument("--uri", required=True, help="the script's URI (its identity)")
    _client_options(deploy)

    logs = commands.add_parser("logs", help="show script logs")
    logs.add_argument("--uri", help="only this script's logs")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing new lines")
    logs.add_argument("--limit", type=int, default=100, help="how many recent lines (default 100)")
    _client_options(logs)

    stream = commands.add_parser(
        "stream", help="print the messages of a stream, one line each (SSE or WebSocket)"
    )
    stream.add_argument("url", help="http(s):// for server-sent events, ws(s):// for WebSocket")
    stream.add_argument(
        "--header",
        "-H",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="an extra request header (repeatable), e.g. 'Authorization: Bearer ...'",
    )
    stream.add_argument("--last-event-id", help="resume after this event id (SSE)")
    stream.add_argument(
        "--max-messages", type=int, metavar="N", help="stop after N messages (exit 0)"
    )
    stream.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds (exit 0)")
    return parser


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("AIWEBENGINE_SERVER", DEFAULT_SERVER),
        help=f"engine base URL (default $AIWEBENGINE_SERVER or {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the admin token (default: $AIWEBENGINE_TOKEN or "
        "$AIWEBENGINE_SECURITY__ADMIN_TOKEN)",
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        sys.exit(serve_command(args))
    if args.command == "deploy":
        sys.exit(deploy_command(args))
    if args.command == "logs":
        sys.exit(logs_command(args))
    if args.command == "stream":
        sys.exit(stream_command(args))


# -- serve ---------------------------------------------------------------------------------


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["server.host"] = args.host
    if args.port is not None:
        overrides["server.port"] = args.port
    if args.data_dir is not None:
        overrides["server.data_dir"] = str(args.data_dir)
    if args.profile is not None:
        overrides["profile"] = args.profile
    return overrides


def serve_command(args: argparse.Namespace) -> int:
    config_path = args.config or (
        Path(os.environ["AIWEBENGINE_CONFIG"]) if os.environ.get("AIWEBENGINE_CONFIG") else None
    )
    try:
        config = load_config(config_path, overrides=_overrides(args))
    except ConfigError as exc:
        print(f"aiwebengine: invalid configuration\n{exc}", file=sys.stderr)
        return 2
    try:
        # Fail before migrating or starting workers when the address cannot be bound.
        _probe_bind(config.server.host, config.server.port)
    except OSError as exc:
        print(
            f"aiwebengine: cannot bind {_bind_address(config.server.host, config.server.port)}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    try:
        trio.run(serve, config)
    except (OSError, BaseExceptionGroup) as exc:
        error = _first_os_error(exc)
        if error is None:
            raise
        print(f"aiwebengine: cannot serve: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


def _probe_bind(host: str, port: int) -> None:
    if port == 0:
        return
    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((name, port))


def _first_os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_os_error(inner)
            if found is not None:
                return found
    return None


def _bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


async def serve(
    config: Config, *, task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``config`` until SIGINT/SIGTERM; requests in flight are drained (bounded)."""
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve

    from engine.app import create_app

    app = create_app(config)
    runtime = app.extensions["aiwebengine"]
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = [_bind_address(config.server.host, config.server.port)]
    hypercorn_config.graceful_timeout = config.server.shutdown_grace_s
    hypercorn_config.accesslog = None
    hypercorn_config.errorlog = "-"
    # hypercorn pings idle WebSockets and closes one whose message outgrows the limit (1009);
    # the stream transport checks the same limit in bytes (hypercorn counts characters).
    hypercorn_config.websocket_ping_interval = config.streams.ping_interval_s
    hypercorn_config.websocket_max_message_size = config.streams.max_message_bytes
    stop = trio.Event()

    async def drain() -> None:
        await stop.wait()
        # hypercorn waits for open connections before the application's shutdown runs, and a
        # stream connection never ends by itself: end them now (SSE gets its final event,
        # WebSockets close with 1001) so draining takes as long as the requests in flight.
        runtime.begin_shutdown()

    async def wait_for_signal() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                print(
                    f"aiwebengine: {signal.Signals(signum).name} received, draining requests",
                    file=sys.stderr,
                )
                stop.set()
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_signal)
        binds = await nursery.start(
            lambda task_status: hypercorn_serve(
                app,
                hypercorn_config,
                shutdown_trigger=drain,
                task_status=task_status,
            )
        )
        print(f"aiwebengine: serving on {', '.join(binds)}", file=sys.stderr, flush=True)
        task_status.started(binds)
        await stop.wait()
    print("aiwebengine: stopped", file=sys.stderr)


# -- clients -------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        return str(args.token_file.read_text("utf-8")).strip()
    for name in TOKEN_ENV_NAMES:
        if os.environ.get(name):
            return os.environ[name].strip()
    return None


def _client(args: argparse.Namespace, *, timeout: float | None = 30.0) -> httpx.Client:
    headers = {}
    token = _token(args)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=args.server.rstrip("/"), headers=headers, timeout=timeout)


def _error_text(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(payload, dict):
        error = payload.get("error")
        parts = [str(error.get("message") if isinstance(error, dict) else error)]
        for key in ("message", "details", "parameter", "field"):
            if isinstance(payload.get(key), str):
                parts.append(f"{key}: {payload[key]}")
        return "; ".join(parts)
    return response.text[:500]


def deploy_command(args: argparse.Namespace) -> int:
    try:
        content = args.file.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"aiwebengine deploy: cannot read {args.file}: {exc}", file=sys.stderr)
        return 2
    try:
        with _client(args, timeout=120.0) as client:
            # Multipart keeps the body the size of the script (no percent-encoding growth).
            response = client.post(
                "/engine/upsert_script",
                files={"uri": (None, args.uri), "content": (None, content)},
            )
    except httpx.HTTPError as exc:
        print(f"aiwebengine deploy: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        print(
            f"aiwebengine deploy: HTTP {response.status_code}: {_error_text(response)}",
            file=sys.stderr,
        )
        return 1
    result = response.json()
    init = result.get("init") or {}
    print(f"deployed {args.uri} ({result.get('contentLength')} bytes)")
    if not init.get("success"):
        print(f"init() failed after {init.get('durationMs')} ms: {init.get('error')}")
        print("the previous version (if any) keeps serving")
        return 3
    ran = "ran" if init.get("ran") else "not defined (top-level registrations used)"
    print(f"init() {ran}, ok in {init.get('durationMs')} ms")
    return 0


def _format_log(entry: dict[str, Any]) -> str:
    moment = datetime.fromtimestamp(entry["timestamp"] / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    where = entry.get("route") or entry.get("kind") or ""
    return (
        f"{moment[:-3]}Z {entry['level']:<5} {entry['scriptUri']} {where} "
        f"[{entry.get('requestId') or '-'}] {entry['message']}"
    )


def logs_command(args: argparse.Namespace) -> int:
    params: dict[str, str] = {"limit": str(args.limit)}
    if args.uri:
        params["uri"] = args.uri
    try:
        if args.follow:
            params["backlog"] = str(min(args.limit, 1000))
            params.pop("limit")
            return _follow_logs(args, params)
        with _client(args) as client:
            response = client.get("/engine/script_logs", params=params)
    except httpx.HTTPError as exc:
        print(f"aiwebengine logs: cannot reach {args.server}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if response.status_code != 200:
        print(
            f"aiwebengine logs: HTTP {response.status_code}: {_error_text(response)}",
            file=sys.stderr,
        )
        return 1
    entries = response.json()["logs"]
    entries.sort(key=lambda entry: entry["seq"])
    for entry in entries:
        print(_format_log(entry))
    return 0


def _follow_logs(args: argparse.Namespace, params: dict[str, str]) -> int:
    with (
        _client(args, timeout=None) as client,
        client.stream("GET", "/engine/script_logs/stream", params=params) as response,
    ):
        if response.status_code != 200:
            response.read()
            print(
                f"aiwebengine logs: HTTP {response.status_code}: {_error_text(response)}",
                file=sys.stderr,
            )
            return 1
        event, data = None, []
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            elif line == "":
                if event == "log" and data:
                    print(_format_log(json.loads("\n".join(data))), flush=True)
                event, data = None, []
    return 0


# -- stream --------------------------------------------------------------------------------

_LINE_END = re.compile(r"\r\n|\r|\n")
CONNECT_TIMEOUT_S = 10.0


@attrs.frozen
class SseMessage:
    """One dispatched server-sent event."""

    data: str
    event: str = "message"
    last_event_id: str = ""


@attrs.frozen
class SseComment:
    """A comment line (``: text``), which servers send to keep a connection alive."""

    text: str


class SseDecoder:
    """The event-stream parser of the HTML standard (§9.2.6), without I/O.

    Feed it text as it arrives (split anywhere, even inside a CR LF pair); it answers the
    events and comments completed so far.  Fields other than ``data``, ``event``, ``id`` and
    ``retry`` are ignored, as the standard says.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, text: str) -> list[SseMessage | SseComment]:
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        buffer = self._pending + text
        out: list[SseMessage | SseComment] = []
        start = 0
        for end in _LINE_END.finditer(buffer):
            if end.group() == "\r" and end.end() == len(buffer):
                self._skip_lf = True  # the "\n" of a "\r\n" may be in the next piece
            self._line(buffer[start : end.start()], out)
            start = end.end()
        self._pending = buffer[start:]
        return out

    def _line(self, line: str, out: list[SseMessage | SseComment]) -> None:
        if line == "":
            if self._data:
                out.append(
                    SseMessage("\n".join(self._data), self._event or "message", self.last_event_id)
                )
            self._data = []
            self._event = ""
            return
        if line.startswith(":"):
            out.append(SseComment(line[1:].removeprefix(" ")))
            return
        name, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)


class StreamFailure(Exception):
    """The stream could not be read; the message says why, for the terminal."""


def one_line(data: str) -> str:
    """A message as one terminal line: line breaks inside it are shown as ``\\n``."""
    return _LINE_END.sub(r"\\n", data)


def parse_headers(values: Sequence[str]) -> list[tuple[str, str]]:
    headers = []
    for value in values:
        name, colon, content = value.partition(":")
        if not colon or not name.strip():
            raise ValueError(f"--header must look like NAME:VALUE, got {value!r}")
        headers.append((name.strip(), content.strip()))
    return headers


def stream_command(args: argparse.Namespace) -> int:
    try:
        headers = parse_headers(args.header)
    except ValueError as exc:
        print(f"aiwebengine stream: {exc}", file=sys.stderr)
        return 2
    if args.last_event_id:
        headers.append(("Last-Event-ID", args.last_event_id))
    scheme = args.url.partition("://")[0].lower()
    if scheme not in ("http", "https", "ws", "wss"):
        print(
            "aiwebengine stream: the URL must start with http://, https://, ws:// or wss://",
            file=sys.stderr,
        )
        return 2
    if args.max_messages is not None and args.max_messages < 1:
        print("aiwebengine stream: --max-messages must be at least 1", file=sys.stderr)
        return 2
    reader = _read_websocket if scheme in ("ws", "wss") else _read_sse
    try:
        note = trio.run(_stream, reader, args.url, headers, args.max_messages, args.timeout)
    except StreamFailure as exc:
        print(f"aiwebengine stream: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    if note:
        print(f"aiwebengine stream: {note}", file=sys.stderr)
    return 0


_Reader = Callable[[str, list[tuple[str, str]], "_Printer"], Awaitable[str | None]]


class _Printer:
    """Prints messages and says when enough have been printed."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0

    def show(self, data: str) -> bool:
        print(one_line(data), flush=True)
        self.count += 1
        return self.limit is not None and self.count >= self.limit


async def _stream(
    reader: _Reader,
    url: str,
    headers: list[tuple[str, str]],
    limit: int | None,
    seconds: float | None,
) -> str | None:
    """Run ``reader`` until it ends or ``seconds`` pass; the note to show, if any."""
    printer = _Printer(limit)
    with trio.move_on_after(seconds if seconds is not None else math.inf):
        return await reader(url, headers, printer)
    return None


async def _read_sse(url: str, headers: list[tuple[str, str]], printer: _Printer) -> str | None:
    timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=None)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout) as client,
            client.stream(
                "GET", url, headers=[*headers, ("Accept", "text/event-stream")]
            ) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise StreamFailure(f"HTTP {response.status_code}: {_error_text(response)}")
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise StreamFailure(f"{url} is not an event stream (Content-Type {content_type!r})")
            decoder = SseDecoder()
            text = codecs.getincrementaldecoder("utf-8")("replace")
            async for chunk in response.aiter_raw():
                for item in decoder.feed(text.decode(chunk)):
                    if isinstance(item, SseComment):
                        continue
                    if item.event == "missed":
                        print(
                            "aiwebengine stream: some messages were missed before the resume",
                            file=sys.stderr,
                        )
                    elif item.event == "message" and printer.show(item.data):
                        return None
    except httpx.HTTPError as exc:
        raise StreamFailure(f"cannot read {url}: {exc or type(exc).__name__}") from None
    return "the server ended the stream"


async def _read_websocket(
    url: str, headers: list[tuple[str, str]], printer: _Printer
) -> str | None:
    from trio_websocket import (
        ConnectionClosed,
        ConnectionRejected,
        HandshakeError,
        open_websocket_url,
    )

    extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    try:
        async with open_websocket_url(
            url, extra_headers=extra, connect_timeout=CONNECT_TIMEOUT_S, disconnect_timeout=5
        ) as ws:
            try:
                while True:
                    message = await ws.get_message()
                    data = (
                        message if isinstance(message, str) else message.decode("utf-8", "replace")
                    )
                    if printer.show(data):
                        return None
            except ConnectionClosed as exc:
                reason = exc.reason
                if reason is None:
                    raise StreamFailure("the WebSocket connection was lost") from None
                described = f"{reason.code} {reason.reason or reason.name}"
                if reason.code == 1000:
                    return f"the server ended the stream: {described}"
                raise StreamFailure(f"the server closed the WebSocket: {described}") from None
    except ConnectionRejected as exc:
        body = (exc.body or b"").decode("utf-8", "replace")[:500]
        raise StreamFailure(
            f"the server refused the WebSocket: HTTP {exc.status_code} {body}"
        ) from None
    except HandshakeError as exc:
        raise StreamFailure(f"cannot open {url}: {exc or type(exc).__name__}") from None
    except OSError as exc:
        raise StreamFailure(f"cannot connect to {url}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    main()
