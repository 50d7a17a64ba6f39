"""A live progress line for training runs: steps, steps/s, return per objective, ETA.

The runner feeds it between jitted chunks from metrics it already pulls to
the host, so the compiled loop is untouched (zero in-loop cost). For long
chunks, `tap` wraps an update function with a `jax.debug.callback` that
reports every update from inside the scan; `scripts/bench_sweep.py`
measures its overhead. On a terminal the line is a rich progress bar; when
output is not a terminal (CI, log files) it prints a plain line at most
every `log_every_s` seconds.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def _fmt_num(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    ax = abs(x)
    if ax >= 1e6:
        return f"{x / 1e6:.2f}M"
    if ax >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:.3g}" if ax < 100 else f"{x:.0f}"


def _fmt_time(s: float) -> str:
    if not np.isfinite(s):
        return "--:--"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60:02d}:{s % 60:02d}"


class ProgressLine:
    """Progress of one run (all seeds together). Use as a context manager."""

    def __init__(
        self,
        total_steps: int,
        objectives: Sequence[str],
        *,
        description: str = "train",
        enabled: bool = True,
        log_every_s: float = 10.0,
        stream: Any = None,
    ):
        self.total = max(int(total_steps), 1)
        self.objectives = list(objectives)
        self.description = description
        self.enabled = enabled
        self.log_every_s = log_every_s
        self.stream = stream or sys.stderr
        self._rich = None
        self._task = None
        self._t0 = self._last_print = 0.0
        self._steps0 = 0
        self.steps = 0
        self.returns = np.full(len(self.objectives), np.nan)

    def __enter__(self) -> ProgressLine:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, steps: int = 0) -> None:
        """Begin timing at `steps` (non-zero when resuming: the rate counts new steps only)."""
        self._t0 = time.perf_counter()
        self._steps0 = self.steps = int(steps)
        if not self.enabled:
            return
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self._rich = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[line]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._rich.start()
            self._task = self._rich.add_task(self.description, total=self.total,
                                              completed=self.steps, line="")

    def set_total(self, total_steps: int) -> None:
        """Total known only after the first chunk (steps per update)."""
        self.total = max(int(total_steps), 1)
        if self._rich is not None:
            self._rich.update(self._task, total=self.total)

    @property
    def rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return (self.steps - self._steps0) / dt if dt > 0 else float("nan")

    @property
    def eta(self) -> float:
        r = self.rate
        return (self.total - self.steps) / r if r > 0 else float("nan")

    def line(self) -> str:
        rets = " ".join(f"{n}={_fmt_num(v)}" for n, v in zip(self.objectives, self.returns,
                                                               strict=True))
        return (f"steps {_fmt_num(self.steps)}/{_fmt_num(self.total)} | "
                f"{_fmt_num(self.rate)} steps/s | return {rets} | ETA {_fmt_time(self.eta)}")

    def update(self, steps: int, episode_return: Any = None, force: bool = False) -> None:
        """New total step count and (K,) mean episode return (NaN entries keep the old value)."""
        self.steps = int(steps)
        if episode_return is not None:
            r = np.asarray(episode_return, dtype=np.float64).reshape(-1)
            if r.shape == self.returns.shape:
                self.returns = np.where(np.isfinite(r), r, self.returns)
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, completed=self.steps, line=self.line())
            return
        now = time.perf_counter()
        if force or now - self._last_print >= self.log_every_s or self.steps >= self.total:
            self._last_print = now
            print(f"[{self.description}] {self.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self.enabled:
            print(f"[{self.description}] {self.line()}", file=self.stream, flush=True)


def summarize_chunk(metrics: dict[str, np.ndarray]) -> tuple[int, np.ndarray | None]:
    """(total env steps over seeds, (K,) mean episode return) from host metrics [S, U, ...]."""
    steps = int(np.asarray(metrics["env_steps"])[:, -1].sum()) if "env_steps" in metrics else 0
    ret = None
    if "episode_return" in metrics:
        r = np.asarray(metrics["episode_return"], dtype=np.float64)
        r = r.reshape(r.shape[0] * r.shape[1], -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN objective -> NaN
            ret = np.nanmean(r, axis=0)
    return steps, ret


def tap(update: Callable[[Any], tuple[Any, dict]], callback: Callable[..., None]) -> Callable:
    """Wrap a (vmapped) update so every call reports (env_steps [S], episode_return [S, K]).

    Uses jax.debug.callback (unordered: it does not serialise the loop). The
    host callback should be cheap (e.g. `ProgressLine`-throttled).
    """

    def wrapped(state):
        state, m = update(state)
        if "env_steps" in m:
            jax.debug.callback(callback, m["env_steps"], m.get("episode_return"))
        return state, m

    return wrapped
