"""``/health`` (liveness) and ``/health/ready`` (can this instance serve traffic?)."""

from __future__ import annotations

import sys

from quart import Blueprint, Response

from engine import __version__
from engine.runtime import EngineRuntime
from handlers._responses import iso_now, json_response


def make_blueprint(runtime: EngineRuntime) -> Blueprint:
    blueprint = Blueprint("health", __name__)
    version = {"engine": __version__, "python": sys.version.split()[0]}

    @blueprint.get("/health")
    async def health() -> Response:
        # Liveness answers from memory: it must not fail because the database is slow.
        database = "ok" if runtime.started and runtime.database.healthy else "degraded"
        return json_response(
            {
                "status": "healthy",
                "instance_id": runtime.instance_id,
                "timestamp": iso_now(),
                "version": version,
                "database": database,
            }
        )

    @blueprint.get("/health/ready")
    async def ready() -> Response:
        readiness = await runtime.readiness()
        stats = runtime.pool.stats()
        return json_response(
            {
                "status": "ready" if readiness.ready else "degraded",
                "instance_id": runtime.instance_id,
                "timestamp": iso_now(),
                "database": readiness.database,
                "sandbox": {
                    "status": readiness.pool,
                    "workers": stats.live,
                    "size": stats.size,
                    "idle": stats.idle,
                    "busy": stats.busy,
                    "spares": stats.spares,
                    "waiting": stats.waiting,
                    "restarts": stats.restarts,
                    "openBreakers": list(stats.open_breakers),
                },
            },
            200 if readiness.ready else 503,
        )

    return blueprint
