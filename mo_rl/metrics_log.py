"""Metric logging: CSV and JSONL always; TensorBoard and W&B when installed and asked for.

Agents return metrics as a dict of arrays with leading axes [seed, update]
(after a vmapped chunk). `flatten_metrics` turns that into long-format rows
(one per seed and update) with one column per scalar: a metric with a
trailing axis of K objectives becomes `name/<objective>`, any other trailing
axis `name/<index>`. The same flattening feeds metrics.csv, the JSONL
stream, the tables and the plots, so every tool reads the same columns.
TensorBoard / W&B get the mean over seeds per update (their UIs are per run).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _columns(name: str, arr: np.ndarray, lead: int, objectives: Sequence[str]) -> dict:
    """{column: array[lead axes]} for one metric."""
    trailing = arr.shape[lead:]
    if not trailing:
        return {name: arr}
    flat = arr.reshape(arr.shape[:lead] + (-1,))
    n = flat.shape[-1]
    if len(trailing) == 1 and n == len(objectives):
        labels = list(objectives)
    else:
        labels = [str(i) for i in range(n)]
    return {f"{name}/{lab}": flat[..., i] for i, lab in enumerate(labels)}


def flatten_metrics(
    metrics: Mapping[str, Any],
    seeds: Sequence[int],
    objectives: Sequence[str],
    update_offset: int = 0,
    phase: str = "train",
) -> pd.DataFrame:
    """Long table {phase, seed, update, <columns>} from metrics [S, U, ...] (train) or [S, ...].

    Train rows are numbered update_offset+1 ... (the update just finished); eval
    rows carry `update_offset` (the number of updates trained before evaluation).
    """
    lead = 2 if phase == "train" else 1
    cols: dict[str, np.ndarray] = {}
    for k in sorted(metrics):
        cols.update(_columns(k, np.asarray(metrics[k]), lead, objectives))
    s = len(seeds)
    u = next(iter(cols.values())).shape[1] if (cols and lead == 2) else 1
    frame = {
        "phase": np.full(s * u, phase),
        "seed": np.repeat(np.asarray(seeds, dtype=np.int64), u),
        "update": np.tile(np.arange(u) + update_offset + (1 if lead == 2 else 0), s),
    }
    frame.update({c: a.reshape(s * u) for c, a in cols.items()})
    return pd.DataFrame(frame)


class MetricsLogger:
    """Append rows to train.csv / eval.csv / metrics.jsonl (+ optional TensorBoard, W&B).

    `mode="w"` starts fresh files; a resumed run reopens with "w" and replays
    the stored chunks first, so the files never hold rows of a discarded chunk.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        tensorboard: bool = False,
        wandb: Mapping[str, Any] | None = None,
        config: Any = None,
        mode: str = "w",
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.mode = mode
        self._csv: dict[str, Any] = {}
        self._jsonl = open(self.directory / "metrics.jsonl", mode)  # noqa: SIM115
        self._columns: dict[str, list[str]] = {}
        self._tb = _tensorboard_writer(self.directory / "tb") if tensorboard else None
        self._wandb = _wandb_run(wandb, config) if wandb is not None else None

    def log(self, df: pd.DataFrame) -> None:
        """Append rows (from `flatten_metrics`); CSV per phase (<phase>.csv), JSONL for all."""
        if df.empty:
            return
        for phase, part in df.groupby("phase", sort=False):
            f = self._csv.get(phase)
            if f is None:
                f = self._csv[phase] = open(  # noqa: SIM115  (lives as long as the logger)
                    self.directory / f"{phase}.csv", self.mode, newline="")
                self._columns[phase] = list(part.columns)
                part.to_csv(f, index=False)
            else:
                part.reindex(columns=self._columns[phase]).to_csv(f, index=False, header=False)
            f.flush()
        text = df.to_json(orient="records", lines=True)  # NaN -> null
        self._jsonl.write(text if text.endswith("\n") else text + "\n")
        self._jsonl.flush()
        if self._tb is not None or self._wandb is not None:
            self._log_means(df)

    def _log_means(self, df: pd.DataFrame) -> None:
        value_cols = [c for c in df.columns if c not in ("phase", "seed", "update")]
        means = df.groupby(["phase", "update"])[value_cols].mean()
        for (phase, update), row in means.iterrows():
            vals = {f"{phase}/{k}": float(v) for k, v in row.items() if np.isfinite(v)}
            if self._tb is not None:
                for k, v in vals.items():
                    self._tb.add_scalar(k, v, int(update))
            if self._wandb is not None:
                self._wandb.log(vals, step=int(update))

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._csv.values():
            f.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _tensorboard_writer(logdir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError(
                "TensorBoard logging was asked for but neither tensorboardX nor torch is "
                "installed: pip install tensorboardX"
            ) from None
    return SummaryWriter(str(logdir))


def _wandb_run(settings: Mapping[str, Any], config: Any):
    try:
        import wandb
    except ImportError:
        raise ImportError("W&B logging was asked for but wandb is not installed: "
                          "pip install wandb") from None
    from mo_rl.config import to_dict

    return wandb.init(config=to_dict(config) if config is not None else None, **dict(settings))
