"""The one runner every study uses: seeds (x grid) in parallel, chunked, resumable.

    result = run(make_agent, config, seeds=range(8), study="demo", run_name="quick",
                 num_chunks=10, objectives=env.reward_spec.names)

What it does, in order:
1. `make_agent(config) -> Agent` (or an Agent directly); the run axis is
   seeds (x grid points), vmapped and sharded over all devices (mo_rl.sweep).
2. `jit(vmap(init))(keys)`; with `resume=True` restores the latest checkpoint
   under runs/<study>/<run>/ckpt (orbax + JSON meta, mo_rl.checkpoint).
3. `mo_rl.agent.run_updates` in `num_chunks` EQUAL chunks of
   num_updates / num_chunks updates. Every chunk is the same compiled
   program, so a resumed run executes exactly the computation of an
   uninterrupted one and ends bit-identical (tests/mo_rl/test_runner.py).
   The next chunk is dispatched before the previous chunk's metrics are
   pulled, logged and shown, so host work overlaps device work.
4. Every `checkpoint_every` chunks (and after the last) saves a checkpoint;
   per-chunk metrics are kept as .npz (allow_pickle=False) next to it.
5. At the end: `vmap(evaluate)` on held-out keys, then results/<study>/<run>/
   (mo_rl.results: config, code version, device, metrics.csv, table, plot).

Run identity: everything that shapes the run is hashed into the checkpoint
and stored next to it (meta.json "identity"): the agent config; seeds, chunking,
grid and study name; and what the caller passes as `identity`, by convention
{"env": env_identity(env, params), "study": study_identity(cfg)} (env class and
constructor settings, every env param (arrays by SHA-256), the wrapper stack,
and the study config without its run-time fields). A resume with any difference
is refused with a CheckpointMismatchError naming each differing field; so is a
checkpoint with other shapes, and a damaged one raises CheckpointCorruptError.
A run directory that already holds checkpoints is never overwritten unless
`resume=True` (continue) or `overwrite=True`.

Divergence: after every chunk the runner reads the agents' per-update
"finite" flag (mo_rl.agent). At the first chunk with a False it stops with a
NonFiniteError naming the seed, the update and the non-finite metric(s) of
that update; that chunk is not checkpointed (the last good checkpoint stays)
and no results are written. `allow_nonfinite=True` (CLI --allow-nonfinite)
trains on and writes results, recording the divergence in run.json.

Provenance: results under the repository need a clean tree or
`allow_dirty=True` (--allow-dirty; checked before training, mo_rl.results).
run.json keeps the command history of the run (runs/<study>/<run>/commands.json):
the training command, then each resume and re-evaluation, each with its code
version. `allow_nonfinite`, `allow_dirty` and `command` default to the study
CLI's (mo_rl.config.run_flags).

Grids: pass `grid={"lr": [...], ...}` (see mo_rl.sweep.make_grid) and an agent
whose `init(key, point)` puts the point's values into its state (e.g. the
scalarisation weights or learning rate as arrays). Runs are then
(grid point x seed) pairs; tables and plots are grouped by the grid columns.
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from mo_rl import sweep
from mo_rl.agent import Agent, run_updates
from mo_rl.batching import map_runs
from mo_rl.checkpoint import CheckpointCorruptError, Checkpointer, CheckpointError
from mo_rl.config import (
    ConfigError,
    config_hash,
    default_fields,
    run_flags,
    save_config,
    to_dict,
)
from mo_rl.env import Env
from mo_rl.metrics_log import MetricsLogger, flatten_metrics
from mo_rl.progress import ProgressLine, summarize_chunk
from mo_rl.results import check_clean, code_version, provenance, write_results
from mo_rl.watchdog import StallWatchdog

EVAL_FOLD = 0x7FFF_FFFF  # eval keys = fold_in(seed key, EVAL_FOLD): disjoint from training use


class RunExistsError(CheckpointError):
    """The run directory already holds checkpoints and neither resume nor overwrite was set."""


class NonFiniteError(RuntimeError):
    """An update produced a non-finite loss or parameter (see `run`'s allow_nonfinite)."""


# metrics that are NaN by convention (no episode finished in the update), not divergence
_NAN_BY_CONVENTION = ("episode_return", "episode_length")

# study-config fields that never change what a run computes (where things are written,
# whether to resume, how progress is shown): left out of the run identity
RUNTIME_FIELDS = ("name", "resume", "progress", "results_root", "runs_root")


# per-process ids of host objects (a host env adapter's registry handle): not identity
_PROCESS_LOCAL = ("handle",)


def _identity_value(x: Any) -> Any:
    """A JSON leaf for one env param / attribute: scalars as values, arrays by digest."""
    import hashlib

    if isinstance(x, (bool, int, float, str)) or x is None:
        return x
    a = np.asarray(x)
    if a.dtype == object:
        return repr(x)
    if a.size == 1:
        return a.reshape(()).item()
    digest = hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]
    return f"array{list(a.shape)} {a.dtype} sha256:{digest}"


