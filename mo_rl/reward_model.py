"""HERON's preference reward model: step features, pair sampling, margins, the Bradley-Terry
update, and the `RewardHook` through which agents train on the learned reward.

Facts followed (shared/reference/heron.md): R is an MLP (256-256, ReLU, Adam) scoring ONE
step; pairs are labelled by `mo_rl.preference.hierarchical_preference` over the user's
ranking; undecided pairs are skipped; loss = mean -log sigmoid(R_pref - R_other) over
decided pairs (`mo_rl.preference.bradley_terry_loss`).

* on-policy ("on_policy", PPO): each rollout is shuffled into minibatches of
  `minibatch` steps; each step is paired with ONE random other step of its minibatch;
  margins m_k = sigma_level(k) * std of factor k within the minibatch
  (robots/stable_baselines3/ppo/heron.py:68, WITHOUT its bug of reusing sigma[1] for
  levels 3 and 4: every level gets its own sigma here); one Adam step per minibatch,
  `epochs` passes per rollout, the model kept across rollouts.
* off-policy ("off_policy", IQN): `num_minibatches` minibatches of `minibatch` steps
  drawn with replacement from the whole history (the replay), all i > j pairs of each;
  margins = sigma_level(k) * std of factor k over EVERY step seen so far
  (ClassicControl/cleanrl/ddpg_rm.py:218; kept as running moments, so no pass over the
  buffer); a retrain every `retrain_every` env steps once `warmup` steps are seen.
* labels: "hierarchy" (HERON) or "sum" (the RLHF baseline: the plain oriented factor
  sum decides, with margin 0).
* held-out accuracy: before the model trains on a batch of fresh steps (a new rollout /
  the steps just collected) it is scored on that batch's pairs, which it has never seen.
* optional output normalisation: R is standardised with the mean / std of its outputs on
  the last training batch (stored in the state, so a whole rollout / replay batch is
  relabelled with one fixed map). Off by default, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from mo_rl.config import check, check_choice, check_non_negative, check_positive
from mo_rl.preference import bradley_terry_loss, hierarchical_preference
from mo_rl.reward import RewardSpec

INPUTS = ("obs", "action", "factors")
MODES = ("on_policy", "off_policy")
LABELS = ("hierarchy", "sum")


@dataclass(frozen=True)
class RewardModelConfig:
    """Reward-model settings; defaults are the reference's PPO ones (heron.md)."""

    hidden: tuple[int, ...] = (256, 256)
    lr: float = 1e-3
    sigma: tuple[float, ...] = (1.0,)  # margin scale per ranking level (1 value = all)
    inputs: tuple[str, ...] = ("obs",)  # any of "obs", "action", "factors"
    labels: str = "hierarchy"  # "hierarchy" (HERON) | "sum" (RLHF from the factor sum)
    normalize: bool = False
    minibatch: int = 64  # on-policy: steps per minibatch; off-policy: steps per minibatch
    epochs: int = 1  # on-policy passes over each rollout
    num_minibatches: int = 16  # off-policy minibatches per retrain
    retrain_every: int = 400  # off-policy: env steps between retrains
    warmup: int = 1000  # off-policy: env steps before the first retrain

    def __post_init__(self) -> None:
        check_positive(self, "lr", "minibatch", "epochs", "num_minibatches", "retrain_every")
        check_non_negative(self, "warmup")
        check(self, "minibatch", self.minibatch >= 2, "needs at least 2 steps to form pairs")
        check(self, "hidden", all(h > 0 for h in self.hidden), "widths must be positive")
        check(self, "sigma", len(self.sigma) > 0 and all(s >= 0 for s in self.sigma),
              "needs one or more values >= 0")
        check(self, "inputs", len(self.inputs) > 0 and set(self.inputs) <= set(INPUTS),
              f"must be a non-empty subset of {INPUTS}")
        check_choice(self, "labels", LABELS)
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "sigma", tuple(float(s) for s in self.sigma))
        object.__setattr__(self, "inputs", tuple(self.inputs))


# ----------------------------------------------------------------------- pure pieces
class Steps(NamedTuple):
    """A batch of steps with leading axes (...): observation, env action, factors (..., K)."""

    obs: Any
    action: jax.Array
    factors: jax.Array


