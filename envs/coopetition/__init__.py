"""Coopetition games (Coopetition-Gym, Pant & Yu) as pure-JAX multi-agent envs.

`envs.make("TrustDilemma-v0", reward_mode="cooperative")` builds one; the mechanics are
pure functions in `mechanics`, the one env class in `env`, the games' parameters in `games`.
"""

from envs.coopetition.env import CoopetitionEnv, CoopParams, CoopState, weights_for
from envs.coopetition.games import GAMES, make_game

__all__ = ["GAMES", "CoopParams", "CoopState", "CoopetitionEnv", "make_game", "weights_for"]