def _attrs(obj: Any) -> dict[str, Any]:
    out = {}
    for k, v in sorted(getattr(obj, "__dict__", {}).items()):
        if k.startswith("_") or k in _PROCESS_LOCAL or callable(v):
            continue
        if isinstance(v, (list, tuple)):
            out[k] = [_identity_value(x) for x in v]
        elif hasattr(v, "describe") and hasattr(v, "names"):  # a RewardSpec
            out[k] = {"names": list(v.names), "order": v.describe()}
        elif isinstance(v, (bool, int, float, str, np.ndarray, jax.Array)) or v is None:
            out[k] = _identity_value(v)
    return out


def env_identity(env: Any, params: Any = None) -> dict[str, Any]:
    """What identifies an env for a run: the wrapper stack (outermost first, each with
    its settings), the base env's class and constructor settings, and every field of
    `params` (default: env.default_params); arrays are named by shape, dtype and SHA-256.
    """
    stack, e = [], env
    while True:
        stack.append({"class": f"{type(e).__module__}.{type(e).__qualname__}", **_attrs(e)})
        inner = getattr(e, "__dict__", {}).get("_env")
        if not isinstance(inner, Env):  # the base env (a host adapter's _env is not ours)
            break
        e = inner
    if params is None:
        params = env.default_params
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    fields = {jax.tree_util.keystr(k).lstrip(".") or "params": _identity_value(v)
              for k, v in leaves}
    fields = {k: v for k, v in fields.items() if k.split(".")[-1] not in _PROCESS_LOCAL}
    return {"name": e.name, "stack": stack, "params": fields}


def study_identity(cfg: Any, drop: Sequence[str] = ()) -> dict[str, Any]:
    """A study config as run identity: every field except RUNTIME_FIELDS and `drop`
    (fields a study documents as not shaping a single run, e.g. the list of sweep
    values whose current value is already in the agent config)."""
    d = to_dict(cfg)
    return {k: v for k, v in d.items() if k not in RUNTIME_FIELDS and k not in drop}


def _first_nonfinite(m: Mapping[str, np.ndarray]) -> tuple[int, int] | None:
    """(run, update-in-chunk) of the first update (in time, then run) flagged not finite."""
    if "finite" in m:
        ok = np.asarray(m["finite"], bool)
    elif "loss" in m:  # an agent without the flag: its loss, where it learned
        loss = np.asarray(m["loss"], np.float64)
        ok = np.isfinite(loss).reshape(loss.shape[:2] + (-1,)).all(-1)
        if "learned" in m:
            ok |= ~np.asarray(m["learned"], bool)
    else:
        return None
    ok = ok.reshape(ok.shape[:2] + (-1,)).all(-1)  # [R, C]
    bad = np.argwhere(~ok)
    if not bad.size:
        return None
    r, u = min(bad.tolist(), key=lambda x: (x[1], x[0]))
    return int(r), int(u)


