"""mo_rl: distributional and multi-objective control in JAX.

Core of the project: reward structure (RewardSpec, preorders, dominance,
scalarisations), the functional env protocol and its wrappers, and the
shared machinery used by every agent. Nothing here imports `envs` or `agents`.
"""

from mo_rl import _xla_flags

_xla_flags.apply()  # must run before JAX initialises its CPU backend

from mo_rl.env import Env, StepResult  # noqa: E402
from mo_rl.reward import RewardSpec  # noqa: E402
from mo_rl.spaces import Box, Discrete  # noqa: E402

__all__ = ["Box", "Discrete", "Env", "RewardSpec", "StepResult"]
__version__ = "0.1.0"
