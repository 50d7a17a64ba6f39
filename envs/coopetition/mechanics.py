"""The formulas of the coopetition games as pure, jittable functions.

Facts from /work/shared/reference/coopetition.md, checked against the reference
implementation vikpant/strategic-coopetition (commit d2dffd5, paths relative to
coopetition_gym/coopetition_gym/). Every function takes arrays with the agent axis
LAST (so a batch axis in front just broadcasts) and numeric parameters, so the env
params that carry them can be vmapped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-10  # core/value_functions.py: ValueFunctionParameters.epsilon


# ---------------------------------------------------------------------------
# value creation (TR-1)
# ---------------------------------------------------------------------------
def individual_value(a: jax.Array, theta: jax.Array, beta: jax.Array,
                     power: jax.Array) -> jax.Array:
    """f(a) = theta ln(1 + a) (log form) or max(a, eps)^beta (power form, `power` > 0);
    core/value_functions.py power_value / logarithmic_value."""
    log_form = theta * jnp.log1p(jnp.maximum(a, 0.0))
    power_form = jnp.power(jnp.maximum(a, EPS), beta)
    return jnp.where(power > 0, power_form, log_form)


def synergy(a: jax.Array) -> jax.Array:
    """g(a) = (prod_i a_i)^(1/N), 0 as soon as one a_i <= eps (synergy_function)."""
    gm = jnp.exp(jnp.mean(jnp.log(jnp.maximum(a, EPS)), axis=-1))
    return jnp.where(jnp.any(a <= EPS, axis=-1), 0.0, gm)


def total_value(a: jax.Array, theta, beta, power, gamma) -> jax.Array:
    """V = sum_i f(a_i) + gamma g(a)."""
    return jnp.sum(individual_value(a, theta, beta, power), axis=-1) + gamma * synergy(a)


def private_payoffs(a: jax.Array, endowment: jax.Array, alpha: jax.Array, theta, beta,
                    power, gamma) -> jax.Array:
    """pi_i = (e_i - a_i) + f(a_i) + alpha_i gamma g(a) (core/equilibrium.py:190-203)."""
    s = gamma * synergy(a)
    return (endowment - a) + individual_value(a, theta, beta, power) + alpha * s[..., None]


# ---------------------------------------------------------------------------
# interdependence and reward modes (TR-1)
# ---------------------------------------------------------------------------
def effective_weights(D: jax.Array, trust: jax.Array, reputation: jax.Array) -> jax.Array:
    """min(T_ij, 1 - R_ij) D_ij off the diagonal (TrustState.get_effective_trust)."""
    n = D.shape[-1]
    off = 1.0 - jnp.eye(n, dtype=D.dtype)
    return jnp.minimum(trust, 1.0 - reputation) * D * off


def integrated_utilities(pi: jax.Array, weights: jax.Array) -> jax.Array:
    """U_i = pi_i + sum_{j != i} w_ij pi_j, w from `effective_weights` (or plain D
    without trust, which is the same with T = 1, R = 0)."""
    return pi + jnp.einsum("...ij,...j->...i", weights, pi)


MODES = ("private", "integrated", "cooperative")


def mode_weights(mode: str | float) -> jax.Array:
    """Weights over (private, integrated, cooperative) rewards: a mode name, or a number
    m in [0, 1] for the mix (1 - m) * private + m * cooperative."""
    if isinstance(mode, str):
        if mode not in MODES:
            raise ValueError(f"reward mode must be one of {MODES} or a mixing weight in "
                             f"[0, 1]; got {mode!r}.")
        return jnp.eye(3, dtype=jnp.float32)[MODES.index(mode)]
    m = float(mode)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"the private<->cooperative mixing weight must be in [0, 1]; got {m}.")
    return jnp.array([1.0 - m, 0.0, m], jnp.float32)


def mix_rewards(pi: jax.Array, U: jax.Array, weights: jax.Array) -> jax.Array:
    """w0 pi_i + w1 U_i + w2 mean_j U_j. The reference's "cooperative" mode averages
    integrated utilities, not private payoffs (core/equilibrium.py:571-575)."""
    coop = jnp.mean(U, axis=-1, keepdims=True)
    return weights[..., 0:1] * pi + weights[..., 1:2] * U + weights[..., 2:3] * coop


# ---------------------------------------------------------------------------
# trust and reputation (TR-2)
# ---------------------------------------------------------------------------
def trust_signal(a: jax.Array, baseline: jax.Array, kappa) -> jax.Array:
    """s_j = tanh(kappa (a_j - b_j)) in raw action units (cooperation_signal)."""
    return jnp.tanh(kappa * (a - baseline))


def trust_update(T: jax.Array, R: jax.Array, a: jax.Array, baseline: jax.Array,
                 D: jax.Array, lambda_plus, lambda_minus, mu_R, delta_R, xi, kappa
                 ) -> tuple[jax.Array, jax.Array]:
    """One step of TrustDynamicsModel.update (core/trust_dynamics.py:415-473): for every
    pair i != j, from the OLD state, with s = signal of j's action:
    s > 0: dT = lambda+ s max(0, min(1 - T, (1 - R) - T)),  dR = -delta_R R;
    s < 0: dT = lambda- s T (1 + xi D_ij),                  dR = mu_R (-s) (1 - R);
    s = 0: dT = 0, dR = -delta_R R.  T' = clip(T + dT, 0, 1 - R_old), R' = clip(R + dR, 0, 1);
    diagonal T = 1, R = 0."""
    s = trust_signal(a, baseline, kappa)[..., None, :]  # column j: signal of agent j
    room = jnp.maximum(0.0, jnp.minimum(1.0 - T, (1.0 - R) - T))
    dT = jnp.where(s > 0, lambda_plus * s * room,
                   jnp.where(s < 0, lambda_minus * s * T * (1.0 + xi * D), 0.0))
    dR = jnp.where(s < 0, mu_R * (-s) * (1.0 - R), -delta_R * R)
    T_new = jnp.clip(T + dT, 0.0, 1.0 - R)
    R_new = jnp.clip(R + dR, 0.0, 1.0)
    eye = jnp.eye(T.shape[-1], dtype=bool)
    return jnp.where(eye, 1.0, T_new), jnp.where(eye, 0.0, R_new)


def mean_offdiag(M: jax.Array) -> jax.Array:
    n = M.shape[-1]
    off = 1.0 - jnp.eye(n, dtype=M.dtype)
    return jnp.sum(M * off, axis=(-2, -1)) / (n * (n - 1))


# ---------------------------------------------------------------------------
# collective action and loyalty (TR-3)
# ---------------------------------------------------------------------------
def window_mean(history: jax.Array, count: jax.Array, window: jax.Array) -> jax.Array:
    """Mean over the last min(window, count) rows of `history` [H, n] whose newest row is
    last (rows before the episode start are ignored); 0 where that is no row."""
    H = history.shape[-2]
    w = jnp.minimum(window, count)
    mask = (jnp.arange(H) >= H - w).astype(history.dtype)
    total = jnp.einsum("h,hn->n", mask, history)
    return jnp.where(w > 0, total / jnp.maximum(w, 1), 0.0)


def collective_multiplier(rates: jax.Array, loyalty: jax.Array, free_rider_threshold,
                          free_rider_penalty, loyalty_threshold, loyalty_bonus_rate,
                          coordination_threshold, coordination_bonus) -> jax.Array:
    """Reward multiplier per agent (core/collective_action.py:251-269): x penalty if the
    cooperation rate a_i / e_i < free-rider threshold; x (1 + bonus_rate l_i) if loyalty
    l_i >= threshold; x (1 + coordination bonus) for all if every rate >= its threshold.
    TeamProduction's override is the same with threshold 0.2, penalty 0.9, no bonuses."""
    m = jnp.where(rates < free_rider_threshold, free_rider_penalty, 1.0)
    m = m * jnp.where(loyalty >= loyalty_threshold, 1.0 + loyalty_bonus_rate * loyalty, 1.0)
    coord = jnp.all(rates >= coordination_threshold, axis=-1, keepdims=True)
    return m * jnp.where(coord, 1.0 + coordination_bonus, 1.0)


