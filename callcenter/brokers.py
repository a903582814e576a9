"""The brokers an MQTT client of ours connects to, and which one it tries next.

``[broker] hosts`` (or ``host`` and ``port``) name one broker or several. Every client
the server makes (ingest, in this process or its own; the command link) and every
simulated device chooses through a ``Rotation``: it keeps to the broker it is on; when a
connect fails or the connection is lost it goes on to the next in the list at once, and
only once every broker in turn has failed does it wait (its jittered backoff) before the
next round. A client that stays where it is rather than going back to the first broker
does not flap between brokers while one of them comes and goes.

Several brokers are either one cluster sharing sessions (EMQX), where moving between
its nodes keeps the session, or separate brokers, each with its own sessions: there,
moving to another broker means the session on that one, and what the first had queued
for the client waits on the first until the client comes back to it; and a broker that
never held the server's session keeps nothing for it (docs/operations.md, "The broker
tier").

This module imports nothing of ours, so the configuration, ingest and the simulator can
all use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

# What an entry of ``broker.hosts`` or ``--broker-host`` looks like, for error messages.
ENTRY_FORM = "host or host:port (an IPv6 address in brackets: [::1]:1883)"


@dataclass(frozen=True)
class BrokerAddress:
    """One broker: the host to connect to and its port."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str, default_port: int) -> BrokerAddress:
    """``host``, ``host:port`` or ``[ipv6]:port``, the port ``default_port`` when left
    out; a ValueError saying what is wrong with anything else."""
    entry = text.strip()
    if not entry:
        raise ValueError(f"an empty broker entry: write each as {ENTRY_FORM}")
    port_text: str | None = None
    if entry.startswith("["):
        host, closed, rest = entry[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not {ENTRY_FORM}")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    elif ":" in entry:
        raise ValueError(f"{text!r}: write an IPv6 address in brackets, e.g. [::1]:1883")
    else:
        host = entry
    if not host or any(ch.isspace() or ch in "/@,[]" for ch in host):
        raise ValueError(f"{text!r}: {host!r} is not a host name or address")
    if port_text is None:
        return BrokerAddress(host, default_port)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port {port_text!r} is not a TCP port (1-65535)")
    return BrokerAddress(host, int(port_text))


def parse_addresses(entries: Iterable[str], default_port: int) -> tuple[BrokerAddress, ...]:
    """Every entry read by ``parse_address``, in order; a ValueError for a bad entry, a
    broker named twice, or none at all."""
    found: list[BrokerAddress] = []
    seen: dict[tuple[str, int], str] = {}
    for entry in entries:
        address = parse_address(entry, default_port)
        key = (address.host.lower(), address.port)
        if key in seen:
            raise ValueError(f"{entry.strip()!r} names the same broker as {seen[key]!r}")
        seen[key] = entry.strip()
        found.append(address)
    if not found:
        raise ValueError(f"no broker named: write each as {ENTRY_FORM}")
    return tuple(found)


def describe(brokers: Sequence[BrokerAddress]) -> str:
    """The brokers in words, for logs and /healthz: "the broker a:1883", "any of the
    brokers a:1883, b:1883"."""
    if len(brokers) == 1:
        return f"the broker {brokers[0]}"
    return "any of the brokers " + ", ".join(str(broker) for broker in brokers)


class Rotation:
    """Which broker a client tries next, and how long it waits first.

    ``delays`` makes a fresh series of waits (the client's jittered backoff); it is
    started again each time a connection is made, and drawn from only after a whole
    round of brokers has failed."""

    def __init__(
        self, brokers: Sequence[BrokerAddress], delays: Callable[[], Iterator[float]]
    ) -> None:
        if not brokers:
            raise ValueError("a client needs at least one broker to connect to")
        self.brokers = tuple(brokers)
        self._delays_from = delays
        self._delays = delays()
        self._at = 0
        self._failed_in_a_row = 0

    @property
    def current(self) -> BrokerAddress:
        """The broker to connect to now."""
        return self.brokers[self._at]

    def connected(self) -> None:
        """The current broker took the connection: a later loss starts a new round from
        it, and waits start again from the shortest."""
        self._failed_in_a_row = 0
        self._delays = self._delays_from()

    def failed(self) -> float:
        """The current broker refused or dropped the connection: go on to the next. The
        seconds to wait before trying it: none while this round has brokers left, the
        next backoff once every broker has failed in turn."""
        self._failed_in_a_row += 1
        self._at = (self._at + 1) % len(self.brokers)
        if self._failed_in_a_row % len(self.brokers):
            return 0.0
        return next(self._delays)

    def start_over(self) -> None:
        """Back to the first broker with fresh waits, as a client that restarts begins
        (a device after a power cut)."""
        self._at = 0
        self._failed_in_a_row = 0
        self._delays = self._delays_from()

    def next_try(self, wait: float) -> str:
        """What happens next, in words for the log line of a failure."""
        if not wait:
            return f"trying {self.current} now"
        if len(self.brokers) == 1:
            return f"reconnecting in {wait:.1f} s"
        return f"every broker failed in turn; trying {self.current} in {wait:.1f} s"
