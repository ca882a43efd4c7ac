"""The configuration: sources and precedence, every rule, and how problems are reported."""

import importlib
import importlib.util
import math
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from engine.config import (
    DEFAULT_MEMORY_LIMIT,
    Config,
    ConfigError,
    ConfigProblem,
    DatabaseConfig,
    FetchConfig,
    LoggingConfig,
    Profile,
    RateLimitsConfig,
    SandboxConfig,
    Secret,
    SecurityConfig,
    ServerConfig,
    StreamsConfig,
    default_config,
    load_config,
)

# tomli_w writes TOML when installed; otherwise the tiny writer below does.
tomli_w: ModuleType | None = (
    importlib.import_module("tomli_w") if importlib.util.find_spec("tomli_w") else None
)

KiB, MiB, GiB = 1024, 1024**2, 1024**3
TOKEN = "t" * 40
TOKEN_ENV = "AIWEBENGINE_SECURITY__ADMIN_TOKEN"
TOKEN_FILE_ENV = "AIWEBENGINE_SECURITY__ADMIN_TOKEN_FILE"
SECRET_KEY = "5e" * 32  # 32 bytes in hex
SECRET_KEY_ENV = "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY"
SECRET_KEY_FILE_ENV = "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY_FILE"
# What production needs besides its profile.
PRODUCTION_SECRETS = {TOKEN_ENV: TOKEN, SECRET_KEY_ENV: SECRET_KEY}
REPO = Path(__file__).resolve().parents[1]
SECTIONS = {
    "server": ServerConfig,
    "database": DatabaseConfig,
    "sandbox": SandboxConfig,
    "security": SecurityConfig,
    "logging": LoggingConfig,
    "streams": StreamsConfig,
    "rate_limits": RateLimitsConfig,
    "fetch": FetchConfig,
}
ALL_KEYS = ["profile"] + [
    f"{name}.{field.name}" for name, cls in SECTIONS.items() for field in attrs.fields(cls)
]


def env_name(key: str) -> str:
    return "AIWEBENGINE_" + key.replace(".", "__").upper()


def problems_of(**kwargs: Any) -> tuple[ConfigProblem, ...]:
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as caught:
        load_config(**kwargs)
    return caught.value.problems


def only_problem(**kwargs: Any) -> ConfigProblem:
    (problem,) = problems_of(**kwargs)
    return problem


