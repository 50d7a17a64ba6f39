"""Sweeps: vmapped seeds equal per-seed runs; grids; the sharded sweep equals one device."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np

from mo_rl import sweep
from mo_rl.agent import make_train
from tests.mo_rl.toy_agent import ToyConfig, make_agent

ROOT = Path(__file__).resolve().parents[2]


def test_vmapped_sweep_equals_per_seed_runs():
    train = make_train(make_agent(ToyConfig(num_updates=12)))
    keys = sweep.seed_keys([0, 1, 2])
    _, m = sweep.to_host(sweep.sweep(train, keys, mesh=None))
    for i, k in enumerate(keys):
        _, mi = jax.jit(train)(k)
        np.testing.assert_allclose(m["loss"][i], np.asarray(mi["loss"]), rtol=1e-6)
        np.testing.assert_array_equal(m["env_steps"][i], np.asarray(mi["env_steps"]))


def test_make_grid_cartesian():
    g = sweep.make_grid(lr=[0.1, 0.2], w=[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    assert g["lr"].shape == (6,) and g["w"].shape == (6, 2)
    np.testing.assert_array_equal(g["lr"], [0.1, 0.1, 0.1, 0.2, 0.2, 0.2])
    np.testing.assert_array_equal(g["w"][:3], [[1, 0], [0, 1], [0.5, 0.5]])
    assert sweep.grid_size(g) == 6


def test_grid_sweep_equals_separate_sweeps():
    agent = make_agent(ToyConfig(num_updates=10))

    def train(key, point):
        from mo_rl.agent import run_updates

        return run_updates(agent, agent.init(key, point), agent.num_updates)

    keys = sweep.seed_keys([0, 1])
    grid = sweep.make_grid(lr=[0.05, 0.3], w=[[1.0, 0.0], [0.0, 1.0]])
    _, m = sweep.grid_sweep(train, keys, grid, mesh=None)
    assert m["loss"].shape == (4, 2, 10)
    for gi in range(4):
        point = {k: np.repeat(v[gi : gi + 1], 2, axis=0) for k, v in grid.items()}
        _, mg = sweep.to_host(sweep.sweep(train, keys, point, mesh=None))
        np.testing.assert_allclose(m["loss"][gi], mg["loss"], rtol=1e-6)
    # different weights really change the learned behaviour
    assert not np.allclose(m["episode_return"][0], m["episode_return"][1], equal_nan=True)


def test_seed_mesh_uses_divisor_of_runs():
    n = len(jax.devices())
    assert sweep.seed_mesh(n).devices.size == n
    assert sweep.seed_mesh(1).devices.size == 1
    devs = [jax.devices()[0]] * 8  # only the divisor logic matters here
    assert sweep.seed_mesh(6, devs).devices.size == 6
    assert sweep.seed_mesh(8, devs, min_per_device=2).devices.size == 4
    assert sweep.seed_mesh(7, devs, min_per_device=2).devices.size == 1
    assert not sweep.init_distributed()  # no env vars: single-process no-op


SHARDED = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import mo_rl  # appends the CPU scheduler flag before JAX starts
    import jax, numpy as np
    assert "xla_cpu_enable_concurrency_optimized_scheduler" in os.environ["XLA_FLAGS"]
    assert len(jax.devices()) == 8, jax.devices()
    from mo_rl import sweep
    from mo_rl.agent import make_train, run_updates
    from mo_rl.runner import run
    from tests.mo_rl.toy_agent import ToyConfig, make_agent

    cfg = ToyConfig(num_updates=12)
    train = make_train(make_agent(cfg))
    keys = sweep.seed_keys(range(16))
    out = sweep.sweep(train, keys)  # sharded over 8 devices, 2 seeds each
    assert len(out[1]["loss"].sharding.device_set) == 8
    one = sweep.to_host(sweep.sweep(train, keys, mesh=None))
    many = sweep.to_host(out)
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many)):
        np.testing.assert_array_equal(a, b)

    agent = make_agent(cfg)
    grid = sweep.make_grid(lr=[0.05, 0.3], w=[[1.0, 0.0], [0.0, 1.0]])
    gtrain = lambda k, p: run_updates(agent, agent.init(k, p), agent.num_updates)
    g1 = sweep.grid_sweep(gtrain, sweep.seed_keys(range(4)), grid, mesh=None)
    g8 = sweep.grid_sweep(gtrain, sweep.seed_keys(range(4)), grid)  # 16 runs, 2 per device
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g8)):
        np.testing.assert_array_equal(a, b)

    tmp = sys.argv[1]
    kw = dict(study="s", num_chunks=3, objectives=["x", "y"], progress=False,
              runs_root=tmp + "/runs", results_root=None)
    r1 = run(make_agent, cfg, range(12), run_name="one", mesh=None, **kw)
    r8 = run(make_agent, cfg, range(12), run_name="auto", **kw)  # 12 seeds -> 6 devices x 2
    assert len(jax.tree.leaves(r8.state)[0].sharding.device_set) == 6
    for k in r1.train:
        np.testing.assert_array_equal(r1.train[k], r8.train[k])
    for k in r1.eval:
        np.testing.assert_array_equal(r1.eval[k], r8.eval[k])
    print("SHARDED_OK")
    """
)


