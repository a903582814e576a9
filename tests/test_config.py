"""Configuration: defaults, the TOML file, environment overrides, every problem reported."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from callcenter.config import (
    SECRET_KEYS,
    Config,
    ConfigError,
    ConfigProblem,
    check_environment,
    load_config,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "callcenter.example.toml"
CONFIG_DOC = REPO / "docs" / "configuration.md"


def write(tmp_path: Path, text: str, name: str = "callcenter.toml") -> Path:
    """A TOML file with ``text`` in the test's own directory."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, environ: dict[str, str] | None = None) -> list[ConfigProblem]:
    """The problems load_config reports for this file and environment."""
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={} if environ is None else environ)
    return caught.value.problems


def by_key(problems: list[ConfigProblem]) -> dict[str, ConfigProblem]:
    """Problems indexed by their dotted key."""
    return {problem.key: problem for problem in problems}


def all_keys() -> set[tuple[str, str]]:
    """Every (section, key) the configuration knows."""
    keys = set()
    for section, field in Config.model_fields.items():
        assert field.annotation is not None
        for key in field.annotation.model_fields:
            keys.add((section, key))
    return keys


def mosquitto_path() -> str:
    """The mosquitto executable of this machine (Debian keeps it in /usr/sbin)."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin")
    assert found, "mosquitto is not installed; run scripts/dev setup"
    return found


def test_defaults_load_without_file_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that with no file and no environment every default is in force."""
    monkeypatch.chdir(tmp_path)
    config = load_config(None, environ={})
    assert config == Config()
    assert config.district.timezone == "Asia/Shanghai"
    assert config.broker.port == 1883
    assert config.ingest.max_batch == 1000
    assert config.embedded_broker_wanted
    assert config.database_url == f"sqlite+aiosqlite:///{tmp_path / 'var' / 'callcenter.db'}"


def test_callcenter_toml_in_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that ./callcenter.toml is read when no path is given."""
    write(tmp_path, '[district]\nname = "North"\n')
    monkeypatch.chdir(tmp_path)
    assert load_config(None, environ={}).district.name == "North"


def test_example_file_loads_and_equals_defaults() -> None:
    """Test that callcenter.example.toml is valid and changes nothing."""
    assert load_config(EXAMPLE, environ={}) == Config()


def test_example_file_shows_every_key_except_secrets() -> None:
    """Test that callcenter.example.toml lists every key, and no secret."""
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    shown = {(section, key) for section, body in raw.items() for key in body}
    assert shown == all_keys() - SECRET_KEYS
    text = EXAMPLE.read_text(encoding="utf-8")
    for section, key in SECRET_KEYS:
        assert f"CALLCENTER_{section.upper()}__{key.upper()}" in text


def test_configuration_doc_describes_every_key() -> None:
    """Test that docs/configuration.md names every key as section.key."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    missing = sorted(f"{s}.{k}" for s, k in all_keys() if f"`{s}.{k}`" not in text)
    assert not missing, f"docs/configuration.md does not describe: {', '.join(missing)}"


def test_environment_overrides_file(tmp_path: Path) -> None:
    """Test that CALLCENTER_<SECTION>__<KEY> wins over the file and is converted to its type."""
    path = write(
        tmp_path,
        '[district]\nname = "North"\n[ingest]\nmax_batch = 10\n[database]\necho = false\n',
    )
    config = load_config(
        path,
        environ={
            "CALLCENTER_INGEST__MAX_BATCH": "500",
            "CALLCENTER_DATABASE__ECHO": "true",
            "CALLCENTER_EMBEDDED_BROKER__PORT": "18830",
            "CALLCENTER_TEST_POSTGRES_DSN": "not a configuration key",
        },
    )
    assert config.district.name == "North"
    assert config.ingest.max_batch == 500
    assert config.database.echo is True
    assert config.embedded_broker.port == 18830


def test_unknown_key_is_reported_with_a_suggestion(tmp_path: Path) -> None:
    """Test that a misspelt key or section is named, with the closest known one."""
    path = write(tmp_path, '[district]\nnmae = "North"\n[webb]\nport = 8080\n')
    problems = by_key(problems_of(path))
    assert problems["district.nmae"].message == "unknown key"
    assert "did you mean 'name'?" in problems["district.nmae"].fix
    assert problems["district.nmae"].source == str(path)
    assert "did you mean 'web'?" in problems["webb"].fix