def _nonfinite_metrics(m: Mapping[str, np.ndarray], r: int, u: int) -> list[str]:
    names = []
    for k, v in m.items():
        if k in ("finite", "learned") or k.split("/")[0] in _NAN_BY_CONVENTION:
            continue
        a = np.asarray(v)
        if a.ndim >= 2 and np.issubdtype(a.dtype, np.floating) and not np.isfinite(a[r, u]).all():
            names.append(k)
    return names


@dataclass
class RunResult:
    state: Any  # final training state, leading axis = runs (device arrays)
    train: dict[str, np.ndarray]  # [R, updates_done, ...]
    eval: dict[str, np.ndarray] | None  # [R, ...] per-run eval metrics (None if not finished)
    metrics: pd.DataFrame | None  # long table written to metrics.csv
    completed: bool
    run_dir: Path
    results_dir: Path | None
    table: str | None
    info: dict[str, Any]


def flat_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metric dicts -> {"a/b": leaf} (empty sub-dicts vanish)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(flat_dict(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


def eval_reduce(metrics: Mapping[str, Any], num_objectives: int) -> dict[str, np.ndarray]:
    """Per-run eval values: keep the run axis and a trailing objective axis, nanmean the rest."""
    out = {}
    for k, v in flat_dict(metrics).items():
        a = np.asarray(v, dtype=np.float64)
        keep_last = a.ndim >= 2 and a.shape[-1] == num_objectives
        axes = tuple(range(1, a.ndim - 1 if keep_last else a.ndim))
        if axes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice -> NaN
                a = np.nanmean(a, axis=axes)
        out[k] = a
    return out


def _grid_lists(grid: Mapping[str, Any] | None) -> dict[str, list] | None:
    if grid is None:
        return None
    return {k: np.asarray(v).tolist() for k, v in grid.items()}


def _label(v: Any) -> Any:
    return v if np.ndim(v) == 0 else json.dumps(np.asarray(v).tolist())


def run_timing(info: Mapping[str, Any], wall_s: float, num_chunks: int,
               previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A study's timings.json entry for one `run`: wall, compile and train time and speed.
    A run that was complete and only re-evaluated keeps its training entry (`previous`)
    and adds the re-evaluation's wall time, so resuming never overwrites training times."""
    t = {"wall_s": round(wall_s, 1),
         **{k: info[k] for k in ("compile_s", "train_s", "steps_per_s")}}
    if info["resumed_from_chunk"] == num_chunks and previous is not None:
        return {**previous, "re_evaluated_wall_s": t["wall_s"]}
    return t


TRAINING_FIELDS = ("compile_s", "train_s", "env_steps_total", "steps_per_s")


def keep_training_times(previous: Path, info: dict[str, Any]) -> dict[str, Any]:
    """A re-evaluation trains nothing: its run.json keeps the training times of the
    run.json it replaces and puts its own under "re_evaluation", so no time is lost."""
    if not previous.is_file():
        return info
    prev = json.loads(previous.read_text())
    own = {k: info[k] for k in TRAINING_FIELDS}
    return {**info, **{k: prev[k] for k in TRAINING_FIELDS if k in prev}, "re_evaluation": own}


def run(
    make_agent: Callable[[Any], Agent] | Agent,
    config: Any,
    seeds: Sequence[int],
    *,
    study: str,
    run_name: str = "default",
    num_chunks: int = 10,
    checkpoint_every: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    objectives: Sequence[str] | None = None,
    grid: Mapping[str, Any] | None = None,
    mesh: Any = "auto",
    runs_root: str | Path = "runs",
    results_root: str | Path | None = "results",
    progress: bool = True,
    in_loop_progress: bool = False,
    progress_every: int | None = None,
    tensorboard: bool = False,
    wandb: Mapping[str, Any] | None = None,
    table_metrics: Sequence[str] | None = None,
    title: str = "",
    stall_timeout_s: float | None = 300.0,
    identity: Mapping[str, Any] | None = None,
    allow_nonfinite: bool | None = None,
    allow_dirty: bool | None = None,
    command: str | None = None,
) -> RunResult:
    """Train every (grid point x) seed of `config`, checkpointing, then evaluate and report.

    stop_after: stop (as if interrupted) after that many chunks of this call's
    run have completed in total; returns completed=False without results.
    results_root=None skips writing results/ (runs/ still holds checkpoints).
    in_loop_progress: also report progress from inside each chunk, every
    `progress_every` updates (default chunk/10), via jax.debug.callback.
    stall_timeout_s: on the CPU backend, exit with code 75 and a resume hint when
    the process burns no CPU for that long while training (mo_rl.watchdog);
    None disables it.
    identity: what else shapes the run besides the agent config (see the module
    doc: {"env": env_identity(env, params), "study": study_identity(cfg)}).
    allow_nonfinite / allow_dirty / command: None = the study CLI's (run_flags()).
    """
    flags = run_flags()
    allow_nonfinite = flags.allow_nonfinite if allow_nonfinite is None else allow_nonfinite
    allow_dirty = flags.allow_dirty if allow_dirty is None else allow_dirty
    command = flags.command if command is None else command
    agent = make_agent if isinstance(make_agent, Agent) else make_agent(config)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds", "need at least one seed")
    if num_chunks < 1 or agent.num_updates % num_chunks:
        raise ConfigError("num_chunks", f"must be >= 1 and divide agent.num_updates="
                          f"{agent.num_updates} (got {num_chunks})")
    if checkpoint_every < 1:
        raise ConfigError("checkpoint_every", f"must be >= 1 (got {checkpoint_every})")
    chunk = agent.num_updates // num_chunks
    main = sweep.is_main_process()

    # ---- runs = grid point x seed ---------------------------------------------------
    base_keys = sweep.seed_keys(seeds)
    if grid is None:
        g, keys, points, run_seeds = 1, base_keys, None, seeds
    else:
        points0 = {k: np.asarray(v) for k, v in grid.items()}
        g = sweep.grid_size(points0)
        keys = np.tile(base_keys, (g, 1))
        points = {k: np.repeat(v, len(seeds), axis=0) for k, v in points0.items()}
        run_seeds = seeds * g
    n_runs = len(run_seeds)
    objectives = list(objectives) if objectives else None
    results_dir = Path(results_root) / study / run_name if results_root is not None else None
    if results_dir is not None and main:
        check_clean(results_dir, allow_dirty)  # refuse a dirty tree now, not after training
    ver = code_version()
    ident = json.loads(json.dumps(to_dict({
        "agent": config,
        "run": {"seeds": seeds, "num_chunks": num_chunks, "num_updates": agent.num_updates,
                "grid": _grid_lists(grid), "study": study},
        **dict(identity or {}),
    }), default=str))
    chash = config_hash(ident)
    run_dir = Path(runs_root) / study / run_name
    ckpt = Checkpointer(run_dir / "ckpt", chash, code_version=ver, identity=ident,
                        defaults=json.loads(json.dumps({"agent": default_fields(config)},
                                                       default=str)))
    metrics_dir = run_dir / "chunk_metrics"

    # ---- compiled pieces ---------------------------------------------------------------
    if mesh == "auto":
        mesh = sweep.seed_mesh(n_runs)
    sh = sweep.seed_sharding(mesh) if mesh is not None else None
    place = (lambda t: sweep.put_seeds(t, mesh)) if mesh is not None else (lambda t: t)
    jit = (lambda f: jax.jit(f, out_shardings=sh)) if sh is not None else jax.jit

    line: ProgressLine | None = None

    def _cb(steps, ret):
        if line is not None:
            line.update(int(np.asarray(steps).sum()), None if ret is None else np.asarray(ret))

    tap_every = None
    if in_loop_progress and progress and main:
        tap_every = progress_every or max(1, chunk // 10)
        if chunk % tap_every:
            raise ConfigError("progress_every", f"must divide the chunk of {chunk} updates "
                              f"(got {tap_every})")
    # vmap over runs; lax.map (runs one after another) for agents on host envs
    vagent = Agent(init=map_runs(agent.init), update=map_runs(agent.update),
                   evaluate=map_runs(agent.evaluate), num_updates=agent.num_updates)
    init_fn = jit(vagent.init)
    chunk_body = make_chunk(vagent, chunk, tap_every, _cb)
    chunk_fn = jit(chunk_body)
    eval_fn = jax.jit(vagent.evaluate)

    dkeys = place(keys)
    state = init_fn(dkeys) if points is None else init_fn(dkeys, place(points))

    # ---- fresh start or resume -----------------------------------------------------------
    latest = ckpt.latest()
    start = 0
    stored: list[dict[str, np.ndarray]] = []
    if latest is not None and not resume:
        if not overwrite:
            raise RunExistsError(
                f"{run_dir} already holds checkpoints (latest after chunk {latest}). Pass "
                f"resume=True (--resume) to continue it, overwrite=True to start over, or "
                f"choose another run name."
            )
        if main:
            print(f"[{study}/{run_name}] overwrite: deleting the previous run in {run_dir}")
            shutil.rmtree(run_dir, ignore_errors=True)
        latest = None
    if resume and latest is not None:
        state, _ = ckpt.restore(latest, state)
        start = latest
        for c in range(start):
            p = metrics_dir / f"chunk_{c:06d}.npz"
            try:
                with np.load(p, allow_pickle=False) as z:
                    stored.append({k: z[k] for k in z.files})
            except (OSError, ValueError) as e:
                raise CheckpointCorruptError(
                    f"checkpoint after chunk {latest} needs the metrics of chunk {c} "
                    f"({p}), which cannot be read: {e}"
                ) from e
    elif resume and main:
        print(f"[{study}/{run_name}] no checkpoint under {ckpt.directory}: starting from scratch")

    history_file = run_dir / "commands.json"
    history: list[dict[str, Any]] = []
    if start > 0 and history_file.is_file():
        history = json.loads(history_file.read_text())
    kind = "train" if start == 0 else "re-evaluate" if start == num_chunks else "resume"
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.json")
        (run_dir / "identity.json").write_text(json.dumps(ident, indent=1) + "\n")
        history.append({"kind": kind, "command": command, "code_version": ver,
                        "chunks": [start, num_chunks if stop_after is None
                                   else min(num_chunks, max(stop_after, start))],
                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        history_file.write_text(json.dumps(history, indent=1, default=str) + "\n")
    logger = None
    if main:
        logger = MetricsLogger(run_dir, tensorboard=tensorboard, wandb=wandb, config=config)

    def frame(m: dict[str, np.ndarray], offset: int, phase: str) -> pd.DataFrame:
        k = objectives or [f"obj{i}" for i in range(_num_objectives(m))]
        df = flatten_metrics(m, run_seeds, k, offset, phase)
        if points is not None:
            for i, (name, vals) in enumerate(points.items()):
                lab = [_label(v) for v in vals]
                df.insert(2 + i, name, np.repeat(np.asarray(lab, dtype=object), len(df) // n_runs))
        return df

    frames: list[pd.DataFrame] = []
    for c, m in enumerate(stored):
        frames.append(frame(m, c * chunk, "train"))
        if logger is not None:
            logger.log(frames[-1])

    # ---- train in equal chunks ------------------------------------------------------------
    end = num_chunks if stop_after is None else min(num_chunks, max(stop_after, start))
    t_compile = time.perf_counter()
    compiled = chunk_fn.lower(state).compile() if start < end else None
    compile_s = time.perf_counter() - t_compile
    line = ProgressLine(1, objectives or ["return"], description=f"{study}/{run_name}",
                        enabled=progress and main)
    line.start(steps=0)
    t_train = time.perf_counter()
    steps_done = 0
    diverged: dict[str, Any] | None = None

    def finish(c: int, s: Any, m: Any) -> None:
        nonlocal steps_done, diverged
        hm = flat_dict(sweep.to_host(m))
        stored.append(hm)
        if main:
            np.savez(metrics_dir / f"chunk_{c:06d}.npz", **hm)
            frames.append(frame(hm, c * chunk, "train"))
            logger.log(frames[-1])
        steps_done, ret = summarize_chunk(hm)
        if line.total <= 1 and steps_done > 0:
            line.set_total(round(steps_done / ((c + 1) * chunk) * agent.num_updates))
        line.update(steps_done, ret)
        bad = _first_nonfinite(hm) if diverged is None else None
        if bad is not None:
            r, u = bad
            names = _nonfinite_metrics(hm, r, u) or ["parameters (every reported metric "
                                                     "is finite)"]
            diverged = {"seed": run_seeds[r], "run": r, "update": c * chunk + u + 1,
                        "chunk": c + 1, "metrics": names}
            where = (f"seed {run_seeds[r]}" + (f" (grid point {r // len(seeds)})"
                                               if points is not None else "")
                     + f", update {c * chunk + u + 1} of {agent.num_updates} (chunk {c + 1}/"
                     f"{num_chunks})")
            if not allow_nonfinite:
                raise NonFiniteError(
                    f"{study}/{run_name}: non-finite update at {where}: non-finite "
                    f"{', '.join(names)}. Stopped; chunk {c + 1} was not checkpointed, the "
                    f"last good checkpoint holds {ckpt.latest() or 0}/{num_chunks} chunks, no "
                    "results were written. Fix the cause (e.g. a smaller learning rate) and "
                    "start over, or pass allow_nonfinite=True (--allow-nonfinite) to train on "
                    "and tabulate this run anyway.")
            warnings.warn(f"{study}/{run_name}: non-finite update at {where} "
                          f"({', '.join(names)}); continuing because allow_nonfinite is set",
                          RuntimeWarning, stacklevel=2)
        if (c + 1) % checkpoint_every == 0 or c + 1 == num_chunks:
            ckpt.save(c + 1, s)

    pending = None
    saved = [start]  # chunks covered by the newest checkpoint, for the watchdog's message

    def stalled() -> str:
        return (f"{study}/{run_name}: no CPU activity for {stall_timeout_s:.0f} s while training "
                "(a known jaxlib 0.10 CPU runtime hang, see mo_rl/watchdog.py). The last "
                f"checkpoint holds {saved[0]}/{num_chunks} chunks: rerun the same command "
                "with --resume to continue from it.")

    watch_s = stall_timeout_s if jax.default_backend() == "cpu" else None
    try:
        with StallWatchdog(watch_s, stalled):
            for c in range(start, end):
                try:
                    new_state, m = compiled(state)  # dispatched asynchronously
                except Exception:  # e.g. a host env raised: keep the chunk before it
                    if pending is not None:
                        finish(*pending)
                    raise
                if pending is not None:
                    finish(*pending)
                    saved[0] = ckpt.latest() or saved[0]
                pending = (c, new_state, m)
                state = new_state
            if pending is not None:
                finish(*pending)
    except NonFiniteError:
        if logger is not None:
            logger.close()
        raise
    finally:
        line.close()
        if logger is not None and end < num_chunks:
            logger.close()
    train_s = time.perf_counter() - t_train
    train = {k: np.concatenate([m[k] for m in stored], axis=1) for k in stored[0]} if stored else {}
    info = {
        "study": study, "run": run_name, "seeds": seeds, "grid": _grid_lists(grid),
        "num_updates": agent.num_updates, "num_chunks": num_chunks, "chunk_updates": chunk,
        "resumed_from_chunk": start, "config_hash": chash, "objectives": objectives,
        "compile_s": round(compile_s, 3), "train_s": round(train_s, 3),
        "env_steps_total": steps_done,
        "steps_per_s": round(steps_done / train_s, 1) if train_s > 0 and start == 0 else None,
        "nonfinite": diverged, "kind": kind,
    }
    if end < num_chunks:
        return RunResult(state, train, None, None, False, run_dir, None, None, info)

    # ---- evaluate and report ------------------------------------------------------------------
    ekeys = place(np.asarray(jax.vmap(lambda k: jax.random.fold_in(k, EVAL_FOLD))(keys)))
    ev_raw = sweep.to_host(eval_fn(state, ekeys))
    k = len(objectives) if objectives else _num_objectives(train or ev_raw)
    ev = eval_reduce(ev_raw, k)
    df = None
    table = None
    if main:
        frames.append(frame(ev, agent.num_updates, "eval"))
        logger.log(frames[-1])
        logger.close()
        df = pd.concat(frames, ignore_index=True)
        if results_dir is not None:
            group_by = list(grid) if grid is not None else []
            if diverged is not None:  # only reached with allow_nonfinite: say so in the table
                title = (f"{title or f'{study} / {run_name}'} [NON-FINITE from update "
                         f"{diverged['update']}, seed {diverged['seed']}; --allow-nonfinite]")
            prov = provenance(results_dir, command=command, kind=kind, allow_dirty=allow_dirty,
                              history=history[:-1])
            prov["commands"] = history  # the run's own history (train, resumes, re-evaluations)
            run_info = {**info, "identity": ident}
            if kind == "re-evaluate":
                run_info = keep_training_times(results_dir / "run.json", run_info)
            table = write_results(results_dir, config=config, metrics=df,
                                  run_info=run_info, table_metrics=table_metrics,
                                  group_by=group_by, title=title or f"{study} / {run_name}",
                                  provenance_info=prov)
    return RunResult(state, train, ev, df, True, run_dir, results_dir if main else None, table,
                     info)


def make_chunk(
    vagent: Agent, chunk: int, tap_every: int | None = None,
    callback: Callable[..., None] | None = None,
) -> Callable[[Any], tuple[Any, dict[str, jax.Array]]]:
    """One chunk of `chunk` updates of a vmapped agent; metrics come back as [R, chunk, ...].

    With `tap_every`, the chunk is a scan over blocks of `tap_every` updates and
    after each block a jax.debug.callback reports (env_steps [R], mean episode
    return (K,)) to the host: in-loop progress for long chunks at one host
    callback per block instead of per update.
    """

    def plain(s):
        s, m = run_updates(vagent, s, chunk)  # scan over vmapped updates: metrics [C, R, ...]
        return s, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), m)  # -> [R, C, ...]

    if not tap_every:
        return plain

    def block(s, _):
        s, m = run_updates(vagent, s, tap_every)
        ret = m.get("episode_return")
        if ret is not None:
            ret = jnp.nanmean(ret.reshape(-1, ret.shape[-1]) if ret.ndim > 2 else ret.reshape(-1),
                              axis=0)
        steps = m["env_steps"][-1] if "env_steps" in m else jnp.zeros(())
        jax.debug.callback(callback, steps, ret)
        return s, m

    def tapped(s):
        s, m = jax.lax.scan(block, s, None, length=chunk // tap_every)  # [B, E, R, ...]
        m = jax.tree.map(lambda x: x.reshape((chunk,) + x.shape[2:]), m)
        return s, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), m)

    return tapped


def _num_objectives(m: Mapping[str, Any]) -> int:
    r = m.get("episode_return")
    return int(np.shape(r)[-1]) if r is not None and np.ndim(r) >= 2 else 1