def write(tmp_path: Path, text: str, name: str = "aiwebengine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and derived values


def test_defaults_match_the_documented_values() -> None:
    config = load_config(None, env={})
    assert config == Config()
    assert config.profile is Profile.DEVELOPMENT and not config.is_production
    assert (config.server.host, config.server.port) == ("127.0.0.1", 3000)
    assert config.server.data_dir == Path("./data")
    assert config.server.shutdown_grace_s == 10.0 and config.server.install_example is True
    assert config.database == DatabaseConfig(None, "FULL", 8, 5, 30.0, 10.0)
    sandbox = config.sandbox
    assert (sandbox.pool_size, sandbox.warm_spares, sandbox.init_concurrency) == (None, 1, None)
    assert (sandbox.handler_timeout_ms, sandbox.init_timeout_ms) == (5000, 5000)
    assert sandbox.memory_limit_bytes == DEFAULT_MEMORY_LIMIT == 64 * MiB
    assert (sandbox.stack_limit_bytes, sandbox.address_space_bytes) == (MiB, 2 * GiB)
    assert (sandbox.context_cache_size, sandbox.queue_limit) == (32, 256)
    assert (sandbox.breaker_failure_threshold, sandbox.breaker_window_s) == (5, 30.0)
    assert (sandbox.breaker_cooldown_s, sandbox.max_script_bytes) == (30.0, 1_000_000)
    assert config.security == SecurityConfig(None, MiB, 10 * MiB)
    assert config.logging == LoggingConfig("info", "console")


def test_database_url_defaults_to_an_absolute_sqlite_file_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_config().database_url() == f"sqlite:///{tmp_path.resolve()}/data/aiwebengine.db"
    explicit = default_config(database={"url": "sqlite:///relative.db"})
    assert explicit.database_url() == "sqlite:///relative.db"


@pytest.mark.parametrize(
    ("cpus", "pool", "init"), [(None, 2, 4), (1, 2, 4), (8, 8, 8), (64, 64, 16)]
)
def test_automatic_pool_size_and_init_concurrency_follow_the_cpu_count(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, pool: int, init: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    sandbox = SandboxConfig()
    assert (sandbox.effective_pool_size(), sandbox.effective_init_concurrency()) == (pool, init)
    explicit = SandboxConfig(pool_size=3, init_concurrency=5)
    assert (explicit.effective_pool_size(), explicit.effective_init_concurrency()) == (3, 5)


# --- Secret, ConfigProblem, ConfigError


def test_a_secret_never_shows_its_value() -> None:
    value = "hunter2-" * 5
    secret = Secret(value)
    assert repr(secret) == str(secret) == "Secret('***')"
    assert "hunter2" not in repr(SecurityConfig(admin_token=secret))
    assert secret.reveal() == value
    assert secret.matches(value) and not secret.matches("hunter2")
    assert not secret.matches("hünter2")  # non-ASCII candidates compare, not raise
    assert secret == Secret(value) != Secret("other")
    assert hash(secret) == hash(Secret(value))


def test_a_problem_reads_key_value_problem_and_rule() -> None:
    problem = ConfigProblem(
        "sandbox.handler_timeout_ms", "'abc'", "not an integer", "integer 10..600000"
    )
    assert str(problem) == (
        "sandbox.handler_timeout_ms = 'abc': not an integer (rule: integer 10..600000)"
    )
    secret = ConfigProblem("security.admin_token", None, "required in production", "set it")
    assert str(secret) == "security.admin_token: required in production (rule: set it)"


def test_the_error_lists_every_problem_on_its_own_line() -> None:
    env = {
        "AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT_MS": "abc",
        "AIWEBENGINE_SERVER__PORT": "70000",
        "AIWEBENGINE_LOGGING__LEVEL": "loud",
    }
    with pytest.raises(ConfigError) as caught:
        load_config(None, env=env)
    problems = caught.value.problems
    assert {p.key for p in problems} == {
        "sandbox.handler_timeout_ms",
        "server.port",
        "logging.level",
    }
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid configuration, 3 problems:"
    assert sorted(lines[1:]) == sorted(str(p) for p in problems)
    assert "sandbox.handler_timeout_ms = 'abc': not an integer (rule: integer 10..600000)" in lines


# --- sources and precedence


def test_the_toml_file_sets_values_and_the_profile(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'profile = "production"\n[server]\nhost = "0.0.0.0"\nport = 8080\n'
        'data_dir = "/var/lib/aiwebengine"\n[sandbox]\nhandler_timeout_ms = 2000\n',
    )
    config = load_config(path, env=PRODUCTION_SECRETS)
    assert config.is_production
    assert config.server == ServerConfig("0.0.0.0", 8080, Path("/var/lib/aiwebengine"))
    assert config.sandbox.handler_timeout_ms == 2000


@pytest.mark.parametrize(
    ("in_file", "in_env", "in_overrides", "expected"),
    [
        (True, False, False, 1111),
        (True, True, False, 2222),
        (True, True, True, 3333),
        (False, True, True, 3333),
        (True, False, True, 3333),
    ],
)
def test_overrides_beat_the_environment_which_beats_the_file(
    tmp_path: Path, in_file: bool, in_env: bool, in_overrides: bool, expected: int
) -> None:
    path = write(tmp_path, "[server]\nport = 1111\n") if in_file else None
    env = {"AIWEBENGINE_SERVER__PORT": "2222"} if in_env else {}
    overrides = {"server.port": 3333} if in_overrides else {}
    assert load_config(path, env=env, overrides=overrides).server.port == expected


def test_the_environment_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIWEBENGINE_SERVER__PORT", "4321")
    assert load_config().server.port == 4321


def test_environment_section_and_key_are_case_insensitive() -> None:
    env = {"AIWEBENGINE_sandbox__Handler_Timeout_MS": "2000", "AIWEBENGINE_profile": "development"}
    assert load_config(None, env=env).sandbox.handler_timeout_ms == 2000


def test_the_same_key_spelled_twice_in_the_environment_is_a_problem() -> None:
    env = {"AIWEBENGINE_SERVER__PORT": "1", "AIWEBENGINE_server__port": "2"}
    problem = only_problem(env=env)
    assert problem.key == "server.port" and "AIWEBENGINE_server__port" in problem.problem


def test_variables_without_the_prefix_are_ignored() -> None:
    env = {"PATH": "/bin", "APP_SERVER__PORT": "x", "AIWEBENGINEX_SERVER__PORT": "x"}
    assert load_config(None, env=env) == Config()


def test_the_command_line_tools_own_variables_are_not_configuration_keys() -> None:
    env = {
        "AIWEBENGINE_CONFIG": "/etc/aiwebengine.toml",
        "AIWEBENGINE_SERVER": "http://127.0.0.1:3000",
        "AIWEBENGINE_TOKEN": "x",
    }
    assert load_config(None, env=env) == Config()


def test_overrides_set_to_none_count_as_not_given() -> None:
    config = load_config(
        None, env={"AIWEBENGINE_SERVER__PORT": "2222"}, overrides={"server.port": None}
    )
    assert config.server.port == 2222


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("FALSE", False), (" 1 ", True), ("0", False), ("Yes", True), ("no", False)],
)
def test_environment_booleans(text: str, expected: bool) -> None:
    env = {"AIWEBENGINE_SERVER__INSTALL_EXAMPLE": text}
    assert load_config(None, env=env).server.install_example is expected


def test_environment_strings_convert_to_each_field_type() -> None:
    env = {
        "AIWEBENGINE_SERVER__SHUTDOWN_GRACE_S": "2.5",
        "AIWEBENGINE_SERVER__DATA_DIR": "/srv/data",
        "AIWEBENGINE_SANDBOX__POOL_SIZE": "4",
        "AIWEBENGINE_SANDBOX__MEMORY_LIMIT_BYTES": "134_217_728",
        "AIWEBENGINE_DATABASE__SQLITE_SYNCHRONOUS": "normal",
        "AIWEBENGINE_LOGGING__LEVEL": "DEBUG",
        "AIWEBENGINE_LOGGING__FORMAT": "json",
    }
    config = load_config(None, env=env)
    assert config.server.shutdown_grace_s == 2.5 and config.server.data_dir == Path("/srv/data")
    assert (config.sandbox.pool_size, config.sandbox.memory_limit_bytes) == (4, 128 * MiB)
    assert config.database.sqlite_synchronous == "NORMAL"
    assert (config.logging.level, config.logging.format) == ("debug", "json")


def test_an_empty_environment_value_resets_an_optional_field(tmp_path: Path) -> None:
    path = write(tmp_path, '[sandbox]\npool_size = 4\n[database]\nurl = "sqlite:///x.db"\n')
    env = {"AIWEBENGINE_SANDBOX__POOL_SIZE": "", "AIWEBENGINE_DATABASE__URL": " "}
    config = load_config(path, env=env)
    assert config.sandbox.pool_size is None and config.database.url is None


def test_an_empty_environment_value_for_a_required_field_is_a_problem() -> None:
    problem = only_problem(env={"AIWEBENGINE_SERVER__PORT": ""})
    assert (problem.key, problem.value, problem.problem) == ("server.port", "''", "not an integer")


# --- default_config


