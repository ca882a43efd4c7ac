"""The JavaScript sandbox: QuickJS worker processes and the pool that supervises them.

``SandboxPool.invoke`` runs one handler of one script version under a deadline and returns the
normalized result, or raises the ``engine.errors`` value describing the failure.  The worker
program (``_worker``) and the frames both sides speak (``_frames``) are private.
"""

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
