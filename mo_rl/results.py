"""Results of a run: results/<study>/<run>/ with everything needed to cite or rebuild it.

Files written by `write_results`:
  config.json   the exact config (JSON; reload with mo_rl.config.load_config)
  run.json      code version (git describe, commit, dirty flag), the command
                history (training command, then each resume / re-evaluation, each with
                its own code version), device, seeds, timings, objectives, run
                identity, and how to rebuild the table (metrics, group_by)
  patch.diff    only from a dirty tree with --allow-dirty: the uncommitted changes
  metrics.csv   long format: phase (train|eval), seed, update, one column per scalar
  table.md/.csv per eval metric (and group): mean, 95% bootstrap CI over seeds, n seeds, IQM
  curves.png    learning curves per objective: mean over seeds with 95% CI bands

`table_from_metrics` and `plot_curves` only read metrics.csv, so
scripts/make_tables.py can rebuild every table from stored files.

Provenance rule: results that land under the repository (not git-ignored) must
come from a clean tree (`check_clean`: no change outside results/ and runs/,
untracked files included), or the caller passes allow_dirty / --allow-dirty and
the patch is stored. Results written elsewhere (pytest's tmp dirs, runs/) record
the dirty flag and patch but are not refused, so tests need no flag.
Study-level folders get provenance.json + command.txt (`write_study_provenance`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mo_rl import stats
from mo_rl.config import run_flags, save_config

KEY_COLS = ("phase", "seed", "update")


class DirtyTreeError(RuntimeError):
    """Results would be written under the repository from code with uncommitted changes."""


# What a run writes itself: never counts as a change to the code that produced it.
OUTPUT_DIRS = ("results", "runs")


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                             timeout=30, check=True)
        return out.stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _code_dir(repo: str | Path | None) -> Path:
    return Path(repo) if repo else Path(__file__).resolve().parent


def _pathspec() -> list[str]:
    return ["--", ".", *(f":(exclude){d}" for d in OUTPUT_DIRS)]


def code_version(repo: str | Path | None = None) -> dict[str, Any]:
    """git describe / commit / dirty flag of the code's checkout (None entries outside git).

    Dirty means a tracked file differs from HEAD or an untracked, not ignored file
    exists, outside the output folders results/ and runs/ (which a run writes itself).
    """
    cwd = _code_dir(repo)
    top = _git(cwd, "rev-parse", "--show-toplevel")
    if top is None:
        return {"describe": None, "commit": None, "dirty": None}
    root = Path(top.strip())
    status = _git(root, "status", "--porcelain", "--untracked-files=all", *_pathspec())
    dirty = None if status is None else bool(status.strip())
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    describe = (_git(root, "describe", "--always", "--tags") or "").strip() or None
    if describe and dirty:
        describe += "-dirty"
    return {"describe": describe, "commit": commit, "dirty": dirty}


def working_tree_patch(repo: str | Path | None = None) -> str:
    """`git diff HEAD` of the code's checkout plus every untracked, not ignored file as an
    added-file diff (output folders excluded): what a dirty run's results store."""
    top = _git(_code_dir(repo), "rev-parse", "--show-toplevel")
    if top is None:
        return ""
    root = Path(top.strip())
    parts = [_git(root, "diff", "--binary", "HEAD", *_pathspec()) or ""]
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", *_pathspec()) or ""
    for f in untracked.splitlines():
        # --no-index exits 1 when the files differ, which they always do here
        p = subprocess.run(["git", "diff", "--binary", "--no-index", "/dev/null", f], cwd=root,
                           capture_output=True, text=True, timeout=30)
        parts.append(p.stdout)
    return "".join(parts)


def under_repository(path: str | Path, repo: str | Path | None = None) -> bool:
    """True when `path` lies inside the code's checkout and is not git-ignored, i.e. a
    results folder that could be committed (runs/ and temporary dirs are not)."""
    top = _git(_code_dir(repo), "rev-parse", "--show-toplevel")
    if top is None:
        return False
    root = Path(top.strip()).resolve()
    p = Path(path).resolve()
    if p != root and root not in p.parents:
        return False
    ignored = subprocess.run(["git", "check-ignore", "-q", str(p)], cwd=root,
                             capture_output=True, timeout=30)
    return ignored.returncode != 0


def check_clean(directory: str | Path, allow_dirty: bool = False,
                repo: str | Path | None = None) -> dict[str, Any]:
    """The code version for results written to `directory`; refuses a dirty tree.

    Results that land under the repository (committable) must come from a clean,
    committed tree, unless `allow_dirty` (CLI: --allow-dirty), which is recorded.
    Elsewhere (tests' temporary dirs, git-ignored runs/) a dirty tree is recorded,
    not refused. Call before training, so a refusal costs nothing.
    """
    ver = code_version(repo)
    if ver["dirty"] and not allow_dirty and under_repository(directory, repo):
        raise DirtyTreeError(
            f"refusing to write results to {directory}: the code ({ver['describe']}) has "
            "uncommitted changes, so the results could not be traced to a commit. Commit "
            "them (or run from a clean clone), or pass --allow-dirty (allow_dirty=True) to "
            "write anyway with the patch stored next to the results."
        )
    return ver


