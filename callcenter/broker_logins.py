"""The embedded broker's own logins: the server's, and the administrator's who manages
the devices' logins, with the rules each is held to (docs/operations.md, "Broker
logins").

mosquitto's dynamic-security plugin keeps every login and rule in one JSON file, which
the broker rewrites after each change. Before the broker starts, this module makes sure
that file holds the two logins this server needs, with the passwords kept beside it in
``credentials.json`` (mode 0600). Both passwords are made at the first start from the
operating system's random source and never appear in code or configuration; a restart
reads them back. Everything else in the file (the devices' logins) is left as the broker
wrote it, so devices keep their logins across restarts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The names of the server's two logins on the embedded broker.
ADMIN_USERNAME = "callcenter-admin"
SERVER_USERNAME = "callcenter-server"
ADMIN_ROLE = "callcenter-admin"
SERVER_ROLE = "callcenter-server"
# The plugin's control topic, where its administrator sends commands, and every topic
# the administrator may use (the commands, their answers on .../response).
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
CONTROL_TOPICS = "$CONTROL/dynamic-security/#"

CREDENTIALS_FILE = "credentials.json"
DYNSEC_FILE = "dynamic-security.json"

# mosquitto's own choices for the password hash (src/password_mosq.h: SALT_LEN,
# PW_DEFAULT_ITERATIONS): PBKDF2-HMAC-SHA512 over a 12-byte salt.
_SALT_BYTES = 12
_ITERATIONS = 101

# Where Debian, Ubuntu, Fedora and a source install put the plugin.
PLUGIN_PLACES = (
    "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
    "/usr/lib64/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
)


@dataclass(frozen=True)
class BrokerLogin:
    """A user name and its password on the broker."""

    username: str
    password: str = field(repr=False)  # never in a log line or a traceback


@dataclass(frozen=True)
class OwnLogins:
    """The embedded broker's logins for this server: its MQTT clients' and the
    administrator's, who issues and revokes the devices' logins."""

    server: BrokerLogin
    admin: BrokerLogin


def find_plugin(configured: str = "") -> str | None:
    """The dynamic-security plugin's path: the configured one, else the first found."""
    if configured:
        return configured if Path(configured).is_file() else None
    return next((place for place in PLUGIN_PLACES if Path(place).is_file()), None)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, replacing it whole."""
    fresh = path.with_name(path.name + ".new")
    with contextlib.suppress(FileNotFoundError):
        fresh.unlink()
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(fresh, path)


def own_logins(directory: Path) -> OwnLogins:
    """The server's and the administrator's logins kept in ``directory``, made now (and
    kept, mode 0600) if there are none yet."""
    path = directory / CREDENTIALS_FILE
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
        return OwnLogins(
            server=BrokerLogin(kept["server"]["username"], kept["server"]["password"]),
            admin=BrokerLogin(kept["admin"]["username"], kept["admin"]["password"]),
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        # None yet, or unreadable: new logins below (written into the broker's file too).
        pass
    logins = OwnLogins(
        server=BrokerLogin(SERVER_USERNAME, secrets.token_urlsafe(24)),
        admin=BrokerLogin(ADMIN_USERNAME, secrets.token_urlsafe(24)),
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_private(path, json.dumps(asdict(logins), indent=2))
    return logins


def password_entry(password: str) -> dict[str, Any]:
    """A password as the dynamic-security file keeps it (hash, salt, iterations)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _ITERATIONS,
    }


def allow(kind: str, topic: str) -> dict[str, Any]:
    """One rule of a role, as the plugin keeps it: ``kind`` (e.g. publishClientSend) is
    allowed on ``topic``."""
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": True}


def server_role(topic_prefix: str) -> dict[str, Any]:
    """What the server's clients may do: read every device topic (ingest, also through a
    shared subscription) and publish the devices' commands (the command link)."""
    devices = f"{topic_prefix}/v1/#"
    return {
        "rolename": SERVER_ROLE,
        "textdescription": "the call centre server: ingest and device commands",
        "acls": [
            allow("subscribePattern", devices),
            allow("subscribePattern", f"$share/+/{devices}"),
            allow("publishClientReceive", devices),
            allow("publishClientSend", f"{topic_prefix}/v1/+/+/command"),
        ],
    }


def admin_role() -> dict[str, Any]:
    """What the administrator may do: speak to the dynamic-security plugin, nothing else."""
    return {
        "rolename": ADMIN_ROLE,
        "textdescription": "the call centre server's management of device logins",
        "acls": [
            allow("publishClientSend", CONTROL_TOPICS),
            allow("publishClientReceive", CONTROL_TOPICS),
            allow("subscribePattern", CONTROL_TOPICS),
        ],
    }


# What nobody may do unless a role of theirs allows it (mosquitto's defaults, written
# out so the file says it): publish, subscribe. Receiving is checked at subscription.
DEFAULT_ACL_ACCESS = {
    "publishClientSend": False,
    "publishClientReceive": True,
    "subscribe": False,
    "unsubscribe": True,
}


def prepare_dynsec_file(path: Path, logins: OwnLogins, topic_prefix: str) -> None:
    """Make the plugin's file hold the server's and the administrator's logins and roles
    as they are now, keeping every other login, role and group in it as it is."""
    try:
        tree = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        tree = {}
    if not isinstance(tree, dict):
        raise ValueError(f"{path} is not a dynamic-security file (not a JSON object)")
    ours = {logins.server.username, logins.admin.username}
    clients = [c for c in tree.get("clients", []) if c.get("username") not in ours]
    clients += [
        {
            "username": logins.admin.username,
            "textname": "call centre administrator",
            "roles": [{"rolename": ADMIN_ROLE}],
            **password_entry(logins.admin.password),
        },
        {
            "username": logins.server.username,
            "textname": "call centre server",
            "roles": [{"rolename": SERVER_ROLE}],
            **password_entry(logins.server.password),
        },
    ]
    roles = [r for r in tree.get("roles", []) if r.get("rolename") not in (ADMIN_ROLE, SERVER_ROLE)]
    roles += [admin_role(), server_role(topic_prefix)]
    tree.update(
        {
            "defaultACLAccess": DEFAULT_ACL_ACCESS,
            "clients": clients,
            "roles": roles,
            "groups": tree.get("groups", []),
        }
    )
    _write_private(path, json.dumps(tree, indent=1))
