"""Seed sweeps: vmap on one device, the seed axis sharded over devices and hosts.

One run = one seed (or one (grid point, seed) pair). Runs are independent,
so the whole sweep is `jit(vmap(fn))` over a leading "seed" axis and the
only question is where each slice of that axis lives:

* one device: plain vmap;
* all local devices: a 1-D `Mesh` with axis "seed"; inputs are placed with
  `NamedSharding(mesh, P("seed"))` and jit partitions the vmapped program
  (no communication: every device runs its own seeds);
* several hosts: call `init_distributed()` first (reads the usual env vars,
  see its docstring) on every host, then run the *same* program on every
  host. `seed_mesh()` then spans the global devices, `put_seeds` builds the
  global array from the shards each host owns (`make_array_from_callback`),
  so each host computes only its share of seeds; `to_host` gathers results
  (`process_allgather`) so every host sees all seeds. Write files from
  `is_main_process()` only.

The mesh uses the largest number of devices that divides the number of runs
(e.g. 6 seeds on 8 devices -> 6 devices), so shapes stay static and every
device gets the same number of seeds.

Bit-exactness: a sharded sweep is the vmapped program at the per-device
batch size. On XLA:CPU the results are bit-identical to the single-device
sweep whenever every device holds >= 2 runs (tested: 16 seeds on 8 devices).
With exactly one run per device XLA compiles a degenerate batch of 1, which
can differ by one float ulp (the same happens for a single-device vmap over
one seed vs. the un-vmapped function). Pass `min_per_device=2` to
`seed_mesh` when bitwise equality with a single-device run matters more than
using every device.

Grids over hyper-parameters or reward weights: when a value only changes
array *contents* (a learning rate, scalarisation weights), pass it as a traced
argument `fn(key, point)`; `grid_sweep` flattens (grid point x seed) into one
batch axis, so grids shard exactly like seeds. `make_grid` builds the points.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXIS = "seed"


# ---- multi-host -----------------------------------------------------------------


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> bool:
    """Start jax.distributed when this is a multi-host run; return True if it did.

    Reads arguments, else the env vars JAX_COORDINATOR_ADDRESS (host:port of
    process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID. Without them it still
    initialises on clusters JAX auto-detects (SLURM `srun`, Open MPI,
    Cloud TPU pods) when MO_RL_DISTRIBUTED=1. Otherwise it is a no-op, so
    studies can always call it first. Must run before any other JAX call.

    Tested on one machine with 2 CPU processes x 2 devices
    (tests/mo_rl/test_sweep.py::test_multihost_two_processes). Example (2 hosts, 8 GPUs each):
        host0$ JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=0 \\
               python -m experiments.demo --seeds 64
        host1$ JAX_COORDINATOR_ADDRESS=10.0.0.1:1234 JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=1 \\
               python -m experiments.demo --seeds 64
    """
    addr = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    n = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if addr is None and n is None and os.environ.get("MO_RL_DISTRIBUTED") != "1":
        return False
    if n == 1:
        return False
    # CPU hosts need a cross-process collectives backend (for gathering results); the
    # option only affects the CPU client, so it is harmless on GPU/TPU hosts.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=addr, num_processes=n, process_id=pid)
    return True


def _env_int(name: str) -> int | None:
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else None


def is_main_process() -> bool:
    return jax.process_index() == 0


# ---- placement ------------------------------------------------------------------


def seed_mesh(
    num_runs: int, devices: Sequence[jax.Device] | None = None, min_per_device: int = 1
) -> Mesh:
    """1-D mesh (axis "seed") over the most devices that split `num_runs` evenly."""
    devs = list(jax.devices() if devices is None else devices)
    ok = [d for d in range(1, len(devs) + 1)
          if num_runs % d == 0 and (num_runs // d >= min_per_device or d == 1)]
    n = max(ok)
    if jax.process_count() > 1 and n != len(devs):
        raise ValueError(
            f"multi-host sweeps need the number of runs ({num_runs}) to be a multiple of the "
            f"global device count ({len(devs)}) so every host gets its share."
        )
    return Mesh(np.asarray(devs[:n]), (AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(AXIS))


def put_seeds(tree: Any, mesh: Mesh) -> Any:
    """Place host arrays (leading axis = runs) sharded over the mesh; works multi-host."""
    sharding = seed_sharding(mesh)

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly sharded, possibly multi-host) arrays."""
    from jax.experimental import multihost_utils

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def seed_keys(seeds: Sequence[int] | np.ndarray) -> np.ndarray:
    """uint32 keys [S, 2], one per seed integer (`jax.random.PRNGKey(seed)`), on the host."""
    seeds = np.asarray(seeds, dtype=np.uint32)
    return np.asarray(jax.vmap(jax.random.PRNGKey)(seeds))


# ---- sweeps ---------------------------------------------------------------------


def sweep(
    fn: Callable[..., Any],
    keys: Any,
    *batched: Any,
    mesh: Mesh | str | None = "auto",
) -> Any:
    """`jit(vmap(fn))(keys, *batched)`; leading axis of every input = runs.

    mesh="auto" shards the run axis over all devices (global ones when
    multi-host), mesh=None keeps everything on the default device, or pass
    a Mesh from `seed_mesh`. Returns device arrays (use `to_host`).
    """
    n = int(np.shape(jax.tree.leaves(keys)[0])[0])
    if mesh == "auto":
        mesh = seed_mesh(n)
    vf = jax.vmap(fn)
    if mesh is None:
        return jax.jit(vf)(keys, *batched)
    sh = seed_sharding(mesh)
    args = put_seeds((keys, *batched), mesh)
    return jax.jit(vf, out_shardings=sh)(*args)


def make_grid(**axes: Sequence[Any]) -> dict[str, np.ndarray]:
    """Cartesian product of named value lists -> {name: array [G, ...]} (first name slowest).

    make_grid(lr=[1e-3, 3e-4], w=[[1, 0], [0.5, 0.5]]) gives G=4 points with
    lr.shape == (4,) and w.shape == (4, 2).
    """
    names = list(axes)
    combos = list(itertools.product(*(range(len(axes[k])) for k in names)))
    return {k: np.stack([np.asarray(axes[k][c[i]]) for c in combos]) for i, k in enumerate(names)}


def grid_size(points: Mapping[str, Any] | Any) -> int:
    return int(np.shape(jax.tree.leaves(points)[0])[0])


def grid_sweep(
    fn: Callable[[Any, Any], Any],
    keys: Any,
    points: Any,
    *,
    mesh: Mesh | str | None = "auto",
) -> Any:
    """`fn(key, point)` for every grid point x seed; numpy outputs with leading axes [G, S].

    Every grid point uses the same seeds (common random numbers), so point
    differences are not confounded with seed luck.
    """
    s = int(np.shape(jax.tree.leaves(keys)[0])[0])
    g = grid_size(points)
    flat_keys = jax.tree.map(lambda k: np.tile(np.asarray(k), (g,) + (1,) * (np.ndim(k) - 1)),
                             keys)
    flat_pts = jax.tree.map(lambda p: np.repeat(np.asarray(p), s, axis=0), points)
    out = to_host(sweep(fn, flat_keys, flat_pts, mesh=mesh))
    return jax.tree.map(lambda x: x.reshape((g, s) + x.shape[1:]), out)