def test_default_config_accepts_sections_dotted_keys_and_instances() -> None:
    assert default_config(sandbox={"pool_size": 2}).sandbox.pool_size == 2
    assert default_config(**{"server.port": 0}).server.port == 0
    assert default_config(sandbox__warm_spares=3).sandbox.warm_spares == 3
    assert default_config(server=ServerConfig(port=9)).server == ServerConfig(port=9)
    production = default_config(
        profile="production",
        security={"admin_token": TOKEN, "secret_encryption_key": SECRET_KEY},
    )
    assert production.is_production and production.security.admin_token == Secret(TOKEN)
    with pytest.raises(ConfigError):
        default_config(sandbox={"pool_size": 0})


# --- per-field rules


BOOLEAN = "not a boolean (true/false/1/0/yes/no)"
RULES = {
    "profile": "development or production",
    "server.host": "host name or IP address",
    "server.port": "integer 0..65535",
    "server.data_dir": "non-empty path",
    "server.shutdown_grace_s": "number > 0",
    "server.install_example": "true or false",
    "database.sqlite_synchronous": "one of OFF, NORMAL, FULL, EXTRA",
    "database.threads": "integer 1..64",
    "database.breaker_failure_threshold": "integer 1..1000",
    "database.breaker_window_s": "number > 0",
    "database.breaker_cooldown_s": "number > 0",
    "sandbox.pool_size": "integer 1..256, or empty for max(2, CPU count)",
    "sandbox.warm_spares": "integer 0..16",
    "sandbox.handler_timeout_ms": "integer 10..600000",
    "sandbox.init_timeout_ms": "integer 10..600000",
    "sandbox.memory_limit_bytes": "integer >= 1048576 (>= 1 MiB)",
    "sandbox.stack_limit_bytes": "integer 65536..67108864 (64 KiB..64 MiB)",
    "sandbox.address_space_bytes": "integer >= 268435456 (>= 256 MiB)",
    "sandbox.context_cache_size": "integer 1..4096",
    "sandbox.queue_limit": "integer 0..100000",
    "sandbox.breaker_failure_threshold": "integer 1..1000",
    "sandbox.breaker_window_s": "number > 0",
    "sandbox.breaker_cooldown_s": "number > 0",
    "sandbox.init_concurrency": "integer 1..256, or empty for CPU count within 4..16",
    "sandbox.max_script_bytes": "integer 1..67108864",
    "sandbox.deprioritize_after_ms": "integer 0..600000",
    "security.max_request_body_bytes": "integer >= 1",
    "security.max_upload_bytes": "integer >= 1",
    "fetch.timeout_s": "number > 0",
    "fetch.max_response_bytes": "integer 1024..1073741824 (1 KiB..1 GiB)",
    "fetch.allow_networks": "comma-separated IP addresses or CIDR networks, or empty",
    "security.trusted_proxies": "comma-separated IP addresses or CIDR networks, or empty",
    "security.hsts": "true or false",
    "rate_limits.engine": "<requests>/<period> with period in ms, s, m, h or d, e.g. 300/10s",
    "logging.level": "one of debug, info, warning, error",
    "logging.format": "one of console, json",
}


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("profile", "staging", "not a known profile"),
        ("server.host", "my host", "not a host name or IP address"),
        ("server.port", "65536", "above the maximum 65535"),
        ("server.port", "-1", "below the minimum 0"),
        ("server.port", "80.5", "not an integer"),
        ("server.data_dir", "  ", "empty path"),
        ("server.shutdown_grace_s", "0", "not greater than 0"),
        ("server.shutdown_grace_s", "nan", "not a finite number"),
        ("server.shutdown_grace_s", "-inf", "not a finite number"),
        ("server.shutdown_grace_s", "soon", "not a number"),
        ("server.install_example", "maybe", BOOLEAN),
        ("database.sqlite_synchronous", "fast", "not one of the choices"),
        ("database.threads", "65", "above the maximum 64"),
        ("database.threads", "0", "below the minimum 1"),
        ("database.breaker_failure_threshold", "0", "below the minimum 1"),
        ("database.breaker_window_s", "-1", "not greater than 0"),
        ("database.breaker_cooldown_s", "0.0", "not greater than 0"),
        ("sandbox.pool_size", "257", "above the maximum 256"),
        ("sandbox.pool_size", "0", "below the minimum 1"),
        ("sandbox.warm_spares", "17", "above the maximum 16"),
        ("sandbox.handler_timeout_ms", "9", "below the minimum 10"),
        ("sandbox.init_timeout_ms", "600001", "above the maximum 600000"),
        ("sandbox.memory_limit_bytes", str(MiB - 1), "below the minimum 1048576"),
        ("sandbox.stack_limit_bytes", str(64 * KiB - 1), "below the minimum 65536"),
        ("sandbox.stack_limit_bytes", str(64 * MiB + 1), "above the maximum 67108864"),
        ("sandbox.address_space_bytes", str(256 * MiB - 1), "below the minimum 268435456"),
        ("sandbox.context_cache_size", "4097", "above the maximum 4096"),
        ("sandbox.queue_limit", "100001", "above the maximum 100000"),
        ("sandbox.breaker_failure_threshold", "1001", "above the maximum 1000"),
        ("sandbox.breaker_window_s", "0", "not greater than 0"),
        ("sandbox.breaker_cooldown_s", "x", "not a number"),
        ("sandbox.init_concurrency", "0", "below the minimum 1"),
        ("sandbox.max_script_bytes", "0", "below the minimum 1"),
        ("security.max_request_body_bytes", "0", "below the minimum 1"),
        ("security.max_upload_bytes", "x", "not an integer"),
        ("fetch.timeout_s", "0", "not greater than 0"),
        ("fetch.max_response_bytes", "1023", "below the minimum 1024"),
        ("fetch.allow_networks", "127.0.0.0/8, x", "'x' is not an IP address or CIDR network"),
        (
            "security.trusted_proxies",
            "10.0.0.0/33",
            "'10.0.0.0/33' is not an IP address or CIDR network",
        ),
        ("security.trusted_proxies", "10.0.0.1,,", "'' is not an IP address or CIDR network"),
        ("security.hsts", "sometimes", BOOLEAN),
        ("rate_limits.engine", "300", "not <requests>/<period>, e.g. 300/10s or 60/1m"),
        ("rate_limits.engine", "300/10", "not <requests>/<period>, e.g. 300/10s or 60/1m"),
        ("rate_limits.engine", "0/10s", "the request count must be within 1..1000000000"),
        ("rate_limits.engine", "5/0s", "the period must be within 1ms..1d"),
        ("rate_limits.engine", "5/2d", "the period must be within 1ms..1d"),
        ("logging.level", "trace", "not one of the choices"),
        ("logging.format", "xml", "not one of the choices"),
    ],
)
def test_each_field_rule_names_key_value_problem_and_rule(
    key: str, value: str, problem: str
) -> None:
    found = only_problem(env={env_name(key): value})
    assert found == ConfigProblem(key, repr(value), problem, RULES[key])


