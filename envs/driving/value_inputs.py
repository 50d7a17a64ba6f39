"""CaRL's 11 value-only measurements from a DrivingState: inputs for the critic only.

CaRL (autonomousvision/CaRL, commit 5abef66) gives its value head 11 measurements
the policy never sees (rl_config.py:65-66: use_value_measurements = True,
num_value_measurements = 11), built in team_code_roach/env_agent.py
(EnvAgent.preprocess_observation, the block after "Add remaining time till
timeout") and concatenated to the extractor's features in model.py (PPOPolicy.build:
value head input features_dim + num_value_measurements). In its order, with its
normalisation, and what this simulator uses for each:

  #  CaRL                                       here (DrivingState, DrivingParams)
  0  remaining_time = (eval_time - t) / eval_time  (T - t) / T, T = the time limit in
     (eval_time 1200 s, its timeout)             force under the env's rules: carl
                                                 min(carl_eval_time_s, max_steps dt),
                                                 leaderboard min(route timeout, max_steps
                                                 dt), others max_steps dt
  1  time_till_blocked = (90 s - time below      (B - still dt) / B, B = the blocked limit
     0.1 m/s) / 90 s, 1 while moving             in force (blocked_s; lb_blocked_s under
     (reward/criteria/blocked.py:17, 25, 32)     the leaderboard rules)
  2  perc_route_left = len(remaining dense       remaining route metres / 100 (the dense
     route points) / 100 (1 m apart:             plan's points are ~1 m apart, so the
     nav_planner.py interpolate_trajectory       same number)
     hop_resolution 1.0; RoutePlanner.run_step)
  3  remaining_ttc_penalty_ticks / 500           state.ttc_ticks / 500 (the same window,
     (ttc_penalty_ticks)                         envs.driving.rewards.penalty_window)
  4-9 remaining_comfort_penalty_ticks / 500,     state.comfort_ticks / 500, same order
     one per nuPlan limit: lon. acc, lat. acc,   (simple_reward.py sets index 0..5 in
     jerk, lon. jerk, yaw rate, yaw acc          that order)
  10 lane_dist_penalty_counter / 30              state.lane_counter / 30 (may exceed 1,
     (lane_dist_penalty_time; use_perc_progress) as CaRL's)

Every quantity exists here; the differences are only where the limits come from
(CaRL's are fixed: 1200 s and 90 s; here the limits of the rule set the env runs,
which is where an episode of this env ends) and one step at an episode's start
(CaRL's blocked timer starts at its first tick, ours at reset). CaRL feeds them raw
(no running normalisation).

`observation(obs, state, params, reward, episode_end)` adds them to an observation
under mo_rl.env.VALUE_INPUTS (a vector observation becomes {"vector": obs, ...});
DrivingEnv(value_inputs=True) / make_driving(..., value_inputs=True) switch it on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from envs.driving import rewards, rules
from envs.driving.scoring import rule_set
from mo_rl.env import VALUE_INPUTS
from mo_rl.spaces import Box, Dict

NAMES = ("remaining_time", "time_till_blocked", "route_left", "ttc_ticks",
         "comfort_lon_acc", "comfort_lat_acc", "comfort_jerk", "comfort_lon_jerk",
         "comfort_yaw_rate", "comfort_yaw_acc", "lane_counter")
ROUTE_SCALE = 100.0  # m: env_agent.py "100.0 is just some constant for normalization"
VECTOR_KEY = "vector"  # a vector observation's key once value inputs are added
_BIG = 1e4  # loose upper bound of the unbounded entries (route metres / 100, lane counter)


def time_limit_steps(state: Any, params: Any, rules_in_force: str) -> jax.Array:
    """Steps after which the episode ends by time under `rules_in_force`
    (scoring.score_step: the hard cap max_steps, CaRL's eval_time, the leaderboard's
    route timeout)."""
    cap = jnp.asarray(params.max_steps, jnp.float32)
    if rules_in_force == "carl":
        return jnp.minimum(cap, params.carl_eval_time_s / params.dt)
    if rules_in_force == "leaderboard":
        timeout = rules.route_timeout_steps(params.routes.length[state.route], params.dt,
                                            params.lb_timeout_s_per_m,
                                            params.lb_timeout_delay_s)
        return jnp.minimum(cap, timeout.astype(jnp.float32))
    return cap


def value_measurements(state: Any, params: Any, rules_in_force: str) -> jax.Array:
    """float32 (11,) in NAMES order (module docstring)."""
    limit = time_limit_steps(state, params, rules_in_force)
    blocked_s = params.lb_blocked_s if rules_in_force == "leaderboard" else params.blocked_s
    rb = params.routes
    left_m = rb.length[state.route] - rb.cum[state.route, state.prog]
    return jnp.concatenate([
        jnp.stack([(limit - state.t) / limit,
                   (blocked_s - state.still * params.dt) / blocked_s,
                   left_m / ROUTE_SCALE,
                   state.ttc_ticks / rewards.CARL["ttc_ticks"]]),
        state.comfort_ticks / rewards.CARL["comfort_ticks"],
        (state.lane_counter / rewards.CARL["lane_time"])[None],
    ]).astype(jnp.float32)


def observation(obs: Any, state: Any, params: Any, reward: str, episode_end: str) -> dict:
    """`obs` with the value measurements of `state` under VALUE_INPUTS."""
    vm = value_measurements(state, params, rule_set(reward, episode_end))
    if isinstance(obs, dict):
        return {**obs, VALUE_INPUTS: vm}
    return {VECTOR_KEY: obs, VALUE_INPUTS: vm}


def space(obs_space: Any) -> Dict:
    """The observation space of `observation`'s output."""
    low = np.full(len(NAMES), -1.0, np.float32)
    high = np.ones(len(NAMES), np.float32)
    high[[NAMES.index("route_left"), NAMES.index("lane_counter")]] = _BIG
    vm = Box(low, high, (len(NAMES),))
    inner = dict(obs_space.spaces) if isinstance(obs_space, Dict) else {VECTOR_KEY: obs_space}
    return Dict({**inner, VALUE_INPUTS: vm})