def provenance(directory: str | Path, *, command: str | None, kind: str,
               allow_dirty: bool = False, history: list[dict] | None = None,
               repo: str | Path | None = None) -> dict[str, Any]:
    """Provenance of results written now to `directory` (run.json / provenance.json).

    kind: "train" (trained from scratch), "resume" (training continued from a
    checkpoint) or "re-evaluate" (complete run only evaluated again). `history`
    holds the earlier entries of this run (train first): each entry keeps the command
    and the code version it ran with, so re-evaluating never loses the training
    version. A dirty tree's patch is written to patch.diff (with its SHA-256).
    """
    d = Path(directory)
    ver = check_clean(d, allow_dirty, repo)
    if ver["dirty"]:
        patch = working_tree_patch(repo)
        d.mkdir(parents=True, exist_ok=True)
        (d / "patch.diff").write_text(patch)
        ver = {**ver, "patch": "patch.diff",
               "patch_sha256": hashlib.sha256(patch.encode()).hexdigest()}
    entry = {"kind": kind, "command": command, "code_version": ver,
             "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    past = [] if kind == "train" else list(history or [])
    return {"code_version": ver, "commands": [*past, entry]}


def read_history(directory: str | Path, name: str = "run.json") -> list[dict]:
    """The `commands` entries recorded by an earlier write of `directory` ([] if none)."""
    p = Path(directory) / name
    if not p.is_file():
        return []
    try:
        return list(json.loads(p.read_text()).get("commands") or [])
    except (json.JSONDecodeError, AttributeError):
        return []


def study_kind(kinds: Sequence[str]) -> str:
    """One kind for a study made of several runs (see `provenance`)."""
    if kinds and all(k == "train" for k in kinds):
        return "train"
    if kinds and all(k == "re-evaluate" for k in kinds):
        return "re-evaluate"
    return "resume"


def write_study_provenance(directory: str | Path, *, study: str, kinds: Sequence[str],
                           command: str | None = None, allow_dirty: bool | None = None,
                           extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """provenance.json + command.txt of a study-level results folder (see `provenance`).

    command / allow_dirty default to the study CLI's (mo_rl.config.run_flags).
    command.txt lists every command that produced the folder, oldest first.
    """
    flags = run_flags()
    d = Path(directory)
    prov = provenance(d, command=command if command is not None else flags.command,
                      kind=study_kind(kinds),
                      allow_dirty=flags.allow_dirty if allow_dirty is None else allow_dirty,
                      history=read_history(d, "provenance.json"))
    info = {"study": study, **prov, "device": device_info(), **(extra or {})}
    (d / "provenance.json").write_text(json.dumps(info, indent=2, default=str) + "\n")
    lines = [f"# {e['kind']} at {e['at']}, code {e['code_version'].get('describe')} "
             f"({e['code_version'].get('commit')})\n{e['command']}" for e in info["commands"]]
    (d / "command.txt").write_text("\n".join(lines) + "\n")
    return info


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


def bench_header(argv: Sequence[str] | None = None, extra: str = "") -> list[str]:
    """The lines a benchmark file starts with, so each figure names the command that made
    it, the code version (commit, dirty flag) and the machine / device it ran on."""
    import os
    import platform
    import sys

    import jax

    ver = code_version()
    dev = device_info()
    argv = list(sys.argv if argv is None else argv)
    return [
        f"command: python {' '.join(argv)}",
        f"code: {ver.get('describe')} (commit {ver.get('commit')}, dirty={ver.get('dirty')})",
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, jax {jax.__version__} ({dev['backend']}: "
        f"{dev['device_kind']} x{dev['num_devices']}){extra}",
    ]


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


def table_texts(table: pd.DataFrame, group_by: Sequence[str] = (),
                title: str = "") -> dict[str, str]:
    """{"table.csv": ..., "table.md": ...} exactly as `write_table` writes them."""
    return {"table.csv": table.to_csv(index=False),
            "table.md": table_markdown(table, group_by, title)}


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
    provenance_info: dict[str, Any] | None = None,
) -> str:
    """Write every results file for one run; returns the table markdown.

    provenance_info: code version and command history (`provenance`); by default
    a "train" entry with the study CLI's command, refusing a dirty tree for folders
    under the repository unless the CLI passed --allow-dirty.
    """
    d = Path(directory)
    if provenance_info is None:
        flags = run_flags()
        provenance_info = provenance(d, command=flags.command, kind="train",
                                     allow_dirty=flags.allow_dirty)
    d.mkdir(parents=True, exist_ok=True)
    save_config(config, d / "config.json")
    info = {
        **provenance_info,
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


def rebuilt_tables(directory: str | Path) -> dict[str, str]:
    """table.csv / table.md of one results dir recomputed from metrics.csv and run.json's
    table spec, as texts (nothing is written)."""
    d = Path(directory)
    spec = json.loads((d / "run.json").read_text()).get("table", {})
    df = pd.read_csv(d / "metrics.csv", low_memory=False)
    group_by = spec.get("group_by") or []
    table = table_from_metrics(df, spec.get("metrics"), group_by)
    return table_texts(table, group_by, spec.get("title", ""))


def rebuild_table(directory: str | Path) -> str:
    """Re-create table.md/table.csv of one results dir from its metrics.csv and run.json."""
    d = Path(directory)
    texts = rebuilt_tables(d)
    for name, text in texts.items():
        (d / name).write_text(text)
    return texts["table.md"]