def team_output(a: jax.Array, omega, beta) -> jax.Array:
    """Q = omega (sum_i a_i)^beta (envs/collective_action_envs.py team_production)."""
    return omega * jnp.power(jnp.sum(a, axis=-1), beta)


def team_payoffs(a: jax.Array, omega, beta, c) -> jax.Array:
    """pi_i = Q / n - c a_i (TR-3 team production payoff)."""
    n = a.shape[-1]
    return team_output(a, omega, beta)[..., None] / n - c * a


def loyalty_term(a: jax.Array, loyalty: jax.Array, omega, beta, c, phi_B, phi_C) -> jax.Array:
    """L_i = theta_i (phi_B mean_{j != i} pi_j + phi_C c a_i) (loyalty_modifier)."""
    pi = team_payoffs(a, omega, beta, c)
    n = a.shape[-1]
    others = (jnp.sum(pi, axis=-1, keepdims=True) - pi) / (n - 1)
    return loyalty * (phi_B * others + phi_C * c * a)


def nash_effort(omega: float, beta: float, c: float, n: int) -> float:
    """Symmetric Nash effort of team production, (omega beta / (c n^(2 - beta)))^(1/(1 - beta))
    (free_riding_equilibrium; two reference docstrings say omega beta / (n c): wrong)."""
    return (omega * beta / (c * n ** (2.0 - beta))) ** (1.0 / (1.0 - beta))


def social_optimum_effort(omega: float, beta: float, c: float, n: int) -> float:
    """Per-agent effort maximising the team's summed payoff: (omega beta / c)^(1/(1-beta)) / n
    (social_optimum_effort)."""
    return (omega * beta / c) ** (1.0 / (1.0 - beta)) / n


# ---------------------------------------------------------------------------
# reciprocity (TR-4)
# ---------------------------------------------------------------------------
def reciprocity_multiplier(actions: jax.Array, memory: jax.Array, T: jax.Array, D: jax.Array,
                           rho_0, eta, kappa, lambda_R, omega, mean_endowment) -> jax.Array:
    """max(0.01, 1 + U_rec_i / mean e) with U_rec_i = lambda_R sum_{j != i} T_ij (1 + omega
    D_ij) rho_0 D_ij^eta tanh(kappa (a_j - memory_j)); `memory` is the mean of j's last
    min(k, t - 1) actions INCLUDING the current one (0 at t = 1), and T the raw post-update
    trust (envs/reciprocity_envs.py:306-356)."""
    n = actions.shape[-1]
    off = 1.0 - jnp.eye(n, dtype=T.dtype)
    phi = jnp.tanh(kappa * (actions - memory))[..., None, :]
    rho = rho_0 * jnp.power(D, eta)
    u = lambda_R * jnp.sum(off * T * (1.0 + omega * D) * rho * phi, axis=-1)
    return jnp.maximum(0.01, 1.0 + u / mean_endowment)
