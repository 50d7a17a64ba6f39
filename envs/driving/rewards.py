"""CaRL's and Roach's rewards as pure functions of one step (checked against their code).

CaRL: autonomousvision/CaRL team_code_roach/reward/simple_reward.py (SimpleReward.get,
compute_comfort_penalty, does_agent_violate_ttc) and team_code_roach/rl_config.py
(GlobalConfig), commit 5abef66. Roach: zhejz/carla-roach 00d6f55,
carla_gym/core/task_actor/ego_vehicle/reward/valeo_action.py ("VA") and
terminal/valeo_no_det_px.py ("VT").

CaRL per step: r = dRC% * speed * ttc * comfort * centring (0 while outside the
route lanes) - terminal_hint on collision or red light (use_termination_hint and
use_rl_termination_hint both True, terminal_hint 1.0, terminal_reward 0.0: a
constant, although rl_config's comment speaks of a speed-dependent penalty).
* speed: max(0, 1 - (v - limit) / 2.23) when v > limit (max_overspeed_value_threshold).
* TTC: x0.5 while a violation is younger than ttc_penalty_ticks = 500 steps
  (the step of the violation included).
* comfort: 1 - 0.5 n / 6 (comfort_penalty_factor), n = number of the 6 nuPlan
  limits broken within the last comfort_penalty_ticks = 500 steps; the
  quantities are Savitzky-Golay filtered over a 15-step history of
  finite-difference accelerations and yaw (window 8 for accelerations, 15 for
  jerks, 5 for yaw rate / acceleration), evaluated only once the history holds
  >= 8 steps. Filtering is linear, so each filtered value at the newest step
  is a fixed dot product with the history: COMFORT_COEF below is computed with
  scipy.signal.savgol_filter itself, per history length.
* centring: outside junctions a counter counts steps with |lateral offset from
  the nearest lane centre| > 0.5 m (lane_distance_violation_threshold; one step
  back down otherwise); once it exceeds lane_dist_penalty_time = 30 steps the
  factor is 0.5. (carl.md's 1 - clip(lat / (w / 2)) is from another version.)

Roach: r = r_speed + r_position + r_rotation + r_action + r_terminal (VA:101) with
r_speed = 1 - |v - v_des| / 6 (VA:77-82), v_des = min(6, hazard speeds) (VA:49-75),
r_position = -lat / 2 (VA:93), r_rotation = -|yaw error| rad (VA:99),
r_action = -0.1 if the steering command changed by > 0.01 (VA:33-36);
r_terminal = -1 on any episode end, minus the speed on collision / red light /
stop sign (VT:64-71).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# --------------------------------------------------------------------------- CaRL
CARL = dict(
    overspeed=2.23,  # rl_config max_overspeed_value_threshold
    ttc_ticks=500,  # ttc_penalty_ticks
    ttc_times=(0.1, 0.3, 0.5, 0.7, 0.9),  # np.arange(1, 10, ttc_resolution=2) * 0.1 s
    ttc_min_speed=0.1,  # does_agent_violate_ttc stopped_speed_threshold
    comfort_ticks=500,  # comfort_penalty_ticks
    comfort_factor=0.5,  # comfort_penalty_factor
    lane_threshold=0.5,  # lane_distance_violation_threshold [m]
    lane_time=30,  # lane_dist_penalty_time = int(3.0 * frame_rate)
    lane_factor=0.5,  # dist_to_centerline_penalty once the counter exceeds lane_time
    terminal_hint=1.0,  # terminal_hint (use_termination_hint, use_rl_termination_hint)
    off_road_share=0.95,  # off_road_term_perc
    eval_time=1200.0,  # s; `timeout` is part of `termination` in SimpleReward.get
    blocked_s=90.0,  # reward/criteria/blocked.py Blocked(below_threshold_max_time=90.0)
)
# nuPlan comfort limits (rl_config): lon. accel, |lat. accel|, |jerk|, |lon. jerk|,
# |yaw rate|, |yaw accel|
COMFORT = dict(lon_acc_min=-4.05, lon_acc_max=2.40, lat_acc=4.89, jerk=8.37, lon_jerk=4.13,
               yaw_rate=0.95, yaw_acc=1.93)
HISTORY = 15  # deque(maxlen=15)
MIN_HISTORY = 8  # comfort is evaluated from 8 entries on


def _comfort_coefficients(dt: float = 0.1) -> np.ndarray:
    """(HISTORY + 1, 6, HISTORY) float32: row n holds, for a history of n entries stored
    oldest-to-newest in the LAST n of HISTORY slots, the weights that give the newest
    filtered lon. acc, lat. acc, jerk (of |a|), lon. jerk, yaw rate and yaw accel."""
    from scipy.signal import savgol_filter

    out = np.zeros((HISTORY + 1, 6, HISTORY), np.float64)
    for n in range(MIN_HISTORY, HISTORY + 1):
        eye = np.eye(n)
        acc = savgol_filter(eye, polyorder=2, window_length=min(8, n), axis=0)  # (n, n) col j
        jerk = savgol_filter(acc, polyorder=2, deriv=1, delta=dt, window_length=min(15, n),
                             axis=0)
        yaw_rate = savgol_filter(eye, polyorder=2, deriv=1, delta=dt,
                                 window_length=min(5, n), axis=0)
        yaw_acc = savgol_filter(eye, polyorder=3, deriv=2, delta=dt,
                                window_length=min(5, n), axis=0)
        rows = np.stack([acc[-1], acc[-1], jerk[-1], jerk[-1], yaw_rate[-1], yaw_acc[-1]])
        out[n, :, HISTORY - n:] = rows
    return out.astype(np.float32)


COMFORT_COEF = _comfort_coefficients()


def comfort_filtered(hist: jax.Array, n: jax.Array) -> jax.Array:
    """(6,) CaRL's filtered lon. acc, lat. acc, jerk, lon. jerk, yaw rate, yaw accel at the
    newest step. hist (4, HISTORY): lon. acc, lat. acc, |acc|, unwrapped yaw, oldest
    first (unused leading slots may hold anything: their weights are 0); n = entries held.
    """
    w = jnp.asarray(COMFORT_COEF)[jnp.minimum(n, HISTORY)]  # (6, H)
    src = hist[jnp.array([0, 1, 2, 0, 3, 3])]  # the series each check filters
    return jnp.sum(w * src, axis=-1)


def comfort_broken(hist: jax.Array, n: jax.Array) -> jax.Array:
    """(6,) bool: which of CaRL's 6 comfort checks fail at the newest step (none before
    MIN_HISTORY entries)."""
    f = comfort_filtered(hist, n)
    c = COMFORT
    broken = jnp.stack([(f[0] > c["lon_acc_max"]) | (f[0] < c["lon_acc_min"]),
                        jnp.abs(f[1]) > c["lat_acc"], jnp.abs(f[2]) > c["jerk"],
                        jnp.abs(f[3]) > c["lon_jerk"], jnp.abs(f[4]) > c["yaw_rate"],
                        jnp.abs(f[5]) > c["yaw_acc"]])
    return broken & (n >= MIN_HISTORY)


def penalty_window(remaining: jax.Array, violated: jax.Array, ticks: int) -> tuple[jax.Array,
                                                                                  jax.Array]:
    """CaRL's penalty windows: count down, re-arm on a violation, active while > 0.
    Returns (active, remaining) (simple_reward.py TTC block; comfort ticks alike)."""
    remaining = jnp.maximum(remaining - 1, 0)
    remaining = jnp.where(violated, ticks, remaining)
    return remaining > 0, remaining


def carl_speed_factor(v: jax.Array, limit: jax.Array) -> jax.Array:
    return jnp.where(v > limit, jnp.maximum(0.0, 1.0 - (v - limit) / CARL["overspeed"]), 1.0)


def carl_centring(counter: jax.Array, lat: jax.Array, in_junction: jax.Array,
                  threshold: float = CARL["lane_threshold"],
                  time: int = CARL["lane_time"]) -> tuple[jax.Array, jax.Array]:
    """(factor, counter): the counter moves only outside junctions (simple_reward.py
    'Soft penalty 1')."""
    up = jnp.abs(lat) > threshold
    new = jnp.where(up, counter + 1, jnp.maximum(counter - 1, 0))
    counter = jnp.where(in_junction, counter, new)
    factor = jnp.where(~in_junction & (counter > time), CARL["lane_factor"], 1.0)
    return factor, counter


def carl_reward(d_rc: jax.Array, speed: jax.Array, ttc: jax.Array, n_comfort: jax.Array,
                centring: jax.Array, outside_lanes: jax.Array, hint_event: jax.Array,
                hint: float | jax.Array = CARL["terminal_hint"]) -> jax.Array:
    """One step of CaRL's simple reward (use_single_reward)."""
    comfort = 1.0 - CARL["comfort_factor"] * n_comfort / 6.0
    progress = jnp.where(outside_lanes, 0.0, d_rc) * speed * jnp.where(ttc, 0.5, 1.0)
    return progress * comfort * centring - hint * hint_event