@pytest.mark.parametrize(
    ("toml", "key", "problem"),
    [
        ("[server]\nport = 80.0\n", "server.port", "not an integer"),
        ("[server]\nport = true\n", "server.port", "not an integer"),
        ("[server]\nhost = 8080\n", "server.host", "not a string"),
        ("[server]\ninstall_example = 1\n", "server.install_example", BOOLEAN),
        ("[server]\nshutdown_grace_s = false\n", "server.shutdown_grace_s", "not a number"),
    ],
)
def test_toml_values_must_have_the_fields_type(
    tmp_path: Path, toml: str, key: str, problem: str
) -> None:
    found = only_problem(path=write(tmp_path, toml))
    assert (found.key, found.problem) == (key, problem)


def test_toml_ints_are_accepted_for_number_fields(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nshutdown_grace_s = 3\n")
    assert load_config(path, env={}).server.shutdown_grace_s == 3.0


def test_postgresql_is_refused_for_now_without_echoing_the_password() -> None:
    url = "postgresql://engine:pa55word@db.internal/aiwebengine"
    problem = only_problem(env={"AIWEBENGINE_DATABASE__URL": url})
    assert problem.key == "database.url" and problem.problem == "PostgreSQL is not supported yet"
    assert "pa55word" not in str(problem) and "db.internal" in str(problem)
    assert "PostgreSQL comes later" in problem.rule


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "mysql://x/y", "/var/db.sqlite"])
def test_only_sqlite_urls_with_a_path_are_accepted(url: str) -> None:
    problem = only_problem(env={"AIWEBENGINE_DATABASE__URL": url})
    assert problem.problem == "not a sqlite:/// URL with a path"


def test_long_values_are_shortened_in_problems() -> None:
    problem = only_problem(env={"AIWEBENGINE_SERVER__PORT": "x" * 500})
    assert problem.value is not None and len(problem.value) <= 80


def test_sections_built_in_code_check_their_rules() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        SandboxConfig(pool_size=0)
    with pytest.raises(ValueError, match="level"):
        LoggingConfig(level="INFO")  # canonical spelling only; loading normalises it
    with pytest.raises(ValueError, match="admin_token"):
        SecurityConfig(admin_token=Secret("short"))


# --- unknown keys


def test_unknown_toml_keys_and_sections_are_problems_with_a_suggestion(tmp_path: Path) -> None:
    path = write(
        tmp_path, "prfile = 'production'\n[sandbox]\nhandler_timeout = 5\n[servr]\nport = 1\n"
    )
    problems = {p.key: p for p in problems_of(path=path)}
    assert set(problems) == {"prfile", "sandbox.handler_timeout", "servr"}
    assert all(p.problem.startswith("unknown key") and p.value is None for p in problems.values())
    assert "did you mean sandbox.handler_timeout_ms?" in problems["sandbox.handler_timeout"].problem
    assert "did you mean server?" in problems["servr"].problem
    assert "handler_timeout_ms" in problems["sandbox.handler_timeout"].rule


def test_unknown_environment_keys_are_problems_that_name_the_variable() -> None:
    env = {
        "AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT": "secret-looking-value",
        "AIWEBENGINE_PROFIL": "production",
        "AIWEBENGINE_NOPE__": "1",
    }
    problems = {p.key: p for p in problems_of(env=env)}
    assert set(problems) == {"sandbox.handler_timeout", "AIWEBENGINE_PROFIL", "AIWEBENGINE_NOPE__"}
    timeout = problems["sandbox.handler_timeout"]
    assert "AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT" in timeout.problem
    assert "did you mean AIWEBENGINE_SANDBOX__HANDLER_TIMEOUT_MS?" in timeout.problem
    # An unknown variable may be a mistyped secret: its value is never repeated.
    assert all(p.value is None for p in problems.values())
    assert "secret-looking-value" not in str(ConfigError(tuple(problems.values())))


def test_unknown_override_keys_are_problems() -> None:
    problem = only_problem(overrides={"server.prot": 1})
    assert problem.key == "server.prot" and "did you mean server.port?" in problem.problem


def test_a_section_that_is_not_a_table_is_a_problem(tmp_path: Path) -> None:
    problem = only_problem(path=write(tmp_path, "server = 5\n"))
    assert (problem.key, problem.problem) == ("server", "not a table")


# --- the file itself


def test_toml_that_does_not_parse_is_one_problem_naming_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 80\nhost = \n")
    problem = only_problem(path=path)
    assert problem.key == str(path) and "line 3" in problem.problem


