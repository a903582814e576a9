"""The ``callcenter`` command: serve, db upgrade, config check, operator, users, phone,
fake-twilio; and the commands other installed packages add (the simulator's demo and
seed --demo)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeAlias

from callcenter import logs
from callcenter.config import Config, ConfigError, check_environment, load_config
from callcenter.logs import LogFormat

# Where another package adds sub-commands: ``[project.entry-points."callcenter.commands"]``.
COMMANDS_GROUP = "callcenter.commands"
# The sub-command list a package's entry point adds its commands to.
CommandList: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def config_from(args: argparse.Namespace) -> Config:
    """The configuration ``--config`` names, the log written as it says from now on (a
    command's ``--log-format`` over ``logging.format``); exit 2 listing its problems if it
    has any."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None
    asked = getattr(args, "log_format", None)
    if asked is not None:
        chosen = config.logging.model_copy(update={"format": LogFormat(asked)})
        config = config.model_copy(update={"logging": chosen})
    logs.configure(args.log_level, log_format=config.logging.format)
    return config


def _cmd_config_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"configuration has {len(exc.problems)} problem(s):")
        for problem in exc.problems:
            print(f"  {problem}")
        return 2
    problems = check_environment(config)
    if problems:
        print(f"configuration has {len(problems)} problem(s):")
    for problem in problems:
        print(f"  {problem}")
    if problems:
        return 2
    broker = (
        "embedded mosquitto"
        if config.embedded_broker_wanted
        else " or ".join(str(address) for address in config.broker.addresses)
    )
    print(f"configuration OK: database {_redact(config.database_url)}, broker {broker}")
    return 0


def _redact(url: str) -> str:
    from callcenter.store.db import shown_url

    return shown_url(url)


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from callcenter.store.migrate import upgrade

    config = config_from(args)
    upgrade(config.database_url)
    print(f"database at {_redact(config.database_url)} is up to date")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from callcenter.app import serve

    config = config_from(args)
    return asyncio.run(serve(config))


def _on_current_schema(
    args: argparse.Namespace,
    work: Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]],
    what: str,
) -> int:
    """Run ``work`` on the configured database; exit 2 saying so if its schema is not
    current (``callcenter db upgrade``)."""
    from callcenter.store.migrate import SchemaNotCurrentError

    config = config_from(args)
    try:
        return asyncio.run(work(config, args))
    except SchemaNotCurrentError as error:
        print(f"cannot {what}: {error}", file=sys.stderr)
        return 2


def _cmd_operator(args: argparse.Namespace) -> int:
    return _on_current_schema(args, _operator, "manage operators")


async def _operator(config: Config, args: argparse.Namespace) -> int:
    from callcenter.clock import SystemClock
    from callcenter.engine import accounts
    from callcenter.store.db import create_engine
    from callcenter.store.migrate import require_current_schema
    from callcenter.store.models import OperatorRole

    engine = create_engine(config.database_url)
    try:
        await require_current_schema(engine)
        if args.operator_command == "list":
            for a in await accounts.list_operators(engine):
                state = "active" if a.active else "inactive"
                print(f"{a.username}\t{a.name}\t{a.role}\t{a.phone or '-'}\t{state}")
            return 0
        if args.operator_command == "add":
            token = await accounts.add_operator(
                engine,
                args.username,
                name=args.name,
                now=SystemClock().now(),
                role=OperatorRole(args.role),
                phone=args.phone,
                language=args.language,
            )
        elif args.operator_command == "token":
            token = await accounts.issue_token(engine, args.username)
        else:
            await accounts.set_active(engine, args.username, args.operator_command == "activate")
            print(f"operator {args.username} {args.operator_command}d")
            return 0
    except accounts.OperatorAccountError as error:
        print(f"cannot {args.operator_command}: {error}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()
    print(f"token for {args.username} (shown only now; send it as 'Authorization: Bearer ...'):")
    print(token)
    return 0


def _cmd_users(args: argparse.Namespace) -> int:
    return _on_current_schema(args, _users, "manage users")


def _read_password(args: argparse.Namespace) -> str:
    """The new password: one line on stdin with --password-stdin, else asked twice."""
    import getpass

    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.username}: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("the two passwords differ; nothing was changed")
    return first


