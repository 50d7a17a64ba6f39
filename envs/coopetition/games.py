"""The coopetition games: reference parameters, one builder per game.

Each builder returns (CoopetitionEnv, CoopParams); `make_game(name, reward_mode=...,
**overrides)` is what envs.make calls ("TrustDilemma-v0" etc.). Parameters are those of
the reference code (vikpant/strategic-coopetition d2dffd5, coopetition_gym/coopetition_gym/
envs/*.py; line numbers in the comments), which is what the parity test checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax.numpy as jnp
import numpy as np

from envs.coopetition.env import HISTORY, CoopetitionEnv, CoopParams, weights_for


def symmetric_D(n: int, d: float) -> np.ndarray:
    D = np.full((n, n), d, np.float32)
    np.fill_diagonal(D, 0.0)
    return D


def _params(endowment, D, *, alpha=None, baseline=None, **kw) -> CoopParams:
    e = np.asarray(endowment, np.float32)
    n = e.shape[0]
    alpha = np.full(n, 1.0 / n) if alpha is None else np.asarray(alpha, np.float64)
    if not np.isclose(alpha.sum(), 1.0, rtol=1e-3):  # PayoffParameters.__post_init__
        alpha = alpha / alpha.sum()
    baseline = e * 0.3 if baseline is None else np.asarray(baseline, np.float32)
    D = np.asarray(D, np.float32)
    if D.shape != (n, n) or np.any(np.diag(D) != 0):
        raise ValueError(f"D must be ({n}, {n}) with a zero diagonal; got {D.shape}.")
    mask = kw.pop("term_mask", None)
    return CoopParams(endowment=jnp.asarray(e), alpha=jnp.asarray(alpha, jnp.float32),
                      baseline=jnp.asarray(baseline), D=jnp.asarray(D),
                      term_mask=None if mask is None else jnp.asarray(mask, jnp.float32), **kw)


def _offdiag(n: int) -> np.ndarray:
    return 1.0 - np.eye(n, dtype=np.float32)


# ---- TR-1 / TR-2: interdependence and trust ---------------------------------------
def trust_dilemma() -> CoopParams:
    """dyadic_envs.py:102-159, 194-205."""
    return _params([100, 100], symmetric_D(2, 0.60), alpha=[0.5, 0.5], baseline=[40, 40],
                   gamma=0.70, lambda_plus=0.15, lambda_minus=0.45, mu_R=0.50, delta_R=0.02,
                   xi=0.60, kappa=1.5, initial_trust=0.50, term_mask=_offdiag(2),
                   term_threshold=0.05)


def partner_hold_up() -> CoopParams:
    """dyadic_envs.py:255-349: D = [[0, .35], [.85, 0]] (the weak agent 1 depends on 0)."""
    e = np.array([120.0, 80.0])
    mask = np.zeros((2, 2), np.float32)
    mask[1, 0] = 1.0
    return _params(e, [[0.0, 0.35], [0.85, 0.0]], alpha=[0.6, 0.4], baseline=e * 0.35,
                   gamma=0.60, lambda_plus=0.10, lambda_minus=0.35, mu_R=0.55, delta_R=0.025,
                   xi=0.70, kappa=1.2, initial_trust=0.55, term_mask=mask,
                   term_threshold=0.10)


def slcd(trust_enabled: bool = True) -> CoopParams:
    """case_study_envs.py:59-100 and core/interdependence.py:346-376 (Samsung, Sony)."""
    return _params([100, 100], [[0.0, 0.64], [0.86, 0.0]], alpha=[0.55, 0.45],
                   baseline=[30, 30], gamma=0.65, lambda_plus=0.08, lambda_minus=0.28,
                   mu_R=0.50, delta_R=0.02, xi=0.45, kappa=1.0, initial_trust=0.65,
                   trust_enabled=trust_enabled)


_RN_PHASES = {  # case_study_envs.py:137-158, core/interdependence.py:398-427
    "formation": (0.45, 0.05, [[0.0, 0.78], [0.66, 0.0]]),
    "mature": (0.70, 0.02, [[0.0, 0.51], [0.66, 0.0]]),
    "crisis": (0.30, 0.45, [[0.0, 0.35], [0.72, 0.0]]),
    "strained": (0.40, 0.35, [[0.0, 0.28], [0.65, 0.0]]),
}


def renault_nissan(phase: str = "mature") -> CoopParams:
    """case_study_envs.py:160-205 (Nissan, Renault)."""
    if phase not in _RN_PHASES:
        raise ValueError(f"RenaultNissan phase must be one of {sorted(_RN_PHASES)}; "
                         f"got {phase!r}.")
    t0, r0, D = _RN_PHASES[phase]
    return _params([90, 100], D, alpha=[0.48, 0.52], baseline=[27, 30], theta=22.0,
                   gamma=0.58, lambda_plus=0.08, lambda_minus=0.25, mu_R=0.55, delta_R=0.02,
                   xi=0.50, kappa=1.0, initial_trust=t0, initial_reputation=r0)


def platform_ecosystem(n_developers: int = 4) -> CoopParams:
    """ecosystem_envs.py:95-213: a platform (agent 0) and developers, hub-and-spoke D;
    ends when the developers' mean trust in the platform < 0.15."""
    n = 1 + n_developers
    e = np.array([150.0] + [80.0] * n_developers, np.float32)
    alpha = np.array([0.30] + [0.70 / n_developers] * n_developers, np.float32)
    D = np.zeros((n, n), np.float32)
    D[0, 1:] = 0.25
    D[1:, 0] = 0.75
    mask = np.zeros((n, n), np.float32)
    mask[1:, 0] = 1.0
    return _params(e, D, alpha=alpha, baseline=e * 0.30, theta=25.0, gamma=0.75,
                   lambda_plus=0.08, lambda_minus=0.25, mu_R=0.45, delta_R=0.02, xi=0.40,
                   kappa=1.0, initial_trust=0.60, term_mask=mask, term_threshold=0.15)


