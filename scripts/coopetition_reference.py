"""Record reference trajectories of the coopetition games for the parity tests.

Runs the reference NumPy implementation (vikpant/strategic-coopetition, MIT) on fixed
action sequences, for every game case and every reward mode, and writes them to an .npz
that tests/envs/test_coopetition_parity.py compares our JAX games against:

    git -C <mirror> archive HEAD coopetition_gym/coopetition_gym | tar -x -C /tmp/coop_ref
    python scripts/coopetition_reference.py --ref /tmp/coop_ref/coopetition_gym \
        --commit $(git -C <mirror> rev-parse HEAD) --out tests/envs/test_coopetition_fixture.npz

Run it as its own process: the reference puts its own `envs` / `core` packages on
sys.path, which would clash with this repository's `envs`. It imports nothing from mo_rl.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

MODES = ("private", "integrated", "cooperative")
# case name -> (reference env id, constructor kwargs, steps); tests build ours from the same
CASES: dict[str, tuple[str, dict, int]] = {
    "TrustDilemma": ("TrustDilemma-v0", {}, 40),
    "PartnerHoldUp": ("PartnerHoldUp-v0", {}, 40),
    "RenaultNissan": ("RenaultNissan-v0", {}, 40),
    "RenaultNissan-crisis": ("RenaultNissan-v0", {"phase": "crisis"}, 40),
    "SLCD": ("SLCD-v0", {}, 40),
    "SLCD-notrust": ("SLCD-v0", {"trust_enabled": False}, 40),
    "PlatformEcosystem": ("PlatformEcosystem-v0", {}, 40),
    "TeamProduction": ("TeamProduction-v0", {}, 40),
    "LoyaltyTeam": ("LoyaltyTeam-v0", {}, 40),
    "PublicGoods": ("PublicGoods-v0", {}, 40),
    "ApacheProject-emergence": ("ApacheProject-v0", {"phase": "emergence"}, 40),
    "ApacheProject": ("ApacheProject-v0", {}, 12),
    "ReciprocalDilemma": ("ReciprocalDilemma-v0", {}, 40),
    "GiftExchange": ("GiftExchange-v0", {}, 40),
    "IndirectReciprocity": ("IndirectReciprocity-v0", {}, 40),
    "GraduatedSanction": ("GraduatedSanction-v0", {}, 40),
    "AppleAppStore": ("AppleAppStore-v0", {}, 40),
}
OBS_MAX_AGENTS = 6  # per-agent observations are stored only up to this many agents


def action_sequence(e: np.ndarray, b: np.ndarray, steps: int, seed: int) -> np.ndarray:
    """Phases that reach every branch: cooperation (trust grows), near the baselines
    (unsaturated tanh signals), random (some above e or below 0: clipping), one agent at
    0 (no synergy), alternating
    defectors, all free-riding (trust collapse, termination), all cooperating (loyalty,
    coordination bonus). Repeats if `steps` > 40, truncated if fewer."""
    rng = np.random.default_rng(seed)
    n = e.shape[0]
    rows = [rng.uniform(0.6, 0.9, n) * e for _ in range(6)]
    rows += [np.maximum(b + rng.uniform(-1.5, 1.5, n), 0.0) for _ in range(6)]
    rows += [rng.uniform(-0.05, 1.1, n) * e for _ in range(8)]
    zero = 0.5 * e
    zero[rng.integers(n)] = 0.0
    rows.append(zero)
    alt = np.where(np.arange(n) % 2 == 0, 0.1, 0.8) * e
    rows += [alt * rng.uniform(0.9, 1.1, n) for _ in range(6)]
    rows += [0.15 * e for _ in range(6)]
    rows += [0.7 * e * rng.uniform(0.95, 1.0, n) for _ in range(7)]
    seq = np.array(rows, np.float32)
    reps = -(-steps // len(seq))
    return np.concatenate([seq] * reps)[:steps]


def record(make, env_id: str, kwargs: dict, steps: int, seed: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for mode in MODES:
        env = make(env_id, **kwargs)
        env.reward_type = mode  # the reference ignores reward_type= in make(); set it after
        obs, _ = env.reset(seed=0)
        n = env.n_agents
        if mode == MODES[0]:
            acts = action_sequence(np.asarray(env.endowments, np.float64),
                                   np.asarray(env.baselines, np.float64), steps, seed)
            out["actions"] = acts
        small = n <= OBS_MAX_AGENTS
        gym_obs, agent_obs = [obs], []
        if small:
            agent_obs.append([env.get_observation_for(a) for a in env.possible_agents])
        rewards, T, R, term, trunc = [], [], [], [], []
        for a in out["actions"]:
            obs, r, te, tr, _ = env.step(a)
            rewards.append(r)
            T.append(env._state["trust"].copy())
            R.append(env._state["reputation"].copy())
            term.append(te)
            trunc.append(tr)
            gym_obs.append(obs)
            if small:
                agent_obs.append([env.get_observation_for(a) for a in env.possible_agents])
        out[f"reward_{mode}"] = np.array(rewards, np.float32)
        if mode == MODES[0]:
            out.update(trust=np.array(T, np.float64), reputation=np.array(R, np.float64),
                       terminated=np.array(term), truncated=np.array(trunc))
            if small:
                out["gym_obs"] = np.array(gym_obs, np.float32)
                out["agent_obs"] = np.array(agent_obs, np.float32)
        elif not np.allclose(np.array(T), out["trust"]):
            raise RuntimeError(f"{env_id}: trust depends on the reward mode")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True,
                    help="folder holding the reference package coopetition_gym/")
    ap.add_argument("--commit", default="unknown", help="the reference commit, stored in the file")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", nargs="*", default=None, help="subset of case names")
    args = ap.parse_args()
    sys.path.insert(0, args.ref)
    import coopetition_gym

    arrays: dict[str, np.ndarray] = {}
    t0 = time.time()
    for i, (case, (env_id, kwargs, steps)) in enumerate(CASES.items()):
        if args.cases and case not in args.cases:
            continue
        for k, v in record(coopetition_gym.make, env_id, kwargs, steps, seed=i).items():
            arrays[f"{case}/{k}"] = v
        print(f"{case}: {steps} steps x {len(MODES)} modes ({time.time() - t0:.1f}s)",
              flush=True)
    version = coopetition_gym.__version__
    arrays["meta/reference"] = np.array(
        f"vikpant/strategic-coopetition@{args.commit} (coopetition_gym {version})")
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
