"""The fake Twilio's page for a person: every text it saw, newest first, and a form per
phone to answer as that phone. Loads its own script and style and nothing else."""

from __future__ import annotations

import html
from datetime import UTC

from aiohttp import web
from aiohttp.typedefs import Handler

from callcenter.fake_twilio.message import INBOUND, OUTBOUND_API, OUTBOUND_REPLY, FakeMessage

# How often the message page reloads itself (unless someone is typing an answer).
_PAGE_RELOAD_S = 5
# The page loads its own script and style and nothing else, and no other page frames it.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": _PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def render_page(everything: list[FakeMessage], form_token: str, inbound_url: str) -> str:
    """The page: ``everything`` newest first, with answer forms carrying ``form_token``."""
    rows = "\n".join(_page_row(m) for m in everything) or (
        '<tr><td colspan="6">Nothing yet: no text has been sent or received.</td></tr>'
    )
    phones = sorted({m.to for m in everything if m.direction != INBOUND})
    forms = "\n".join(_answer_form(phone, form_token) for phone in phones) or (
        "<p>A form to answer appears here for each phone that got a text.</p>"
    )
    where = (
        f"Answers are posted, signed, to <code>{html.escape(inbound_url)}</code>."
        if inbound_url
        else "No inbound URL is set: answers have nowhere to go."
    )
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Fake Twilio: texts</title>
<link rel="stylesheet" href="/page.css">
<script src="/page.js" defer></script>
</head>
<body>
<h1>Texts the fake Twilio saw</h1>
<p>Nothing here reached a real phone. Newest first; the page reloads every
{_PAGE_RELOAD_S} s unless you are typing an answer. Only this machine can open it.</p>
<h2>Answer as a phone</h2>
<p>{where}</p>
{forms}
<h2>Messages</h2>
<table>
<thead><tr><th>time (UTC)</th><th>kind</th><th>to</th><th>from</th><th>status</th>\
<th>text</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""


_KINDS = {
    OUTBOUND_API: "sent by the call centre",
    INBOUND: "the phone's answer",
    OUTBOUND_REPLY: "confirmation",
}


def _page_row(message: FakeMessage) -> str:
    moment = message.date_created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    status = html.escape(message.status)
    if message.note:
        status += f'<br><span class="note">{html.escape(message.note)}</span>'
    cells = [
        html.escape(moment),
        html.escape(_KINDS.get(message.direction, message.direction)),
        html.escape(message.to),
        html.escape(message.from_ or message.messaging_service_sid or ""),
        status,
    ]
    tds = "".join(f"<td>{cell}</td>" for cell in cells)
    return (
        f'<tr class="{html.escape(message.direction)}" id="{html.escape(message.sid)}">'
        f'{tds}<td class="body">{html.escape(message.body)}</td></tr>'
    )


def _answer_form(phone: str, token: str) -> str:
    number = html.escape(phone)
    return (
        f'<form method="post" action="/reply"><input type="hidden" name="From" '
        f'value="{number}"><input type="hidden" name="token" value="{html.escape(token)}">'
        f'<label>{number} answers: <input name="Body" size="24" '
        f'placeholder="e.g. 12a"></label> <button type="submit">send</button></form>'
    )


PAGE_STYLE = """\
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left;
  vertical-align: top; }
td.body { white-space: pre-wrap; }
tr.inbound { background: #eef6ff; }
tr.outbound-reply { background: #f2fbf0; }
.note { color: #a00; }
form { margin: 0.3em 0; }
"""
# Reloads the page unless someone is typing an answer.
PAGE_SCRIPT = f"""\
setInterval(function () {{
  var typing = Array.prototype.some.call(
    document.querySelectorAll("input[name=Body]"),
    function (box) {{ return box.value !== "" || box === document.activeElement; }});
  if (!typing) {{ window.location.replace("/"); }}
}}, {_PAGE_RELOAD_S * 1000});
"""


def page_file(text: str, content_type: str) -> Handler:
    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=text, content_type=content_type, headers=PAGE_HEADERS)

    return serve
