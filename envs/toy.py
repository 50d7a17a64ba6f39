"""Tiny JAX envs with exactly known answers (for tests and the first demo).

* Chain              scalar (K = 1) episodic chain; closed-form Q*.
* PreorderedShortcut ("safety", "progress") with "safety > progress": the
                     lexicographic optimum (walk) differs from the weighted-sum
                     optimum with unit weights (risky shortcut).
* TailBandit         one step, "same mean, different tails": two actions with
                     equal mean safety, one with a rare catastrophic tail and a
                     slightly higher progress, so mean-based learners prefer it.

All observations are float32 one-hot / constant vectors, actions Discrete.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete


@struct.dataclass
class PosState:
    pos: jax.Array
    time: jax.Array


# ---------------------------------------------------------------------------
@struct.dataclass
class ChainParams:
    exit_reward: float = 0.1
    goal_reward: float = 1.0
    max_steps: int = 100


class Chain(Env):
    """States 0..n-1, start at 0, goal n-1 (terminal).

    Action 0 ("exit"): terminate now with reward `exit_reward`.
    Action 1 ("right"): move to s+1, reward 0, except entering the goal gives
    `goal_reward` and terminates.

    With discount gamma < 1, for s in 0..n-2 (closed form, `q_star`):
        Q*(s, exit)  = exit_reward
        Q*(s, right) = max(gamma**(n-2-s) * goal_reward, gamma * exit_reward)
                       (for s = n-2 just goal_reward: the step enters the goal)
    (walking on then exiting is worth gamma * exit_reward), so the optimal
    policy walks right iff goal_reward * gamma**(n-2-s) > exit_reward.
    Defaults n=10, gamma=0.99: V*(0) = 0.99**8 = 0.92274680.
    Short-sighted learners (gamma=0.5) should exit at states 0..4.
    """

    reward_spec = RewardSpec(names=("reward",), low=(0.0,), high=(1.0,))

    def __init__(self, n: int = 10):
        if n < 2:
            raise ValueError(f"Chain needs n >= 2 states (start and goal); got n={n}.")
        self.n = int(n)

    @property
    def default_params(self) -> ChainParams:
        return ChainParams()

    def obs(self, pos: jax.Array) -> jax.Array:
        return jax.nn.one_hot(pos, self.n, dtype=jnp.float32)

    def reset(self, key, params: ChainParams):
        state = PosState(jnp.int32(0), jnp.int32(0))
        return self.obs(state.pos), state

    def step(self, key, state: PosState, action, params: ChainParams) -> StepResult:
        right = action == 1
        pos = jnp.where(right, jnp.minimum(state.pos + 1, self.n - 1), state.pos)
        at_goal = right & (pos == self.n - 1)
        reward = jnp.where(right, jnp.where(at_goal, params.goal_reward, 0.0), params.exit_reward)
        terminated = ~right | at_goal
        new = PosState(pos, state.time + 1)
        truncated = new.time >= params.max_steps
        return StepResult(
            self.obs(pos),
            new,
            jnp.reshape(reward, (1,)).astype(jnp.float32),
            terminated,
            truncated,
            {},
        )

    def q_star(self, params: ChainParams, gamma: float) -> np.ndarray:
        """Closed-form Q* of shape (n-1, 2) for the non-terminal states 0..n-2."""
        s = np.arange(self.n - 1)
        right = params.goal_reward * gamma ** (self.n - 2 - s)
        right[:-1] = np.maximum(right[:-1], gamma * params.exit_reward)
        return np.stack([np.full(self.n - 1, params.exit_reward), right], axis=1)

    def observation_space(self, params: ChainParams) -> Box:
        return Box(0.0, 1.0, (self.n,), jnp.float32)

    def action_space(self, params: ChainParams) -> Discrete:
        return Discrete(2)


# ---------------------------------------------------------------------------
@struct.dataclass
class ShortcutParams:
    step_cost: float = 1.0
    goal_bonus: float = 10.0
    crash_prob: float = 0.25
    crash_penalty: float = 10.0
    max_steps: int = 50


class PreorderedShortcut(Env):
    """A corridor 0..length (goal = length, terminal), start at 0.

    Action 0 ("walk"): pos+1; progress -step_cost, plus goal_bonus on entering
    the goal (terminates); safety 0.
    Action 1 ("shortcut"): jump to the goal (terminates); progress
    goal_bonus - step_cost; safety -crash_penalty with probability crash_prob,
    else 0 (a bad tail).

    Undiscounted returns (safety, progress) from position p, defaults
    (length 6, cost 1, bonus 10, crash 0.25 x 10):
        always walk        : (0, 4 + p)         deterministic
        shortcut now       : (-2.5, 9) in mean; safety is -10 w.p. 0.25
    * Lexicographic optimum ("safety > progress", on expected values and also
      by first-order stochastic dominance of safety): walk everywhere,
      V(0) = (0, 4).
    * Weighted-sum optimum with unit weights: shortcut at p in {0, 1, 2}
      (6.5 > 4 + p), walk at p in {3, 4, 5}; from the start value 6.5 with
      return (-2.5, 9) (vs 4 for walking).
    """

    reward_spec = RewardSpec(
        names=("safety", "progress"),
        relations=("safety > progress",),
        low=(-10.0, -1.0),
        high=(0.0, 9.0),
    )

    def __init__(self, length: int = 6):
        if length < 2:
            raise ValueError(f"PreorderedShortcut needs length >= 2; got {length}.")
        self.length = int(length)

    @property
    def default_params(self) -> ShortcutParams:
        return ShortcutParams()

    def obs(self, pos: jax.Array) -> jax.Array:
        return jax.nn.one_hot(pos, self.length + 1, dtype=jnp.float32)

    def reset(self, key, params: ShortcutParams):
        state = PosState(jnp.int32(0), jnp.int32(0))
        return self.obs(state.pos), state

    def step(self, key, state: PosState, action, params: ShortcutParams) -> StepResult:
        shortcut = action == 1
        pos = jnp.where(shortcut, self.length, jnp.minimum(state.pos + 1, self.length))
        at_goal = pos == self.length
        crash = shortcut & jax.random.bernoulli(key, params.crash_prob)
        safety = jnp.where(crash, -params.crash_penalty, 0.0)
        progress = -params.step_cost + jnp.where(at_goal, params.goal_bonus, 0.0)
        new = PosState(pos, state.time + 1)
        reward = jnp.stack([safety, progress]).astype(jnp.float32)
        return StepResult(self.obs(pos), new, reward, at_goal, new.time >= params.max_steps, {})

    def observation_space(self, params: ShortcutParams) -> Box:
        return Box(0.0, 1.0, (self.length + 1,), jnp.float32)

    def action_space(self, params: ShortcutParams) -> Discrete:
        return Discrete(2)


# ---------------------------------------------------------------------------
@struct.dataclass
class TailBanditParams:
    steady_safety: float = -1.0
    tail_prob: float = 0.05
    tail_value: float = -20.0
    gamble_progress: float = 0.1
    reckless_safety: float = -3.0
    reckless_progress: float = 1.0


class TailBandit(Env):
    """One-step bandit, rewards (safety, progress), "safety > progress".

    Exact distributions with the defaults:
        action 0 "steady"  : safety -1 (always)                        progress 0
        action 1 "gamble"  : safety 0 w.p. 0.95, -20 w.p. 0.05 (mean -1) progress 0.1
        action 2 "reckless": safety -3 (always)                        progress 1
    Mean safety ties actions 0 and 1, so a mean-based lexicographic learner
    (e.g. IQN on expectations) picks 1 for its extra progress; any tail-aware
    criterion (CVaR_alpha of safety for alpha <= 0.05, or quantile dominance at
    low quantiles) picks 0. Weighted sum (1, 1): -1, -0.9, -2 -> action 1.
    Action 2 is dominated on safety under every criterion.
    """

    reward_spec = RewardSpec(
        names=("safety", "progress"),
        relations=("safety > progress",),
        low=(-20.0, 0.0),
        high=(0.0, 1.0),
    )

    @property
    def default_params(self) -> TailBanditParams:
        return TailBanditParams()

    def reset(self, key, params: TailBanditParams):
        return jnp.ones((1,), jnp.float32), jnp.int32(0)

    def step(self, key, state, action, params: TailBanditParams) -> StepResult:
        tail = jax.random.bernoulli(key, params.tail_prob)
        # the gamble's non-tail value keeps its mean equal to steady_safety
        gamble_safety = jnp.where(
            tail,
            params.tail_value,
            (params.steady_safety - params.tail_prob * params.tail_value)
            / (1.0 - params.tail_prob),
        )
        safety = jnp.stack([params.steady_safety, gamble_safety, params.reckless_safety])[action]
        progress = jnp.stack([jnp.float32(0.0), params.gamble_progress, params.reckless_progress])[
            action
        ]
        reward = jnp.stack([safety, progress]).astype(jnp.float32)
        return StepResult(
            jnp.ones((1,), jnp.float32),
            state + 1,
            reward,
            jnp.array(True),
            jnp.array(False),
            {},
        )

    def observation_space(self, params: TailBanditParams) -> Box:
        return Box(0.0, 1.0, (1,), jnp.float32)

    def action_space(self, params: TailBanditParams) -> Discrete:
        return Discrete(3)
