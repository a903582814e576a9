"""`callcenter demo` as a newcomer starts it: the lines it prints say what is true for
the options given."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

SAYS_WITHIN_S = 90.0


async def _line_with(stream: asyncio.StreamReader, words: str, seen: list[str]) -> str:
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(
                "the demo ended before saying " + repr(words) + ":\n" + "".join(seen)
            )
        line = raw.decode(errors="replace")
        seen.append(line)
        if words in line:
            return line


async def test_the_demo_without_carers_says_nobody_answers_the_texts(tmp_path: Path) -> None:
    """Test that `callcenter demo --no-carers` says that nobody but the person at the
    fake Twilio's page answers the carers' texts (it said simulated carers did), and
    stops cleanly on Ctrl-C."""
    environment = {**os.environ, "CALLCENTER_WEB__PORT": "0"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "callcenter.cli",
        "demo",
        "--no-carers",
        "--press-interval",
        "60",
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        line = await asyncio.wait_for(
            _line_with(process.stdout, "SMS a carer would get", seen), SAYS_WITHIN_S
        )
        assert "nobody answers them but you (--no-carers)" in line, line
        assert "simulated carers" not in line, line
        await asyncio.wait_for(_line_with(process.stdout, "call board at", seen), 30)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
    # Read on to the end, so a full pipe never holds the demo up while it stops.
    rest = await asyncio.wait_for(process.stdout.read(), 60)
    code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0, "".join(seen[-20:]) + rest.decode(errors="replace")[-4000:]
