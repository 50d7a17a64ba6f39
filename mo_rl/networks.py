"""Network torsos shared by the agent families (heads live with the agent).

Kept small and explicit (flax.linen) so every agent builds its heads on the
same feature extractors: an MLP for vector observations and a small CNN for
BEV rasters (H, W, C).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np


def orthogonal(scale: float = np.sqrt(2.0)) -> nn.initializers.Initializer:
    return nn.initializers.orthogonal(scale)


class MLP(nn.Module):
    """Dense layers with a nonlinearity after each (including the last)."""

    hidden: Sequence[int] = (64, 64)
    activation: str = "tanh"

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        act = getattr(nn, self.activation)
        for width in self.hidden:
            x = act(nn.Dense(width, kernel_init=orthogonal(), bias_init=nn.initializers.zeros)(x))
        return x


class CNN(nn.Module):
    """Small conv torso for BEV rasters (..., H, W, C); uint8 inputs are scaled to [0, 1]."""

    channels: Sequence[int] = (16, 32, 32)
    strides: Sequence[int] = (2, 2, 2)
    dense: int = 256

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if x.dtype == jnp.uint8:
            x = x.astype(jnp.float32) / 255.0
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for c, s in zip(self.channels, self.strides, strict=True):
            x = nn.relu(nn.Conv(c, (3, 3), strides=(s, s), kernel_init=orthogonal())(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(self.dense, kernel_init=orthogonal())(x))
        return x.reshape(batch_shape + (self.dense,))


def torso_for(obs_shape: tuple[int, ...], hidden: Sequence[int] = (64, 64),
              activation: str = "tanh") -> nn.Module:
    """CNN for (H, W, C) observations, MLP for flat vectors."""
    return CNN() if len(obs_shape) == 3 else MLP(hidden=tuple(hidden), activation=activation)
