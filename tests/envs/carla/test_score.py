"""score.step_state against the JAX simulator: the same world must give the same step.

The simulator's own trajectories (random meta-actions in traffic, so collisions,
red lights, off-road and lane infractions happen) are fed through the CARLA
scorer as if a server had reported them; rewards, terminations, infractions,
episode metrics, observations and the carried rule memory must all match.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mo_rl  # noqa: F401  (XLA flags first)
from envs.carla.score import Observed, step_state
from envs.driving import make_driving, observe, road_users, sim


def _observed(env, state, params) -> Observed:
    """What a server would report after the simulator's step (poses, lights), with the
    collision 'sensor' left to the box-overlap default."""
    lat = getattr(state, "veh_lat", None)  # lane changes of the traffic, where present
    xy, cs = sim.veh_pose(params.map, state.veh_pt, state.veh_u, lat)
    return Observed(x=state.x, y=state.y, yaw=state.yaw, v=state.v, steer=state.steer,
                    yaw_rate=state.yaw_rate, veh_xy=xy, veh_cs=cs, veh_v=state.veh_v,
                    veh_active=state.veh_active, veh_pt=state.veh_pt, veh_u=state.veh_u,
                    veh_lat=lat,
                    lights=env.lights(state, params),
                    users=road_users.Users(**{k: getattr(state, k)
                                              for k in road_users.Users._fields}))


EVENTS = ("collision_counted", "collision_pedestrian", "red_light", "stop_sign",
          "outside_lanes", "ttc", "off_road")


def _rollout(env, params, steps: int, batch: int):
    def one(key):
        _, s0 = env.reset(key, params)

        def body(carry, k):
            s, a = carry
            # sticky random meta-actions (kept ~10 steps), so the ego leaves its lane
            k1, k2 = jax.random.split(k)
            a = jnp.where(jax.random.uniform(k1) < 0.1,
                          jax.random.randint(k2, (), 0, env.action_space(params).n), a)
            res = env.step(k, s, a, params)
            new, rew, term, trunc, info = step_state(env, s, _observed(env, res.state, params),
                                                     params)
            obs = observe.vector_obs(new, params, env.num_obs_vehicles,
                                     _observed(env, res.state, params).lights)
            out = dict(
                d_reward=jnp.max(jnp.abs(rew - res.reward)),
                d_views=jnp.max(jnp.abs(jnp.concatenate(
                    [jnp.ravel(a - b) for a, b in zip(
                        jax.tree.leaves(info["reward_views"]),
                        jax.tree.leaves(res.info["reward_views"]), strict=True)]))),
                same_flags=(term == res.terminated) & (trunc == res.truncated) & jnp.all(
                    jnp.stack([a == b for a, b in zip(jax.tree.leaves(info["infractions"]),
                                                      jax.tree.leaves(res.info["infractions"]),
                                                      strict=True)])),
                d_metrics=jnp.max(jnp.stack([jnp.abs(a - b) for a, b in zip(
                    jax.tree.leaves(info["episode_metrics"]),
                    jax.tree.leaves(res.info["episode_metrics"]), strict=True)])),
                d_obs=jnp.max(jnp.abs(obs - res.obs)),
                d_state=jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.asarray(a, jnp.float32)
                                                           - jnp.asarray(b, jnp.float32)))
                                           for a, b in zip(jax.tree.leaves(
                                               # the simulator's traffic memory (turn
                                               # draws, stop-sign stops) is not scoring
                                               new._replace(veh_turn=res.state.veh_turn,
                                                            veh_sign_done=res.state
                                                            .veh_sign_done)),
                                               jax.tree.leaves(res.state), strict=True)])),
                events=jnp.stack([res.info["infractions"][k] for k in EVENTS]),
                done=res.terminated | res.truncated)
            # restart finished episodes so every step scores a live episode
            _, s_new = env.reset(k, params)
            nxt = jax.tree.map(lambda a, b: jnp.where(out["done"], a, b), s_new, res.state)
            return (nxt, a), out

        return jax.lax.scan(body, (s0, jnp.int32(1)), jax.random.split(key, steps))[1]

    return jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(3), batch))


@pytest.mark.parametrize("reward,episode_end", [("vector", "leaderboard"), ("carl", "reward")])
def test_score_matches_the_simulator_step(reward, episode_end):
    env, params = make_driving("quick", reward=reward, action_type="discrete", max_vehicles=8,
                               num_vehicles=8, episode_end=episode_end,
                               discrete_offsets=(-7.0, 0.0, 4.5), num_walkers=8,
                               num_obstacles=4, stop_signs=True)
    out = jax.device_get(_rollout(env, params, steps=150, batch=16))
    events = out["events"].reshape(-1, len(EVENTS)).sum(0)
    # the comparison covers every kind of event (else it could not fail on them)
    assert np.all(events > 0), dict(zip(EVENTS, events, strict=True))
    assert out["same_flags"].all()
    np.testing.assert_array_less(out["d_reward"], 1e-5)
    np.testing.assert_array_less(out["d_views"], 1e-5)
    np.testing.assert_array_less(out["d_metrics"], 1e-4)
    np.testing.assert_array_less(out["d_obs"], 1e-5)
    np.testing.assert_array_less(out["d_state"], 1e-4)