def test_a_broken_file_does_not_hide_the_other_problems(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\n")
    problems = problems_of(path=path, env={"AIWEBENGINE_SERVER__PORT": "x"})
    assert [p.key for p in problems] == [str(path), "server.port"]


def test_a_missing_file_is_a_problem(tmp_path: Path) -> None:
    problem = only_problem(path=tmp_path / "absent.toml")
    assert problem.key == str(tmp_path / "absent.toml") and "cannot read" in problem.problem


def test_a_file_that_is_not_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nhost = '\xe9'\n")
    assert only_problem(path=path).problem.startswith("not valid TOML")


# --- the admin token


def test_the_admin_token_comes_from_the_environment() -> None:
    token = load_config(None, env={TOKEN_ENV: TOKEN}).security.admin_token
    assert token is not None and token.matches(TOKEN)


def test_the_admin_token_comes_from_a_file_without_its_trailing_newline(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    token = load_config(None, env={TOKEN_FILE_ENV: str(tmp_path / "token")}).security.admin_token
    assert token == Secret(TOKEN)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "not a regular file"), ("\n", "file is empty"), ("x" * 5000, "file too large")],
)
def test_an_unusable_token_file_is_a_problem_and_no_other(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    # server.host is non-loopback: the missing token must not be reported a second time.
    env = {TOKEN_FILE_ENV: str(path), "AIWEBENGINE_SERVER__HOST": "0.0.0.0"}
    found = only_problem(env=env)
    assert (found.key, found.value, found.problem) == (
        "security.admin_token_file",
        repr(str(path)),
        problem,
    )


def test_an_unreadable_token_file_is_a_problem(tmp_path: Path) -> None:
    # A name longer than the file system allows fails to open even for root.
    problem = only_problem(env={TOKEN_FILE_ENV: str(tmp_path / ("x" * 300))})
    assert problem.key == "security.admin_token_file"
    assert problem.problem == "cannot read: File name too long"


def test_a_token_and_a_token_file_together_are_a_problem(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN)
    env = {TOKEN_ENV: TOKEN, TOKEN_FILE_ENV: str(tmp_path / "token")}
    problem = only_problem(env=env)
    assert problem.key == "security.admin_token" and "only one" in problem.problem


def test_an_override_token_beats_an_environment_token_file(tmp_path: Path) -> None:
    env = {TOKEN_FILE_ENV: str(tmp_path / "absent")}
    config = load_config(None, env=env, overrides={"security.admin_token": "o" * 32})
    assert config.security.admin_token == Secret("o" * 32)


def test_a_token_in_the_toml_file_is_refused_and_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, f'[security]\nadmin_token = "{TOKEN}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert problem.key == "security.admin_token" and problem.value is None
    assert "not accepted from the configuration file" in problem.problem
    assert TOKEN_ENV in problem.rule and TOKEN not in str(caught.value)


def test_a_short_token_is_a_problem_that_does_not_print_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={TOKEN_ENV: "s3cr3t-but-short"})
    (problem,) = caught.value.problems
    assert problem.key == "security.admin_token" and problem.value is None
    assert problem.problem == "shorter than 32 characters"
    assert "s3cr3t" not in str(caught.value)


# --- the secret encryption key


def test_the_secret_encryption_key_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    config = load_config(None, env={SECRET_KEY_ENV: f" {SECRET_KEY} "})
    assert config.security.secret_encryption_key is not None
    (tmp_path / "key").write_text(SECRET_KEY + "\n")
    from_file = load_config(None, env={SECRET_KEY_FILE_ENV: str(tmp_path / "key")})
    assert from_file.security.secret_encryption_key == Secret(SECRET_KEY)
    assert load_config(None, env={}).security.secret_encryption_key is None


@pytest.mark.parametrize("key", ["secret_encryption_key", "secret_encryption_key_file"])
def test_the_secret_encryption_key_is_refused_in_the_toml_file(tmp_path: Path, key: str) -> None:
    path = write(tmp_path, f'[security]\n{key} = "{SECRET_KEY}"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    (problem,) = caught.value.problems
    assert problem.key == f"security.{key}" and problem.value is None
    assert "not accepted from the configuration file" in problem.problem
    assert SECRET_KEY_ENV in problem.rule and SECRET_KEY not in str(caught.value)


@pytest.mark.parametrize("text", ["short", "zz" * 32, "00" * 32, "5e" * 31])
def test_an_unusable_secret_encryption_key_is_a_problem_that_does_not_print_it(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, env={SECRET_KEY_ENV: text})
    (problem,) = caught.value.problems
    assert problem.key == "security.secret_encryption_key" and problem.value is None
    assert "generate" in problem.problem and text not in str(caught.value)


def test_a_secret_encryption_key_and_its_file_together_are_a_problem(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(SECRET_KEY)
    env = {SECRET_KEY_ENV: SECRET_KEY, SECRET_KEY_FILE_ENV: str(tmp_path / "key")}
    problem = only_problem(env=env)
    assert problem.key == "security.secret_encryption_key" and "only one" in problem.problem


def test_production_requires_a_secret_encryption_key_and_says_how_to_make_one() -> None:
    problem = only_problem(env={"AIWEBENGINE_PROFILE": "production", TOKEN_ENV: TOKEN})
    assert problem.key == "security.secret_encryption_key"
    assert problem.problem.startswith("required in production")
    assert SECRET_KEY_ENV in problem.rule and SECRET_KEY_FILE_ENV in problem.rule
    assert "from security import generate_key_text; print(generate_key_text())" in problem.rule


def test_fetch_allow_networks_are_parsed() -> None:
    env = {"AIWEBENGINE_FETCH__ALLOW_NETWORKS": " 127.0.0.0/8 , ::1 "}
    networks = load_config(None, env=env).fetch.allowed_networks()
    assert [str(network) for network in networks] == ["127.0.0.0/8", "::1/128"]
    assert load_config(None, env={}).fetch.allowed_networks() == ()


def test_production_requires_an_admin_token() -> None:
    problem = only_problem(env={"AIWEBENGINE_PROFILE": "production", SECRET_KEY_ENV: SECRET_KEY})
    assert (problem.key, problem.problem) == ("security.admin_token", "required in production")
    assert TOKEN_ENV in problem.rule and TOKEN_FILE_ENV in problem.rule
    config = load_config(None, env={"AIWEBENGINE_PROFILE": "production", **PRODUCTION_SECRETS})
    assert config.is_production


def test_production_with_a_short_token_reports_only_the_length() -> None:
    env = {"AIWEBENGINE_PROFILE": "production", TOKEN_ENV: "short", SECRET_KEY_ENV: SECRET_KEY}
    assert only_problem(env=env).problem == "shorter than 32 characters"


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "192.168.1.10", "example.org", "::ffff:10.0.0.1"]
)
def test_development_on_a_public_address_needs_an_admin_token(host: str) -> None:
    problem = only_problem(env={"AIWEBENGINE_SERVER__HOST": host})
    assert (problem.key, problem.value) == ("server.host", repr(host))
    assert problem.problem == "binding a non-loopback address needs an admin token"
    assert load_config(None, env={"AIWEBENGINE_SERVER__HOST": host, TOKEN_ENV: TOKEN})


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost", "::ffff:127.0.0.1"],
)
def test_development_on_loopback_needs_no_token(host: str) -> None:
    assert load_config(None, env={"AIWEBENGINE_SERVER__HOST": host}).server.host == host


