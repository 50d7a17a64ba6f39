"""StallWatchdog: fires when the process burns no CPU, stays quiet while it works."""

from __future__ import annotations

import time

from mo_rl.watchdog import EXIT_STALLED, StallWatchdog


def _run(work: str, timeout_s: float | None = 0.6, seconds: float = 1.5) -> list[int]:
    codes: list[int] = []
    with StallWatchdog(timeout_s, lambda: "stalled", min_cpu_s=0.05, poll_s=0.1,
                       exit=codes.append):
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            if work == "sleep":
                time.sleep(0.05)
            else:  # busy: burn CPU like a training loop
                sum(i * i for i in range(20_000))
    return codes


def test_fires_when_no_cpu_is_used(capsys):
    codes = _run("sleep")
    assert codes and codes[0] == EXIT_STALLED
    assert "stalled" in capsys.readouterr().err


def test_quiet_while_busy_and_when_disabled():
    assert _run("busy") == []
    assert _run("sleep", timeout_s=None) == []
