"""Text from outside (requests, devices) made safe to show on one line, log or store."""

from __future__ import annotations

import json
import re

# What some reader of a log takes as the end of a line or as a command: the C0 and C1
# controls and DEL (LF, CR, VT, FF, FS-RS, NEL, ESC...), the Unicode line and paragraph
# separators, and the marks that reorder text as it is shown; and lone surrogates (only
# a \u escape in a device's JSON makes one), which no UTF-8 stream or database takes.
_CONTROLS = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(found: re.Match[str]) -> str:
    char = found.group(0)
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def one_line(text: str) -> str:
    """``text`` with every control character written as an escape: it fits one line."""
    return _CONTROLS.sub(_escaped, text)


def one_json_line(value: object) -> str:
    """``value`` as JSON on one line: the control characters ``json.dumps`` leaves as
    they are (DEL, NEL, U+2028...) written as ``\\u`` escapes too, the rest as they are."""
    return _CONTROLS.sub(
        lambda found: f"\\u{ord(found.group(0)):04x}",
        json.dumps(value, ensure_ascii=False, default=str),
    )
