"""A live CARLA server as an env with the JAX driving simulator's observations, rewards,
rules and metrics (see README "Driving in CARLA")."""
