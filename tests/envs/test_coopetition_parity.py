"""Parity of the JAX coopetition games with the reference NumPy implementation.

Step by step on fixed action sequences, every game case and reward mode (plus the
private<->cooperative mix, which must be the same mix of the reference's two rewards):
rewards, trust, reputation, termination, truncation and observations, tolerance 1e-4
(relative and absolute). Against the committed fixture (written by
scripts/coopetition_reference.py from the reference commit it names) always; against a
live reference checkout too when one is present (MO_RL_COOP_REF, default
/tmp/coop_ref/coopetition_gym), re-recorded in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from envs.coopetition import make_game, weights_for

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("test_coopetition_fixture.npz")
SCRIPT = ROOT / "scripts" / "coopetition_reference.py"
REF = Path(os.environ.get("MO_RL_COOP_REF", "/tmp/coop_ref/coopetition_gym"))
MODES = ("private", "integrated", "cooperative")
MIX = 0.3
TOL = dict(rtol=1e-4, atol=1e-4)

_spec = importlib.util.spec_from_file_location("coopetition_reference", SCRIPT)
_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_script)
CASES = _script.CASES


def load(path: Path) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            case, field = key.split("/", 1)
            out.setdefault(case, {})[field] = z[key]
    return out


def run_ours(case: str, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Our game stepped through `actions` under every mode + the mix, one vmapped program."""
    env_id, kwargs, _ = CASES[case]
    env, p = make_game(env_id, **kwargs)
    weights = jnp.stack([weights_for(m) for m in (*MODES, MIX)])
    params = jax.vmap(lambda w: p.replace(reward_weights=w))(weights)
    key = jax.random.key(0)

    def rollout(params):
        obs0, s0 = env.reset(key, params)

        def body(s, a):
            obs, s, r, te, tr, _ = env.step(key, s, a[:, None], params)
            return s, (obs, env.global_obs(s, params), r[:, 0], s.trust, s.reputation, te, tr)

        _, outs = jax.lax.scan(body, s0, jnp.asarray(actions))
        return (obs0, env.global_obs(s0, params)), outs

    (obs0, gobs0), (obs, gobs, r, T, R, te, tr) = jax.jit(jax.vmap(rollout))(params)
    return {"agent_obs": np.concatenate([np.asarray(obs0)[:, None], obs], 1),
            "gym_obs": np.concatenate([np.asarray(gobs0)[:, None], gobs], 1),
            "reward": np.asarray(r), "trust": np.asarray(T), "reputation": np.asarray(R),
            "terminated": np.asarray(te), "truncated": np.asarray(tr)}


def check_case(case: str, ref: dict[str, np.ndarray]) -> None:
    ours = run_ours(case, ref["actions"])
    for i, mode in enumerate(MODES):
        np.testing.assert_allclose(ours["reward"][i], ref[f"reward_{mode}"], **TOL,
                                   err_msg=f"{case}: {mode} reward")
    mix = (1 - MIX) * ref["reward_private"].astype(np.float64) + MIX * ref["reward_cooperative"]
    np.testing.assert_allclose(ours["reward"][3], mix, **TOL, err_msg=f"{case}: mix reward")
    for field in ("trust", "reputation"):
        np.testing.assert_allclose(ours[field][0], ref[field], **TOL, err_msg=f"{case}: {field}")
    for field in ("terminated", "truncated"):
        np.testing.assert_array_equal(ours[field][0], ref[field], err_msg=f"{case}: {field}")
    for field in ("gym_obs", "agent_obs"):
        if field in ref:
            np.testing.assert_allclose(ours[field][0], ref[field], **TOL,
                                       err_msg=f"{case}: {field}")


FIXTURE_DATA = load(FIXTURE)


def test_fixture_names_the_reference_commit():
    meta = str(FIXTURE_DATA["meta"]["reference"])
    assert meta.startswith("vikpant/strategic-coopetition@") and "unknown" not in meta
    assert set(FIXTURE_DATA) - {"meta"} == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_parity_with_fixture(case):
    check_case(case, FIXTURE_DATA[case])


def test_fixture_exercises_every_branch():
    """The sequences reach termination, clipping, zero synergy and near-baseline signals."""
    assert FIXTURE_DATA["TrustDilemma"]["terminated"].any()
    assert FIXTURE_DATA["PartnerHoldUp"]["terminated"].any()
    acts = np.concatenate([FIXTURE_DATA[c]["actions"].ravel()
                           for c in ("PublicGoods", "TeamProduction")])
    assert (acts > 50).any() and (acts < 0).any() and (acts == 0).any()  # e = 50 in both


@pytest.mark.skipif(not (REF / "coopetition_gym" / "__init__.py").exists(),
                    reason=f"no reference checkout at {REF} (set MO_RL_COOP_REF); the "
                           "committed fixture still checks parity")
def test_parity_with_live_reference(tmp_path):
    out = tmp_path / "live.npz"
    subprocess.run([sys.executable, str(SCRIPT), "--ref", str(REF), "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    live = load(out)
    for case in sorted(CASES):
        check_case(case, live[case])
