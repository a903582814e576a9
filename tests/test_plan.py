"""Staffing what-if (device_sim.plan) and the ``device-sim week|plan`` commands.

The plan test draws the staffing plot of half a simulated day and saves it as
test-artifacts/staffing-plan.png for people to look at.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from device_sim import cli
from device_sim.cli import main
from device_sim.commands import SUBCOMMANDS
from device_sim.plan import (
    Placement,
    PlanError,
    PlanRow,
    PlanSettings,
    format_table,
    parse_team_sizes,
    plan_staffing,
    plot_plan,
    variant_grid,
)
from tests.fixtures.browser import ARTIFACTS

FIVE = "S01,S03,S05,S07,S09"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE, "not a PNG"
    length, chunk = struct.unpack(">I4s", data[8:16])
    assert chunk == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("text", "step", "sizes"),
    [
        ("40..80", 10, [40, 50, 60, 70, 80]),
        ("30..75", 10, [30, 40, 50, 60, 70, 75]),
        ("40..60", 5, [40, 45, 50, 55, 60]),
        ("60,40,50", 10, [40, 50, 60]),
        ("60", 10, [60]),
        ("60..60", 10, [60]),
    ],
)
def test_team_sizes(text: str, step: int, sizes: list[int]) -> None:
    """Test that a range (both ends included), a list or one number gives the team sizes."""
    assert parse_team_sizes(text, step) == sizes


@pytest.mark.parametrize(
    ("text", "step", "message"),
    [
        ("80..40", 10, "the first must not be above the last"),
        ("forty", 10, "say a range like 40..80"),
        ("40..", 10, "say a range like 40..80"),
        ("0,10", 10, "at least 1 carer"),
        ("40..80", 0, "the step must be at least 1"),
        (",", 10, "at least one team size"),
    ],
)
def test_team_sizes_that_cannot_be_planned(text: str, step: int, message: str) -> None:
    """Test that a team-size range that makes no sense is refused with the reason."""
    with pytest.raises(PlanError, match=message):
        parse_team_sizes(text, step)


def test_placements() -> None:
    """Test that 'all' means every station and codes are checked against the district."""
    assert Placement.parse("all") == Placement(None)
    assert Placement.parse("all").size == 9
    assert Placement.parse(" s01, S03 ").stations == ("S01", "S03")
    with pytest.raises(PlanError, match="no such station S10"):
        Placement.parse("S01,S10")
    with pytest.raises(PlanError, match="S01 named more than once"):
        Placement.parse("S01,S01")
    grid = variant_grid([20, 60], [Placement(None), Placement.parse(FIVE)])
    assert [(v.carers, v.placement.name) for v in grid] == [
        (20, "all"),
        (60, "all"),
        (20, FIVE),
        (60, FIVE),
    ]


@pytest.mark.slow
def test_staffing_plan_of_half_a_day() -> None:
    """Test that the same half day run for two team sizes at two placements gives sane
    figures (every event accounted for, a larger team never clearly worse), that a team
    too small for its stations is reported as impossible, and that the plot is a PNG
    (saved as test-artifacts/staffing-plan.png)."""
    placements = [Placement.parse("all"), Placement.parse(FIVE)]
    lines: list[str] = []
    rows = plan_staffing(
        [4, 20, 60], placements, PlanSettings(days=0.5), jobs=2, progress=lines.append
    )
    assert [(row.carers, row.placement) for row in rows] == [
        (4, "all"),
        (20, "all"),
        (60, "all"),
        (4, FIVE),
        (20, FIVE),
        (60, FIVE),
    ]
    small = [row for row in rows if row.carers == 4]
    assert all(not row.ran and row.impossible for row in small)
    assert "4 carers cannot staff 9 stations" in (small[0].impossible or "")
    ran = [row for row in rows if row.ran]
    assert len(ran) == 4 and not any(row.failed for row in rows)
    for row in ran:
        assert row.summary is not None
        assert row.figure("events_generated") > 0
        assert row.figure("events_lost") == 0
        assert row.figure("events_doubled") == 0
        assert row.figure("events_pending") == 0
        assert row.figure("events_stored") == row.figure("events_generated")
        assert row.figure("calls") > 0
        assert row.on_scene_15min_share is not None
        assert 0.0 <= row.on_scene_15min_share <= 1.0
        assert row.answered_60s_share is not None
        assert row.busiest is not None
    # The same presses each time: the calls differ only by what the team does with them.
    assert len({row.figure("events_generated") for row in ran}) == 1
    for placement in placements:
        twenty, sixty = (
            next(r for r in ran if r.placement == placement.name and r.carers == size)
            for size in (20, 60)
        )
        assert twenty.on_scene_15min_share is not None
        assert sixty.on_scene_15min_share is not None
        assert sixty.on_scene_15min_share >= twenty.on_scene_15min_share - 0.05
        # Stations left out keep their households but have nobody on the clock.
        if placement.stations is not None:
            utilisation = sixty.figure("utilisation")
            assert utilisation["S02"] == 0.0
    assert any(line.startswith("[4/4]") for line in lines)
    table = format_table(rows)
    assert table.count("\n") == 1 + len(rows)
    assert "impossible: 4 carers cannot staff 5 stations" in table

    again = [PlanRow.from_json(json.loads(json.dumps(row.as_json()))) for row in rows]
    assert [row.as_json() for row in again] == [row.as_json() for row in rows]

    path = plot_plan(rows, ARTIFACTS / "staffing-plan.png")
    width, height = _png_size(path)
    assert (width, height) == (1200, 500)
    assert path.stat().st_size > 20_000


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own refusals
        status = int(exc.code or 0)
    return status, capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["week", "--carers", "5"], "5 carers cannot staff 9 stations: at least one each"),
        (["week", "--carers", "3", "--stations", FIVE], "3 carers cannot staff 5 stations"),
        (["week", "--stations", "S01,S99"], "no such station S99"),
        (["week", "--days", "0"], "days must be above 0"),
        (["week", "--households", "0"], "at least 1 household"),
        (["week", "--profile", "summer"], "invalid choice: 'summer'"),
        (["plan"], "the following arguments are required: --carers"),
        (["plan", "--carers", "80..40"], "the first must not be above the last"),
        (["plan", "--carers", "forty"], "say a range like 40..80"),
        (["plan", "--carers", "40..60", "--step", "0"], "the step must be at least 1"),
        (["plan", "--carers", "40..60", "--jobs", "0"], "--jobs must be at least 1"),
        (["plan", "--carers", "40", "--stations", "S10"], "no such station S10"),
        (["plan", "--carers", "40", "--days", "-1"], "days must be above 0"),
    ],
)
def test_commands_refuse_options_that_cannot_work(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Test that week and plan exit with status 2 and say what is wrong."""
    status, err = _run(argv, capsys)
    assert status == 2
    assert message in err