# --------------------------------------------------------------------------- Roach
ROACH_TL_OFFSET = 0.8 * 0.5 * 4.6  # VA:24 -0.8 * extent.x (sim.VEH_LEN = 4.6 m)
ROACH = dict(max_speed=6.0, proximity=9.5, veh_gap=8.0, light_gap=5.0, ramp=5.0,
             light_dist=18.0, same_heading_deg=150.0, ahead_deg=45.0, lat_dist=3.5,
             blocked_s=90.0, ped_gap=6.0, ped_angle=162.0, stop_gap=5.0)
# walkers: VA:45, 55-57 (ramp from 6 m) and hazard_actor.py:31-45 (on the road, within
# 9.5 m, within 162 / (clip(d, 1.5, 10.5) + 0.3) deg ahead); stop signs: VA:64-73 (the
# stop sign the ego is affected by, until its stop is completed, ramp from 5 m)


def roach_desired_speed(veh_rel: jax.Array, veh_cos: jax.Array, veh_active: jax.Array,
                        light_dist: jax.Array, light_stop: jax.Array,
                        ped_rel: jax.Array | None = None, ped_on_road: jax.Array | None = None,
                        stop_dist: jax.Array | float = jnp.inf,
                        stop_target: jax.Array | bool = False) -> jax.Array:
    """v_des (VA:49-75): 6 m/s, ramped to 0 over 5 m by the first hazard vehicle within
    9.5 m (heading within 150 deg, within 45 deg ahead; hazard_actor.py:4-28) from 8 m,
    by a red / yellow light from 5 m, by a walker on the road (see ROACH) from 6 m and
    by an uncompleted stop sign from 5 m. veh_rel (N, 2) / ped_rel (W, 2): ego-frame
    offsets (the nearest hazard is used where Roach takes the first in its list)."""
    r = ROACH
    d = jnp.linalg.norm(veh_rel, axis=-1)
    ang = jnp.abs(jnp.degrees(jnp.arctan2(veh_rel[:, 1], veh_rel[:, 0])))
    hazard = (veh_active & (veh_cos >= jnp.cos(jnp.deg2rad(r["same_heading_deg"])))
              & (d <= r["proximity"]) & ((ang < r["ahead_deg"]) | (d < 0.001)))
    d_veh = jnp.min(jnp.where(hazard, d, jnp.inf))

    def ramp(dist, gap):
        return r["max_speed"] * jnp.clip(dist - gap, 0.0, r["ramp"]) / r["ramp"]

    v_veh = jnp.where(jnp.isfinite(d_veh), ramp(d_veh, r["veh_gap"]), r["max_speed"])
    v_light = jnp.where(light_stop, ramp(light_dist, r["light_gap"]), r["max_speed"])
    v = jnp.minimum(r["max_speed"], jnp.minimum(v_veh, v_light))
    if ped_rel is not None:
        dp = jnp.linalg.norm(ped_rel, axis=-1)
        ang_p = jnp.abs(jnp.degrees(jnp.arctan2(ped_rel[:, 1], ped_rel[:, 0])))
        lim = r["ped_angle"] / (jnp.clip(dp, 1.5, 10.5) + 0.3)
        ped = ped_on_road & (dp <= r["proximity"]) & ((ang_p < lim) | (dp < 0.001))
        d_ped = jnp.min(jnp.where(ped, dp, jnp.inf), initial=jnp.inf)
        v = jnp.minimum(v, jnp.where(jnp.isfinite(d_ped), ramp(d_ped, r["ped_gap"]),
                                     r["max_speed"]))
    return jnp.minimum(v, jnp.where(stop_target, ramp(stop_dist, r["stop_gap"]),
                                    r["max_speed"]))


def roach_lateral_done(lat: jax.Array, last_lat: jax.Array) -> jax.Array:
    """VT:32-36: the lateral distance to the route exceeds max(3.5 m, last step's) by
    more than 1 cm, unless it jumped by > 0.8 m in one step (threshold lat + 0.5)."""
    thresh = jnp.where(lat - last_lat > 0.8, lat + 0.5, jnp.maximum(ROACH["lat_dist"], last_lat))
    return lat > thresh + 1e-2


def roach_reward(v: jax.Array, v_des: jax.Array, lat: jax.Array, yaw_err: jax.Array,
                 steer_changed: jax.Array, done: jax.Array, fatal: jax.Array,
                 terminal: float | jax.Array = -1.0) -> jax.Array:
    """VA:77-101 with VT:64-71: `done` = any Roach episode end, `fatal` = collision, red
    light or stop sign (then the speed is subtracted too)."""
    r_speed = 1.0 - jnp.abs(v - v_des) / ROACH["max_speed"]
    r_terminal = jnp.where(done, terminal, 0.0) - jnp.where(fatal, v, 0.0)
    return (r_speed - jnp.abs(lat) / 2.0 - jnp.abs(yaw_err) - 0.1 * steer_changed
            + r_terminal)