# The subprocesses emulate devices / hosts with CPU devices: pinned to the CPU platform so
# the tests mean the same on a GPU machine (where jax.devices() would be the GPUs).
def _cpu_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def test_sharded_sweep_equals_single_device(tmp_path):
    env = _cpu_env()
    p = subprocess.run([sys.executable, "-c", SHARDED, str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert "SHARDED_OK" in p.stdout, p.stdout[-3000:] + p.stderr[-5000:]


MULTIHOST = textwrap.dedent(
    """
    import os, sys
    pid, port, tmp = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    os.environ.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2",
                      JAX_PROCESS_ID=str(pid))
    import mo_rl
    from mo_rl import sweep
    assert sweep.init_distributed()
    import jax, numpy as np
    assert jax.process_count() == 2 and len(jax.devices()) == 4
    from mo_rl.runner import run
    from tests.mo_rl.toy_agent import ToyConfig, make_agent
    r = run(make_agent, ToyConfig(num_updates=12), range(8), study="mh", run_name="x",
            num_chunks=3, objectives=["x", "y"], progress=False, runs_root=tmp + "/runs",
            results_root=tmp + "/results")
    np.savez(f"{tmp}/p{pid}.npz", **r.train, **{"eval/" + k: v for k, v in r.eval.items()})
    print("MH_OK", pid)
    """
)


def test_multihost_two_processes(tmp_path):
    """jax.distributed with 2 CPU processes x 2 devices: each host runs its share of the
    8 seeds; both end with all seeds, equal to a single-device run."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = _cpu_env()
    procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST, str(i), port, str(tmp_path)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for i, (out, err) in enumerate(outs):
        assert f"MH_OK {i}" in out, out[-2000:] + err[-4000:]
    from mo_rl.runner import run

    with jax.default_device(jax.devices("cpu")[0]):  # the processes above ran on the CPU
        ref = run(make_agent, ToyConfig(num_updates=12), range(8), study="ref", num_chunks=3,
                  objectives=["x", "y"], progress=False, mesh=None, runs_root=tmp_path / "ref",
                  results_root=None)
    for i in range(2):
        with np.load(tmp_path / f"p{i}.npz") as z:
            for k, v in ref.train.items():
                np.testing.assert_array_equal(z[k], v)
            for k, v in ref.eval.items():
                np.testing.assert_array_equal(z["eval/" + k], v)
    # only process 0 writes results
    assert (tmp_path / "results" / "mh" / "x" / "table.md").is_file()