def test_the_heap_limit_must_fit_in_the_address_space() -> None:
    env = {
        "AIWEBENGINE_SANDBOX__MEMORY_LIMIT_BYTES": str(512 * MiB),
        "AIWEBENGINE_SANDBOX__ADDRESS_SPACE_BYTES": str(256 * MiB),
    }
    problem = only_problem(env=env)
    assert (problem.key, problem.value) == ("sandbox.memory_limit_bytes", str(512 * MiB))
    assert "sandbox.address_space_bytes" in problem.problem
    env["AIWEBENGINE_SANDBOX__ADDRESS_SPACE_BYTES"] = str(512 * MiB)
    assert load_config(None, env=env).sandbox.memory_limit_bytes == 512 * MiB


def test_rules_across_fields_skip_fields_that_already_failed() -> None:
    env = {
        "AIWEBENGINE_SANDBOX__MEMORY_LIMIT_BYTES": str(4 * GiB),
        "AIWEBENGINE_SANDBOX__ADDRESS_SPACE_BYTES": "lots",
        "AIWEBENGINE_PROFILE": "prod",
    }
    assert {p.key for p in problems_of(env=env)} == {"sandbox.address_space_bytes", "profile"}


def test_every_problem_from_every_source_is_reported_together(tmp_path: Path) -> None:
    path = write(tmp_path, '[security]\nadmin_token = "x"\n[sandbox]\nwarm_spares = 99\n')
    env = {"AIWEBENGINE_PROFILE": "production", "AIWEBENGINE_SERVER__PORTT": "1"}
    problems = problems_of(path=path, env=env, overrides={"sandbox.queue_limit": -5})
    assert [p.key for p in problems] == [
        "security.admin_token",  # in the file
        "server.portt",  # unknown variable
        "sandbox.warm_spares",
        "sandbox.queue_limit",
        "security.admin_token",  # required in production
        "security.secret_encryption_key",  # required in production
    ]


# --- the shipped examples


def test_config_example_documents_every_key_with_its_default(tmp_path: Path) -> None:
    example = (REPO / "config.example.toml").read_text()
    # Defaults are written "# key = value"; tables stay.  Uncommented, they load as the defaults.
    lines = [
        line if line.startswith("[") else line[1:].strip()
        for line in example.splitlines()
        if line.startswith("[") or re.fullmatch(r"# ?\w+ = .*", line)
    ]
    uncommented = "\n".join(lines) + "\n"
    assert load_config(write(tmp_path, uncommented), env={}) == Config()
    document = tomllib.loads(uncommented)
    written = {
        f"{table}.{key}" if isinstance(body, dict) else table
        for table, body in document.items()
        for key in (body if isinstance(body, dict) else [table])
    }
    # Settings without a TOML default are explained in prose and shown as indented examples.
    unset = {"database.url", "sandbox.pool_size", "sandbox.init_concurrency"}
    secrets = {"security.admin_token", "security.secret_encryption_key"}
    assert written == set(ALL_KEYS) - unset - secrets
    for key in unset:
        assert re.search(rf"(?m)^#\s+{key.partition('.')[2]} = ", example), key
    assert "AIWEBENGINE_SECURITY__ADMIN_TOKEN" in example
    assert "AIWEBENGINE_SECURITY__SECRET_ENCRYPTION_KEY" in example


def test_env_example_names_only_known_variables_and_leaves_the_token_empty() -> None:
    example = REPO / ".env.example"
    pairs = [
        line.lstrip("# ").split("=", 1)
        for line in example.read_text().splitlines()
        if re.match(r"#?\s?AIWEBENGINE_\w+=", line)
    ]
    env = {name: value for name, value in pairs}
    assert env[TOKEN_ENV] == "" and f"{TOKEN_ENV}=" in example.read_text().splitlines()
    assert "secrets.token_urlsafe(48)" in example.read_text()
    assert env[SECRET_KEY_ENV] == "" and "generate_key_text()" in example.read_text()
    env.pop(TOKEN_FILE_ENV, None)
    env.pop(SECRET_KEY_FILE_ENV, None)
    # With a token (the empty default means "none"), every documented variable loads.
    config = load_config(None, env={**env, TOKEN_ENV: TOKEN})
    assert config == Config(security=SecurityConfig(admin_token=Secret(TOKEN)))
    assert {env_name(key) for key in ALL_KEYS if key != "security.admin_token"} <= set(env)