async def _users(config: Config, args: argparse.Namespace) -> int:
    from callcenter.clock import SystemClock
    from callcenter.engine import accounts
    from callcenter.store.db import create_engine
    from callcenter.store.migrate import require_current_schema
    from callcenter.store.models import OperatorRole

    engine = create_engine(config.database_url)
    try:
        await require_current_schema(engine)
        if args.users_command == "list":
            for a in await accounts.list_operators(engine):
                state = "active" if a.active else "inactive"
                board = "password" if a.can_sign_in else "no-password"
                print(f"{a.username}\t{a.name}\t{a.role}\t{a.phone or '-'}\t{state}\t{board}")
            return 0
        if args.users_command in ("activate", "deactivate"):
            await accounts.set_active(engine, args.username, args.users_command == "activate")
            print(f"user {args.username} {args.users_command}d")
            return 0
        password = _read_password(args)
        if args.users_command == "add":
            await accounts.add_operator(
                engine,
                args.username,
                name=args.name,
                now=SystemClock().now(),
                role=OperatorRole(args.role),
                phone=args.phone,
                language=args.language,
                password=password,
            )
            print(f"user {args.username} added as {args.role}; they sign in at /login")
        else:
            await accounts.set_password(engine, args.username, password)
            print(f"password of {args.username} set; their open boards are signed out")
        return 0
    except (accounts.OperatorAccountError, ValueError) as error:
        print(f"cannot {args.users_command}: {error}", file=sys.stderr)
        return 2
    finally:
        await engine.dispose()


def _cmd_phone(args: argparse.Namespace) -> int:
    return _on_current_schema(args, _phone, "read the phone marks")


async def _phone(config: Config, args: argparse.Namespace) -> int:
    from sqlalchemy.ext.asyncio import AsyncSession

    from callcenter.engine import phones
    from callcenter.store.db import create_engine
    from callcenter.store.migrate import require_current_schema

    engine = create_engine(config.database_url)
    try:
        await require_current_schema(engine)
        async with AsyncSession(engine) as session, session.begin():
            if args.phone_command == "list":
                marks = await phones.every(session)
                if not marks:
                    print("no phone is marked: every number gets texts")
                for mark in marks.values():
                    since = mark.since.isoformat(timespec="seconds")
                    print(
                        f"{mark.phone}\t{mark.problem.value}\t{mark.recipient or '-'}\t"
                        f"{since}\t{mark.detail}"
                    )
                return 0
            if not await phones.lift(session, args.number):
                print(f"{args.number} is not marked; nothing to clear", file=sys.stderr)
                return 1
    finally:
        await engine.dispose()
    print(f"{args.number} gets texts again (and its carer is paged again)")
    return 0


def _cmd_fake_twilio(args: argparse.Namespace) -> int:
    return asyncio.run(_fake_twilio(args.host, args.port, args.inbound_url))