# ---- TR-3: collective action and loyalty --------------------------------------------
def _tr3(n: int, max_steps: int = 100, team: bool = False) -> CoopParams:
    """BaseTR3Env (collective_action_envs.py:338-472): the TR-1 trust-weighted integrated
    utility (D 0.55, e = 50, baseline 20) times the collective-action multiplier.
    TeamProduction overrides the multiplier: x0.9 below a 0.2 rate only (:591-603)."""
    e = np.full(n, 50.0, np.float32)
    ca = (dict(free_rider_threshold=0.2, free_rider_penalty=0.9) if team else
          dict(free_rider_threshold=0.3, free_rider_penalty=0.5, loyalty_threshold=0.6,
               loyalty_bonus_rate=0.15, coordination_threshold=0.5, coordination_bonus=0.2))
    return _params(e, symmetric_D(n, 0.55), baseline=e * 0.4, gamma=0.65, lambda_plus=0.10,
                   lambda_minus=0.25, mu_R=0.40, delta_R=0.02, xi=0.50, kappa=1.0,
                   initial_trust=0.50, max_steps=max_steps, **ca)


def team_production(n_agents: int = 4) -> CoopParams:
    return _tr3(n_agents, team=True)


def loyalty_team(n_agents: int = 4) -> CoopParams:
    return _tr3(n_agents)


def public_goods(n_agents: int = 5) -> CoopParams:
    return _tr3(n_agents)


_APACHE = {"emergence": 8, "growth": 15, "maturity": 40, "evolution": 35}  # :908-937


def apache_project(phase: str = "maturity") -> CoopParams:
    if phase not in _APACHE:
        raise ValueError(f"ApacheProject phase must be one of {sorted(_APACHE)}; got {phase!r}.")
    return _tr3(_APACHE[phase], max_steps=60)


# ---- TR-4: reciprocity ---------------------------------------------------------------
def _tr4(e, D, baseline, rec: tuple, max_steps: int = 100, initial_trust: float = 0.5
         ) -> CoopParams:
    """BaseTR4Env (reciprocity_envs.py:220-356); rec = (rho_0, eta, kappa, k, lambda_R,
    omega)."""
    rho_0, eta, kappa, k, lam, omega = rec
    if k > HISTORY:
        raise ValueError(f"reciprocity memory k={k} exceeds the kept history ({HISTORY}).")
    return _params(e, D, baseline=baseline, gamma=0.65, lambda_plus=0.10, lambda_minus=0.30,
                   mu_R=0.60, delta_R=0.03, xi=0.50, kappa=1.0, initial_trust=initial_trust,
                   rho_0=rho_0, rec_eta=eta, rec_kappa=kappa, memory_k=k, lambda_R=lam,
                   rec_omega=omega, max_steps=max_steps)