def test_wrong_type_is_reported_with_file_key_and_fix(tmp_path: Path) -> None:
    """Test that a value of the wrong type names the file, the key, the value and a fix."""
    path = write(tmp_path, '[broker]\nport = "high"\n')
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert problem.key == "broker.port"
    assert "valid integer" in problem.message
    assert "'high'" in problem.message
    assert problem.fix == "MQTT broker port; default port = 1883"
    assert str(problem) == (
        f"{path}: broker.port: {problem.message}\n    fix: MQTT broker port; default port = 1883"
    )


def test_wrong_type_from_environment_names_the_variable(tmp_path: Path) -> None:
    """Test that a bad environment override is blamed on its variable, not on the file."""
    path = write(tmp_path, "[web]\nport = 8081\n")
    [problem] = problems_of(path, {"CALLCENTER_WEB__PORT": "eighty"})
    assert problem.source == "environment CALLCENTER_WEB__PORT"
    assert problem.key == "web.port"


def test_out_of_range_value_is_reported(tmp_path: Path) -> None:
    """Test that a value outside its allowed range is refused with the limit."""
    path = write(tmp_path, "[ingest]\nmax_batch = 0\n")
    [problem] = problems_of(path)
    assert problem.key == "ingest.max_batch"
    assert "greater than or equal to 1" in problem.message


def test_several_problems_are_reported_at_once(tmp_path: Path) -> None:
    """Test that every problem in file and environment is reported in one go."""
    path = write(
        tmp_path,
        """
[district]
nmae = "North"
timezone = "Mars/Olympus"

[database]
url = "mysql://root@localhost/cc"

[broker]
port = "high"
password = "hunter2"
""",
    )
    problems = by_key(problems_of(path, {"CALLCENTER_WEB__PORT": "eighty"}))
    assert set(problems) == {
        "district.nmae",
        "district.timezone",
        "database.url",
        "broker.port",
        "broker.password",
        "web.port",
    }


def test_secret_in_file_is_refused_with_the_variable_to_use(tmp_path: Path) -> None:
    """Test that broker.password in the file is an error that names the environment variable."""
    path = write(tmp_path, '[broker]\nusername = "cc"\npassword = "hunter2"\n')
    [problem] = problems_of(path)
    assert problem.key == "broker.password"
    assert problem.source == str(path)
    assert "CALLCENTER_BROKER__PASSWORD" in problem.fix
    assert "hunter2" not in str(problem)


def test_secret_from_environment_is_accepted(tmp_path: Path) -> None:
    """Test that the broker password is taken from CALLCENTER_BROKER__PASSWORD."""
    path = write(tmp_path, '[broker]\nusername = "cc"\n')
    config = load_config(path, environ={"CALLCENTER_BROKER__PASSWORD": "hunter2"})
    assert config.broker.password == "hunter2"


def test_unknown_timezone_is_reported(tmp_path: Path) -> None:
    """Test that a time zone that is not an IANA name is refused."""
    path = write(tmp_path, '[district]\ntimezone = "Mars/Olympus"\n')
    [problem] = problems_of(path)
    assert problem.key == "district.timezone"
    assert "unknown time zone" in problem.message
    assert "'Mars/Olympus'" in problem.message
    assert "IANA" in problem.fix


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/cc",
        "postgresql://postgres@localhost/cc",
        "sqlite:///var/callcenter.db",
    ],
)
def test_unsupported_database_url_is_reported(tmp_path: Path, url: str) -> None:
    """Test that a URL without one of the two supported async drivers is refused."""
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')
    [problem] = problems_of(path)
    assert problem.key == "database.url"
    assert "postgresql+asyncpg://" in problem.message
    assert "sqlite+aiosqlite://" in problem.message


def test_supported_database_urls_are_used_as_given(tmp_path: Path) -> None:
    """Test that PostgreSQL and SQLite URLs with async drivers are accepted unchanged."""
    for url in ("postgresql+asyncpg://postgres@127.0.0.1:5432/test", "sqlite+aiosqlite:///x.db"):
        path = write(tmp_path, f'[database]\nurl = "{url}"\n')
        assert load_config(path, environ={}).database_url == url


