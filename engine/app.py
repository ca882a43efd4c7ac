"""The application factory.

``create_app(config)`` builds the Quart-Trio application: the :class:`EngineRuntime` with every
service, started before serving and stopped after, and the HTTP surfaces.  The surfaces live in
the ``handlers`` package, which ``engine`` never imports: they are found through the
``aiwebengine.surfaces`` entry point group declared in ``pyproject.toml``, each entry a callable
``register(app, runtime)``.

Production entry point::

    hypercorn --worker-class trio 'engine.app:create_app()'

``create_app()`` without arguments loads the configuration from the environment (and from the
TOML file named by ``AIWEBENGINE_CONFIG``, if set).
"""

from __future__ import annotations

import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

import structlog
from quart_trio import QuartTrio

from engine.assets import MAX_JSON_BODY_BYTES
from engine.config import Config, ConfigError, LoggingConfig, load_config
from engine.runtime import EngineRuntime

SURFACES_GROUP = "aiwebengine.surfaces"


def configure_logging(settings: LoggingConfig) -> None:
    level = getattr(logging, settings.level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def config_from_environment() -> Config:
    path = os.environ.get("AIWEBENGINE_CONFIG")
    return load_config(Path(path) if path else None)


def create_app(config: Config | None = None) -> QuartTrio:
    if config is None:
        try:
            config = config_from_environment()
        except ConfigError as exc:
            print(f"aiwebengine: invalid configuration\n{exc}", file=sys.stderr)
            raise SystemExit(2) from None
    configure_logging(config.logging)

    app = QuartTrio("aiwebengine")
    # Bodies are bounded per surface by the handlers; this is the outer bound for all of them.
    app.config["MAX_CONTENT_LENGTH"] = max(
        config.security.max_request_body_bytes + 64 * 1024,
        config.security.max_upload_bytes + 64 * 1024,
        MAX_JSON_BODY_BYTES,
    )
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = config.server.shutdown_grace_s
    app.config["PROPAGATE_EXCEPTIONS"] = False
    runtime = EngineRuntime(config)
    app.extensions["aiwebengine"] = runtime

    @app.before_serving
    async def start_engine() -> None:
        await runtime.start(app.nursery)

    @app.after_serving
    async def stop_engine() -> None:
        await runtime.stop()

    surfaces = entry_points(group=SURFACES_GROUP)
    if not surfaces:
        raise RuntimeError(
            f"no HTTP surfaces found in entry point group {SURFACES_GROUP!r}: "
            "install the aiwebengine distribution (pip install .)"
        )
    for surface in sorted(surfaces, key=lambda ep: ep.name):
        surface.load()(app, runtime)
    return app
