"""Turn a silent hang into a clear, resumable failure.

jaxlib 0.10.x on the CPU can stop inside a compiled training loop: every XLA
worker thread waits for work and the main thread waits for a result that
never comes (0% CPU, forever; seen here on PPO and ensemble-IQN sweeps even
with mo_rl's scheduler flag, in roughly one run of several). No flag we tried
removes it; pinning the process to one core (taskset -c 0) avoided it in the
tries we made, at about 1.6x the run time. Training that is busy always burns
CPU time, so a process whose CPU time stops growing for minutes is stuck: the
watchdog then prints what happened and how to resume, and exits with
EX_TEMPFAIL (75). The runner
checkpoints every chunk, so `--resume` loses at most one chunk.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

EXIT_STALLED = 75  # EX_TEMPFAIL: try again


class StallWatchdog:
    """Context manager: exit the process if its CPU time grows by less than
    `min_cpu_s` during any `timeout_s` window (checked every `poll_s`).

    `message()` is called at that moment, so it can name the last checkpoint.
    `timeout_s=None` disables the watchdog.
    """

    def __init__(self, timeout_s: float | None, message: Callable[[], str],
                 min_cpu_s: float = 0.5, poll_s: float | None = None,
                 exit: Callable[[int], None] = os._exit):
        self.timeout_s = timeout_s
        self.message = message
        self.min_cpu_s = min_cpu_s
        self.poll_s = poll_s if poll_s is not None else min(10.0, (timeout_s or 10.0) / 4)
        self._exit = exit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _watch(self) -> None:
        window: list[tuple[float, float]] = [(time.monotonic(), time.process_time())]
        while not self._stop.wait(self.poll_s):
            now, cpu = time.monotonic(), time.process_time()
            window.append((now, cpu))
            while len(window) > 1 and now - window[1][0] >= self.timeout_s:
                window.pop(0)
            t0, c0 = window[0]
            if now - t0 >= self.timeout_s and cpu - c0 < self.min_cpu_s:
                print(f"\n[mo_rl watchdog] {self.message()}", file=sys.stderr, flush=True)
                self._exit(EXIT_STALLED)
                return

    def __enter__(self) -> StallWatchdog:
        if self.timeout_s is not None:
            self._thread = threading.Thread(target=self._watch, name="mo_rl-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.poll_s + 1.0)


__all__ = ["EXIT_STALLED", "StallWatchdog"]
