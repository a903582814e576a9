"""Calls to the centre's number: which household a caller is, and which of its open calls
the ring belongs to (docs/voice.md, "Inbound calls").

Pure rules over what the engine read: the households whose register lists the caller's
number, the households that name the caller as a family contact, and the household's
open calls, most urgent first.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from callcenter.domain.call_types import CallType


def caller_household(register: Collection[int], contacts: Collection[int]) -> int | None:
    """The household a caller is: the one whose register lists the number (a number of
    its own: the base unit, a landline, a resident's mobile); else the one household that
    names the number as a family contact (a daughter ringing about her mother). A number
    several households share, or none, names no household: the call is unlinked and the
    operator asks who is calling."""
    if len(register) == 1:
        return next(iter(register))
    if not register and len(contacts) == 1:
        return next(iter(contacts))
    return None


def call_to_attach(open_calls: Sequence[tuple[int, CallType]]) -> int | None:
    """The open call a household's ring is noted on: its most urgent (the resident
    ringing about the alarm the desk is already handling); None opens a ``voice`` call."""
    return open_calls[0][0] if open_calls else None
