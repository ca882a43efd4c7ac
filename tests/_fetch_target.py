"""A small HTTP server for ``fetch`` tests to reach: echoes, statuses, redirects, slow and big
bodies, charsets and compression, optionally over TLS with a test certificate authority.

``serving(app)`` runs an ASGI app under hypercorn on 127.0.0.1 in the test's own Trio run and
yields its base URL.  ``TestAuthority`` issues certificates for names (``fetch.test``) so a
test can check that ``fetch`` verifies TLS for the name while connecting to an address.
"""

from __future__ import annotations

import datetime
import gzip
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _respond(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers or []})
    await send({"type": "http.response.body", "body": body})


async def target_app(scope: Scope, receive: Receive, send: Send) -> None:
    """The routes ``fetch`` tests use; see the module docstring."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path: str = scope["path"]
    query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
    if path == "/echo":
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("utf-8", "replace")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        echo = {
            "method": scope["method"],
            "path": path,
            "query": query,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }
        json_type = [(b"content-type", b"application/json")]
        await _respond(send, 200, json.dumps(echo).encode(), json_type)
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        await _respond(send, status, f"status {status}".encode())
    elif path == "/redirect":
        status = int(query.get("status", "302"))
        await _respond(send, status, b"", [(b"location", query["to"].encode())])
    elif path.startswith("/chain/"):
        left = int(path.rsplit("/", 1)[1])
        if left == 0:
            await _respond(send, 200, b"done")
        else:
            await _respond(send, 302, b"", [(b"location", f"/chain/{left - 1}".encode())])
    elif path == "/slow":
        await trio.sleep(float(query.get("s", "5")))
        await _respond(send, 200, b"slow")
    elif path == "/big":
        size = int(query["n"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        chunk = b"x" * 65536
        while size > 0:
            part = chunk[: min(size, len(chunk))]
            size -= len(part)
            await send({"type": "http.response.body", "body": part, "more_body": size > 0})
    elif path == "/charset":
        latin = [(b"content-type", b"text/plain; charset=iso-8859-1")]
        await _respond(send, 200, "café".encode("latin-1"), latin)
    elif path == "/binary":
        octets = [(b"content-type", b"application/octet-stream")]
        await _respond(send, 200, b"\xff\xfe\x00\x80", octets)
    elif path == "/gzip":
        size = int(query.get("n", "10000"))
        packed = gzip.compress(b"z" * size)
        await _respond(send, 200, packed, [(b"content-encoding", b"gzip")])
    elif path == "/multi":
        headers_out = [
            (b"set-cookie", b"a=1"),
            (b"set-cookie", b"b=2"),
            (b"X-Mixed-Case", b"yes"),
        ]
        await _respond(send, 200, b"multi", headers_out)
    else:
        await _respond(send, 404, b"not found")


@asynccontextmanager
async def serving(
    app: Callable[[Scope, Receive, Send], Awaitable[None]] = target_app,
    *,
    host: str = "127.0.0.1",
    certfile: Path | None = None,
    keyfile: Path | None = None,
) -> AsyncIterator[str]:
    """Serve ``app`` on ``host`` (an ephemeral port); yields the base URL."""
    config = HypercornConfig()
    config.bind = [f"{host}:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1
    if certfile is not None:
        config.certfile = str(certfile)
        config.keyfile = str(keyfile)
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve(
                app,  # type: ignore[arg-type]
                config,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        )
        try:
            yield str(binds[0])
        finally:
            stop.set()


class TestAuthority:
    """A throw-away certificate authority, for TLS between tests and the target server."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aiwebengine test CA")])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )

    def client_context(self) -> ssl.SSLContext:
        pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
        return ssl.create_default_context(cadata=pem)

    def issue(self, directory: Path, host: str) -> tuple[Path, Path]:
        """A certificate and key for ``host``, written to ``directory``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        certfile, keyfile = directory / f"{host}.crt", directory / f"{host}.key"
        certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        keyfile.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return certfile, keyfile