def test_invalid_toml_is_reported_with_its_position(tmp_path: Path) -> None:
    """Test that a file that is not TOML is one problem saying where the syntax breaks."""
    path = write(tmp_path, "[district\nname = 1\n")
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert problem.key == "(file)"
    assert "not valid TOML" in problem.message
    assert "line 1" in problem.message


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """Test that a --config path that does not exist is a problem, not a traceback."""
    path = tmp_path / "nowhere.toml"
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert problem.message == "file not found"
    assert "docs/configuration.md" in problem.fix


def test_check_environment_reports_missing_mosquitto(tmp_path: Path) -> None:
    """Test that check_environment names a mosquitto executable that does not exist."""
    missing = tmp_path / "no-such-mosquitto"
    path = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n[embedded_broker]\nmosquitto = "{missing}"\n',
    )
    problems = check_environment(load_config(path, environ={}))
    assert [problem.key for problem in problems] == ["embedded_broker.mosquitto"]
    assert str(missing) in problems[0].message
    assert "apt-get install" in problems[0].fix


def test_check_environment_ignores_mosquitto_with_an_external_broker(tmp_path: Path) -> None:
    """Test that no local mosquitto is needed when broker.host names an external broker."""
    path = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n'
        '[broker]\nhost = "broker.example"\n'
        '[embedded_broker]\nmosquitto = "no-such-mosquitto"\n',
    )
    assert check_environment(load_config(path, environ={})) == []


def test_check_environment_accepts_this_machine(tmp_path: Path) -> None:
    """Test that the installed mosquitto and a writable data directory raise no problem."""
    path = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n'
        f'[embedded_broker]\nmosquitto = "{mosquitto_path()}"\n',
    )
    assert check_environment(load_config(path, environ={})) == []


def run_config_check(path: Path, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    """`callcenter --config PATH config check` in a child process, without our own overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLCENTER_")}
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "callcenter.cli", "--config", str(path), "config", "check"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_config_check_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    """Test that `callcenter config check` lists all problems of a broken file and exits 2."""
    path = write(
        tmp_path,
        '[district]\nnmae = "North"\ntimezone = "Mars/Olympus"\n'
        '[broker]\nport = "high"\npassword = "hunter2"\n',
    )
    result = run_config_check(path, tmp_path, CALLCENTER_INGEST__MAX_BATCH="0")
    assert result.returncode == 2, result.stderr
    assert "configuration has 5 problem(s):" in result.stdout
    for key in (
        "district.nmae",
        "district.timezone",
        "broker.port",
        "broker.password",
        "ingest.max_batch",
    ):
        assert f": {key}: " in result.stdout
    assert "environment CALLCENTER_INGEST__MAX_BATCH: ingest.max_batch" in result.stdout
    assert result.stdout.count("fix: ") == 5
    assert "Traceback" not in result.stderr


def test_cli_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    """Test that `callcenter config check` says OK and exits 0 for a good file."""
    path = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n'
        f'[embedded_broker]\nmosquitto = "{mosquitto_path()}"\n',
    )
    result = run_config_check(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("configuration OK: database sqlite+aiosqlite:///")
    assert "broker embedded mosquitto" in result.stdout


def test_cli_config_check_hides_the_database_password(tmp_path: Path) -> None:
    """Test that the OK line never prints a database password taken from the environment."""
    path = write(tmp_path, '[broker]\nhost = "broker.example"\n')
    result = run_config_check(
        path,
        tmp_path,
        CALLCENTER_DATABASE__URL="postgresql+asyncpg://app:hunter2@db.example/cc",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hunter2" not in result.stdout
    assert "broker broker.example:1883" in result.stdout


def test_database_password_in_file_is_refused(tmp_path: Path) -> None:
    """Test that a database URL with a password in the file is refused like any secret."""
    path = write(tmp_path, '[database]\nurl = "postgresql+asyncpg://app:hunter2@db/cc"\n')
    [problem] = problems_of(path)
    assert problem.key == "database.url"
    assert "CALLCENTER_DATABASE__URL" in problem.fix


def test_unknown_section_from_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Test that an override naming an unknown section is blamed on its variable."""
    monkeypatch.chdir(tmp_path)
    [problem] = problems_of(None, {"CALLCENTER_DISTRIKT__NAME": "North"})
    assert problem.source == "environment CALLCENTER_DISTRIKT__NAME"
    assert "did you mean 'district'?" in problem.fix
