"""The HTTP surfaces: Quart blueprints translating HTTP into calls on ``engine`` services.

``register(app, runtime)`` is the ``aiwebengine.surfaces`` entry point the application factory
calls; it mounts every surface.  The catch-all solution dispatcher goes last so every explicit
engine path takes precedence over it.
"""

from __future__ import annotations

from quart_trio import QuartTrio

from engine.runtime import EngineRuntime
from handlers import _middleware, admin, health, solutions


def register(app: QuartTrio, runtime: EngineRuntime) -> None:
    _middleware.install(app, runtime)
    app.register_blueprint(health.make_blueprint(runtime))
    app.register_blueprint(admin.make_blueprint(runtime))
    # Solution routes bypass Quart: see handlers.solutions.
    solutions.install(app, runtime)


__all__ = ["register"]
