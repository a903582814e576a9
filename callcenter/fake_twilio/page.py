"""The fake Twilio's page for a person: every call, with buttons to act as the phone
(answer, keys, hang up, busy) and what was said on it, and every text it saw, with a form
per phone to answer as that phone; newest first. Loads its own script and style and
nothing else."""

from __future__ import annotations

import html
from datetime import UTC
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from callcenter.fake_twilio.calls import IN_PROGRESS, OUTBOUND_DIAL, RINGING, FakeCall
from callcenter.fake_twilio.calls import INBOUND as CALL_IN
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
    # Not "no-referrer": with it Chromium posts the page's own forms with "Origin: null",
    # which the Origin check refuses. "same-origin" tells nothing to any other site.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def render_page(
    everything: list[FakeMessage],
    form_token: str,
    inbound_url: str,
    calls: list[FakeCall] | None = None,
    voice_url: str = "",
) -> str:
    """The page: ``calls`` then ``everything``, newest first, with buttons and answer forms
    carrying ``form_token``."""
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
<title>Fake Twilio: calls and texts</title>
<link rel="stylesheet" href="/page.css">
<script src="/page.js" defer></script>
</head>
<body>
<h1>Calls and texts the fake Twilio saw</h1>
<p>Nothing here reached a real phone. Newest first; the page reloads every
{_PAGE_RELOAD_S} s unless you are typing an answer. Only this machine can open it.</p>
{render_calls(calls or [], form_token, voice_url)}
<h2>Answer as a phone</h2>
<p>{where}</p>
{forms}
<h2>Texts</h2>
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


def render_calls(calls: list[FakeCall], form_token: str, voice_url: str) -> str:
    """The calls' part of the page: a row per call, buttons on those still ringing or up."""
    rows = "\n".join(_call_row(call, form_token) for call in calls) or (
        '<tr><td colspan="7">No call yet: none has been placed or has come in.</td></tr>'
    )
    where = (
        f"Calls to our number ask <code>{html.escape(voice_url)}</code> what to do."
        if voice_url
        else "No voice URL is set: nobody can call the centre's number here."
    )
    return f"""<h2>Calls</h2>
<p>{where} A ringing phone is answered (or refused as busy) with its buttons; a call that
is up takes keys and hangs up.</p>
<table class="calls">
<thead><tr><th>time (UTC)</th><th>kind</th><th>to</th><th>from</th><th>status</th>\
<th>heard and pressed</th><th>the phone</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>"""


_CALL_KINDS = {
    "outbound-api": "placed by the call centre",
    OUTBOUND_DIAL: "dialled from a call",
    CALL_IN: "a phone calling us",
}


def _call_row(call: FakeCall, token: str) -> str:
    moment = call.date_created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    status = html.escape(call.status)
    if call.duration:
        status += f" ({call.duration} s)"
    if call.bridged_with:
        status += f'<br><span class="leg">with {html.escape(call.bridged_with)}</span>'
    if call.note:
        status += f'<br><span class="note">{html.escape(call.note)}</span>'
    heard = "".join(
        f'<div class="said" lang="{html.escape(said.language)}">{html.escape(said.text)}</div>'
        for said in call.spoken
    ) + "".join(f'<div class="keys">pressed {html.escape(keys)}</div>' for keys in call.digits)
    cells = [
        html.escape(moment),
        html.escape(_CALL_KINDS.get(call.direction, call.direction)),
        html.escape(call.to),
        html.escape(call.from_),
        status,
        heard,
        _phone_buttons(call, token),
    ]
    tds = "".join(f"<td>{cell}</td>" for cell in cells)
    return f'<tr class="call {html.escape(call.status)}" id="{html.escape(call.sid)}">{tds}</tr>'


def _phone_buttons(call: FakeCall, token: str) -> str:
    """What the phone can do now: answer or refuse a ringing call, keys and hang up on
    one that is up (the caller of an inbound call only hangs up or presses keys)."""
    if call.ended:
        return ""
    hidden = (
        f'<input type="hidden" name="sid" value="{html.escape(call.sid)}">'
        f'<input type="hidden" name="token" value="{html.escape(token)}">'
    )
    buttons = []
    if call.status == RINGING and call.direction != CALL_IN:
        buttons += ["answer", "busy"]
    if call.status in (RINGING, IN_PROGRESS):
        buttons.append("hang_up")
    forms = []
    if buttons:
        pressable = "".join(
            f'<button type="submit" name="action" value="{name}">{name.replace("_", " ")}</button>'
            for name in buttons
        )
        forms.append(f'<form method="post" action="/call">{hidden}{pressable}</form>')
    if call.status == IN_PROGRESS:
        keys = "".join(
            f'<button type="submit" name="digits" value="{key}">{key}</button>'
            for key in "123456789*0#"
        )
        forms.append(
            f'<form method="post" action="/call" class="keypad">{hidden}'
            f'<input type="hidden" name="action" value="press">{keys}</form>'
        )
    return "".join(forms)


def call_json(call: FakeCall) -> dict[str, Any]:
    """A call for ``GET /calls.json``: Twilio's resource and what happened on it."""
    return {
        **call.to_json(),
        "statuses": call.statuses,
        "spoken": [{"text": s.text, "language": s.language} for s in call.spoken],
        "digits": call.digits,
        "bridged_with": call.bridged_with,
        "recordings": [{"sid": r.sid, "duration": r.duration} for r in call.recordings],
        "note": call.note,
    }


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
tr.call.ringing { background: #fff6dd; }
tr.call.in-progress { background: #e8f7e8; }
.said { white-space: pre-wrap; }
.keys, .leg { color: #555; }
form.keypad { display: grid; grid-template-columns: repeat(3, 2.2em); gap: 0.2em; }
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