def test_the_administrators_guide_has_a_table_row_for_every_key() -> None:
    guide = (REPO / "docs/administrators/configuration.md").read_text()
    for key in ALL_KEYS:
        section, _, name = key.rpartition(".")
        heading = f"### `[{section}]`" if section else "### top level"
        table = guide.split(heading, 1)[1].split("\n### ", 1)[0]
        assert f"| `{name}` |" in table, key


# --- properties


KNOWN_ENV_NAMES = [env_name(key) for key in ALL_KEYS] + [TOKEN_FILE_ENV, SECRET_KEY_FILE_ENV]
env_names = st.one_of(
    st.sampled_from(KNOWN_ENV_NAMES),
    st.sampled_from(KNOWN_ENV_NAMES).map(str.lower).map(lambda n: "AIWEBENGINE_" + n[12:]),
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcxyz019", max_size=30).map(
        lambda rest: "AIWEBENGINE_" + rest
    ),
)
env_values = st.one_of(
    st.text(),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", " ", "true", "no", "production", "0.0.0.0", "sqlite:///x", "1e999"]),
)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(env=st.dictionaries(env_names, env_values, max_size=8))
def test_any_environment_gives_a_config_or_problems_that_name_keys(env: dict[str, str]) -> None:
    try:
        load_config(None, env=env)
    except ConfigError as error:
        assert error.problems
        known = set(ALL_KEYS) | {
            "security.admin_token_file",
            "security.secret_encryption_key_file",
        }
        for problem in error.problems:
            named = problem.key in known or problem.key in env
            derived = any(problem.key == name[12:].lower().replace("__", ".", 1) for name in env)
            assert named or derived, problem
            if problem.key in ("security.admin_token", "security.secret_encryption_key"):
                assert problem.value is None


def loopback_host(host: str) -> bool:
    return host in ("127.0.0.1", "::1", "localhost")


@st.composite
def valid_configs(draw: st.DrawFn) -> Config:
    def positive() -> float:
        return draw(st.floats(min_value=0, exclude_min=True, allow_infinity=False))

    host = draw(
        st.sampled_from(["127.0.0.1", "::1", "localhost", "0.0.0.0", "example.org"])
        | st.from_regex(r"[A-Za-z0-9._:%\[\]-]+", fullmatch=True)
    )
    server = ServerConfig(
        host=host,
        port=draw(st.integers(0, 65535)),
        data_dir=Path(draw(st.text(min_size=1).filter(lambda s: s.strip() and "\0" not in s))),
        shutdown_grace_s=positive(),
        install_example=draw(st.booleans()),
    )
    database = DatabaseConfig(
        url=draw(st.none() | st.text(min_size=1).map(lambda path: "sqlite:///" + path)),
        sqlite_synchronous=draw(st.sampled_from(["OFF", "NORMAL", "FULL", "EXTRA"])),
        threads=draw(st.integers(1, 64)),
        breaker_failure_threshold=draw(st.integers(1, 1000)),
        breaker_window_s=positive(),
        breaker_cooldown_s=positive(),
    )
    address_space = draw(st.integers(256 * MiB, 2**62))
    sandbox = SandboxConfig(
        pool_size=draw(st.none() | st.integers(1, 256)),
        warm_spares=draw(st.integers(0, 16)),
        handler_timeout_ms=draw(st.integers(10, 600_000)),
        init_timeout_ms=draw(st.integers(10, 600_000)),
        memory_limit_bytes=draw(st.integers(MiB, address_space)),
        stack_limit_bytes=draw(st.integers(64 * KiB, 64 * MiB)),
        address_space_bytes=address_space,
        context_cache_size=draw(st.integers(1, 4096)),
        queue_limit=draw(st.integers(0, 100_000)),
        breaker_failure_threshold=draw(st.integers(1, 1000)),
        breaker_window_s=positive(),
        breaker_cooldown_s=positive(),
        init_concurrency=draw(st.none() | st.integers(1, 256)),
        max_script_bytes=draw(st.integers(1, 64 * MiB)),
    )
    profile = draw(st.sampled_from(Profile))
    token = draw(st.none() | st.text(min_size=32).filter(str.strip).map(Secret))
    if token is None and (profile is Profile.PRODUCTION or not loopback_host(host)):
        token = Secret(TOKEN)
    key = draw(st.none() | st.just(Secret(SECRET_KEY)))
    if key is None and profile is Profile.PRODUCTION:
        key = Secret(SECRET_KEY)
    security = SecurityConfig(
        admin_token=token,
        secret_encryption_key=key,
        max_request_body_bytes=draw(st.integers(1, 2**40)),
        max_upload_bytes=draw(st.integers(1, 2**40)),
        trusted_proxies=draw(st.sampled_from(["", "10.0.0.0/8", "127.0.0.1, ::1/128"])),
        hsts=draw(st.booleans()),
    )
    logging = LoggingConfig(
        level=draw(st.sampled_from(["debug", "info", "warning", "error"])),
        format=draw(st.sampled_from(["console", "json"])),
    )
    streams = StreamsConfig(
        heartbeat_s=positive(),
        queue_size=draw(st.integers(1, 100_000)),
        replay_size=draw(st.integers(0, 100_000)),
        max_per_stream=draw(st.integers(1, 1_000_000)),
        max_total=draw(st.integers(1, 1_000_000)),
        max_message_bytes=draw(st.integers(1, 64 * MiB)),
        max_handler_errors=draw(st.integers(1, 1000)),
        ping_interval_s=positive(),
    )
    rates = st.from_regex(r"[1-9][0-9]{0,5}/([1-9][0-9]{0,2})?(ms|s|m)", fullmatch=True)
    rate_limits = RateLimitsConfig(
        enabled=draw(st.booleans()),
        solutions=draw(rates),
        engine=draw(rates),
        auth=draw(rates),
        graphql=draw(rates),
        streams=draw(rates),
    )
    fetch = FetchConfig(
        timeout_s=positive(),
        max_response_bytes=draw(st.integers(KiB, GiB)),
        allow_networks=draw(st.sampled_from(["", "127.0.0.0/8", "10.0.0.0/8, fd00::/8"])),
    )
    return Config(
        profile, server, database, sandbox, security, logging, streams, rate_limits, fetch
    )