def features(steps: Steps, inputs: Sequence[str], num_actions: int | None = None) -> jax.Array:
    """(..., D) model input: the chosen parts flattened per step and concatenated.
    Discrete actions (`num_actions`) are one-hot; the leading axes are the factors'."""
    lead = steps.factors.shape[:-1]
    parts = []
    if "obs" in inputs:
        parts += [x.reshape(lead + (-1,)).astype(jnp.float32)
                  for x in jax.tree.leaves(steps.obs)]
    if "action" in inputs:
        a = steps.action
        a = (jax.nn.one_hot(a.reshape(lead), num_actions) if num_actions is not None
             else a.reshape(lead + (-1,)).astype(jnp.float32))
        parts.append(a)
    if "factors" in inputs:
        parts.append(steps.factors.astype(jnp.float32))
    return jnp.concatenate(parts, axis=-1)


def factor_sigma(sigma: Sequence[float], order: np.ndarray) -> np.ndarray:
    """(K,) per-factor sigma from per-LEVEL values (level l = factor order[l])."""
    k = len(order)
    s = np.asarray(sigma, np.float32)
    if s.shape == (1,):
        s = np.full(k, s[0], np.float32)
    if s.shape != (k,):
        raise ValueError(f"sigma needs 1 or {k} values (one per ranking level); got {len(s)}.")
    out = np.zeros(k, np.float32)
    out[np.asarray(order)] = s
    return out


def random_partners(key: jax.Array, n: int) -> jax.Array:
    """(n,) index of one uniformly drawn OTHER sample for each sample of a minibatch."""
    return (jnp.arange(n) + jax.random.randint(key, (n,), 1, n)) % n


