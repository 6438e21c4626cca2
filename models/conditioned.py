"""Descriptor-conditioned actor and critic (DCRL-ME): plain modules with a wider input.

A descriptor-conditioned actor ``pi(s, d')`` and critic ``Q(s, a, d')`` see the target
descriptor ``d'`` (normalised to ``[-1, 1]`` with the task's descriptor bounds, see
:func:`normalise_descriptors`) concatenated to the observation. They are therefore an
ordinary :class:`models.policy.MLPPolicy` and :class:`models.critic.TwinCritic` whose
observation is ``[s, d']`` (:func:`condition`), of the sizes given by
:func:`conditioned_spec`.

Because ``d'`` enters only the first layer, linearly, an actor conditioned on one fixed
descriptor is a plain policy of ``s``: the first layer's
``W @ [s, d'] + b = W_obs @ s + (W_desc @ d' + b)``. :func:`fold_descriptor` moves
``W_desc @ d'`` into the first-layer bias, so the result is an archive genome like any other
(with an observation normaliser, the descriptor's slice of it is applied to ``d'`` first and
the observation's slice is kept)::

    spec = PolicySpec(observation_size=2, action_size=2, hidden_sizes=(64, 64))
    actor = conditioned_spec(spec, descriptor_size=2).init(jax.random.key(0))
    target = normalise_descriptors(jnp.array([0.3, -0.1]), low, high)
    policy = fold_descriptor(actor, target)  # an MLPPolicy of spec
    policy(s) == actor(condition(s, target))
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from models.critic import TwinCritic
from models.policy import MLPPolicy, PolicySpec

__all__ = [
    "condition",
    "conditioned_critic",
    "conditioned_spec",
    "fold_descriptor",
    "normalise_descriptors",
]


def normalise_descriptors(
    descriptors: Float[ArrayLike, "... k"],
    low: Float[ArrayLike, " k"],
    high: Float[ArrayLike, " k"],
) -> Float[Array, "... k"]:
    """``2 * (d - low) / (high - low) - 1``: the bounds map to ``-1`` and ``1`` (values
    outside the bounds map outside ``[-1, 1]``; nothing is clipped)."""
    low = jnp.asarray(low)
    high = jnp.asarray(high)
    return 2.0 * (jnp.asarray(descriptors) - low) / (high - low) - 1.0


def condition(
    observation: Float[Array, "... obs"], descriptor: Float[Array, "... k"]
) -> Float[Array, "... obs+k"]:
    """The input of a conditioned module: ``[observation, descriptor]`` on the last axis."""
    return jnp.concatenate([observation, descriptor], axis=-1)


def conditioned_spec(spec: PolicySpec, descriptor_size: int) -> PolicySpec:
    """The :class:`PolicySpec` of an actor ``pi(s, d')`` whose folded policies have ``spec``:
    the same layers and activations, ``descriptor_size`` more inputs.

    Raises:
        ValueError: ``descriptor_size`` is not a positive integer.
    """
    if isinstance(descriptor_size, bool) or not isinstance(descriptor_size, int):
        raise ValueError(f"descriptor_size must be a positive integer, given {descriptor_size!r}")
    if descriptor_size < 1:
        raise ValueError(f"descriptor_size must be a positive integer, given {descriptor_size}")
    return dataclasses.replace(spec, observation_size=spec.observation_size + descriptor_size)


def conditioned_critic(
    observation_size: int,
    action_size: int,
    descriptor_size: int,
    hidden_sizes: tuple[int, ...] = (256, 256),
    activation: str = "relu",
    *,
    key: PRNGKeyArray,
) -> TwinCritic:
    """A twin critic ``Q([s, d'], a)``: a :class:`TwinCritic` of the observation widened by
    the descriptor (call it on :func:`condition` ``(s, d')``)."""
    if descriptor_size < 1:
        raise ValueError(f"descriptor_size must be a positive integer, given {descriptor_size}")
    return TwinCritic(
        observation_size + descriptor_size, action_size, hidden_sizes, activation, key=key
    )


def fold_descriptor(actor: MLPPolicy, descriptor: Float[ArrayLike, " k"]) -> MLPPolicy:
    """The plain policy ``s -> actor([s, descriptor])`` (one actor, one normalised
    descriptor; ``jax.vmap`` over descriptors for a population).

    The first layer keeps the observation's columns and its bias becomes
    ``b + W_desc @ d``, where ``d`` is ``descriptor`` passed through the descriptor's slice
    of the actor's observation normaliser when it has one; the folded policy keeps the
    observation's slice of the normaliser. Every other layer is unchanged.

    Raises:
        ValueError: ``descriptor`` is not one vector, or leaves the actor no observation input.
    """
    descriptor = jnp.asarray(descriptor)
    width = int(actor.weights[0].shape[-1])
    if descriptor.ndim != 1 or not 0 < descriptor.shape[0] < width:
        raise ValueError(
            f"fold_descriptor takes one descriptor vector shorter than the actor's input "
            f"({width}); given shape {descriptor.shape}. vmap over a batch of descriptors"
        )
    observation_size = width - descriptor.shape[0]
    weights, bias = actor.weights[0], actor.biases[0]
    obs_mean, obs_std = actor.obs_mean, actor.obs_std
    if obs_mean is not None and obs_std is not None:
        descriptor = (descriptor - obs_mean[observation_size:]) / obs_std[observation_size:]
        obs_mean, obs_std = obs_mean[:observation_size], obs_std[:observation_size]
    folded_bias = bias + weights[:, observation_size:] @ descriptor.astype(weights.dtype)
    return MLPPolicy(
        weights=(weights[:, :observation_size], *actor.weights[1:]),
        biases=(folded_bias, *actor.biases[1:]),
        obs_mean=obs_mean,
        obs_std=obs_std,
        activation=actor.activation,
        output_activation=actor.output_activation,
    )
