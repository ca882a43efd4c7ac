"""The engine's configuration: typed values and the one way they are loaded.

Sources, lowest precedence first: the defaults written below, an optional TOML file,
environment variables ``AIWEBENGINE_<SECTION>__<KEY>`` and explicit overrides (the CLI's
flags).  The raw values of all sources are merged per dotted key, converted to each field's
type by a cattrs converter, checked against the field's rule and then against the rules that
span fields.  Every problem is collected and reported in one :class:`ConfigError`, so an
administrator fixes a broken configuration in one pass instead of one restart per typo.

The admin token and the secret encryption key are :class:`Secret` values.  They are accepted
from the environment (or a file the environment names) but never from the TOML file, which
tends to be committed to version control or left world-readable; their values never appear in
a repr or in a reported problem.
"""

import contextlib
import difflib
import enum
import hmac
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import attrs
import cattrs

from security import (
    DEFAULT_LIMITS,
    RateLimit,
    SecretKeyError,
    is_loopback_host,
    key_from_text,
    parse_networks,
)

__all__ = [
    "DEFAULT_MEMORY_LIMIT",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "DatabaseConfig",
    "FetchConfig",
    "LoggingConfig",
    "Profile",
    "RateLimitsConfig",
    "SandboxConfig",
    "Secret",
    "SecurityConfig",
    "ServerConfig",
    "StreamsConfig",
    "default_config",
    "load_config",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
DEFAULT_MEMORY_LIMIT = 64 * MiB
ADMIN_TOKEN_MIN_LENGTH = 32
ENV_PREFIX = "AIWEBENGINE_"
# Names of settings, not secrets.
TOKEN_ENV = "AIWEBENGINE_SECURITY__ADMIN_TOKEN"  # noqa: S105
TOKEN_FILE_ENV = "AIWEBENGINE_SECURITY__ADMIN_TOKEN_FILE"  # noqa: S105
_TOKEN_KEY = "security.admin_token"  # noqa: S105
_TOKEN_FILE_KEY = "security.admin_token_file"  # noqa: S105
_TOKEN_FILE_MAX_BYTES = 4096
# Variables with the prefix that belong to the command-line tool, not to the configuration:
# the configuration file to load, and the server URL and token of the client commands.
CLI_VARIABLES = frozenset({"AIWEBENGINE_CONFIG", "AIWEBENGINE_SERVER", "AIWEBENGINE_TOKEN"})
_TOKEN_SOURCES = (
    f"at least {ADMIN_TOKEN_MIN_LENGTH} characters, from {TOKEN_ENV} or {TOKEN_FILE_ENV}"
)
SECRET_KEY_ENV = "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY"  # noqa: S105
SECRET_KEY_FILE_ENV = "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY_FILE"  # noqa: S105
_SECRET_KEY_KEY = "security.secret_encryption_key"  # noqa: S105
_SECRET_KEY_FILE_KEY = "security.secret_encryption_key_file"  # noqa: S105
# A command, not a key.
GENERATE_SECRET_KEY = (
    'python -c "from security import generate_key_text; print(generate_key_text())"'  # noqa: S105
)
_SECRET_KEY_SOURCES = (
    f"32 random bytes as base64url or hex, from {SECRET_KEY_ENV} or {SECRET_KEY_FILE_ENV};"
    f" generate one with: {GENERATE_SECRET_KEY}"
)
# Settings read only from the environment: each with the pseudo-key naming a file to read it
# from, and the rule shown when it is misplaced or missing.
_ENV_ONLY: tuple[tuple[str, str, str], ...] = (
    (_TOKEN_KEY, _TOKEN_FILE_KEY, _TOKEN_SOURCES),
    (_SECRET_KEY_KEY, _SECRET_KEY_FILE_KEY, _SECRET_KEY_SOURCES),
)


class Profile(enum.Enum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


@attrs.frozen(eq=False)
class Secret:
    """A secret string that never shows itself: compare it with :meth:`matches`."""

    _value: str = attrs.field(repr=False)

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        # Constant time, so response timing does not tell an attacker how much of a guess
        # was right.  Bytes, because compare_digest refuses non-ASCII str.
        return hmac.compare_digest(
            self._value.encode("utf-8", "surrogatepass"), candidate.encode("utf-8", "surrogatepass")
        )

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return self.matches(other._value) if isinstance(other, Secret) else NotImplemented

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@attrs.frozen
class ConfigProblem:
    """One thing wrong with the configuration, safe to print (secrets have ``value=None``)."""

    key: str
    value: str | None
    problem: str
    rule: str

    def __str__(self) -> str:
        shown = "" if self.value is None else f" = {self.value}"
        return f"{self.key}{shown}: {self.problem} (rule: {self.rule})"


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` holds everything that is wrong."""

    def __init__(self, problems: tuple[ConfigProblem, ...]) -> None:
        self.problems = problems
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__("\n".join([f"invalid configuration, {count}:", *map(str, problems)]))


class _Invalid(ValueError):
    """A value breaks its field's type or rule; the message is the problem, safe to show."""


@attrs.frozen
class _Rule:
    """What a field accepts: ``text`` for people, ``check`` returns the canonical value."""

    text: str
    check: Callable[[Any], Any]


def _human_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _int(lo: int, hi: int | None = None, *, size: bool = False, none: str = "") -> _Rule:
    def check(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid("not an integer")
        if value < lo:
            raise _Invalid(f"below the minimum {lo}")
        if hi is not None and value > hi:
            raise _Invalid(f"above the maximum {hi}")
        return value

    text = f"integer {lo}..{hi}" if hi is not None else f"integer >= {lo}"
    if size:
        human = f"{_human_bytes(lo)}..{_human_bytes(hi)}" if hi else f">= {_human_bytes(lo)}"
        text += f" ({human})"
    return _Rule(text + (f", or empty for {none}" if none else ""), check)


def _positive() -> _Rule:
    def check(value: Any) -> float:
        if not isinstance(value, float):
            raise _Invalid("not a number")
        if value <= 0:
            raise _Invalid("not greater than 0")
        return value

    return _Rule("number > 0", check)


def _choice(*choices: str) -> _Rule:
    def check(value: Any) -> str:
        for choice in choices:
            if isinstance(value, str) and value.strip().lower() == choice.lower():
                return choice
        raise _Invalid("not one of the choices")

    return _Rule("one of " + ", ".join(choices), check)


def _accept(text: str) -> _Rule:
    """A rule enforced entirely by the type conversion."""
    return _Rule(text, lambda value: value)


def _check_host(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9._:%\[\]-]+", value):
        raise _Invalid("not a host name or IP address")
    return value


def _check_database_url(value: Any) -> str:
    if isinstance(value, str) and value.startswith("postgres"):
        raise _Invalid("PostgreSQL is not supported yet")
    if not isinstance(value, str) or not value.startswith("sqlite:///") or value == "sqlite:///":
        raise _Invalid("not a sqlite:/// URL with a path")
    return value


def _check_token(value: Any) -> Secret:
    if not isinstance(value, Secret):
        raise _Invalid("not a string")
    if len(value.reveal()) < ADMIN_TOKEN_MIN_LENGTH:
        raise _Invalid(f"shorter than {ADMIN_TOKEN_MIN_LENGTH} characters")
    return value


def _check_networks(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("not a string")
    try:
        parse_networks(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value


def _check_secret_key(value: Any) -> Secret:
    if not isinstance(value, Secret):
        raise _Invalid("not a string")
    try:
        key_from_text(value.reveal())
    except SecretKeyError as exc:  # the message states the rule, never the value
        raise _Invalid(str(exc)) from None
    return value


def _check_rate(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid("not a string")
    try:
        RateLimit.parse(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    return value


_RATE_RULE = _Rule("<requests>/<period> with period in ms, s, m, h or d, e.g. 300/10s", _check_rate)


def _validate(instance: object, attribute: "attrs.Attribute[Any]", value: Any) -> None:
    # Loading checks every rule first and reports all problems together; this validator
    # only guards values built directly in code, where the first broken rule is enough.
    rule: _Rule = attribute.metadata["rule"]
    if value is None:
        return
    try:
        ok = rule.check(value) == value
    except _Invalid:
        ok = False
    if not ok:
        raise ValueError(f"{attribute.name} = {value!r} (rule: {rule.text})")


def _setting(default: Any, rule: _Rule) -> Any:
    return attrs.field(default=default, validator=_validate, metadata={"rule": rule})


@attrs.frozen
class ServerConfig:
    host: str = _setting("127.0.0.1", _Rule("host name or IP address", _check_host))
    port: int = _setting(3000, _int(0, 65535))
    data_dir: Path = _setting(Path("./data"), _accept("non-empty path"))  # noqa: RUF009
    shutdown_grace_s: float = _setting(10.0, _positive())
    install_example: bool = _setting(True, _accept("true or false"))


@attrs.frozen
class DatabaseConfig:
    url: str | None = _setting(
        None,
        _Rule(
            "empty for SQLite under server.data_dir, or sqlite:///<path> (PostgreSQL comes later)",
            _check_database_url,
        ),
    )
    sqlite_synchronous: str = _setting("FULL", _choice("OFF", "NORMAL", "FULL", "EXTRA"))
    threads: int = _setting(8, _int(1, 64))
    breaker_failure_threshold: int = _setting(5, _int(1, 1000))
    breaker_window_s: float = _setting(30.0, _positive())
    breaker_cooldown_s: float = _setting(10.0, _positive())


@attrs.frozen
class SandboxConfig:
    pool_size: int | None = _setting(None, _int(1, 256, none="max(2, CPU count)"))
    warm_spares: int = _setting(1, _int(0, 16))
    handler_timeout_ms: int = _setting(5000, _int(10, 600_000))
    init_timeout_ms: int = _setting(5000, _int(10, 600_000))
    memory_limit_bytes: int = _setting(DEFAULT_MEMORY_LIMIT, _int(MiB, size=True))
    stack_limit_bytes: int = _setting(MiB, _int(64 * KiB, 64 * MiB, size=True))
    address_space_bytes: int = _setting(2 * GiB, _int(256 * MiB, size=True))
    context_cache_size: int = _setting(32, _int(1, 4096))
    queue_limit: int = _setting(256, _int(0, 100_000))
    breaker_failure_threshold: int = _setting(5, _int(1, 1000))
    breaker_window_s: float = _setting(30.0, _positive())
    breaker_cooldown_s: float = _setting(30.0, _positive())
    init_concurrency: int | None = _setting(None, _int(1, 256, none="CPU count within 4..16"))
    max_script_bytes: int = _setting(1_000_000, _int(1, 64 * MiB))
    deprioritize_after_ms: int = _setting(200, _int(0, 600_000))

    def effective_pool_size(self) -> int:
        """Worker processes to run: the configured size, else one per CPU (at least 2)."""
        if self.pool_size is not None:
            return self.pool_size
        return max(2, os.cpu_count() or 1)

    def effective_init_concurrency(self) -> int:
        """Script initialisations run at once at start-up: the CPUs, within 4..16."""
        if self.init_concurrency is not None:
            return self.init_concurrency
        return min(16, max(4, os.cpu_count() or 1))


@attrs.frozen
class SecurityConfig:
    admin_token: Secret | None = _setting(  # noqa: RUF009
        None, _Rule(f"at least {ADMIN_TOKEN_MIN_LENGTH} characters", _check_token)
    )
    max_request_body_bytes: int = _setting(MiB, _int(1))
    max_upload_bytes: int = _setting(10 * MiB, _int(1))
    # Peers whose X-Forwarded-For is believed (reverse proxies); empty trusts no one.
    trusted_proxies: str = _setting(
        "", _Rule("comma-separated IP addresses or CIDR networks, or empty", _check_networks)
    )
    hsts: bool = _setting(False, _accept("true or false"))
    # Seals the secrets scripts use (AES-256-GCM).  Development without one generates a key
    # once and keeps it in the data directory (engine.secrets.load_secret_box).
    secret_encryption_key: Secret | None = _setting(  # noqa: RUF009
        None,
        _Rule("32 random bytes as base64url (43 characters) or hex (64 digits)", _check_secret_key),
    )

    def trusted_proxy_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """``trusted_proxies`` parsed (the rule already checked it)."""
        return parse_networks(self.trusted_proxies)


@attrs.frozen
class RateLimitsConfig:
    """Token buckets per client address, one rule per surface; the defaults are
    ``security.DEFAULT_LIMITS`` (PocketBase's rules) written as text."""

    enabled: bool = _setting(True, _accept("true or false"))
    solutions: str = _setting("300/10s", _RATE_RULE)
    engine: str = _setting("300/10s", _RATE_RULE)
    auth: str = _setting("2/3s", _RATE_RULE)
    graphql: str = _setting("300/10s", _RATE_RULE)
    streams: str = _setting("20/5s", _RATE_RULE)

    def limits(self) -> dict[str, RateLimit]:
        """Every surface's rule, parsed (loading already checked them), by surface name."""
        return {surface: RateLimit.parse(getattr(self, surface)) for surface in DEFAULT_LIMITS}


@attrs.frozen
class StreamsConfig:
    """Live streams (SSE and WebSocket subscribers of script streams)."""

    heartbeat_s: float = _setting(15.0, _positive())
    queue_size: int = _setting(1000, _int(1, 100_000))
    replay_size: int = _setting(100, _int(0, 100_000))
    max_per_stream: int = _setting(100, _int(1, 1_000_000))
    max_total: int = _setting(1000, _int(1, 1_000_000))
    max_message_bytes: int = _setting(64 * KiB, _int(1, 64 * MiB, size=True))
    max_handler_errors: int = _setting(3, _int(1, 1000))
    ping_interval_s: float = _setting(20.0, _positive())


@attrs.frozen
class LoggingConfig:
    level: str = _setting("info", _choice("debug", "info", "warning", "error"))
    format: str = _setting("console", _choice("console", "json"))


@attrs.frozen
class FetchConfig:
    """Outbound ``fetch`` from scripts."""

    timeout_s: float = _setting(30.0, _positive())
    max_response_bytes: int = _setting(10 * MiB, _int(KiB, GiB, size=True))
    # Networks fetch may reach although they are private or loopback: for tests and explicit
    # administrator decisions only.
    allow_networks: str = _setting(
        "", _Rule("comma-separated IP addresses or CIDR networks, or empty", _check_networks)
    )

    def allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """``allow_networks`` parsed (the rule already checked it)."""
        return parse_networks(self.allow_networks)


@attrs.frozen
class Config:
    profile: Profile = _setting(Profile.DEVELOPMENT, _accept("development or production"))  # noqa: RUF009
    server: ServerConfig = attrs.field(factory=ServerConfig)
    database: DatabaseConfig = attrs.field(factory=DatabaseConfig)
    sandbox: SandboxConfig = attrs.field(factory=SandboxConfig)
    security: SecurityConfig = attrs.field(factory=SecurityConfig)
    logging: LoggingConfig = attrs.field(factory=LoggingConfig)
    streams: StreamsConfig = attrs.field(factory=StreamsConfig)
    rate_limits: RateLimitsConfig = attrs.field(factory=RateLimitsConfig)
    fetch: FetchConfig = attrs.field(factory=FetchConfig)

    @property
    def is_production(self) -> bool:
        return self.profile is Profile.PRODUCTION

    def database_url(self) -> str:
        """The URL to connect to; by default a SQLite file inside ``server.data_dir``."""
        if self.database.url is not None:
            return self.database.url
        path = (self.server.data_dir / "aiwebengine.db").resolve()
        return f"sqlite:///{path.as_posix()}"


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "sandbox": SandboxConfig,
    "security": SecurityConfig,
    "streams": StreamsConfig,
    "logging": LoggingConfig,
    "rate_limits": RateLimitsConfig,
    "fetch": FetchConfig,
}
for _cls in (*_SECTIONS.values(), Config):
    attrs.resolve_types(_cls)
# Every setting by its dotted key, in the order problems are reported.
_FIELDS: dict[str, "attrs.Attribute[Any]"] = {
    "profile": attrs.fields(Config).profile,
    **{
        f"{section}.{field.name}": field
        for section, cls in _SECTIONS.items()
        for field in attrs.fields(cls)
    },
}
# The keys a source may set; the token file is a pseudo-key resolved into the token.
_KNOWN_KEYS = frozenset({_TOKEN_FILE_KEY, _SECRET_KEY_FILE_KEY, *_FIELDS})


# --- conversion: one cattrs converter turns raw values (TOML types, or strings from the
# environment and the command line) into field types, strictly: 5.5 is not an int.


def _to_int(value: Any, _: type) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii():
        try:
            return int(value.strip())
        except ValueError:  # also raised for absurdly long digit strings
            pass
    raise _Invalid("not an integer")


def _to_float(value: Any, _: type) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and value.strip().isascii():
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if number is None:
        raise _Invalid("not a number")
    if not math.isfinite(number):
        raise _Invalid("not a finite number")
    return number


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _to_bool(value: Any, _: type) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _BOOLS:
        return _BOOLS[value.strip().lower()]
    raise _Invalid("not a boolean (true/false/1/0/yes/no)")


def _to_str(value: Any, _: type) -> str:
    if not isinstance(value, str):
        raise _Invalid("not a string")
    return value


def _to_path(value: Any, _: type) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise _Invalid("not a path")
    if not str(value).strip():
        raise _Invalid("empty path")
    return Path(value)


def _to_secret(value: Any, _: type) -> Secret:
    if isinstance(value, Secret):
        return value
    return Secret(_to_str(value, str))


def _to_profile(value: Any, _: type) -> Profile:
    if isinstance(value, Profile):
        return value
    try:
        return Profile(_to_str(value, str).strip().lower())
    except ValueError:
        raise _Invalid("not a known profile") from None


def _is_optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(tp)
    )


def _optional_hook(tp: Any) -> Callable[[Any, Any], Any]:
    (inner,) = (arg for arg in typing.get_args(tp) if arg is not type(None))

    def structure(value: Any, _: Any) -> Any:
        # An empty environment variable means "not set": the way to ask for the automatic
        # value from a shell or an .env file.
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return _converter.structure(value, inner)

    return structure


_converter = cattrs.Converter()
for _type, _hook in (
    (int, _to_int),
    (float, _to_float),
    (bool, _to_bool),
    (str, _to_str),
    (Path, _to_path),
    (Secret, _to_secret),
    (Profile, _to_profile),
):
    _converter.register_structure_hook(_type, _hook)
_converter.register_structure_hook_factory(_is_optional, _optional_hook)


def _show(key: str, value: Any) -> str | None:
    """How a raw value appears in a problem: never a secret, never a password, never long."""
    if key in (_TOKEN_KEY, _SECRET_KEY_KEY):
        return None
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = repr(str(value) if isinstance(value, Path) else value)
    if key == "database.url":
        text = re.sub(r"(://[^/@]*?:)[^/@]*@", r"\1***@", text)
    return text if len(text) <= 80 else text[:77] + "..."


# --- collecting raw values from the sources


@attrs.frozen
class _Raw:
    value: Any
    rank: int  # precedence: 1 file, 2 environment, 3 override


def _unknown(key: str, where: str, rule: str, spelled: str, known: list[str]) -> ConfigProblem:
    """An unknown key, with the closest known spelling (in the source's own style) as a hint."""
    close = difflib.get_close_matches(spelled, known, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return ConfigProblem(key, None, f"unknown key ({where}){hint}", rule)


_KNOWN_KEYS_RULE = "a key listed in docs/administrators/configuration.md"


@attrs.define
class _Loader:
    problems: list[ConfigProblem] = attrs.field(factory=list)
    raw: dict[str, _Raw] = attrs.field(factory=dict)
    # Keys already reported by a source; rules across fields skip them rather than guess.
    failed: set[str] = attrs.field(factory=set)

    def read_file(self, path: Path) -> None:
        try:
            with path.open("rb") as file:
                document = tomllib.load(file)
        except OSError as exc:
            self.problems.append(
                ConfigProblem(str(path), None, f"cannot read: {exc.strerror}", "a readable file")
            )
            return
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            # The decoder's message carries "(at line N, column M)".
            self.problems.append(
                ConfigProblem(str(path), None, f"not valid TOML: {exc}", "TOML 1.0 in UTF-8")
            )
            return
        where = f"in {path}"
        for name, value in document.items():
            if name == "profile":
                self.raw[name] = _Raw(value, 1)
            elif name not in _SECTIONS:
                rule = "top-level keys: profile and the tables " + ", ".join(_SECTIONS)
                known = ["profile", *_SECTIONS]
                self.problems.append(_unknown(name, where, rule, name, known))
            elif not isinstance(value, dict):
                self.problems.append(ConfigProblem(name, None, "not a table", f"[{name}]"))
            else:
                for key, item in value.items():
                    self._file_key(f"{name}.{key}", item, where)

    def _file_key(self, dotted: str, value: Any, where: str) -> None:
        env_only = [rule for key, file, rule in _ENV_ONLY if dotted in (key, file)]
        if env_only:
            problem = f"secrets are not accepted from the configuration file ({where})"
            self.problems.append(ConfigProblem(dotted, None, problem, env_only[0]))
        elif dotted in _FIELDS:
            self.raw[dotted] = _Raw(value, 1)
        else:
            section = dotted.partition(".")[0]
            names = [key.partition(".")[2] for key in _FIELDS if key.startswith(section + ".")]
            rule = f"keys of [{section}]: " + ", ".join(names)
            self.problems.append(_unknown(dotted, where, rule, dotted, list(_FIELDS)))

    def read_env(self, env: Mapping[str, str]) -> None:
        names: dict[str, list[str]] = {}
        for name in sorted(env):
            if not name.startswith(ENV_PREFIX) or name in CLI_VARIABLES:
                continue
            section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
            dotted = f"{section}.{key}" if sep else section
            if dotted in _KNOWN_KEYS:
                names.setdefault(dotted, []).append(name)
                continue
            label = dotted if sep and section and key else name
            known = [_env_name(known) for known in sorted(_KNOWN_KEYS)]
            where = f"environment variable {name}"
            self.problems.append(_unknown(label, where, _KNOWN_KEYS_RULE, name.upper(), known))
        for dotted, spellings in names.items():
            if len(spellings) > 1:
                problem = "set by several environment variables: " + ", ".join(spellings)
                self.problems.append(ConfigProblem(dotted, None, problem, "set each key once"))
                self.failed.add(dotted)
            else:
                self.raw[dotted] = _Raw(env[spellings[0]], 2)

    def read_overrides(self, overrides: Mapping[str, Any]) -> None:
        for key, value in overrides.items():
            # None means "flag not given": argparse's default for an absent option.
            if value is None:
                continue
            if key in _KNOWN_KEYS:
                self.raw[key] = _Raw(value, 3)
            else:
                known = sorted(_KNOWN_KEYS)
                self.problems.append(_unknown(key, "override", _KNOWN_KEYS_RULE, key, known))

    def resolve_secret_files(self) -> None:
        """Replace each secret-file pseudo-key by the secret read from that file."""
        for key, file_key, sources in _ENV_ONLY:
            self._resolve_file(key, file_key, sources)

    def _resolve_file(self, key: str, file_key: str, sources: str) -> None:
        file = self.raw.pop(file_key, None)
        if file is None:
            return
        secret = self.raw.get(key)
        if secret is not None and secret.rank >= file.rank:
            if secret.rank == file.rank:
                problem = f"set together with {file_key}; set only one of them"
                self.problems.append(ConfigProblem(key, None, problem, sources))
                self.failed.add(key)
            return
        shown = _show(file_key, file.value)
        rule = f"a readable regular UTF-8 file of at most {_TOKEN_FILE_MAX_BYTES} bytes"
        try:
            path = _to_path(file.value, Path)
            if not path.is_file():
                raise _Invalid("not a regular file")
            with path.open("rb") as handle:
                content = handle.read(_TOKEN_FILE_MAX_BYTES + 1)
            if len(content) > _TOKEN_FILE_MAX_BYTES:
                raise _Invalid("file too large")
            text = content.decode("utf-8").rstrip("\r\n")
            if not text.strip():
                raise _Invalid("file is empty")
        except (OSError, ValueError) as exc:  # ValueError: NUL in the path, bad UTF-8
            reason = exc.strerror if isinstance(exc, OSError) else None
            problem = f"cannot read: {reason}" if reason else str(exc)
            self.problems.append(ConfigProblem(file_key, shown, problem, rule))
            self.failed.add(key)
            return
        self.raw[key] = _Raw(text, file.rank)

    def convert(self) -> tuple[dict[str, Any], set[str]]:
        """Converted, rule-checked values of the keys that were set, and the keys that failed."""
        values: dict[str, Any] = {}
        bad = set(self.failed)
        for key, field in _FIELDS.items():
            if key not in self.raw:
                continue
            raw = self.raw[key].value
            rule: _Rule = field.metadata["rule"]
            try:
                value = _converter.structure(raw, typing.cast(type[Any], field.type))
                values[key] = value if value is None else rule.check(value)
            except _Invalid as exc:
                bad.add(key)
                self.problems.append(ConfigProblem(key, _show(key, raw), str(exc), rule.text))
        return values, bad

    def check_across(self, values: dict[str, Any], bad: set[str]) -> None:
        def get(key: str) -> Any:
            return values[key] if key in values else _FIELDS[key].default

        if not bad & {"profile", _TOKEN_KEY} and get(_TOKEN_KEY) is None:
            if get("profile") is Profile.PRODUCTION:
                problem = "required in production"
                self.problems.append(ConfigProblem(_TOKEN_KEY, None, problem, _TOKEN_SOURCES))
            elif "server.host" not in bad and not _is_loopback(get("server.host")):
                self.problems.append(
                    ConfigProblem(
                        "server.host",
                        _show("server.host", get("server.host")),
                        "binding a non-loopback address needs an admin token",
                        "a loopback host (127.0.0.0/8, ::1, localhost) unless an admin token"
                        f" is set ({TOKEN_ENV} or {TOKEN_FILE_ENV})",
                    )
                )
        production = get("profile") is Profile.PRODUCTION
        if production and not bad & {"profile", _SECRET_KEY_KEY} and get(_SECRET_KEY_KEY) is None:
            problem = "required in production (it seals the secrets scripts use)"
            self.problems.append(ConfigProblem(_SECRET_KEY_KEY, None, problem, _SECRET_KEY_SOURCES))
        memory, space = "sandbox.memory_limit_bytes", "sandbox.address_space_bytes"
        if not bad & {memory, space} and get(memory) > get(space):
            self.problems.append(
                ConfigProblem(
                    memory,
                    _show(memory, get(memory)),
                    f"larger than {space} ({get(space)})",
                    f"at most {space}: the QuickJS heap must fit in the worker process",
                )
            )


def _env_name(dotted: str) -> str:
    return ENV_PREFIX + dotted.replace(".", "__").upper()


def _is_loopback(host: str) -> bool:
    return is_loopback_host(host)


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Load the configuration: defaults < TOML file < environment < overrides.

    ``overrides`` uses dotted keys (``{"server.port": 8080, "profile": "production"}``);
    a value of ``None`` counts as not given.  Raises :class:`ConfigError` listing every
    problem found.
    """
    loader = _Loader()
    if path is not None:
        loader.read_file(path)
    loader.read_env(os.environ if env is None else env)
    loader.read_overrides(overrides or {})
    loader.resolve_secret_files()
    values, bad = loader.convert()
    loader.check_across(values, bad)
    if loader.problems:
        raise ConfigError(tuple(loader.problems))
    tree: dict[str, Any] = {}
    for key, value in values.items():
        section, _, name = key.rpartition(".")
        (tree.setdefault(section, {}) if section else tree)[name] = value
    return _converter.structure(tree, Config)


def default_config(**section_overrides: Any) -> Config:
    """The defaults with a few changes, for tests; no file, no environment.

    Accepts sections as mappings or instances (``sandbox={"pool_size": 2}``,
    ``server=ServerConfig(port=0)``), ``profile=...``, ``sandbox__pool_size=2`` or dotted
    keys passed as ``**{"server.port": 0}``.
    """
    flat: dict[str, Any] = {}
    for name, value in section_overrides.items():
        if name in _SECTIONS and attrs.has(type(value)):
            value = {field.name: getattr(value, field.name) for field in attrs.fields(type(value))}
        if name in _SECTIONS and isinstance(value, Mapping):
            flat.update({f"{name}.{key}": item for key, item in value.items()})
        else:
            flat[name.replace("__", ".")] = value
    return load_config(None, env={}, overrides=flat)
