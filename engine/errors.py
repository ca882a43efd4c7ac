"""Failures a caller can act on, as values.

Each class is one situation with one HTTP meaning; ``handlers`` maps them to responses in a
single place.  Messages are safe to show a client: they never contain a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports to a client on purpose."""

    code = "INTERNAL_SERVER_ERROR"
    status = 500

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class StorageUnavailable(EngineError):
    """The database is failing or its breaker is open; try again later."""

    code = "STORAGE_UNAVAILABLE"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ValidationError(EngineError):
    """Bad input from outside: names the field and the rule it broke."""

    code = "BAD_REQUEST"
    status = 400

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


class NotFound(EngineError):
    """The thing named by the request does not exist (or the caller may not see it)."""

    code = "NOT_FOUND"
    status = 404


class Conflict(EngineError):
    """The request was made against a state that has changed since; ``extra`` says how."""

    code = "CONFLICT"
    status = 409

    def __init__(self, message: str, **extra: object) -> None:
        super().__init__(message)
        self.extra = extra


class ScriptTimeout(EngineError):
    """A handler overran its deadline; its worker was killed."""

    code = "SCRIPT_TIMEOUT"
    status = 504

    def __init__(self, handler: str, budget_ms: int) -> None:
        super().__init__(
            "Script execution timeout",
            details=f"Handler '{handler}' exceeded its {budget_ms}ms budget and was stopped",
        )
        self.handler = handler
        self.budget_ms = budget_ms


class ScriptCrashed(EngineError):
    """The worker running the handler died (crash, kill, out of memory at process level)."""

    code = "SCRIPT_CRASHED"
    status = 502

    def __init__(self, details: str) -> None:
        super().__init__("Script worker crashed", details=details)


class ScriptFailed(EngineError):
    """The script itself failed: it threw, had no such handler, or exhausted its memory."""

    code = "SCRIPT_EXECUTION_FAILED"
    status = 500

    def __init__(self, details: str, *, kind: str = "exception") -> None:
        super().__init__("Script execution failed", details=details)
        self.kind = kind


class Overloaded(EngineError):
    """Too much waiting already: the caller should come back after ``retry_after_s``."""

    code = "SERVICE_OVERLOADED"
    status = 503

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ScriptCircuitOpen(Overloaded):
    """This script failed repeatedly (timeouts, crashes); it is refused for a cool-down."""

    code = "SCRIPT_CIRCUIT_OPEN"


class HostCallError(Exception):
    """A host API refused a call; the message becomes the JavaScript ``Error``'s message."""
