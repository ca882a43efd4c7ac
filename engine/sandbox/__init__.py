"""The JavaScript sandbox: QuickJS worker processes and the pool that supervises them.

``SandboxPool.invoke`` runs one handler of one script version under a deadline and returns the
normalized result, or raises the ``engine.errors`` value describing the failure.  The worker
program (``_worker``) and the frames both sides speak (``_frames``) are private.

The public names are loaded on first use (PEP 562): the worker process is started as
``python -m engine.sandbox._worker``, which imports this package first, and it must not pay for
Trio and the pool it never uses -- every worker replacement would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.sandbox._pool import (
        Invocation,
        InvocationHost,
        InvocationResult,
        PoolSettings,
        PoolStats,
        SandboxPool,
    )

__all__ = [
    "Invocation",
    "InvocationHost",
    "InvocationResult",
    "PoolSettings",
    "PoolStats",
    "SandboxPool",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine.sandbox import _pool

        return getattr(_pool, name)
    raise AttributeError(f"module 'engine.sandbox' has no attribute {name!r}")