def reciprocal_dilemma() -> CoopParams:
    return _tr4([100, 100], symmetric_D(2, 0.5), [30, 30], (1.0, 1.0, 1.0, 5, 1.0, 0.6))


def gift_exchange() -> CoopParams:
    return _tr4([100, 80], [[0.0, 0.4], [0.7, 0.0]], [30, 24], (1.2, 1.5, 1.0, 3, 1.2, 0.8))


def indirect_reciprocity() -> CoopParams:
    return _tr4([100.0] * 4, symmetric_D(4, 0.4), [30.0] * 4, (0.8, 1.0, 1.0, 7, 1.5, 0.5),
                max_steps=150)


def graduated_sanction() -> CoopParams:
    return _tr4([100.0] * 6, symmetric_D(6, 0.35), [40.0] * 6, (0.6, 1.5, 0.8, 10, 1.8, 1.0),
                max_steps=200)


def apple_app_store() -> CoopParams:
    D = [[0.0, 0.3, 0.2], [0.8, 0.0, 0.15], [0.85, 0.1, 0.0]]
    return _tr4([100, 80, 60], D, [30, 24, 18], (1.0, 1.2, 0.8, 4, 1.0, 0.8), max_steps=66,
                initial_trust=0.6)


GAMES: dict[str, tuple[str, Callable[..., CoopParams]]] = {
    # name: (mechanism class, builder)
    "TrustDilemma-v0": ("trust", trust_dilemma),
    "PartnerHoldUp-v0": ("trust", partner_hold_up),
    "RenaultNissan-v0": ("trust", renault_nissan),
    "SLCD-v0": ("interdependence", slcd),
    "PlatformEcosystem-v0": ("interdependence", platform_ecosystem),
    "TeamProduction-v0": ("collective", team_production),
    "LoyaltyTeam-v0": ("collective", loyalty_team),
    "PublicGoods-v0": ("collective", public_goods),
    "ApacheProject-v0": ("collective", apache_project),
    "ReciprocalDilemma-v0": ("reciprocity", reciprocal_dilemma),
    "GiftExchange-v0": ("reciprocity", gift_exchange),
    "IndirectReciprocity-v0": ("reciprocity", indirect_reciprocity),
    "GraduatedSanction-v0": ("reciprocity", graduated_sanction),
    "AppleAppStore-v0": ("reciprocity", apple_app_store),
}


def make_game(name: str, reward_mode: str | float = "integrated", **kwargs
              ) -> tuple[CoopetitionEnv, CoopParams]:
    """Build game `name` ("TrustDilemma-v0" or "TrustDilemma"). `reward_mode`: "private",
    "integrated" (the reference's default), "cooperative", or a mixing weight m in [0, 1]
    ((1 - m) private + m cooperative). Other kwargs: builder arguments (n_agents, phase,
    trust_enabled, n_developers) or CoopParams fields (max_steps, gamma, ...)."""
    key = name if name.endswith("-v0") else f"{name}-v0"
    if key not in GAMES:
        raise KeyError(f"unknown coopetition game {name!r}; known: {sorted(GAMES)}.")
    builder = GAMES[key][1]
    fields = {f.name for f in dataclasses.fields(CoopParams)}
    field_kw = {k: v for k, v in kwargs.items() if k in fields}
    build_kw = {k: v for k, v in kwargs.items() if k not in fields}
    try:
        params = builder(**build_kw)
    except TypeError as e:
        raise TypeError(f"{key}: bad argument(s) {sorted(build_kw)} ({e}); CoopParams fields "
                        f"are {sorted(fields)}.") from None
    params = params.replace(reward_weights=weights_for(reward_mode), **field_kw)
    n = int(params.endowment.shape[0])
    return CoopetitionEnv(n, params, name=key), params
