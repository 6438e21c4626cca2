"""Iso+LineDD variation (Vassiliades & Mouret, 2018): the MAP-Elites operator."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

from training.qd.emitter import Emitter, EvaluateFn
from zoo.archive import Archive


def iso_line_variation(
    key: PRNGKeyArray, parents: Any, partners: Any, iso_sigma: float, line_sigma: float
) -> Any:
    """``child = x1 + iso_sigma * N(0, I) + line_sigma * N(0, 1) * (x2 - x1)``.

    ``parents`` and ``partners`` are populations of the same structure; the iso noise is
    drawn per parameter, the line coefficient once per pair (shared by all leaves).
    """
    leaves, treedef = jax.tree_util.tree_flatten(parents)
    partner_leaves = treedef.flatten_up_to(partners)
    batch = leaves[0].shape[0]
    key_line, *leaf_keys = jax.random.split(key, len(leaves) + 1)
    line = jax.random.normal(key_line, (batch,))
    children = []
    for k, x1, x2 in zip(leaf_keys, leaves, partner_leaves, strict=True):
        coeff = line.reshape((batch,) + (1,) * (x1.ndim - 1))
        noise = jax.random.normal(k, x1.shape, x1.dtype)
        children.append(x1 + iso_sigma * noise + line_sigma * coeff * (x2 - x1))
    return jax.tree_util.tree_unflatten(treedef, children)


class IsoLineEmitter(Emitter):
    """Pick pairs of uniformly sampled elites and apply :func:`iso_line_variation`.

    Attributes:
        size: genomes per ask.
        iso_sigma: std of the isotropic Gaussian noise (0.005 for NN policies).
        line_sigma: std of the line coefficient (0.05 for NN policies).
        clip: optional ``(low, high)`` applied to every parameter (benchmark functions).
    """

    size: int
    iso_sigma: float = 0.005
    line_sigma: float = 0.05
    clip: tuple[float, float] | None = None

    @property
    def batch_size(self) -> int:
        return self.size

    def ask(
        self, key: PRNGKeyArray, state: Any, archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, Any]:
        del evaluate
        k_parents, k_partners, k_var = jax.random.split(key, 3)
        parents, _ = archive.sample(k_parents, self.size)
        partners, _ = archive.sample(k_partners, self.size)
        children = iso_line_variation(k_var, parents, partners, self.iso_sigma, self.line_sigma)
        if self.clip is not None:
            low, high = self.clip
            children = jax.tree_util.tree_map(lambda x: jnp.clip(x, low, high), children)
        return children, state