async def _fake_twilio(host: str, port: int, inbound_url: str) -> int:
    import signal

    from callcenter.fake_twilio import FakeTwilio

    try:
        fake_twilio = FakeTwilio(host=host, port=port, inbound_url=inbound_url)
    except ValueError as refused:  # not a loopback address: it says why
        print(refused, file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with fake_twilio as fake:
        # The first line is the URL, so scripts and tests can read it without parsing prose.
        print(f"fake Twilio listening on {fake.base_url}", flush=True)
        print(f"account SID {fake.account_sid}", flush=True)
        print(f"auth token  {fake.auth_token}", flush=True)
        print(f"SMS a carer would get: {fake.page_url}", flush=True)
        print(
            "it listens on loopback only: its page shows every text, family sign-in codes "
            "and carer links included, to anyone on this machine",
            flush=True,
        )
        if not inbound_url:
            print(
                "answers typed on that page go nowhere: pass --inbound-url "
                "http://HOST:PORT/sms/inbound to post them to a server",
                flush=True,
            )
        print(
            "point the twilio client at it: client.api.base_url = BASE_URL; Ctrl-C stops",
            flush=True,
        )
        await stop.wait()
    print(f"fake Twilio stopped after {len(fake.messages)} message(s)", flush=True)
    return 0


def add_log_format(command: argparse.ArgumentParser) -> None:
    """Give a command that runs the server ``--log-format``, which wins over
    ``logging.format`` when the command loads its configuration."""
    command.add_argument(
        "--log-format",
        choices=[f.value for f in LogFormat],
        default=None,
        help="text: a line a person reads; json: one JSON object a line, with the "
        "call, household, carer and event as fields (default: logging.format, text)",
    )


def _added_commands() -> list[Callable[[CommandList], None]]:
    """What other installed packages add to the command (entry points of the group
    ``callcenter.commands``, each a function given the sub-command list), by name."""
    found = sorted(entry_points(group=COMMANDS_GROUP), key=lambda entry: entry.name)
    return [entry.load() for entry in found]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser, exposed for tests and docs."""
    parser = argparse.ArgumentParser(
        prog="callcenter", description="Eldercare emergency call-centre server."
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="TOML configuration file (default: ./callcenter.toml if present)",
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the server (embedded broker if none set)")
    serve.set_defaults(func=_cmd_serve)
    add_log_format(serve)

    # `demo` and `seed --demo` come from the simulator, which depends on the server.
    for add_command in _added_commands():
        add_command(commands)

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    db_upgrade = db_commands.add_parser("upgrade", help="apply all migrations")
    db_upgrade.set_defaults(func=_cmd_db_upgrade)

    config = commands.add_parser("config", help="configuration")
    config_commands = config.add_subparsers(
        dest="config_command", required=True, metavar="CONFIG_COMMAND"
    )
    check = config_commands.add_parser("check", help="report every configuration problem")
    check.set_defaults(func=_cmd_config_check)

    operator = commands.add_parser("operator", help="operator accounts and API tokens")
    operator.set_defaults(func=_cmd_operator)
    operator_commands = operator.add_subparsers(
        dest="operator_command", required=True, metavar="OPERATOR_COMMAND"
    )
    add = operator_commands.add_parser("add", help="add an operator and print their token")
    add.add_argument("username", help="sign-in name, e.g. li.na (shown in call histories)")
    add.add_argument("--name", required=True, help="full name")
    add.add_argument("--role", choices=["operator", "supervisor"], default="operator")
    add.add_argument("--phone", help="E.164 number; supervisors with one are texted on escalations")
    add.add_argument("--language", default="zh", help="language of their texts (default zh)")
    token = operator_commands.add_parser(
        "token", help="issue a new token (the old one stops working)"
    )
    token.add_argument("username")
    operator_commands.add_parser("list", help="list operators (never their tokens)")
    for action, what in (("deactivate", "refuse their token"), ("activate", "allow again")):
        switch = operator_commands.add_parser(action, help=f"{action} an operator: {what}")
        switch.add_argument("username")

    users = commands.add_parser(
        "users", help="people who sign in to the board: operators, supervisors, administrators"
    )
    users.set_defaults(func=_cmd_users)
    users_commands = users.add_subparsers(
        dest="users_command", required=True, metavar="USERS_COMMAND"
    )
    user_add = users_commands.add_parser(
        "add", help="add a user with a board password (the first administrator, say)"
    )
    user_add.add_argument("username", help="sign-in name, e.g. li.na (shown in call histories)")
    user_add.add_argument("--name", required=True, help="full name")
    user_add.add_argument("--role", choices=["operator", "supervisor", "admin"], default="operator")
    user_add.add_argument("--phone", help="E.164; supervisors with one are texted on escalations")
    user_add.add_argument("--language", default="zh", choices=["zh", "en"])
    user_password = users_commands.add_parser(
        "password", help="set a user's board password (signs out their open boards)"
    )
    user_password.add_argument("username")
    for command in (user_add, user_password):
        command.add_argument(
            "--password-stdin",
            action="store_true",
            help="read the password from the first line of stdin instead of asking",
        )
    users_commands.add_parser("list", help="list users, their role and whether they can sign in")
    for action, what in (("deactivate", "sign them out, refuse them"), ("activate", "allow")):
        switch = users_commands.add_parser(action, help=f"{action} a user: {what}")
        switch.add_argument("username")

    phone = commands.add_parser(
        "phone", help="phone numbers marked as unable to get texts (invalid, opted out...)"
    )
    phone.set_defaults(func=_cmd_phone)
    phone_commands = phone.add_subparsers(
        dest="phone_command", required=True, metavar="PHONE_COMMAND"
    )
    phone_commands.add_parser("list", help="list marked numbers, whose they are and why")
    clear = phone_commands.add_parser(
        "clear", help="lift the mark once the number is fixed (texts and pages resume)"
    )
    clear.add_argument("number", help="the number as listed, e.g. +8613800000001")

    fake_twilio = commands.add_parser(
        "fake-twilio", help="run a local fake Twilio SMS API until Ctrl-C (development, tests)"
    )
    fake_twilio.add_argument(
        "--host",
        default="127.0.0.1",
        help="a loopback address (default 127.0.0.1; also ::1, localhost): no other is taken",
    )
    fake_twilio.add_argument("--port", type=int, default=0, help="default 0: any free port")
    fake_twilio.add_argument(
        "--inbound-url",
        default="",
        help="where carers' answers typed on its page are posted, signed with its auth token "
        "(a server's http://HOST:PORT/sms/inbound); default: nowhere",
    )
    fake_twilio.set_defaults(func=_cmd_fake_twilio)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``callcenter`` console script."""
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level)
    # Alembic announces its SQLite context on every schema check; only its warnings matter.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
    # The twilio client writes ten lines of headers for every request it makes; the
    # outbox logs each text with its call already. Its warnings and errors still show.
    logging.getLogger("twilio").setLevel(max(logging.WARNING, logging.getLogger().level))
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
