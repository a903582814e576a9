"""What sets one channel's messages apart in the relay, besides how they are sent.

The relay names no channel: whether a message can be a dispatch page, whether its phone's
marks and its phone's text limit apply, is read here. A new channel (voice calls) is a
sender of its own (a module speaking ``sender.Sender``) and one line in ``CHANNELS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from callcenter.engine.repository import DEVICE_COMMAND, SMS, VOICE


@dataclass(frozen=True)
class ChannelRules:
    """How the relay treats one channel's messages."""

    # For people: a guard naming a carer makes a message a dispatch page to them, and a
    # message that can never arrive is recorded on its call (delivery.did_not_arrive).
    to_people: bool = False
    # Not sent to a phone marked as unable to get texts (engine.phones).
    phone_marks: bool = False
    # Weighed against the phone's limit (sms.recipient_limit), bundled over it (limits).
    limited: bool = False
    # A page in doubt whose provider cannot be asked goes out again, marked as a repeat
    # (a text a carer gets twice costs less than one never got). Not a phone call: the
    # carer has the text already, and must never be rung twice for one step.
    repeat_in_doubt: bool = False
    # A page that can never arrive is the carer not picking up (RingUnanswered), not
    # the carer being unreachable: their text may well have arrived.
    rings: bool = False


CHANNELS = {
    SMS: ChannelRules(to_people=True, phone_marks=True, limited=True, repeat_in_doubt=True),
    VOICE: ChannelRules(to_people=True, rings=True),
    DEVICE_COMMAND: ChannelRules(),
}

# The channel the desk writes dispatch pages on (repository.ClaimedPage): a relay with a
# sender for it is the desk's page courier.
PAGES = SMS


def rules_of(channel: str) -> ChannelRules:
    """The rules of ``channel``; a channel not listed has none of them."""
    return CHANNELS.get(channel, ChannelRules())
