"""An ensemble of probabilistic MLPs for learned dynamics (PETS, Chua et al., 2018).

Every member maps a (normalised) input row ``concat(state, action)`` to a Gaussian over a
(normalised) output row (the state delta, plus the reward when it is predicted): a mean and
a log standard deviation. The log standard deviation is soft-clamped between two learnable
bounds per output (PETS)::

    log_std = max_log_std - softplus(max_log_std - raw)
    log_std = min_log_std + softplus(log_std - min_log_std)

so that it stays above ``min_log_std`` and below ``max_log_std + log(1 + exp(min_log_std -
max_log_std))`` (a hair above the upper bound) while its gradient never vanishes; the
training loss adds a small penalty that pulls the bounds together (see
:func:`training.dynamics.fit_dynamics`). The ``E`` members are one module whose array leaves
carry a leading member axis (built with ``eqx.filter_vmap``); each member acts on its own
rows::

    ensemble = DynamicsEnsemble(input_size=4, output_size=2, members=4, key=jax.random.key(0))
    mean, log_std = ensemble(jnp.zeros((4, 32, 4)))  # [4, 32, 2] each

Normalisation, training and sampling live in :mod:`training.dynamics`.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from models.policy import activation_fn

__all__ = ["DynamicsEnsemble", "DynamicsMember", "soft_clamp"]

INITIAL_MAX_LOG_STD = 0.25
"""Initial upper bound of the log standard deviation (PETS: max log-variance 0.5)."""
INITIAL_MIN_LOG_STD = -5.0
"""Initial lower bound of the log standard deviation (PETS: min log-variance -10)."""


def soft_clamp(
    raw: Float[Array, "... out"], low: Float[Array, " out"], high: Float[Array, " out"]
) -> Float[Array, "... out"]:
    """``raw`` softly clamped between ``low`` and ``high`` (the PETS log-variance bounds):
    smooth, monotone, the identity far inside the interval; the result lies in
    ``(low, high + log(1 + exp(low - high))]``."""
    bounded = high - jax.nn.softplus(high - raw)
    return low + jax.nn.softplus(bounded - low)


class DynamicsMember(eqx.Module):
    """One member: an MLP ``[in] -> hidden -> (mean [out], log_std [out])``.

    Attributes:
        layers: the linear layers, input first; the last one has ``2 * out`` outputs (the
            mean, then the raw log standard deviation).
        max_log_std: ``[out]`` learnable upper bound of the log standard deviation.
        min_log_std: ``[out]`` learnable lower bound of the log standard deviation.
        activation: hidden activation name (see :data:`models.policy.ACTIVATIONS`).
    """

    layers: tuple[eqx.nn.Linear, ...]
    max_log_std: Float[Array, " out"]
    min_log_std: Float[Array, " out"]
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        output_size: int,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: str = "silu",
        *,
        key: PRNGKeyArray,
    ) -> None:
        activation_fn(activation)
        sizes = (int(input_size), *(int(h) for h in hidden_sizes), 2 * int(output_size))
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            eqx.nn.Linear(i, o, key=k) for k, i, o in zip(keys, sizes[:-1], sizes[1:], strict=True)
        )
        self.max_log_std = jnp.full((int(output_size),), INITIAL_MAX_LOG_STD, jnp.float32)
        self.min_log_std = jnp.full((int(output_size),), INITIAL_MIN_LOG_STD, jnp.float32)
        self.activation = activation

    @property
    def output_size(self) -> int:
        """The length of the predicted output row."""
        return int(self.max_log_std.shape[-1])

    def __call__(
        self, inputs: Float[Array, " in"]
    ) -> tuple[Float[Array, " out"], Float[Array, " out"]]:
        """``(mean [out], log_std [out])`` for one input row."""
        act = activation_fn(self.activation)
        h = inputs
        for layer in self.layers[:-1]:
            h = act(layer(h))
        out = self.layers[-1](h)
        mean, raw = out[: self.output_size], out[self.output_size :]
        return mean, soft_clamp(raw, self.min_log_std, self.max_log_std)


class DynamicsEnsemble(eqx.Module):
    """``E`` :class:`DynamicsMember` s stacked on a leading member axis.

    Args:
        input_size: the input row length (state size + action size).
        output_size: the output row length (state size, + 1 with a predicted reward).
        members: the number ``E`` of members (independently initialised).
        hidden_sizes: hidden widths of every member.
        activation: hidden activation (``"silu"``, i.e. swish, as in PETS; or ``"relu"``).
        key: initialisation randomness.

    Attributes:
        members: one :class:`DynamicsMember` whose array leaves are ``[E, ...]``.

    Raises:
        ValueError: non-positive sizes or an unknown activation.
    """

    members: DynamicsMember

    def __init__(
        self,
        input_size: int,
        output_size: int,
        members: int = 4,
        hidden_sizes: Sequence[int] = (512, 512),
        activation: str = "silu",
        *,
        key: PRNGKeyArray,
    ) -> None:
        hidden = tuple(int(h) for h in hidden_sizes)
        if min(int(input_size), int(output_size), int(members), *hidden) < 1:
            raise ValueError(
                f"a dynamics ensemble needs positive sizes; given input_size={input_size}, "
                f"output_size={output_size}, members={members}, hidden_sizes={hidden}"
            )
        activation_fn(activation)
        keys = jax.random.split(key, int(members))
        self.members = eqx.filter_vmap(
            lambda k: DynamicsMember(input_size, output_size, hidden, activation, key=k)
        )(keys)

    @property
    def size(self) -> int:
        """The number of members ``E``."""
        return int(self.members.max_log_std.shape[0])

    @property
    def output_size(self) -> int:
        """The length of the predicted output row."""
        return int(self.members.max_log_std.shape[-1])

    def __call__(
        self, inputs: Float[Array, "members batch in"]
    ) -> tuple[Float[Array, "members batch out"], Float[Array, "members batch out"]]:
        """Each member on its own rows: member ``e`` maps ``inputs[e]`` to
        ``(mean [E, B, out], log_std [E, B, out])`` (normalised units)."""

        def one(member: DynamicsMember, rows: Array) -> tuple[Array, Array]:
            return jax.vmap(member)(rows)

        return eqx.filter_vmap(one)(self.members, inputs)

    def all_members(
        self, inputs: Float[Array, "batch in"]
    ) -> tuple[Float[Array, "members batch out"], Float[Array, "members batch out"]]:
        """Every member on the same rows ``[B, in]``: ``(mean, log_std)`` ``[E, B, out]``."""
        return self(jnp.broadcast_to(inputs, (self.size, *inputs.shape)))
