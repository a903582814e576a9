"""The two log formats: the readable text line as it always was, and one JSON object a
line with the call, household, carer and event bound as fields wherever they are known
(``logging.format``, ``--log-format``)."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from callcenter import logs
from callcenter.broker import EmbeddedBroker
from callcenter.cli import build_parser, config_from
from callcenter.config import ConfigError, load_config
from callcenter.ingest.protocol import Channel, topic_for
from callcenter.logs import LogFormat
from callcenter.store.leases import LeaseLostError
from tests.api_support import Api
from tests.ingest_support import eventually, publish_events
from tests.server_support import run_cli, server_process, subprocess_config
from tests.sms_support import answer_of, paged, sms

_TOKEN = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-AbCdEfGh"


def _record(message: str, *args: object, exc: bool = False) -> logging.LogRecord:
    """A record as ``logging.getLogger("callcenter.desk").info(message, *args)`` makes
    it, filtered as the installed handler filters it (bound fields put on)."""
    exc_info = None
    if exc:
        try:
            raise ValueError("the database said no")
        except ValueError as error:
            exc_info = (type(error), error, error.__traceback__)
    record = logging.LogRecord(
        "callcenter.desk", logging.INFO, __file__, 1, message, args, exc_info
    )
    logs.BoundFields().filter(record)
    return record


def _json(record: logging.LogRecord) -> dict[str, Any]:
    line = logs.JsonLine().format(record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def test_a_record_under_bound_context_carries_the_fields_in_json() -> None:
    """Test that a record logged inside ``bound`` blocks carries the call id, household,
    carer and event id as JSON fields, inner blocks adding to outer ones; that outside
    them it carries none; and that time (ISO 8601, UTC), level, logger and message are
    always there."""
    with logs.bound(call_id=12, household="H0001"):
        with logs.bound(event_id=345, carer="C007"):
            inner = _json(_record("call %d household %s: opened", 12, "H0001"))
        outer = _json(_record("after"))
    outside = _json(_record("nothing bound"))

    assert inner["message"] == "call 12 household H0001: opened"
    assert (inner["call_id"], inner["household"], inner["carer"], inner["event_id"]) == (
        12,
        "H0001",
        "C007",
        345,
    )
    assert inner["level"] == "INFO" and inner["logger"] == "callcenter.desk"
    moment = datetime.fromisoformat(inner["time"])
    assert inner["time"].endswith("Z") and moment.utcoffset() is not None
    assert not moment.utcoffset()
    assert {"call_id": 12, "household": "H0001"}.items() <= outer.items()
    assert "event_id" not in outer and "carer" not in outer
    assert not set(logs.FIELD_NAMES) & set(outside)
    assert logs.current() == logs.UNKNOWN


def test_fields_taken_inside_a_block_are_bound_again_later() -> None:
    """Test that fields taken with ``current`` inside a block are carried by records
    logged later under ``bound_again`` (as the desk logs after commit what it decided),
    over what is bound there."""
    with logs.bound(call_id=7, event_id=9):
        taken = logs.current()
    with logs.bound(carer="C001", call_id=1), logs.bound_again(taken):
        line = _json(_record("decided"))
    assert (line["call_id"], line["event_id"], line["carer"]) == (7, 9, "C001")


def test_json_lines_escape_controls_and_mask_carer_tokens() -> None:
    """Test that a JSON line is one line of printable characters whatever the message
    quoted: its message reads as the text line's does (controls escaped, the carer link
    token masked), and a traceback is kept in an ``exception`` field."""
    quoted = "H0001\n2026-01-01 00:00:00,000 ERROR forged\x1b[2K\x85\u2028\u2029\x7f\u202e"
    record = _record("request for %s at /c/%s", quoted, _TOKEN, exc=True)
    line = logs.JsonLine().format(record)
    assert all(ch.isprintable() for ch in line), json.dumps(line)
    assert len(line.splitlines()) == 1
    parsed = json.loads(line)
    assert _TOKEN not in line
    assert parsed["message"] == logs.LogLine("%(message)s").formatMessage(record)
    assert "/c/***" in parsed["message"] and "\\n2026" in parsed["message"]
    assert all(ch.isprintable() for ch in parsed["message"])
    assert "ValueError: the database said no" in parsed["exception"]
    assert parsed["exception"].startswith("Traceback")


def test_the_text_line_is_as_it_was_with_fields_bound() -> None:
    """Test that the text format writes the same bytes whether or not fields are bound."""
    with logs.bound(call_id=12, household="H0001", carer="C007", event_id=3):
        bound = _record("call %d household %s: opened", 12, "H0001")
    plain = logging.LogRecord(
        "callcenter.desk",
        logging.INFO,
        __file__,
        1,
        "call %d household %s: opened",
        (12, "H0001"),
        None,
    )
    plain.created, plain.msecs = bound.created, bound.msecs
    formatter = logs.LogLine(logs.FORMAT)
    assert formatter.format(bound) == formatter.format(plain)
    assert formatter.format(bound).endswith(
        " INFO callcenter.desk: call 12 household H0001: opened"
    )


def test_the_fence_refusing_a_server_that_lost_its_lease_is_one_warning_line() -> None:
    """A part of the desk's work whose transaction the fence refused logs it as it logs
    any failure (log.exception); the line says why in one warning, with no traceback,
    since it is what a server that lost the lease is meant to meet."""
    written = io.StringIO()
    handler = logs.handler(written, LogFormat.TEXT)
    log = logging.getLogger("callcenter.follower")
    log.addHandler(handler)
    try:
        try:
            raise LeaseLostError("the desk lease was taken over (epoch 3, ours 2)")
        except LeaseLostError:
            log.exception("reading the event log failed; trying again shortly")
        try:
            raise ValueError("the database said no")
        except ValueError:
            log.exception("reading the event log failed; trying again shortly")
    finally:
        log.removeHandler(handler)
    refused, failed = written.getvalue().split("\n", 1)
    assert refused.endswith(
        "WARNING callcenter.follower: reading the event log failed; trying again shortly: "
        "the desk lease was taken over (epoch 3, ours 2)"
    )
    assert " ERROR callcenter.follower: " in failed and "Traceback" in failed


@pytest.fixture
def json_log(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """What the server logs at INFO meanwhile, written as ``--log-format json`` writes it."""
    caplog.set_level(logging.INFO)
    written = io.StringIO()
    handler = logs.handler(written, LogFormat.JSON)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield written
    finally:
        root.removeHandler(handler)


def _lines(written: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in written.getvalue().splitlines()]


async def test_a_press_and_a_carers_reply_log_json_lines_carrying_their_call(
    api: Api, json_log: io.StringIO
) -> None:
    """Test that a press through the real server (broker, ingest, desk, outbox, SMS
    webhook) logs JSON lines that carry its call id and household: the call opening
    with the event that opened it, the page sent with the carer paged, and the carer's
    SMS reply and what it did with the carer who sent it; and the API's requests about
    the call."""
    call_id, carer, phone = await paged(api)

    def about_call() -> list[dict[str, Any]]:
        return [line for line in _lines(json_log) if line.get("call_id") == call_id]

    async def page_sent() -> bool:
        return any(
            line["logger"] == "callcenter.outbox" and " sent " in line["message"]
            for line in about_call()
        )

    await eventually(page_sent, what="the page's 'sent' line")
    assert str(call_id) in answer_of(await sms(api, phone, f"{call_id}a"))

    lines = about_call()
    engine = [line for line in lines if line["logger"] in ("callcenter.desk", "callcenter.outbox")]
    assert all(line["household"] == "H0001" for line in engine), lines
    opened = [
        line
        for line in lines
        if line["logger"] == "callcenter.desk" and "raised by device:" in line["message"]
    ]
    assert opened and isinstance(opened[0]["event_id"], int), lines
    sent = [
        line
        for line in lines
        if line["logger"] == "callcenter.outbox" and " sent " in line["message"]
    ]
    assert sent[0]["carer"] == carer, sent
    accepted = [
        line
        for line in lines
        if line["logger"] == "callcenter.desk" and f"accepted by carer:{carer}" in line["message"]
    ]
    assert accepted and accepted[0]["carer"] == carer, lines
    replied = [line for line in lines if line["logger"] == "callcenter.sms"]
    assert replied and all(line["carer"] == carer for line in replied), lines
    asked = [line for line in lines if line["logger"] == "callcenter.web"]
    assert asked and all(line["household"] == "H0001" for line in asked), lines


async def test_a_dead_letter_logs_the_household_its_topic_names(
    api: Api, json_log: io.StringIO
) -> None:
    """Test that a message ingest refuses is logged, as JSON, with the household its
    topic names."""
    async with aiomqtt.Client(api.broker.host, api.broker.port) as client:
        topic = topic_for(api.prefix, "H0002", "CB-H0002", Channel.EVENT)
        await client.publish(topic, b"not json", qos=1)

    async def dead_letter() -> bool:
        return any("dead letter" in line["message"] for line in _lines(json_log))

    await eventually(dead_letter, what="the dead letter's line")
    (line,) = [line for line in _lines(json_log) if "dead letter" in line["message"]]
    assert line["household"] == "H0002", line
    assert line["logger"] == "callcenter.ingest" and line["level"] == "WARNING", line


def test_log_format_key_takes_text_or_json_and_names_them_when_wrong(tmp_path: Path) -> None:
    """Test that logging.format is "text" by default, "json" from the file or the
    environment, and anything else a configuration problem naming both values."""
    assert load_config(None, environ={}).logging.format is LogFormat.TEXT
    path = tmp_path / "callcenter.toml"
    path.write_text('[logging]\nformat = "json"\n')
    assert load_config(path, environ={}).logging.format is LogFormat.JSON
    env = {"CALLCENTER_LOGGING__FORMAT": "text"}
    assert load_config(path, environ=env).logging.format is LogFormat.TEXT
    path.write_text('[logging]\nformat = "xml"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    (problem,) = raised.value.problems
    assert problem.key == "logging.format"
    assert "'text' or 'json'" in problem.message and "got 'xml'" in problem.message
    assert "one of: text, json" in problem.fix


async def test_config_check_reports_a_bad_log_format(tmp_path: Path) -> None:
    """Test that `callcenter config check` reports a bad logging.format as a problem with
    its fix and exits 2, rather than failing on it."""
    path = tmp_path / "callcenter.toml"
    path.write_text(f'[data]\ndir = "{tmp_path}"\n[logging]\nformat = "JSON lines"\n')
    ran = await run_cli(path, "config", "check")
    assert ran.code == 2, ran
    assert "logging.format: Input should be 'text' or 'json' (got 'JSON lines')" in ran.out
    assert "one of: text, json" in ran.out
    assert "Traceback" not in ran.out + ran.err


def test_the_command_line_format_overrides_the_key(tmp_path: Path) -> None:
    """Test that serve's and demo's --log-format wins over logging.format, which is the
    default without it, in the configuration the server (and its ingest process) runs on."""
    path = tmp_path / "callcenter.toml"
    path.write_text('[logging]\nformat = "json"\n')
    parser = build_parser()
    for command in ("serve", "demo"):
        keyed = config_from(parser.parse_args(["--config", str(path), command]))
        assert keyed.logging.format is LogFormat.JSON
        asked = config_from(
            parser.parse_args(["--config", str(path), command, "--log-format", "text"])
        )
        assert asked.logging.format is LogFormat.TEXT
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--log-format", "xml"])


@pytest.mark.sqlite_only("the subprocess variant runs on the SQLite default")
async def test_serve_with_log_format_json_writes_json_lines_from_both_processes(
    broker: EmbeddedBroker, topic_prefix: str, seeded_database_url: str, tmp_path: Path
) -> None:
    """Test that `callcenter serve --log-format json` writes every line as a JSON object,
    its ingest process's too, and that a press's lines carry its call, household and
    event."""
    config_file = subprocess_config(
        tmp_path, seeded_database_url, broker, topic_prefix, extra="[ingest]\nown_process = true\n"
    )
    async with server_process(config_file, serve_options=["--log-format", "json"]) as server:
        # (The ingest process reads the whole registry first: slow on a busy machine.)
        await server.wait_for_line("ingest subscribed", within_s=60)
        await publish_events(broker.host, broker.port, topic_prefix, [("H0001", "CB-H0001", "j1")])
        await server.wait_for_line(r"household H0001: raised by")
        server.send(signal.SIGTERM)
        assert await server.wait() == 0
    lines = [json.loads(line) for line in server.lines if line]
    subscribed = [line for line in lines if "ingest subscribed" in line["message"]]
    assert subscribed and subscribed[0]["logger"] == "callcenter.ingest", lines
    assert any(line["logger"] == "callcenter.ingest.process" for line in lines), lines
    (raised,) = [line for line in lines if "household H0001: raised by" in line["message"]]
    assert raised["household"] == "H0001", raised
    assert isinstance(raised["call_id"], int) and isinstance(raised["event_id"], int), raised
