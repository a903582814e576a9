"""Configuration: defaults, the TOML file, environment overrides, every problem reported."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from callcenter.brokers import BrokerAddress
from callcenter.config import (
    SECRET_KEYS,
    Config,
    ConfigError,
    ConfigProblem,
    check_environment,
    load_config,
)
from callcenter.domain.call_types import CallType
from callcenter.domain.policy import (
    DEFAULT_POLICIES,
    Action,
    CountedFrom,
    Milestone,
    Policy,
    Step,
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


def test_device_logins_on_an_external_broker_need_its_administrator(tmp_path: Path) -> None:
    """Test that dynamic-security device logins on an external broker need the
    administrator's name and password (from the environment only), and that "none"
    needs neither."""
    path = write(tmp_path, '[broker]\nhost = "broker.example"\n')
    [problem] = problems_of(path)
    assert problem.key == "broker"
    assert "admin_username" in problem.message
    assert "CALLCENTER_BROKER__ADMIN_PASSWORD" in problem.message
    assert 'device_logins = "none"' in problem.message
    named = write(tmp_path, '[broker]\nhost = "broker.example"\nadmin_username = "cc-admin"\n')
    config = load_config(named, environ={"CALLCENTER_BROKER__ADMIN_PASSWORD": "s3cret"})
    assert config.broker.admin_password == "s3cret"
    in_file = write(
        tmp_path, '[broker]\nhost = "b"\nadmin_username = "a"\nadmin_password = "s3cret"\n'
    )
    [refused] = problems_of(in_file)
    assert refused.key == "broker.admin_password"
    assert "CALLCENTER_BROKER__ADMIN_PASSWORD" in refused.fix and "s3cret" not in str(refused)
    none = write(tmp_path, '[broker]\nhost = "broker.example"\ndevice_logins = "none"\n')
    assert load_config(none, environ={}).broker.device_logins == "none"


def test_several_brokers_are_read_in_order_from_the_file_or_the_environment(
    tmp_path: Path,
) -> None:
    """Test that broker.hosts names several brokers in the order to try them, each with
    its port or broker.port; from the environment as a comma-separated list; and that
    broker.host still names one, and neither the embedded broker."""
    path = write(
        tmp_path,
        '[broker]\nhosts = ["mqtt1:1884", "mqtt2", "[fd00::7]:1885"]\nport = 1999\n'
        'device_logins = "none"\n',
    )
    config = load_config(path, environ={})
    assert config.broker.addresses == (
        BrokerAddress("mqtt1", 1884),
        BrokerAddress("mqtt2", 1999),
        BrokerAddress("fd00::7", 1885),
    )
    assert [str(a) for a in config.broker.addresses] == [
        "mqtt1:1884",
        "mqtt2:1999",
        "[fd00::7]:1885",
    ]
    assert not config.embedded_broker_wanted
    from_env = load_config(
        write(tmp_path, '[broker]\ndevice_logins = "none"\n'),
        environ={"CALLCENTER_BROKER__HOSTS": "a:1883, b:1884"},
    )
    assert from_env.broker.addresses == (BrokerAddress("a", 1883), BrokerAddress("b", 1884))
    one = load_config(
        write(tmp_path, '[broker]\nhost = "mqtt1"\ndevice_logins = "none"\n'), environ={}
    )
    assert one.broker.addresses == (BrokerAddress("mqtt1", 1883),)
    assert load_config(None, environ={}).broker.addresses == ()


@pytest.mark.parametrize(
    ("broker", "key", "said"),
    [
        ('hosts = ["mqtt1:1883", ""]', "broker.hosts", "an empty broker entry"),
        ('hosts = ["mqtt1:1883", "mqtt2:70000"]', "broker.hosts", "is not a TCP port"),
        ('hosts = ["mqtt1:port"]', "broker.hosts", "is not a TCP port"),
        ('hosts = ["mqtt1:1883", "MQTT1"]', "broker.hosts", "names the same broker as"),
        ('hosts = ["fd00::7"]', "broker.hosts", "IPv6 address in brackets"),
        ('hosts = ["a b:1883"]', "broker.hosts", "is not a host name"),
        ('host = "mqtt1"\nhosts = ["mqtt2"]', "broker.hosts", "broker.host is set too"),
        ('host = "mqtt1,mqtt2"', "broker.host", "list them in broker.hosts"),
    ],
)
def test_a_bad_broker_list_is_reported_with_what_is_wrong(
    tmp_path: Path, broker: str, key: str, said: str
) -> None:
    """Test that an empty entry, a bad port, a broker named twice (whatever the case of
    its name), an IPv6 address without brackets, a name with a space, and both host and
    hosts set are each refused at their key, saying what is wrong."""
    path = write(tmp_path, f'[broker]\n{broker}\ndevice_logins = "none"\n')
    [problem] = problems_of(path)
    assert problem.key == key
    assert said in problem.message


def test_device_logins_by_dynamic_security_take_one_broker(tmp_path: Path) -> None:
    """Test that mosquitto's dynamic-security logins are refused with several brokers
    (each would need every device's login), pointing at what to do instead; and that one
    broker in broker.hosts is one broker."""
    path = write(tmp_path, '[broker]\nhosts = ["mqtt1", "mqtt2"]\nadmin_username = "a"\n')
    [problem] = problems_of(path, {"CALLCENTER_BROKER__ADMIN_PASSWORD": "s3cret"})
    assert problem.key == "broker.device_logins"
    assert 'device_logins = "none"' in problem.fix and "EMQX" in problem.fix
    single = write(tmp_path, '[broker]\nhosts = ["mqtt1"]\nadmin_username = "a"\n')
    config = load_config(single, environ={"CALLCENTER_BROKER__ADMIN_PASSWORD": "s3cret"})
    assert config.broker.addresses == (BrokerAddress("mqtt1", 1883),)


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


_BOTH_HOSTS = "postgresql+asyncpg://cc@/callcenter?host=db1:5432&host=db2:5432"


def test_a_url_naming_several_hosts_is_taken_with_a_writable_target(tmp_path: Path) -> None:
    """Test that a URL naming the primary and its replicas, asking for the one that
    takes writes, is used as given (docs/database.md, "Failover")."""
    for target in ("read-write", "primary"):
        url = f"{_BOTH_HOSTS}&target_session_attrs={target}"
        path = write(tmp_path, f'[database]\nurl = "{url}"\n')
        assert load_config(path, environ={}).database_url == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        (_BOTH_HOSTS, "needs target_session_attrs=read-write"),
        (f"{_BOTH_HOSTS}&target_session_attrs=any", "could connect the server to a standby"),
        (
            f"{_BOTH_HOSTS}&target_session_attrs=prefer-standby",
            "could connect the server to a standby",
        ),
        (
            "postgresql+asyncpg://cc@/callcenter?host=db1&host=db2:5432"
            "&target_session_attrs=read-write",
            "each with its port",
        ),
    ],
)
def test_a_url_that_could_land_on_a_standby_is_refused(tmp_path: Path, url: str, said: str) -> None:
    """Test that a URL naming several hosts without asking for a writable one, asking
    for one that may be a standby, or leaving a host's port out is refused before any
    connection, saying what to write."""
    path = write(tmp_path, f'[database]\nurl = "{url}"\n')
    [problem] = problems_of(path)
    assert problem.key == "database.url"
    assert said in problem.message


def test_a_password_in_the_urls_query_is_a_secret_too(tmp_path: Path) -> None:
    """Test that ?password= (which the driver takes) is refused in the file and hidden
    by `config check` when it comes from the environment."""
    url = f"{_BOTH_HOSTS}&target_session_attrs=read-write&password=hunter2"
    [problem] = problems_of(write(tmp_path, f'[database]\nurl = "{url}"\n'))
    assert problem.key == "database.url"
    assert "CALLCENTER_DATABASE__URL" in problem.fix
    path = write(tmp_path, '[broker]\nhost = "broker.example"\ndevice_logins = "none"\n')
    result = run_config_check(path, tmp_path, CALLCENTER_DATABASE__URL=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hunter2" not in result.stdout
    assert "host=db1%3A5432&host=db2%3A5432" in result.stdout


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
        '[broker]\nhost = "broker.example"\ndevice_logins = "none"\n'
        '[embedded_broker]\nmosquitto = "no-such-mosquitto"\n',
    )
    assert check_environment(load_config(path, environ={})) == []


def test_check_environment_names_a_missing_dynamic_security_plugin(tmp_path: Path) -> None:
    """Test that the embedded broker's device logins need the plugin where it is said to
    be, and that device_logins = "none" needs none."""
    path = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n'
        '[embedded_broker]\ndynamic_security_plugin = "/nowhere/dynsec.so"\n',
    )
    [problem] = check_environment(load_config(path, environ={}))
    assert problem.key == "embedded_broker.dynamic_security_plugin"
    assert 'device_logins = "none"' in problem.fix
    open_broker = write(
        tmp_path,
        f'[data]\ndir = "{tmp_path / "var"}"\n[broker]\ndevice_logins = "none"\n'
        '[embedded_broker]\ndynamic_security_plugin = "/nowhere/dynsec.so"\n',
    )
    assert check_environment(load_config(open_broker, environ={})) == []


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
    path = write(tmp_path, '[broker]\nhost = "broker.example"\ndevice_logins = "none"\n')
    result = run_config_check(
        path,
        tmp_path,
        CALLCENTER_DATABASE__URL="postgresql+asyncpg://app:hunter2@db.example/cc",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hunter2" not in result.stdout
    assert "broker broker.example:1883" in result.stdout


def test_cli_config_check_names_every_broker(tmp_path: Path) -> None:
    """Test that the OK line names the brokers in the order they are tried."""
    path = write(tmp_path, '[broker]\nhosts = ["mqtt1:1883", "mqtt2"]\ndevice_logins = "none"\n')
    result = run_config_check(path, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broker mqtt1:1883 or mqtt2:1883" in result.stdout


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


# --- district: holidays and the desk phone ------------------------------------------


@pytest.mark.parametrize(
    ("toml", "environ", "expected"),
    [
        ("", {}, []),
        ("holidays = [2026-10-01, 2026-10-02]", {}, [(2026, 10, 1), (2026, 10, 2)]),
        ('holidays = ["2026-10-01", "2026-10-02"]', {}, [(2026, 10, 1), (2026, 10, 2)]),
        ('holidays = [2026-10-01, "2027-01-01"]', {}, [(2026, 10, 1), (2027, 1, 1)]),
        (
            "holidays = [2026-10-01]",
            {"CALLCENTER_DISTRICT__HOLIDAYS": "2027-01-01, 2027-05-01"},
            [(2027, 1, 1), (2027, 5, 1)],
        ),
        ("holidays = [2026-10-01]", {"CALLCENTER_DISTRICT__HOLIDAYS": ""}, []),
    ],
)
def test_holidays_are_read_as_dates(
    tmp_path: Path, toml: str, environ: dict[str, str], expected: list[tuple[int, int, int]]
) -> None:
    """Test that holidays come as TOML dates, ISO strings or a comma-separated variable."""
    path = write(tmp_path, f"[district]\n{toml}\n")
    config = load_config(path, environ=environ)
    assert config.district.holidays == [datetime.date(*day) for day in expected]


def test_bad_holiday_is_reported_by_its_position(tmp_path: Path) -> None:
    """Test that a date that does not exist names its place in the list."""
    path = write(tmp_path, '[district]\nholidays = [2026-10-01, "2026-13-01"]\n')
    [problem] = problems_of(path)
    assert problem.key == "district.holidays.1"
    assert "'2026-13-01'" in problem.message
    assert "Sunday timetable" in problem.fix


@pytest.mark.parametrize("number", ["", "+861012345678", "+4930123456", "+123456"])
def test_desk_phone_in_international_form_is_accepted(tmp_path: Path, number: str) -> None:
    """Test that an empty desk phone or "+" and 6 to 15 digits is accepted unchanged."""
    path = write(tmp_path, f'[district]\ndesk_phone = "{number}"\n')
    assert load_config(path, environ={}).district.desk_phone == number


@pytest.mark.parametrize(
    "number",
    [
        "010 1234 5678",  # local, with spaces
        "861012345678",  # no "+"
        "+86 10 1234 5678",  # spaces
        "+86-10-12345678",  # dashes
        "+12345",  # too short
        "+1234567890123456",  # too long
        "+86１０12345678",  # full-width digits
    ],
)
def test_desk_phone_not_in_international_form_is_reported(tmp_path: Path, number: str) -> None:
    """Test that a desk phone that is not "+" and 6 to 15 digits says how to write it."""
    path = write(tmp_path, f'[district]\ndesk_phone = "{number}"\n')
    [problem] = problems_of(path)
    assert problem.key == "district.desk_phone"
    assert "E.164" in problem.message
    assert "6 to 15 digits" in problem.message
    assert repr(number) in problem.message
    assert "+861012345678" in problem.fix


# --- calls: engine settings ---------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "default"),
    [
        ("service_circle_min", 15.0),
        ("event_poll_s", 1.0),
        ("watchdog_interval_s", 5.0),
        ("overdue_alarm_s", 5.0),
        ("outbox_retry_max_s", 300.0),
        ("policies", {}),
    ],
)
def test_calls_defaults(key: str, default: object) -> None:
    """Test that each [calls] key has its documented default."""
    assert getattr(Config().calls, key) == default


def test_service_circle_in_seconds() -> None:
    """Test that the service circle is offered in seconds for dispatch ranking."""
    path_free = Config.model_validate({"calls": {"service_circle_min": 12.5}})
    assert path_free.calls.service_circle_s == 750.0
    assert Config().calls.service_circle_s == 15 * 60


@pytest.mark.parametrize(
    ("var", "value", "key", "expected"),
    [
        ("CALLCENTER_CALLS__EVENT_POLL_S", "0.5", "event_poll_s", 0.5),
        ("CALLCENTER_CALLS__SERVICE_CIRCLE_MIN", "20", "service_circle_min", 20.0),
        ("CALLCENTER_CALLS__WATCHDOG_INTERVAL_S", "2", "watchdog_interval_s", 2.0),
        ("CALLCENTER_CALLS__OVERDUE_ALARM_S", "0", "overdue_alarm_s", 0.0),
        ("CALLCENTER_CALLS__OUTBOX_RETRY_MAX_S", "60", "outbox_retry_max_s", 60.0),
    ],
)
def test_calls_keys_are_overridden_from_environment(
    tmp_path: Path, var: str, value: str, key: str, expected: float
) -> None:
    """Test that CALLCENTER_CALLS__<KEY> wins over the file for each flat [calls] key."""
    path = write(tmp_path, f"[calls]\n{key} = 99\n")
    config = load_config(path, environ={var: value})
    assert getattr(config.calls, key) == expected


@pytest.mark.parametrize(
    ("toml", "key", "limit"),
    [
        ("service_circle_min = 0", "calls.service_circle_min", "greater than 0"),
        ("event_poll_s = 0", "calls.event_poll_s", "greater than 0"),
        ("watchdog_interval_s = -1", "calls.watchdog_interval_s", "greater than 0"),
        ("overdue_alarm_s = -1", "calls.overdue_alarm_s", "greater than or equal to 0"),
        ("outbox_retry_max_s = 0", "calls.outbox_retry_max_s", "greater than 0"),
    ],
)
def test_calls_value_out_of_range_is_reported(
    tmp_path: Path, toml: str, key: str, limit: str
) -> None:
    """Test that an out-of-range [calls] value names the key, the limit and the default."""
    path = write(tmp_path, f"[calls]\n{toml}\n")
    [problem] = problems_of(path)
    assert problem.key == key
    assert limit in problem.message
    assert f"default {key.split('.')[1]} = " in problem.fix


def test_bad_calls_value_from_environment_names_the_variable(tmp_path: Path) -> None:
    """Test that a bad CALLCENTER_CALLS__ override is blamed on its variable."""
    [problem] = problems_of(write(tmp_path, ""), {"CALLCENTER_CALLS__EVENT_POLL_S": "soon"})
    assert problem.source == "environment CALLCENTER_CALLS__EVENT_POLL_S"
    assert problem.key == "calls.event_poll_s"


# --- calls: escalation policies -----------------------------------------------------

# The policy shown in docs/configuration.md: a one-step ladder for falls.
FALL_POLICY = """
[calls.policies.fall]
auto_dispatch = true
carers_required = 2
skills = ["lift"]
cancel_grace_s = 60
[[calls.policies.fall.steps]]
name = "unacknowledged"
after_s = 30
unless = "acknowledged"
actions = ["alert_operators", "alert_supervisor"]
"""


def test_defaults_build_the_default_policies() -> None:
    """Test that with no policies configured every call type gets its default policy."""
    book = Config().policy_book()
    assert book.policies == DEFAULT_POLICIES
    for call_type in CallType:
        assert book.for_type(call_type) == DEFAULT_POLICIES[call_type]


def test_policy_for_one_type_replaces_just_that_type(tmp_path: Path) -> None:
    """Test that a configured policy replaces its type's default wholesale, and only it."""
    book = load_config(write(tmp_path, FALL_POLICY), environ={}).policy_book()
    assert book.for_type(CallType.FALL) == Policy(
        auto_dispatch=True,
        carers_required=2,
        skills=("lift",),
        cancel_grace_s=60.0,
        steps=(
            Step(
                "unacknowledged",
                30.0,
                Milestone.ACKNOWLEDGED,
                (Action.ALERT_OPERATORS, Action.ALERT_SUPERVISOR),
            ),
        ),
    )
    for call_type in set(CallType) - {CallType.FALL}:
        assert book.for_type(call_type) == DEFAULT_POLICIES[call_type]


def test_policy_keys_left_out_take_the_domain_defaults(tmp_path: Path) -> None:
    """Test that a policy without carers_required, skills or cancel_grace_s gets Policy's."""
    path = write(
        tmp_path,
        """
[calls.policies.low_battery]
auto_dispatch = false
steps = []

[calls.policies.service_request]
auto_dispatch = true
[[calls.policies.service_request.steps]]
name = "unaccepted"
after_s = 60
unless = "accepted"
counted_from = "dispatched"
actions = ["redispatch"]
""",
    )
    book = load_config(path, environ={}).policy_book()
    assert book.for_type(CallType.LOW_BATTERY) == Policy(auto_dispatch=False, steps=())
    assert book.for_type(CallType.SERVICE_REQUEST) == Policy(
        auto_dispatch=True,
        steps=(
            Step(
                "unaccepted",
                60.0,
                Milestone.ACCEPTED,
                (Action.REDISPATCH,),
                CountedFrom.DISPATCHED,
            ),
        ),
    )


def test_default_policies_written_out_load_back_unchanged(tmp_path: Path) -> None:
    """Test that every default policy, written as TOML, loads back equal to itself."""
    lines = []
    for call_type, policy in DEFAULT_POLICIES.items():
        data = policy.to_json()
        lines += [
            f"[calls.policies.{call_type.value}]",
            f"auto_dispatch = {str(data['auto_dispatch']).lower()}",
            f"carers_required = {data['carers_required']}",
            f"skills = {data['skills']!r}".replace("'", '"'),
            f"cancel_grace_s = {data['cancel_grace_s']}",
        ]
        for step in data["steps"]:
            lines += [
                f"[[calls.policies.{call_type.value}.steps]]",
                f'name = "{step["name"]}"',
                f"after_s = {step['after_s']}",
                f'unless = "{step["unless"]}"',
                f'counted_from = "{step["counted_from"]}"',
                f"actions = {step['actions']!r}".replace("'", '"'),
            ]
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"), environ={})
    assert set(config.calls.policies) == {call_type.value for call_type in CallType}
    assert config.policy_book().policies == DEFAULT_POLICIES


# One good step; each case below breaks one thing in it or around it.
GOOD_STEP = {
    "name": '"unacknowledged"',
    "after_s": "30",
    "unless": '"acknowledged"',
    "actions": '["alert_operators"]',
}
MILESTONES = "one of: acknowledged, accepted, on_scene, closed"
ACTIONS = (
    "one of: alert_operators, alert_supervisor, redispatch, notify_station_lead, "
    "notify_family, emergency_services"
)


def policy_file(
    call_type: str = "fall",
    policy: dict[str, str] | None = None,
    steps: list[dict[str, str]] | None = None,
) -> str:
    """A [calls.policies.<call_type>] table with these keys and steps (TOML values as text)."""
    keys = {"auto_dispatch": "true"} if policy is None else policy
    lines = [f"[calls.policies.{call_type}]"] + [f"{k} = {v}" for k, v in keys.items()]
    for step in [GOOD_STEP] if steps is None else steps:
        lines.append(f"[[calls.policies.{call_type}.steps]]")
        lines += [f"{k} = {v}" for k, v in step.items()]
    return "\n".join(lines) + "\n"


def with_step(**changes: str | None) -> list[dict[str, str]]:
    """GOOD_STEP with some keys changed (None: left out)."""
    step = {**GOOD_STEP, **changes}
    return [{k: v for k, v in step.items() if v is not None}]


@pytest.mark.parametrize(
    ("toml", "key", "in_message", "in_fix"),
    [
        pytest.param(
            policy_file(call_type="falls"),
            "calls.policies.falls",
            "unknown call type (got 'falls')",
            "did you mean 'fall'? known call types: emergency, fall, service_request, "
            "device_offline, low_battery",
            id="unknown call type",
        ),
        pytest.param(
            policy_file(call_type="burglary"),
            "calls.policies.burglary",
            "unknown call type",
            "known call types: emergency, fall, service_request, device_offline, low_battery",
            id="unknown call type, nothing close",
        ),
        pytest.param(
            policy_file(steps=with_step(unless='"acknowledgd"')),
            "calls.policies.fall.steps.0.unless",
            "'acknowledgd'",
            MILESTONES,
            id="unknown milestone",
        ),
        pytest.param(
            policy_file(steps=with_step(counted_from='"arrived"')),
            "calls.policies.fall.steps.0.counted_from",
            "'arrived'",
            "one of: opened, dispatched",
            id="unknown counted_from",
        ),
        pytest.param(
            policy_file(steps=with_step(actions='["alert_operators", "page_everyone"]')),
            "calls.policies.fall.steps.0.actions.1",
            "'page_everyone'",
            ACTIONS,
            id="unknown action",
        ),
        pytest.param(
            policy_file(steps=with_step(actions="[]")),
            "calls.policies.fall.steps.0.actions",
            "at least 1 item",
            ACTIONS,
            id="no actions",
        ),
        pytest.param(
            policy_file(steps=with_step(actions=None)),
            "calls.policies.fall.steps.0.actions",
            "Field required",
            ACTIONS,
            id="actions left out",
        ),
        pytest.param(
            policy_file(steps=with_step(after_s="-1")),
            "calls.policies.fall.steps.0.after_s",
            "greater than or equal to 0",
            "seconds from the step's starting point",
            id="negative after_s",
        ),
        pytest.param(
            policy_file(steps=with_step(after_s='"soon"')),
            "calls.policies.fall.steps.0.after_s",
            "valid number",
            "seconds from the step's starting point",
            id="after_s not a number",
        ),
        pytest.param(
            policy_file(steps=with_step(name='""')),
            "calls.policies.fall.steps.0.name",
            "at least 1 character",
            "unique within its policy",
            id="empty step name",
        ),
        pytest.param(
            policy_file(steps=with_step(counted_form='"opened"')),
            "calls.policies.fall.steps.0.counted_form",
            "unknown key",
            "did you mean 'counted_from'? known keys here: name, after_s, unless, "
            "counted_from, actions",
            id="misspelt step key",
        ),
        pytest.param(
            policy_file(steps=with_step(counted_from='"dispatched"', unless='"on_scene"')),
            "calls.policies.fall.steps.0.unless",
            "a step counted from a dispatch waits for that carer's acceptance",
            'set unless = "accepted", or count the step from the call opening',
            id="dispatched step not waiting for acceptance",
        ),
        pytest.param(
            policy_file(steps=[GOOD_STEP, {**GOOD_STEP, "after_s": "60"}]),
            "calls.policies.fall.steps",
            "step names must be unique",
            "give each step its own name; repeated: unacknowledged",
            id="duplicate step names",
        ),
        pytest.param(
            policy_file(policy={"auto_dispatch": "true", "carers_required": "0"}),
            "calls.policies.fall.carers_required",
            "greater than or equal to 1",
            "default carers_required = 1",
            id="no carers",
        ),
        pytest.param(
            policy_file(policy={"auto_dispatch": "true", "cancel_grace_s": "-5"}),
            "calls.policies.fall.cancel_grace_s",
            "greater than or equal to 0",
            "default cancel_grace_s = 60.0",
            id="negative cancel grace",
        ),
        pytest.param(
            policy_file(policy={"auto_dispatch": "true", "skills": '["lift", ""]'}),
            "calls.policies.fall.skills.1",
            "at least 1 character",
            'e.g. ["lift"]',
            id="empty skill",
        ),
        pytest.param(
            policy_file(policy={"auto_dispatch": '"sometimes"'}),
            "calls.policies.fall.auto_dispatch",
            "valid boolean",
            "page the nearest free carer",
            id="auto_dispatch not a boolean",
        ),
        pytest.param(
            policy_file(policy={"auto_dispatch": "true", "carer_required": "2"}),
            "calls.policies.fall.carer_required",
            "unknown key",
            "did you mean 'carers_required'?",
            id="misspelt policy key",
        ),
        pytest.param(
            "[calls.policies.fall]\nauto_dispatch = true\n",
            "calls.policies.fall.steps",
            "Field required",
            "replaces the default one wholesale",
            id="steps left out",
        ),
        pytest.param(
            "[calls.policies.fall]\nsteps = []\n",
            "calls.policies.fall.auto_dispatch",
            "Field required",
            "page the nearest free carer",
            id="auto_dispatch left out",
        ),
        pytest.param(
            '[calls]\npolicies = "strict"\n',
            "calls.policies",
            "valid dictionary",
            "escalation policy by call type",
            id="policies not a table",
        ),
    ],
)
def test_bad_policy_is_reported_with_its_key(
    tmp_path: Path, toml: str, key: str, in_message: str, in_fix: str
) -> None:
    """Test that each kind of bad policy is one problem naming the exact key and a fix."""
    path = write(tmp_path, toml)
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert problem.key == key
    assert in_message in problem.message
    assert in_fix in problem.fix


def test_problems_in_several_policies_are_reported_at_once(tmp_path: Path) -> None:
    """Test that mistakes in different policies and steps are all reported in one go."""
    path = write(
        tmp_path,
        policy_file("falls")
        + policy_file("emergency", steps=with_step(unless='"arrived"'))
        + policy_file("service_request", steps=[GOOD_STEP, GOOD_STEP])
        + "[calls]\nevent_poll_s = 0\n",
    )
    assert set(by_key(problems_of(path))) == {
        "calls.policies.falls",
        "calls.policies.emergency.steps.0.unless",
        "calls.policies.service_request.steps",
        "calls.event_poll_s",
    }


@pytest.mark.parametrize(
    "var", ["CALLCENTER_CALLS__POLICIES", "CALLCENTER_CALLS__POLICIES__FALL__CARERS_REQUIRED"]
)
def test_policies_are_not_read_from_the_environment(tmp_path: Path, var: str) -> None:
    """Test that an environment variable naming calls.policies is refused, naming itself."""
    [problem] = problems_of(write(tmp_path, FALL_POLICY), {var: "3"})
    assert problem.source == f"environment {var}"
    assert problem.key == "calls.policies"
    assert "read only from the configuration file" in problem.message
    assert var in problem.fix


def test_policy_book_is_built_from_a_config_made_in_python() -> None:
    """Test that Config.model_validate checks policies too, so policy_book cannot fail."""
    with pytest.raises(ValueError, match="counted from a dispatch"):
        Config.model_validate(
            {
                "calls": {
                    "policies": {
                        "fall": {
                            "auto_dispatch": True,
                            "steps": [
                                {
                                    "name": "x",
                                    "after_s": 1,
                                    "unless": "closed",
                                    "counted_from": "dispatched",
                                    "actions": ["redispatch"],
                                }
                            ],
                        }
                    }
                }
            }
        )


# --- the documentation of [calls] ---------------------------------------------------


def seconds(value: float) -> str:
    """A duration as the docs' tables show it: seconds, with minutes or hours beside."""
    if value < 60:
        return f"{value:g}"
    if value % 3600 == 0:
        return f"{value:g} ({value / 3600:g} h)"
    return f"{value:g} ({value / 60:g} min)"


def test_configuration_doc_shows_the_default_policies() -> None:
    """Test that the default-policy tables in docs/configuration.md match DEFAULT_POLICIES."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    for call_type, policy in DEFAULT_POLICIES.items():
        skills = ", ".join(f"`{skill}`" for skill in policy.skills) or "none"
        row = (
            f"| `{call_type.value}` | {str(policy.auto_dispatch).lower()} | "
            f"{policy.carers_required} | {skills} | {seconds(policy.cancel_grace_s)} |"
        )
        assert row in text
        for step in policy.steps:
            actions = ", ".join(f"`{action.value}`" for action in step.actions)
            row = (
                f"| `{call_type.value}` | `{step.name}` | {seconds(step.after_s)} | "
                f"`{step.counted_from.value}` | `{step.unless.value}` | {actions} |"
            )
            assert row in text
    # No rows for steps the code does not have.
    ladder_rows = re.findall(r"^\| `[a-z_]+` \| `[a-z_]+` \| \d", text, flags=re.MULTILINE)
    assert len(ladder_rows) == sum(len(p.steps) for p in DEFAULT_POLICIES.values())


@pytest.mark.parametrize(
    "value",
    [f"`{m.value}`" for m in Milestone]
    + [f"`{c.value}`" for c in CountedFrom]
    + [f"`{a.value}`" for a in Action]
    + [f"`{t.value}`" for t in CallType],
)
def test_configuration_doc_explains_every_policy_value(value: str) -> None:
    """Test that every milestone, clock start, action and call type has a row in the docs."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert re.search(rf"^\| {re.escape(value)} \| [a-z]", text, flags=re.MULTILINE), value


def test_configuration_doc_policy_example_loads(tmp_path: Path) -> None:
    """Test that the policy example in docs/configuration.md is valid as written."""
    text = CONFIG_DOC.read_text(encoding="utf-8")
    [example] = [
        block
        for block in re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL)
        if block.startswith("[calls.policies.fall]")
    ]
    assert example.strip() == FALL_POLICY.strip()
    config = load_config(write(tmp_path, example), environ={})
    assert set(config.calls.policies) == {"fall"}


