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