def test_the_real_time_simulator_keeps_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    """Test that `device-sim --households ...` still reaches the real-time simulator and
    that the subcommand names the hook looks for are the ones commands.py defines."""
    status, err = _run(["--households", "1", "--duplicate-rate", "2"], capsys)
    assert status == 2
    assert "duplicate rate must be between 0 and 1" in err
    assert SUBCOMMANDS == cli.VIRTUAL_TIME_COMMANDS


def test_device_sim_week_runs_through_the_entry_point(tmp_path: Path) -> None:
    """Test that `device-sim week --days 0.1` runs the district on virtual time, reports
    on stderr and ends stdout with the summary as JSON; `--no-voice` rings nobody."""
    script = Path(sys.executable).with_name("device-sim")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "device_sim"]
    week = ["week", "--days", "0.1", "--households", "50", "--carers", "9", "--no-voice"]
    done = subprocess.run(
        [*command, *week, "--work-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["households"] == 50
    assert summary["carers"] == 9
    assert summary["staffed"] == "all"
    assert summary["events_lost"] == 0
    assert "answered within 60 s" in done.stderr
    assert "emergencies on scene within 15 min" in done.stderr
    assert "phone calls: none (--no-voice" in done.stderr
    assert summary["voice"]["operator_rings"] == summary["voice"]["carers_rung"] == 0
    assert (tmp_path / "week.db").exists()


def test_a_plot_without_matplotlib_is_refused_at_once_saying_how_to_install_it(
    tmp_path: Path,
) -> None:
    """Test that ``device-sim plan --plot`` on an install without the optional plotting
    part (matplotlib made unimportable) exits 2 before simulating anything, naming the
    extra to install; the server's install does not pull matplotlib in."""
    plot = str(tmp_path / "p.png")
    program = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from device_sim.cli import main\n"
        f"sys.exit(main(['plan', '--carers', '40', '--days', '1', '--plot', {plot!r}]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "pip install 'eldercare-callcenter[plan]'" in done.stderr
    assert not (tmp_path / "p.png").exists()
