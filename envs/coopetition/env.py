"""One jittable env class for every coopetition game; the games differ only in params.

Step order of the reference (envs/base.py:249-291): clip actions to [0, e_i], append them
to the history, update trust from the old state, reward of the selected mode with the
UPDATED trust, times the collective-action multiplier, times the reciprocity multiplier,
t += 1, truncate at max_steps, terminate on the game's trust rule.

Protocol: multi-agent (leading agent axis), action (n, 1) in [0, e_i], reward (n, 1)
(one objective, "payoff"). Every mechanism is numeric in `CoopParams`, including the
reward mode (`reward_weights` over private / integrated / cooperative), so a sweep over
modes or the private<->cooperative mixing weight is one vmap over params.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from envs.coopetition import mechanics as M
from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box

HISTORY = 10  # rows of action history kept: loyalty horizon 10 >= every reciprocity k


@struct.dataclass
class CoopParams:
    """Every setting of a game (arrays so they can be vmapped). Built by envs.coopetition.games."""

    endowment: jax.Array  # (n,)
    alpha: jax.Array  # (n,) bargaining shares, sum 1
    baseline: jax.Array  # (n,) trust-signal baselines; also the actions shown at reset
    D: jax.Array  # (n, n) interdependence, zero diagonal
    # value creation
    theta: float = 20.0
    value_beta: float = 0.75
    power: float = 0.0  # 1: power form a^beta instead of theta ln(1 + a)
    gamma: float = 0.65
    # TR-3 technical report's payoff, an option (not the reference code's reward): with
    # team_payoff > 0 the private payoff is pi_i = omega (sum a)^team_beta / n - cost_c a_i
    team_payoff: float = 0.0
    omega: float = 25.0
    team_beta: float = 0.7
    cost_c: float = 1.0
    # trust (TR-2)
    trust_enabled: bool = True
    lambda_plus: float = 0.10
    lambda_minus: float = 0.30
    mu_R: float = 0.60
    delta_R: float = 0.03
    xi: float = 0.50
    kappa: float = 1.0
    initial_trust: float = 0.50
    initial_reputation: float = 0.0
    # reward mode: weights over (private, integrated, cooperative)
    reward_weights: jax.Array = struct.field(
        default_factory=lambda: jnp.array([0.0, 1.0, 0.0], jnp.float32))
    # collective action (TR-3); the defaults switch it off
    free_rider_threshold: float = 0.0
    free_rider_penalty: float = 1.0
    loyalty_threshold: float = 2.0
    loyalty_bonus_rate: float = 0.0
    coordination_threshold: float = 2.0
    coordination_bonus: float = 0.0
    # reciprocity (TR-4); lambda_R = 0 switches it off
    rho_0: float = 1.0
    rec_eta: float = 1.0
    rec_kappa: float = 1.0
    memory_k: int = 5
    lambda_R: float = 0.0
    rec_omega: float = 0.6
    # termination: sum(mask * T) / sum(mask) < threshold (threshold -1: never)
    term_mask: jax.Array | None = None
    term_threshold: float = -1.0
    max_steps: int = 100


@struct.dataclass
class CoopState:
    actions: jax.Array  # (n,) last actions (baselines at reset)
    trust: jax.Array  # (n, n)
    reputation: jax.Array  # (n, n)
    history: jax.Array  # (HISTORY, n) last actions, newest last
    t: jax.Array  # steps taken
    coop_sum: jax.Array  # sum over this episode's steps of the mean cooperation rate
    welfare_sum: jax.Array  # sum over this episode's steps of the summed private payoffs


class CoopetitionEnv(Env):
    """A coopetition game with `num_agents` agents (see module docstring)."""

    reward_spec = RewardSpec(("payoff",))
    observes_state = True

    def __init__(self, num_agents: int, params: CoopParams, name: str = "Coopetition"):
        self.num_agents = int(num_agents)
        self._params = params
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def default_params(self) -> CoopParams:
        return self._params

    @property
    def obs_dim(self) -> int:
        n = self.num_agents
        return n * n + 4 * n  # reference Parallel layout, see `observe`

    # -- protocol --------------------------------------------------------------------
    def reset_state(self, key: jax.Array, params: CoopParams) -> CoopState:
        n = self.num_agents
        eye = jnp.eye(n, dtype=bool)
        T0 = jnp.where(params.trust_enabled, jnp.clip(params.initial_trust, 0.0, 1.0), 1.0)
        R0 = jnp.where(params.trust_enabled, jnp.clip(params.initial_reputation, 0.0, 1.0), 0.0)
        T = jnp.where(eye, 1.0, jnp.full((n, n), T0, jnp.float32))
        R = jnp.where(eye, 0.0, jnp.full((n, n), R0, jnp.float32))
        return CoopState(jnp.asarray(params.baseline, jnp.float32), T, R,
                         jnp.zeros((HISTORY, n), jnp.float32), jnp.int32(0), jnp.float32(0),
                         jnp.float32(0))

    def reset(self, key: jax.Array, params: CoopParams) -> tuple[jax.Array, CoopState]:
        state = self.reset_state(key, params)
        return self.observe(state, params), state

    def step(self, key: jax.Array, state: CoopState, action: jax.Array,
             params: CoopParams) -> StepResult:
        p = params
        n = self.num_agents
        a = jnp.clip(jnp.reshape(action, (n,)).astype(jnp.float32), 0.0, p.endowment)
        history = jnp.concatenate([state.history[1:], a[None]], axis=0)
        count = state.t + 1

        T, R = M.trust_update(state.trust, state.reputation, a, p.baseline, p.D, p.lambda_plus,
                              p.lambda_minus, p.mu_R, p.delta_R, p.xi, p.kappa)
        T = jnp.where(p.trust_enabled, T, state.trust)
        R = jnp.where(p.trust_enabled, R, state.reputation)

        pi = jnp.where(p.team_payoff > 0, M.team_payoffs(a, p.omega, p.team_beta, p.cost_c),
                       M.private_payoffs(a, p.endowment, p.alpha, p.theta, p.value_beta,
                                         p.power, p.gamma))
        U = M.integrated_utilities(pi, M.effective_weights(p.D, T, R))
        reward = M.mix_rewards(pi, U, p.reward_weights)

        rates = a / p.endowment
        loyalty = jnp.clip(M.window_mean(history / p.endowment, count, HISTORY), 0.0, 1.0)
        reward = reward * M.collective_multiplier(
            rates, loyalty, p.free_rider_threshold, p.free_rider_penalty, p.loyalty_threshold,
            p.loyalty_bonus_rate, p.coordination_threshold, p.coordination_bonus)
        memory = M.window_mean(history, count, jnp.minimum(p.memory_k, count - 1))
        reward = reward * M.reciprocity_multiplier(
            a, memory, T, p.D, p.rho_0, p.rec_eta, p.rec_kappa, p.lambda_R, p.rec_omega,
            jnp.mean(p.endowment))

        welfare = jnp.sum(pi)
        new = CoopState(a, T, R, history, count, state.coop_sum + jnp.mean(rates),
                        state.welfare_sum + welfare)
        mask = jnp.ones((n, n)) if p.term_mask is None else p.term_mask
        watched = jnp.sum(mask * T) / jnp.maximum(jnp.sum(mask), 1e-9)
        terminated = watched < p.term_threshold
        truncated = count >= p.max_steps
        info = {
            "private_payoff": pi,
            "integrated_utility": U,
            "cooperation": rates,
            "welfare": welfare,
            "mean_trust": M.mean_offdiag(T),
            # read where an episode ends: means over the episode's steps, trust at its end
            "episode_metrics": {
                "cooperation": new.coop_sum / count,
                "welfare": new.welfare_sum / count,
                "final_trust": M.mean_offdiag(T),
            },
        }
        return StepResult(self.observe(new, p), new, reward[:, None], terminated, truncated,
                          info)

    # -- observations ------------------------------------------------------------------
    def observe(self, state: CoopState, params: CoopParams) -> jax.Array:
        """Per-agent rows [a_i, a_-i, T flat, R[i, :], mean_k R[j, k] for j != i, D[i, :],
        t / max_steps]: the reference's PettingZoo layout with full trust visibility
        (AbstractCoopetitionEnv.get_observation_for)."""
        n = self.num_agents
        idx = jnp.arange(n)
        others = jnp.array([[j for j in range(n) if j != i] for i in range(n)], jnp.int32)
        others = others.reshape(n, n - 1)
        a = state.actions
        rep_mean = jnp.mean(state.reputation, axis=1)
        t_frac = jnp.broadcast_to(state.t / params.max_steps, (n, 1)).astype(jnp.float32)
        return jnp.concatenate([
            a[:, None], a[others], jnp.broadcast_to(state.trust.reshape(-1), (n, n * n)),
            state.reputation[idx], rep_mean[others], params.D[idx], t_frac,
        ], axis=1).astype(jnp.float32)

    def global_obs(self, state: CoopState, params: CoopParams) -> jax.Array:
        """The reference Gym observation [a, T flat, R flat, D flat, t] (length n + 3n^2 + 1)."""
        return jnp.concatenate([state.actions, state.trust.reshape(-1),
                                state.reputation.reshape(-1), params.D.reshape(-1),
                                jnp.asarray(state.t, jnp.float32)[None]]).astype(jnp.float32)

    def observation_space(self, params: CoopParams) -> Box:
        """Actions lie in [0, max e]; trust, reputation, D and t / max_steps in [0, 1]."""
        high = max(float(np.max(np.asarray(params.endowment))), 1.0)
        return Box(0.0, high, (self.num_agents, self.obs_dim))

    def action_space(self, params: CoopParams) -> Box:
        high = np.asarray(params.endowment, np.float32).reshape(self.num_agents, 1)
        return Box(np.zeros_like(high), high, (self.num_agents, 1))


def weights_for(mode: str | float) -> jax.Array:
    """`reward_weights` for a mode name or a private<->cooperative mixing weight."""
    return M.mode_weights(mode)


__all__ = ["HISTORY", "CoopParams", "CoopState", "CoopetitionEnv", "weights_for"]


