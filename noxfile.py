"""Developer tasks.  ``nox -s tests`` is the command CI runs.

Sessions: tests, coverage (fails under 80 % overall or 90 % on security/), lint (ruff),
typecheck (mypy --strict on engine/ and security/), fuzz (long hypothesis runs of fuzz/),
bench (writes docs/performance.md).
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = os.environ.get("AIWEBENGINE_NOX_PYTHON") or None


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole test suite over real sockets."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def coverage(session: nox.Session) -> None:
    """Tests under coverage, sandbox worker processes included."""
    session.install("-e", ".[test]")
    session.run("coverage", "erase")
    # sys.monitoring makes coverage much cheaper, but exists only from Python 3.12; asking for
    # it on 3.11 prints a warning in every subprocess, which tests of command output would see.
    modern = session.run(
        "python", "-c", "import sys; print(sys.version_info >= (3, 12))", silent=True
    )
    env = {"COVERAGE_CORE": "sysmon"} if str(modern).strip() == "True" else {}
    session.run("coverage", "run", "-m", "pytest", *session.posargs, env=env)
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", "--fail-under=80")
    session.run("coverage", "report", "--include=security/*", "--fail-under=90")


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,typecheck]")
    session.run("mypy", "engine", "security")


@nox.session(python=PYTHON)
def fuzz(session: nox.Session) -> None:
    """Long property runs of every outside-input parser (FUZZ_EXAMPLES, default 2000)."""
    session.install("-e", ".[test]")
    session.run("pytest", "fuzz", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks against a baseline measured in the same run; writes docs/performance.md."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "bench", *session.posargs)
