"""Results of a run: results/<study>/<run>/ with everything needed to cite or rebuild it.

Files written by `write_results`:
  config.json   the exact config (JSON; reload with mo_rl.config.load_config)
  run.json      code version (git describe, commit, dirty flag), device, seeds,
                timings, objectives, and how to rebuild the table (metrics, group_by)
  metrics.csv   long format: phase (train|eval), seed, update, one column per scalar
  table.md/.csv per eval metric (and group): mean, 95% bootstrap CI over seeds, n seeds, IQM
  curves.png    learning curves per objective: mean over seeds with 95% CI bands

`table_from_metrics` and `plot_curves` only read metrics.csv, so
scripts/make_tables.py can rebuild every table from stored files.
"""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mo_rl import stats
from mo_rl.config import save_config

KEY_COLS = ("phase", "seed", "update")


def code_version(repo: str | Path | None = None) -> dict[str, Any]:
    """git describe / commit / dirty flag of the working tree (None entries outside git)."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=10, check=True)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "describe": git("describe", "--always", "--dirty", "--tags"),
        "commit": git("rev-parse", "HEAD"),
        "dirty": None if status is None else bool(status),
    }


def device_info() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devs[0].device_kind,
        "num_devices": len(devs),
        "num_local_devices": jax.local_device_count(),
        "process_count": jax.process_count(),
        "jax_version": jax.__version__,
    }


def value_columns(df: pd.DataFrame, group_by: Sequence[str] = ()) -> list[str]:
    return [c for c in df.columns if c not in KEY_COLS and c not in group_by]


def table_from_metrics(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    group_by: Sequence[str] = (),
) -> pd.DataFrame:
    """One row per (group, metric) over the eval rows of a metrics table."""
    ev = df[df["phase"] == "eval"] if "phase" in df.columns else df
    if metrics:
        cols = list(metrics)
    else:  # every eval column with at least one finite value
        num = ev[value_columns(ev, group_by)].apply(pd.to_numeric, errors="coerce")
        cols = [c for c in num.columns if np.isfinite(num[c].to_numpy(np.float64)).any()]
    groups = ev.groupby(list(group_by), sort=False) if group_by else [((), ev)]
    out = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        for m in cols:
            if m not in g.columns:
                raise KeyError(f"metric {m!r} not in metrics.csv columns {list(g.columns)}")
            s = stats.summarize(pd.to_numeric(g[m], errors="coerce").to_numpy())
            out.append({**dict(zip(group_by, key, strict=True)), "metric": m, **s})
    return pd.DataFrame(out)


def _fmt(v: float) -> str:
    if not np.isfinite(v):
        return "-"
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.3e}"


def table_markdown(table: pd.DataFrame, group_by: Sequence[str] = (), title: str = "") -> str:
    head = [*group_by, "metric", "mean", "95% CI", "IQM", "n seeds"]
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [str(r[g]) for g in group_by] + [
            str(r["metric"]), _fmt(r["mean"]), f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]",
            _fmt(r["iqm"]), str(int(r["n"])),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "95% CI: BCa bootstrap of the mean over seeds (scipy.stats.bootstrap, "
              "10k resamples); IQM: interquartile mean over seeds."]
    return "\n".join(lines) + "\n"


def write_table(table: pd.DataFrame, directory: str | Path, group_by: Sequence[str] = (),
                title: str = "") -> str:
    d = Path(directory)
    table.to_csv(d / "table.csv", index=False)
    md = table_markdown(table, group_by, title)
    (d / "table.md").write_text(md)
    return md


def _curve_band(wide: np.ndarray, n_resamples: int = 1000) -> tuple[np.ndarray, ...]:
    """Mean and percentile-bootstrap 95% CI over seeds (axis 0), per x point."""
    from scipy.stats import bootstrap

    mean = np.nanmean(wide, axis=0)
    if wide.shape[0] < 2:
        return mean, mean, mean
    res = bootstrap((wide,), np.mean, axis=0, n_resamples=n_resamples, method="percentile",
                    random_state=np.random.default_rng(0), vectorized=True)
    lo, hi = res.confidence_interval
    return mean, np.where(np.isfinite(lo), lo, mean), np.where(np.isfinite(hi), hi, mean)


def plot_curves(
    df: pd.DataFrame,
    path: str | Path,
    prefix: str = "episode_return",
    x: str = "env_steps",
    group_by: Sequence[str] = (),
    max_points: int = 200,
    smooth: int = 1,
    title: str = "",
) -> list[str]:
    """Learning curves (one panel per objective column `prefix/...`) with 95% CI bands.

    Per seed, NaN updates (no finished episode) are forward-filled and an
    optional running mean of `smooth` updates is applied before the CI.
    Returns the plotted column names.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    tr = df[df["phase"] == "train"] if "phase" in df.columns else df
    cols = [c for c in tr.columns if c == prefix or c.startswith(prefix + "/")]
    if not cols:
        return []
    xcol = x if x in tr.columns else "update"
    fig, axes = plt.subplots(1, len(cols), figsize=(4.5 * len(cols), 3.4), squeeze=False)
    groups = tr.groupby(list(group_by), sort=False) if group_by else [((), tr)]
    for key, g in groups:
        label = ", ".join(f"{k}={v}" for k, v in zip(group_by, np.atleast_1d(key), strict=True))
        for ax, c in zip(axes[0], cols, strict=True):
            wide = g.pivot_table(index="seed", columns="update", values=c, dropna=False)
            xs = g.groupby("update")[xcol].mean().reindex(wide.columns).to_numpy()
            vals = wide.T.ffill().rolling(smooth, min_periods=1).mean().T.to_numpy()
            keep = np.isfinite(vals).all(axis=0)
            idx = np.nonzero(keep)[0]
            if idx.size > max_points:
                idx = idx[np.linspace(0, idx.size - 1, max_points).astype(int)]
            if idx.size == 0:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m, lo, hi = _curve_band(vals[:, idx])
            line = ax.plot(xs[idx], m, label=label or None)[0]
            ax.fill_between(xs[idx], lo, hi, color=line.get_color(), alpha=0.25, linewidth=0)
            ax.set_title(c.split("/", 1)[-1] if "/" in c else c)
            ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set_xlabel(xcol)
            ax.set_ylabel(prefix)
    if group_by:
        axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return cols


def write_results(
    directory: str | Path,
    *,
    config: Any,
    metrics: pd.DataFrame,
    run_info: dict[str, Any],
    table_metrics: Sequence[str] | None = None,
    group_by: Sequence[str] = (),
    title: str = "",
) -> str:
    """Write every results file for one run; returns the table markdown."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    save_config(config, d / "config.json")
    info = {
        "code_version": code_version(),
        "device": device_info(),
        **run_info,
        "table": {"metrics": list(table_metrics) if table_metrics else None,
                  "group_by": list(group_by), "title": title},
    }
    (d / "run.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    metrics.to_csv(d / "metrics.csv", index=False)
    table = table_from_metrics(metrics, table_metrics, group_by)
    md = write_table(table, d, group_by, title)
    plot_curves(metrics, d / "curves.png", group_by=group_by, title=title)
    return md


def rebuild_table(directory: str | Path) -> str:
    """Re-create table.md/table.csv of one results dir from its metrics.csv and run.json."""
    d = Path(directory)
    spec = json.loads((d / "run.json").read_text()).get("table", {})
    df = pd.read_csv(d / "metrics.csv")
    group_by = spec.get("group_by") or []
    table = table_from_metrics(df, spec.get("metrics"), group_by)
    return write_table(table, d, group_by, spec.get("title", ""))
