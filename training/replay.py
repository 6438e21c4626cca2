"""A device-resident ring replay buffer of transitions.

The buffer is an Equinox module (a pytree): it lives in the jitted QD loop's state, is
donated with it, and every operation is traceable with static shapes. Rows are written in
order from row 0; once ``capacity`` rows are filled the oldest are overwritten. A
transition is any pytree of arrays (e.g. observation, action, reward, next observation,
termination); the buffer stores each leaf as ``[capacity, *leaf.shape]``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PRNGKeyArray, PyTree

from training.fit import sample_rows
from zoo.errors import ConfigError, ShapeError

__all__ = ["ReplayBuffer", "add", "init", "sample", "size"]


class ReplayBuffer(eqx.Module):
    """A ring buffer of ``capacity`` transitions.

    Attributes:
        data: the transitions' pytree with every leaf ``[capacity, ...]``.
        position: the row the next transition goes to (int32 scalar).
        count: the number of filled rows, at most ``capacity`` (int32 scalar); the filled
            rows are ``0 .. count - 1``.
    """

    data: PyTree
    position: Int[Array, ""]
    count: Int[Array, ""]

    @property
    def capacity(self) -> int:
        """The number of rows (static)."""
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])


def init(template: PyTree, capacity: int) -> ReplayBuffer:
    """An empty buffer for transitions shaped like ``template`` (one transition: arrays or
    ``jax.ShapeDtypeStruct``; no batch axis), holding up to ``capacity`` of them (zeros).

    Raises:
        ConfigError: ``capacity`` is not a positive integer, or ``template`` has no array.
    """
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ConfigError(
            f"a replay buffer needs a positive integer capacity, got {capacity!r}; pass the "
            "number of transitions to keep"
        )
    leaves = jax.tree_util.tree_leaves(template)
    if not leaves:
        raise ConfigError(
            "the replay buffer's template has no array leaves; pass one transition (a pytree "
            "of arrays, e.g. a dict of obs, action, reward, next_obs, done)"
        )
    data = jax.tree_util.tree_map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), template
    )
    # two arrays, not one: the buffer may be donated, and a donated array must appear once
    return ReplayBuffer(
        data=data, position=jnp.zeros((), jnp.int32), count=jnp.zeros((), jnp.int32)
    )


def add(
    buffer: ReplayBuffer, transitions: PyTree, mask: Bool[Array, " n"] | None = None
) -> ReplayBuffer:
    """``buffer`` with the rows of ``transitions`` (leaves ``[n, ...]``) where ``mask`` holds
    appended in order (all rows when ``mask`` is None); past ``capacity`` the oldest rows are
    overwritten. When more than ``capacity`` rows are added at once only the last
    ``capacity`` of them are kept.

    One scatter per leaf (masked rows go out of bounds and are dropped); no host sync.

    Raises:
        ShapeError: ``transitions`` does not have the buffer's structure plus one leading axis
            of the mask's length.
    """
    capacity = buffer.capacity
    if jax.tree_util.tree_structure(transitions) != jax.tree_util.tree_structure(buffer.data):
        raise ShapeError(
            f"the transitions' structure {jax.tree_util.tree_structure(transitions)} differs "
            f"from the buffer's {jax.tree_util.tree_structure(buffer.data)}; add the same kind "
            "of transition the buffer was made for"
        )
    n = jax.tree_util.tree_leaves(transitions)[0].shape[0]
    for stored, given in zip(
        jax.tree_util.tree_leaves(buffer.data), jax.tree_util.tree_leaves(transitions), strict=True
    ):
        if given.shape != (n, *stored.shape[1:]):
            raise ShapeError(
                f"a transition leaf has shape {given.shape}; expected {(n, *stored.shape[1:])} "
                f"(the buffer's row shape {stored.shape[1:]} with one leading batch axis of "
                f"{n} rows)"
            )
    if mask is None:
        mask = jnp.ones((n,), bool)
    if mask.shape != (n,):
        raise ShapeError(f"mask has shape {mask.shape}; expected ({n},), one flag per row")
    if n == 0:
        return buffer
    mask = mask.astype(bool)
    offset = jnp.cumsum(mask, dtype=jnp.int32) - 1  # order among the kept rows
    total = offset[-1] + 1
    keep = mask & (offset >= total - capacity)  # more than capacity rows: the last ones win
    rows = jnp.where(keep, (buffer.position + offset) % capacity, capacity)
    data = jax.tree_util.tree_map(
        lambda old, new: old.at[rows].set(new.astype(old.dtype), mode="drop"),
        buffer.data,
        transitions,
    )
    return ReplayBuffer(
        data=data,
        position=(buffer.position + total) % capacity,
        count=jnp.minimum(buffer.count + total, capacity),
    )


def sample(buffer: ReplayBuffer, key: PRNGKeyArray, n: int) -> PyTree:
    """``n`` transitions (leaves ``[n, ...]``) drawn uniformly with replacement among the
    filled rows. An empty buffer yields ``n`` copies of row 0 (zeros): check :func:`size`."""
    return sample_rows(key, buffer.data, n, jnp.maximum(buffer.count, 1))


def size(buffer: ReplayBuffer) -> Int[Array, ""]:
    """The number of transitions stored (int32 scalar, at most ``capacity``)."""
    return buffer.count