def toml_literal(value: Any) -> str:
    """A tiny TOML writer for the scalar types the configuration uses."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    escaped = "".join(
        f"\\u{ord(ch):04x}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
        for ch in str(value).replace("\\", "\\\\").replace('"', '\\"')
    )
    return f'"{escaped}"'


def to_toml(document: Mapping[str, Any]) -> str:
    if tomli_w is not None:
        return str(tomli_w.dumps(document))
    lines = [f"{k} = {toml_literal(v)}" for k, v in document.items() if not isinstance(v, dict)]
    for table, values in document.items():
        if isinstance(values, dict):
            lines.append(f"[{table}]")
            lines.extend(f"{k} = {toml_literal(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def as_document(config: Config) -> dict[str, Any]:
    """The TOML document for a configuration: no secret, no unset optional values."""
    document: dict[str, Any] = {"profile": config.profile.value}
    for name in SECTIONS:
        section = getattr(config, name)
        document[name] = {
            field.name: str(value) if isinstance(value, Path) else value
            for field in attrs.fields(type(section))
            if (value := getattr(section, field.name)) is not None and not isinstance(value, Secret)
        }
    return document


@pytest.mark.parametrize("writer", ["tomli_w", "tiny"])
def test_both_toml_writers_handle_awkward_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    if writer == "tiny":
        monkeypatch.setattr(f"{__name__}.tomli_w", None)
    elif tomli_w is None:
        pytest.skip("tomli_w is not installed")
    config = default_config(server={"data_dir": 'a"b\\c\x7f\x01\n\U0001f600'})
    path = write(tmp_path, to_toml(as_document(config)))
    assert load_config(path, env={}) == config


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(config=valid_configs())
def test_a_valid_config_written_as_toml_loads_back_equal(tmp_path: Path, config: Config) -> None:
    path = write(tmp_path, to_toml(as_document(config)))
    token, key = config.security.admin_token, config.security.secret_encryption_key
    env = {TOKEN_ENV: token.reveal()} if token is not None else {}
    if key is not None:
        env[SECRET_KEY_ENV] = key.reveal()
    assert load_config(path, env=env) == config


INT_RANGES = {
    "server.port": (0, 65535),
    "database.threads": (1, 64),
    "database.breaker_failure_threshold": (1, 1000),
    "sandbox.pool_size": (1, 256),
    "sandbox.warm_spares": (0, 16),
    "sandbox.handler_timeout_ms": (10, 600_000),
    "sandbox.init_timeout_ms": (10, 600_000),
    "sandbox.memory_limit_bytes": (MiB, 2 * GiB),  # at most the default address space
    "sandbox.stack_limit_bytes": (64 * KiB, 64 * MiB),
    "sandbox.address_space_bytes": (256 * MiB, math.inf),
    "sandbox.context_cache_size": (1, 4096),
    "sandbox.queue_limit": (0, 100_000),
    "sandbox.breaker_failure_threshold": (1, 1000),
    "sandbox.init_concurrency": (1, 256),
    "sandbox.max_script_bytes": (1, 64 * MiB),
    "sandbox.deprioritize_after_ms": (0, 600_000),
    "security.max_request_body_bytes": (1, math.inf),
    "security.max_upload_bytes": (1, math.inf),
    "streams.queue_size": (1, 100_000),
    "streams.replay_size": (0, 100_000),
    "streams.max_per_stream": (1, 1_000_000),
    "streams.max_total": (1, 1_000_000),
    "streams.max_message_bytes": (1, 64 * MiB),
    "streams.max_handler_errors": (1, 1000),
    "fetch.max_response_bytes": (KiB, GiB),
}
OPTIONAL_INTS = {"sandbox.pool_size", "sandbox.init_concurrency"}


def test_the_integer_table_covers_every_integer_field() -> None:
    ints = {
        f"{name}.{field.name}"
        for name, cls in SECTIONS.items()
        for field in attrs.fields(attrs.resolve_types(cls))
        if field.type in (int, int | None)
    }
    assert ints == set(INT_RANGES)


def acceptable(key: str, text: str) -> bool:
    """The specification of an integer setting, written independently of the loader."""
    stripped = text.strip()
    if key in OPTIONAL_INTS and not stripped:
        return True
    if not re.fullmatch(r"[+-]?[0-9]+(_[0-9]+)*", stripped):
        return False
    try:
        number = int(stripped)
    except ValueError:  # more digits than Python converts
        return False
    low, high = INT_RANGES[key]
    return low <= number <= high


@given(
    key=st.sampled_from(sorted(INT_RANGES)),
    text=st.one_of(
        st.text(),
        st.integers().map(str),
        st.integers(-(2**70), 2**70).map(lambda n: f" {n:_} "),
        st.from_regex(r"\s*[+-]?[0-9_.e]+\s*", fullmatch=True),
        st.sampled_from(["٣", "1.0", "0x10", "1__0", "_1", "1e3", "true", "inf"]),
    ),
)
def test_an_integer_setting_that_is_not_an_int_in_range_is_exactly_one_problem(
    key: str, text: str
) -> None:
    assume(not acceptable(key, text))
    problems = problems_of(env={env_name(key): text})
    assert [p.key for p in problems] == [key]
    assert problems[0].value is not None


@given(key=st.sampled_from(sorted(INT_RANGES)), data=st.data())
def test_an_integer_setting_in_range_is_accepted(key: str, data: st.DataObject) -> None:
    low, high = INT_RANGES[key]
    number = data.draw(st.integers(low, None if high == math.inf else int(high)))
    section, _, name = key.partition(".")
    loaded = load_config(None, env={env_name(key): f" {number} "})
    assert getattr(getattr(loaded, section), name) == number
