"""Progress on stderr: bars drawn on a terminal only, one-line notes kept in logs, both silenced on request."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import run_on_terminal

SCRIPT = """
import time
from m3search.progress import note, phases
with phases("three steps", ["one", "two", "three"]) as step:
    for name in ("one", "two", "three"):
        step(name)
        time.sleep(0.05)
note("a note for the log")
"""


def test_phases_draw_a_bar_on_a_terminal():
    shown = run_on_terminal([sys.executable, "-c", SCRIPT])
    assert "three steps" in shown and "3/3" in shown and "three" in shown
    assert "a note for the log" in shown


def test_off_a_terminal_only_notes_are_written():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    assert done.stderr == "a note for the log\n" and done.stdout == ""


def test_quiet_silences_bars_and_notes():
    assert run_on_terminal([sys.executable, "-c", SCRIPT], env={"M3SEARCH_QUIET": "1"}) == ""
