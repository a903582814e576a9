"""The outbox: effects (texts, device commands) carried out after the change that caused
them committed, each by its channel's sender.

- ``relay``: the loop, the claims under each call's lock, the desk's pages handed over;
- ``lanes``: each phone's rows one after another, phones side by side;
- ``limits``: a phone's text limit, and bundling over it;
- ``reconcile``: a send in doubt is looked for at the provider before it goes again;
- ``delivery``: a message that will not arrive moves its call on (also for Twilio's
  delivery reports, web/sms_webhooks.py);
- ``channels``: what sets one channel apart; ``sender``: what a sender is given and
  answers; ``rows``: the outbox table as the relay reads and writes it.

Senders live with their provider: SMS in notify/sms.py, device commands in
ingest/commands.py.
"""

from callcenter.engine.outbox.limits import TextLimit
from callcenter.engine.outbox.relay import OutboxRelay
from callcenter.engine.outbox.sender import (
    ChannelProgress,
    OutboxMessage,
    Receipt,
    Reconciler,
    Sender,
    SendError,
)

__all__ = [
    "ChannelProgress",
    "OutboxMessage",
    "OutboxRelay",
    "Receipt",
    "Reconciler",
    "SendError",
    "Sender",
    "TextLimit",
]
