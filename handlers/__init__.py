"""The HTTP surfaces, translating HTTP into calls on ``engine`` services.

``register(app, runtime)`` is the ``aiwebengine.surfaces`` entry point the application factory
calls; it mounts every surface: Quart blueprints for the engine's own endpoints (``health``,
``admin``, ``streams`` for ``/engine/script_updates``, with ``_middleware``), and in front of
them the plain-ASGI ``solutions`` dispatcher, which serves every path outside the engine's
prefixes, SSE and WebSocket stream connections included.  ``graphql`` serves ``/graphql`` and
``/engine/graphql/schema`` as a blueprint and ``/graphql/sse`` and ``/graphql/ws`` as plain ASGI
between the two.  ``audit`` serves ``/engine/audit``, ``secrets`` ``/engine/secrets`` and
``openapi`` ``/engine/openapi.json``.  In front of everything, ``_gate`` checks request limits,
identifies the caller, applies rate limits and adds security headers; ``_access`` holds the
capability checks of the ``/engine`` endpoints.  ``_server_guard`` repairs two places where a
client's protocol fault could stop hypercorn itself.
"""

from __future__ import annotations

from quart_trio import QuartTrio

from engine.runtime import EngineRuntime
from handlers import (
    _gate,
    _middleware,
    _server_guard,
    admin,
    assets,
    audit,
    graphql,
    health,
    openapi,
    secrets,
    solutions,
    streams,
)


def register(app: QuartTrio, runtime: EngineRuntime) -> None:
    _server_guard.install()
    _middleware.install(app, runtime)
    app.register_blueprint(health.make_blueprint(runtime))
    app.register_blueprint(admin.make_blueprint(runtime))
    app.register_blueprint(assets.make_blueprint(runtime))
    app.register_blueprint(audit.make_blueprint(runtime))
    app.register_blueprint(secrets.make_blueprint(runtime))
    app.register_blueprint(openapi.make_blueprint(runtime))
    app.register_blueprint(streams.make_blueprint(runtime))
    # /graphql and the schema on Quart; /graphql/sse and /graphql/ws in front of it, as ASGI.
    graphql.install(app, runtime)
    # Solution routes bypass Quart: see handlers.solutions.
    solutions.install(app, runtime)
    # Outermost: limits, identity, rate limits and security headers for every surface.
    _gate.install(app, runtime)


__all__ = ["register"]
