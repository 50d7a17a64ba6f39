"""Classic control tasks in pure JAX with K = 1 reward vectors.

CartPole reproduces gymnasium CartPole-v1 (and gymnax CartPole-v1): same
constants, Euler integration, termination thresholds, reset distribution
U(-0.05, 0.05)^4, reward 1 on every step (the terminating one included) and
truncation after `params.max_steps` = 500 steps. Pendulum reproduces gymnasium
Pendulum-v1 (g = 10, 200 steps). State is float32 here (gymnasium integrates
in float64), so trajectories agree to ~1e-5 per step. FactoredPendulum is the
same task with its cost split into three ranked factors (K = 3, HERON's study).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from mo_rl.env import Env, StepResult
from mo_rl.reward import RewardSpec
from mo_rl.spaces import Box, Discrete

_UNBOUNDED = np.inf  # gymnasium CartPole-v1 leaves the velocities unbounded


@struct.dataclass
class CartPoleParams:
    gravity: float = 9.8
    masscart: float = 1.0
    masspole: float = 0.1
    length: float = 0.5  # half the pole's length
    force_mag: float = 10.0
    tau: float = 0.02
    theta_threshold: float = 12 * 2 * math.pi / 360
    x_threshold: float = 2.4
    max_steps: int = 500


@struct.dataclass
class CartPoleState:
    x: jax.Array
    x_dot: jax.Array
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


class CartPole(Env):
    """Balance a pole on a cart; actions 0 (push left) / 1 (push right)."""

    reward_spec = RewardSpec(names=("reward",), low=(0.0,), high=(1.0,))

    @property
    def name(self) -> str:
        return "CartPole-v1"

    @property
    def default_params(self) -> CartPoleParams:
        return CartPoleParams()

    @staticmethod
    def obs(state: CartPoleState) -> jax.Array:
        return jnp.stack([state.x, state.x_dot, state.theta, state.theta_dot]).astype(jnp.float32)

    def reset(self, key, params: CartPoleParams):
        s = jax.random.uniform(key, (4,), jnp.float32, -0.05, 0.05)
        state = CartPoleState(s[0], s[1], s[2], s[3], jnp.int32(0))
        return self.obs(state), state

    def step(self, key, state: CartPoleState, action, params: CartPoleParams) -> StepResult:
        p = params
        force = jnp.where(action == 1, p.force_mag, -p.force_mag)
        cos, sin = jnp.cos(state.theta), jnp.sin(state.theta)
        total_mass = p.masscart + p.masspole
        pml = p.masspole * p.length
        temp = (force + pml * state.theta_dot**2 * sin) / total_mass
        thetaacc = (p.gravity * sin - cos * temp) / (
            p.length * (4.0 / 3.0 - p.masspole * cos**2 / total_mass)
        )
        xacc = temp - pml * thetaacc * cos / total_mass
        new = CartPoleState(
            x=state.x + p.tau * state.x_dot,
            x_dot=state.x_dot + p.tau * xacc,
            theta=state.theta + p.tau * state.theta_dot,
            theta_dot=state.theta_dot + p.tau * thetaacc,
            time=state.time + 1,
        )
        terminated = (
            (new.x < -p.x_threshold)
            | (new.x > p.x_threshold)
            | (new.theta < -p.theta_threshold)
            | (new.theta > p.theta_threshold)
        )
        truncated = new.time >= p.max_steps
        reward = jnp.ones((1,), jnp.float32)
        return StepResult(self.obs(new), new, reward, terminated, truncated, {})

    def observation_space(self, params: CartPoleParams) -> Box:
        high = np.array(
            [params.x_threshold * 2, _UNBOUNDED, params.theta_threshold * 2, _UNBOUNDED],
            np.float32,
        )
        return Box(-high, high, (4,), jnp.float32)

    def action_space(self, params: CartPoleParams) -> Discrete:
        return Discrete(2)


@struct.dataclass
class PendulumParams:
    max_speed: float = 8.0
    max_torque: float = 2.0
    dt: float = 0.05
    g: float = 10.0
    m: float = 1.0
    l: float = 1.0  # noqa: E741
    max_steps: int = 200


@struct.dataclass
class PendulumState:
    theta: jax.Array
    theta_dot: jax.Array
    time: jax.Array


def _angle_normalize(x: jax.Array) -> jax.Array:
    return ((x + jnp.pi) % (2 * jnp.pi)) - jnp.pi


class Pendulum(Env):
    """Swing up a pendulum; action: torque in Box(-2, 2, (1,)), clipped."""

    reward_spec = RewardSpec(names=("reward",), low=(-16.2736044,), high=(0.0,))

    @property
    def name(self) -> str:
        return "Pendulum-v1"

    @property
    def default_params(self) -> PendulumParams:
        return PendulumParams()

    @staticmethod
    def obs(state: PendulumState) -> jax.Array:
        return jnp.stack([jnp.cos(state.theta), jnp.sin(state.theta), state.theta_dot]).astype(
            jnp.float32
        )

    def reset(self, key, params: PendulumParams):
        high = jnp.array([jnp.pi, 1.0], jnp.float32)
        s = jax.random.uniform(key, (2,), jnp.float32, -high, high)
        state = PendulumState(s[0], s[1], jnp.int32(0))
        return self.obs(state), state

    def step(self, key, state: PendulumState, action, params: PendulumParams) -> StepResult:
        p = params
        u = jnp.clip(jnp.reshape(action, (-1,))[0], -p.max_torque, p.max_torque)
        th, thdot = state.theta, state.theta_dot
        costs = _angle_normalize(th) ** 2 + 0.1 * thdot**2 + 0.001 * u**2
        newthdot = thdot + (3 * p.g / (2 * p.l) * jnp.sin(th) + 3.0 / (p.m * p.l**2) * u) * p.dt
        newthdot = jnp.clip(newthdot, -p.max_speed, p.max_speed)
        new = PendulumState(th + newthdot * p.dt, newthdot, state.time + 1)
        reward = jnp.reshape(-costs, (1,)).astype(jnp.float32)
        truncated = new.time >= p.max_steps
        return StepResult(self.obs(new), new, reward, jnp.array(False), truncated, {})

    def observation_space(self, params: PendulumParams) -> Box:
        high = np.array([1.0, 1.0, params.max_speed], np.float32)
        return Box(-high, high, (3,), jnp.float32)

    def action_space(self, params: PendulumParams) -> Box:
        return Box(-params.max_torque, params.max_torque, (1,), jnp.float32)


# Gymnasium's Pendulum-v1 cost = theta^2 + 0.1 theta_dot^2 + 0.001 u^2 (pendulum.py, step)
PENDULUM_WEIGHTS = (1.0, 0.1, 0.001)


@struct.dataclass
class FactoredPendulumParams(PendulumParams):
    # multiplies each reported factor (the robustness study rescales one of them); the
    # dynamics and Gymnasium's reward (`gym_reward`) do not depend on it
    factor_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)


class FactoredPendulum(Pendulum):
    """Pendulum-v1 with its cost split into ranked factors (HERON's Pendulum,
    shared/reference/heron.md): (theta^2, theta_dot^2, u^2) of the PRE-step state and the
    clipped torque, each minimised, ranked theta2 > theta_dot2 > torque2. The weighted sum
    with weights PENDULUM_WEIGHTS (weighted_sum scalarisation: -(f0 + 0.1 f1 + 0.001 f2))
    equals Gymnasium's reward when factor_scale is 1 (tests/envs/test_factored_pendulum.py)."""

    reward_spec = RewardSpec(
        names=("theta2", "theta_dot2", "torque2"),
        relations=("theta2 > theta_dot2", "theta_dot2 > torque2"),
        low=(0.0, 0.0, 0.0), high=(math.pi**2, 64.0, 4.0), directions=("min", "min", "min"))

    @property
    def name(self) -> str:
        return "FactoredPendulum-v1"

    @property
    def default_params(self) -> FactoredPendulumParams:
        return FactoredPendulumParams()

    @staticmethod
    def factors(state: PendulumState, action, params: PendulumParams) -> jax.Array:
        """(theta^2, theta_dot^2, u^2) of the pre-step state and clipped torque, unscaled."""
        u = jnp.clip(jnp.reshape(action, (-1,))[0], -params.max_torque, params.max_torque)
        return jnp.stack([_angle_normalize(state.theta) ** 2, state.theta_dot**2,
                          u**2]).astype(jnp.float32)

    def step(self, key, state: PendulumState, action, params: FactoredPendulumParams
             ) -> StepResult:
        res = super().step(key, state, action, params)
        f = self.factors(state, action, params) * jnp.asarray(params.factor_scale, jnp.float32)
        return res._replace(reward=f)


def gym_reward(factors: jax.Array, factor_scale=(1.0, 1.0, 1.0)) -> jax.Array:
    """Gymnasium's Pendulum reward from (possibly rescaled) FactoredPendulum factors (..., 3):
    the TRUE return the HERON study scores every learner by."""
    w = jnp.asarray(PENDULUM_WEIGHTS) / jnp.asarray(factor_scale, jnp.float32)
    return -jnp.sum(factors * w, axis=-1)
