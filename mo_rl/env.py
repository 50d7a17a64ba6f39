"""The functional env protocol every mo_rl environment implements.

    reset(key, params)                -> (obs, state)
    step(key, state, action, params)  -> StepResult(obs, state, reward, terminated,
                                                    truncated, info)

* `reward` is ALWAYS a vector of shape (K,) (K = len(env.reward_spec)); a
  multi-agent env puts a leading agent axis on obs, action and reward
  (reward shape (num_agents, K)). Dicts appear only at the PettingZoo boundary.
* `terminated` stops bootstrapping, `truncated` does not. Auto-reset is a
  wrapper (mo_rl.wrappers.AutoReset) that keeps the final observation in info.
* `params` is a pytree of episode-independent settings, so it can be vmapped.
* Everything is pure and jittable; state is a pytree.
* A dict observation may carry inputs for the critic only under VALUE_INPUTS: a
  float vector (e.g. CaRL's time left, route left, penalty windows) that agents
  feed to their value function and never to their policy (agents.ppo).
"""

from __future__ import annotations

from typing import Any, Generic, NamedTuple, TypeVar

import jax

from mo_rl.reward import RewardSpec
from mo_rl.spaces import Space

VALUE_INPUTS = "value_measurements"  # dict observation key read by critics only (CaRL's name)

State = TypeVar("State")
Params = TypeVar("Params")


class StepResult(NamedTuple):
    obs: Any
    state: Any
    reward: jax.Array  # (K,) or (num_agents, K)
    terminated: jax.Array  # bool scalar
    truncated: jax.Array  # bool scalar
    info: dict[str, Any]


class Env(Generic[State, Params]):
    """Base class of protocol envs. Subclasses set `reward_spec` and implement
    `default_params`, `reset`, `step`, `observation_space`, `action_space`."""

    reward_spec: RewardSpec
    #: None for single-agent envs; the size of the leading agent axis otherwise.
    num_agents: int | None = None
    #: True where the observation is a function of the state and the env implements
    #: `reset_state` and `observe`: AutoReset then observes once per step (the
    #: pre-reset observation is only computed where info["final_obs"] is used).
    observes_state: bool = False

    @property
    def name(self) -> str:
        return type(self).__name__

    @property
    def default_params(self) -> Params:
        raise NotImplementedError

    def reset(self, key: jax.Array, params: Params) -> tuple[Any, State]:
        raise NotImplementedError

    def step(self, key: jax.Array, state: State, action: Any, params: Params) -> StepResult:
        raise NotImplementedError

    def reset_state(self, key: jax.Array, params: Params) -> State:
        """The state `reset` starts from (only where `observes_state`)."""
        raise NotImplementedError

    def observe(self, state: State, params: Params) -> Any:
        """The observation of a state (only where `observes_state`)."""
        raise NotImplementedError

    def observation_space(self, params: Params) -> Space:
        raise NotImplementedError

    def action_space(self, params: Params) -> Space:
        raise NotImplementedError

    @property
    def num_objectives(self) -> int:
        return len(self.reward_spec)

    @property
    def unwrapped(self) -> Env:
        return self
