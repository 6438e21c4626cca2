"""Action-value critics as Equinox modules: ``Q(observation, action) -> scalar``.

A :class:`TwinCritic` holds two independent Q networks (the clipped double-Q trick of TD3:
targets use the smaller of the two). Modules act on one transition; ``jax.vmap`` them over a
batch::

    critic = TwinCritic(observation_size=17, action_size=6, key=jax.random.key(0))
    q = jax.vmap(critic)(observations, actions)  # [batch, 2]
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from models.policy import activation_fn

__all__ = ["QNetwork", "TwinCritic"]


class QNetwork(eqx.Module):
    """One MLP ``concat(observation, action) -> scalar``.

    Attributes:
        layers: the linear layers, input first; the last one has one output.
        activation: hidden activation name (see :data:`models.policy.ACTIVATIONS`).
    """

    layers: tuple[eqx.nn.Linear, ...]
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        *,
        key: PRNGKeyArray,
    ) -> None:
        activation_fn(activation)
        if observation_size < 1 or action_size < 1 or any(int(h) < 1 for h in hidden_sizes):
            raise ValueError(
                f"a Q network needs positive sizes; given observation_size={observation_size}, "
                f"action_size={action_size}, hidden_sizes={tuple(hidden_sizes)}"
            )
        sizes = (observation_size + action_size, *(int(h) for h in hidden_sizes), 1)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            eqx.nn.Linear(i, o, key=k) for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)
        )
        self.activation = activation

    def __call__(
        self, observation: Float[Array, " obs"], action: Float[Array, " act"]
    ) -> Float[Array, ""]:
        act = activation_fn(self.activation)
        h = jnp.concatenate([observation, action])
        for layer in self.layers[:-1]:
            h = act(layer(h))
        return self.layers[-1](h)[0]


class TwinCritic(eqx.Module):
    """Two independent :class:`QNetwork` s of the same shape.

    ``critic(observation, action)`` returns both values ``[2]``; :meth:`q1` the first only
    (what a TD3 actor ascends).
    """

    first: QNetwork
    second: QNetwork

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: tuple[int, ...] = (256, 256),
        activation: str = "relu",
        *,
        key: PRNGKeyArray,
    ) -> None:
        k1, k2 = jax.random.split(key)
        self.first = QNetwork(observation_size, action_size, hidden_sizes, activation, key=k1)
        self.second = QNetwork(observation_size, action_size, hidden_sizes, activation, key=k2)

    def __call__(
        self, observation: Float[Array, " obs"], action: Float[Array, " act"]
    ) -> Float[Array, "2"]:
        return jnp.stack([self.first(observation, action), self.second(observation, action)])

    def q1(
        self, observation: Float[Array, " obs"], action: Float[Array, " act"]
    ) -> Float[Array, ""]:
        """The first network's value (scalar)."""
        return self.first(observation, action)