def all_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (i, j) of every pair i > j of a minibatch of n."""
    i, j = np.tril_indices(n, -1)
    return i.astype(np.int32), j.astype(np.int32)


class Moments(NamedTuple):
    """Running count / mean / M2 per factor: the std over every step seen so far."""

    count: jax.Array
    mean: jax.Array
    m2: jax.Array


def moments_init(k: int) -> Moments:
    return Moments(jnp.float32(0), jnp.zeros(k, jnp.float32), jnp.zeros(k, jnp.float32))


def moments_update(m: Moments, x: jax.Array) -> Moments:
    """Merge a batch x (N, K) (Chan et al.'s parallel update)."""
    n = jnp.float32(x.shape[0])
    mean_b = jnp.mean(x, axis=0)
    m2_b = jnp.sum(jnp.square(x - mean_b), axis=0)
    tot = m.count + n
    delta = mean_b - m.mean
    return Moments(tot, m.mean + delta * n / tot, m.m2 + m2_b + delta**2 * m.count * n / tot)


def moments_std(m: Moments) -> jax.Array:
    return jnp.sqrt(m.m2 / jnp.maximum(m.count, 1.0))


class Comparator(NamedTuple):
    """How factors (..., K) become labels: compare(f_i, f_j, margin (K,)) in {+1, 0, -1}."""

    view: Callable[[jax.Array], jax.Array]  # factors -> compared quantities (..., K')
    order: jax.Array
    sign: jax.Array
    sigma: jax.Array  # (K',) per compared quantity

    def margins(self, std: jax.Array) -> jax.Array:
        return self.sigma * std

    def label(self, f_i: jax.Array, f_j: jax.Array, margin: jax.Array) -> jax.Array:
        return hierarchical_preference(self.view(f_i), self.view(f_j), self.order,
                                       self.sign, margin)


def make_comparator(cfg: RewardModelConfig, spec: RewardSpec, order: np.ndarray,
                    sum_weights: Sequence[float] | None = None) -> Comparator:
    """"hierarchy": the ranked factors with per-level sigma; "sum": one quantity, the
    oriented (weighted) factor sum, higher better, margin 0 (strict comparisons)."""
    if cfg.labels == "sum":
        w = np.ones(len(spec), np.float32) if sum_weights is None else np.asarray(
            sum_weights, np.float32)
        w = jnp.asarray(w * spec.sign)
        return Comparator(lambda f: jnp.sum(f * w, axis=-1, keepdims=True),
                          jnp.zeros(1, jnp.int32), jnp.ones(1), jnp.zeros(1))
    return Comparator(lambda f: f, jnp.asarray(order, jnp.int32), jnp.asarray(spec.sign),
                      jnp.asarray(factor_sigma(cfg.sigma, order)))


class RewardMLP(nn.Module):
    """R(step features) -> scalar (ReLU MLP, as the reference's 256-256-1)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for h in self.hidden:
            x = nn.relu(nn.Dense(h)(x))
        return nn.Dense(1)(x)[..., 0]


def pair_loss(params: Any, apply: Callable, x_i: jax.Array, x_j: jax.Array,
              label: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Bradley-Terry loss of R on pairs (x_i, x_j) labelled +1 / -1 (0 = skipped)."""
    return bradley_terry_loss(apply(params, x_i), apply(params, x_j), label)


def minibatch_labels(comp: Comparator, f: jax.Array, i: jax.Array, j: jax.Array,
                     std: jax.Array | None = None) -> jax.Array:
    """Labels of pairs (i, j) of one minibatch f (M, K); margins from `std` (history) or,
    when None, from the std of the minibatch itself (on-policy)."""
    if std is None:
        std = jnp.std(comp.view(f), axis=0)
    return comp.label(f[i], f[j], comp.margins(std))


# ----------------------------------------------------------------------- the hook
class RewardHook(NamedTuple):
    """What an agent needs to train on a learned reward (agents.ppo / agents.iqn).

    init(key) -> hook state (part of the agent state);
    train(state, key, fresh: Steps (N, ...), sample: key -> Steps (B, ...) | None,
          ready: bool) -> (state, metrics): learn from fresh steps (on-policy) or from
          history samples on a schedule (off-policy);
    reward(state, obs, action, factors (..., K)) -> (...) the scalar learning reward.
    """

    init: Callable[[jax.Array], Any]
    train: Callable[..., tuple[Any, dict[str, jax.Array]]]
    reward: Callable[[Any, Any, jax.Array, jax.Array], jax.Array]


@struct.dataclass
class RewardModelState:
    params: Any
    opt_state: Any
    moments: Moments  # factor statistics over every step seen (off-policy margins)
    out_mean: jax.Array  # output normalisation (identity unless cfg.normalize)
    out_std: jax.Array
    since_retrain: jax.Array  # env steps since the last retrain (off-policy)
    seen: jax.Array  # env steps seen


def make_reward_model(cfg: RewardModelConfig, spec: RewardSpec, order: np.ndarray,
                      example: Steps, mode: str, num_actions: int | None = None,
                      sum_weights: Sequence[float] | None = None) -> RewardHook:
    """The HERON reward model as a RewardHook. `example`: one step (no leading axis)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    k = len(spec)
    comp = make_comparator(cfg, spec, order, sum_weights)
    net = RewardMLP(cfg.hidden)
    tx = optax.adam(cfg.lr)
    feat = lambda s: features(s, cfg.inputs, num_actions)
    x0 = feat(jax.tree.map(lambda x: jnp.asarray(x)[None], example))
    k_view = comp.view(jnp.zeros((1, k))).shape[-1]  # compared quantities (1 for "sum")
    nan = jnp.float32(jnp.nan)

    def init(key):
        params = net.init(key, x0)
        return RewardModelState(params, tx.init(params), moments_init(k_view), jnp.float32(0),
                                jnp.float32(1), jnp.int32(0), jnp.int32(0))

    def reward(state, obs, action, factors):
        r = net.apply(state.params, feat(Steps(obs, action, factors)))
        return (r - state.out_mean) / state.out_std

    def adam_step(params, opt_state, x_i, x_j, label):
        (loss, aux), g = jax.value_and_grad(pair_loss, has_aux=True)(
            params, net.apply, x_i, x_j, label)
        upd, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, jnp.stack(
            [loss, aux["accuracy"], aux["decided"]])

    def normalised(state, x):
        if not cfg.normalize:
            return state
        r = net.apply(state.params, x)
        return state.replace(out_mean=jnp.mean(r), out_std=jnp.std(r) + 1e-8)

    # -------- on-policy: minibatches of the fresh rollout, one random partner each
    def train_on_policy(state, key, fresh: Steps, sample=None, ready=True):
        x, f = feat(fresh), fresh.factors.astype(jnp.float32)
        n = f.shape[0]
        m = cfg.minibatch
        nb = n // m
        if nb == 0:
            raise ValueError(f"the rollout ({n} steps) is smaller than one reward-model "
                             f"minibatch ({m}).")
        k_hold, k_epochs = jax.random.split(key)

        def mb_pairs(key, idx):  # idx (M,): one minibatch
            j = random_partners(key, m)
            fb = f[idx]
            return idx, idx[j], minibatch_labels(comp, fb, jnp.arange(m), j)

        def split(key):
            perm = jax.random.permutation(key, n)[: nb * m].reshape(nb, m)
            return jax.vmap(mb_pairs)(jax.random.split(key, nb), perm)

        # held-out: the model before it sees this rollout
        hi, hj, hl = split(k_hold)
        _, hold = pair_loss(state.params, net.apply, x[hi.reshape(-1)], x[hj.reshape(-1)],
                            hl.reshape(-1))

        def step(carry, batch):
            params, opt = carry
            i, j, lab = batch
            params, opt, s = adam_step(params, opt, x[i], x[j], lab)
            return (params, opt), s

        def epoch(carry, key):
            return jax.lax.scan(step, carry, split(key))

        (params, opt), s = jax.lax.scan(epoch, (state.params, state.opt_state),
                                        jax.random.split(k_epochs, cfg.epochs))
        s = s.reshape(-1, 3)
        state = normalised(state.replace(params=params, opt_state=opt,
                                         seen=state.seen + n), x)
        return state, {"rm_loss": jnp.mean(s[:, 0]), "rm_accuracy": jnp.mean(s[:, 1]),
                       "rm_decided": jnp.mean(s[:, 2]),
                       "rm_heldout_accuracy": jnp.where(hold["decided"] > 0, hold["accuracy"],
                                                        nan),
                       "rm_trained": jnp.bool_(True)}

    # -------- off-policy: history minibatches, all i > j pairs, history std margins
    pi, pj = all_pairs(cfg.minibatch)

    def train_off_policy(state, key, fresh: Steps, sample=None, ready=True):
        if sample is None:
            raise ValueError("off-policy reward-model training needs a history sampler.")
        f_new = fresh.factors.astype(jnp.float32)
        n = f_new.shape[0]
        moments = moments_update(state.moments, comp.view(f_new))
        std = moments_std(moments)
        # held-out: every pair of the fresh steps, scored before any training on them
        fi, fj = all_pairs(n)
        _, hold = pair_loss(state.params, net.apply, feat(fresh)[fi], feat(fresh)[fj],
                            minibatch_labels(comp, f_new, fi, fj, std))
        seen = state.seen + n
        since = state.since_retrain + n
        due = ready & (seen >= cfg.warmup) & (since >= cfg.retrain_every)
        state = state.replace(moments=moments, seen=seen, since_retrain=since)

        def retrain(state):
            keys = jax.random.split(key, cfg.num_minibatches)

            def step(carry, k):
                params, opt = carry
                b = jax.tree.map(lambda a: a[: cfg.minibatch], sample(k))
                xb, fb = feat(b), b.factors.astype(jnp.float32)
                lab = minibatch_labels(comp, fb, pi, pj, std)
                params, opt, s = adam_step(params, opt, xb[pi], xb[pj], lab)
                return (params, opt), (s, xb)

            (params, opt), (s, xs) = jax.lax.scan(step, (state.params, state.opt_state), keys)
            # a minibatch with no decided pair adds no gradient (its loss is 0)
            w = s[:, 2] > 0
            cnt = jnp.maximum(jnp.sum(w), 1)
            m = {"rm_loss": jnp.sum(jnp.where(w, s[:, 0], 0.0)) / cnt,
                 "rm_accuracy": jnp.sum(jnp.where(w, s[:, 1], 0.0)) / cnt,
                 "rm_decided": jnp.mean(s[:, 2]), "rm_trained": jnp.bool_(True)}
            new = normalised(state.replace(params=params, opt_state=opt,
                                           since_retrain=jnp.int32(0)),
                             xs.reshape(-1, xs.shape[-1]))
            return new, m

        def skip(state):
            return state, {"rm_loss": nan, "rm_accuracy": nan, "rm_decided": nan,
                           "rm_trained": jnp.bool_(False)}

        state, m = jax.lax.cond(due, retrain, skip, state)
        m["rm_heldout_accuracy"] = jnp.where(hold["decided"] > 0, hold["accuracy"], nan)
        return state, m

    train = train_on_policy if mode == "on_policy" else train_off_policy
    return RewardHook(init=init, train=train, reward=reward)


def linear_reward(spec: RewardSpec) -> RewardHook:
    """A fixed weighted sum as a RewardHook whose weights live in the state (so a grid of
    weights runs as one vmapped program): reward = sum_k w_k * oriented f_k."""
    sign = jnp.asarray(spec.sign)

    def init(key):
        return {"weights": jnp.ones(len(spec), jnp.float32)}

    def train(state, key, fresh, sample=None, ready=True):
        return state, {}

    def reward(state, obs, action, factors):
        return jnp.sum(factors * state["weights"] * sign, axis=-1)

    return RewardHook(init=init, train=train, reward=reward)


__all__ = [
    "Comparator", "Moments", "RewardHook", "RewardMLP", "RewardModelConfig",
    "RewardModelState", "Steps", "all_pairs", "factor_sigma", "features", "linear_reward",
    "make_comparator", "make_reward_model", "minibatch_labels", "moments_init",
    "moments_std", "moments_update", "pair_loss", "random_partners",
]