def test_cli_config_check_reports_bad_policies_and_exits_2(tmp_path: Path) -> None:
    """Test that `callcenter config check` lists each policy mistake with its key."""
    path = write(
        tmp_path,
        policy_file("falls")
        + policy_file("emergency", steps=with_step(counted_from='"dispatched"')),
    )
    result = run_config_check(path, tmp_path, CALLCENTER_CALLS__POLICIES="x")
    assert result.returncode == 2, result.stderr
    assert "configuration has 3 problem(s):" in result.stdout
    assert f"{path}: calls.policies.falls: unknown call type" in result.stdout
    assert f"{path}: calls.policies.emergency.steps.0.unless: " in result.stdout
    assert "environment CALLCENTER_CALLS__POLICIES: calls.policies: " in result.stdout
    assert result.stdout.count("fix: ") == 3
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "environ", "key", "says"),
    [
        ('[sms]\nauth_token = "abc"\n', {}, "sms.auth_token", "CALLCENTER_SMS__AUTH_TOKEN"),
        (
            '[sms]\naccount_sid = "AC123"\nfrom_number = "+8613800000000"\n',
            {},
            "sms",
            "CALLCENTER_SMS__AUTH_TOKEN",
        ),
        (
            '[sms]\naccount_sid = "AC123"\n',
            {"CALLCENTER_SMS__AUTH_TOKEN": "secret"},
            "sms",
            "from_number",
        ),
        ('[sms]\nfrom_number = "13800000000"\n', {}, "sms.from_number", "E.164"),
    ],
)
def test_sms_settings_are_checked(
    tmp_path: Path, text: str, environ: dict[str, str], key: str, says: str
) -> None:
    """Test that the Twilio token is refused from the file, and that a real account needs
    its token (from the environment) and a sender, each with a fix that names them."""
    problems = problems_of(write(tmp_path, text), environ)
    assert [p.key for p in problems] == [key]
    assert says in problems[0].message + problems[0].fix


def test_sms_default_is_the_local_fake_and_a_complete_account_is_real(tmp_path: Path) -> None:
    """Test that with no account every SMS goes to the local fake, and that a complete
    account (token from the environment) is taken as real."""
    assert load_config(None, environ={}).sms.fake
    config = load_config(
        write(tmp_path, '[sms]\naccount_sid = "AC123"\nfrom_number = "+8613800000000"\n'),
        environ={"CALLCENTER_SMS__AUTH_TOKEN": "secret"},
    )
    assert not config.sms.fake and config.sms.auth_token == "secret"
