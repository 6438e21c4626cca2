"""Fitting a parameter pytree by gradient steps: the optimiser, the scan of steps, minibatches.

Used by the distillation phases (policy VAE, latent diffusion) and by emitters that train a
model inside the QD loop (a TD3 critic, a dynamics ensemble). Everything here is pure and
traceable: call it inside a jitted function (an emitter's ``tell``, a compiled chunk). Generic
over the parameters (any pytree of arrays) and the data (any pytree of arrays sharing a
leading row axis).

A loss is ``loss(params, batch, key) -> (loss, aux)`` with a scalar ``loss`` and a dict
``aux`` of scalar metrics; a minibatch function draws ``batch`` from ``batch_keys`` keys (one
per independent draw, e.g. rows of the data set and rows of a pool of states).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Int, PRNGKeyArray, PyTree

from zoo.errors import ConfigError

__all__ = [
    "FINAL_LR_FRACTION",
    "LossFn",
    "OptimiserConfig",
    "StepFn",
    "fit",
    "gradient_step",
    "optimiser",
    "sample_rows",
    "scan_steps",
    "split_rows",
]

FINAL_LR_FRACTION = 0.01
"""With ``schedule="cosine"`` the learning rate decays to this fraction of its start."""

LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], tuple[Array, dict[str, Array]]]
"""``loss(params, batch, key) -> (scalar loss, {name: scalar metric})``."""
StepFn = Callable[[PyTree, PyTree, PRNGKeyArray], tuple[PyTree, PyTree, dict[str, Array]]]
"""``step(params, opt_state, key) -> (params, opt_state, {name: scalar metric})``."""


@dataclasses.dataclass(frozen=True)
class OptimiserConfig:
    """An optimiser: gradient clipping, then Adam or AdamW, then a learning-rate schedule.

    Hashable, so it can be a static argument of a compiled function.

    Attributes:
        learning_rate: the peak learning rate.
        grad_clip: global gradient-norm clipping (``None``: none).
        weight_decay: ``None``: Adam; a number: AdamW with this decoupled weight decay.
        schedule: ``"constant"``, or ``"cosine"``: a half cosine from the peak at step 0 (or
            the end of the warm-up) to ``final_fraction`` of it at the horizon, constant after.
        final_fraction: the cosine schedule's final fraction of the peak.
        warmup_steps: the learning rate ramps linearly from ``1 / warmup_steps`` of the peak
            at step 0 to the peak at step ``warmup_steps`` (0: no warm-up).
    """

    learning_rate: float
    grad_clip: float | None = None
    weight_decay: float | None = None
    schedule: str = "constant"
    final_fraction: float = FINAL_LR_FRACTION
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if not self.learning_rate > 0 or not math.isfinite(self.learning_rate):
            raise ConfigError(
                f"learning_rate must be a positive number, got {self.learning_rate!r}"
            )
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ConfigError(
                f"grad_clip must be a positive number or None (no clipping), got {self.grad_clip!r}"
            )
        if self.weight_decay is not None and not self.weight_decay >= 0:
            raise ConfigError(
                f"weight_decay must be a non-negative number or None (Adam), got "
                f"{self.weight_decay!r}"
            )
        if self.schedule not in ("constant", "cosine"):
            raise ConfigError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if not 0 <= self.final_fraction <= 1:
            raise ConfigError(f"final_fraction must be in [0, 1], got {self.final_fraction!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ConfigError(
                f"warmup_steps must be a non-negative integer, got {self.warmup_steps!r}"
            )

    def multiplier(self, count: Array, horizon: Array | int = 1) -> Array:
        """The schedule's factor on the learning rate at step ``count`` (a scalar)."""
        factor = jnp.ones((), jnp.float32)
        if self.schedule == "cosine":
            progress = jnp.minimum(count / jnp.maximum(horizon, 1), 1.0)
            decay = 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
            factor = self.final_fraction + (1.0 - self.final_fraction) * decay
        if self.warmup_steps > 0:
            factor = factor * jnp.minimum((count + 1) / self.warmup_steps, 1.0)
        return factor


def optimiser(config: OptimiserConfig, horizon: Array | int = 1) -> optax.GradientTransformation:
    """The optax optimiser of ``config``: clipping, Adam(W), then the schedule's factor
    (:meth:`OptimiserConfig.multiplier`). ``horizon`` (the step where a cosine schedule ends)
    may be traced: the optimiser state does not depend on it, so runs of any length share
    one compiled program and one checkpoint structure."""
    parts = []
    if config.grad_clip is not None:
        parts.append(optax.clip_by_global_norm(config.grad_clip))
    if config.weight_decay is None:
        parts.append(optax.adam(config.learning_rate))
    else:
        parts.append(optax.adamw(config.learning_rate, weight_decay=config.weight_decay))
    if config.schedule != "constant" or config.warmup_steps > 0:
        parts.append(optax.scale_by_schedule(lambda count: config.multiplier(count, horizon)))
    return optax.chain(*parts)


def sample_rows(key: PRNGKeyArray, data: PyTree, n: int, rows: Array | int | None = None) -> PyTree:
    """``n`` rows drawn uniformly with replacement from ``data`` (a pytree of arrays
    ``[rows, ...]``); with ``rows`` only from the first ``rows`` (may be traced, >= 1).
    Returns the pytree of ``[n, ...]`` arrays."""
    if rows is None:
        rows = jax.tree_util.tree_leaves(data)[0].shape[0]
    index = jax.random.randint(key, (n,), 0, rows)
    return jax.tree_util.tree_map(lambda x: x[index], data)


def split_rows(tree: PyTree, mesh: Any = None, axis: str = "data") -> PyTree:
    """``tree`` (arrays sharing a leading row axis) with its rows split over the 1-D
    ``mesh`` (axis ``axis``) by a sharding constraint: inside a compiled step, each device
    then computes the loss and gradient of its rows, and XLA averages the gradients of the
    replicated parameters with an all-reduce (data parallelism). Unchanged without a mesh or
    with one device."""
    if mesh is None or mesh.size <= 1:
        return tree
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axis))
    return jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, sharding), tree)


def gradient_step(
    loss: LossFn,
    optimiser: optax.GradientTransformation,
    minibatch: Callable[..., PyTree],
    batch_keys: int = 1,
) -> StepFn:
    """One optimiser step on a fresh minibatch: the step's key splits into ``batch_keys + 1``
    keys, the first ``batch_keys`` go to ``minibatch(*keys)`` and the last to ``loss``.
    The step's metrics are the loss's ``aux``."""

    def step(
        params: PyTree, opt_state: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, PyTree, dict[str, Array]]:
        *k_batch, k_loss = jax.random.split(key, batch_keys + 1)
        batch = minibatch(*k_batch)
        grads, metrics = jax.grad(loss, has_aux=True)(params, batch, k_loss)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    return step


def scan_steps(
    step: StepFn,
    params: PyTree,
    opt_state: PyTree,
    key: PRNGKeyArray,
    length: int,
    start: Int[Array, ""] | int = 0,
    stop: Int[Array, ""] | int | None = None,
) -> tuple[PyTree, PyTree, dict[str, Array], Bool[Array, " length"]]:
    """``length`` (static) steps numbered ``start, start + 1, ...`` in one ``lax.scan``.

    Step ``s`` uses the key ``fold_in(key, s)``, so a run split into scans of any lengths
    draws the same numbers. With ``stop`` (may be traced) the steps at or past it leave
    ``params`` and ``opt_state`` alone and report zero metrics.

    Returns:
        ``(params, opt_state, metrics, taken)``: every metric stacked ``[length]``, and the
        mask ``[length]`` of the steps taken.
    """
    if stop is None:

        def every(carry: tuple[PyTree, PyTree], i: Array) -> tuple[tuple[PyTree, PyTree], Any]:
            params, opt_state, metrics = step(*carry, jax.random.fold_in(key, start + i))
            return (params, opt_state), (metrics, jnp.ones((), bool))

        (params, opt_state), (metrics, taken) = jax.lax.scan(
            every, (params, opt_state), jnp.arange(length)
        )
        return params, opt_state, metrics, taken

    metrics_shape = jax.eval_shape(step, params, opt_state, key)[2]

    def one(carry: tuple[PyTree, PyTree], i: Array) -> tuple[tuple[PyTree, PyTree], Any]:
        index = start + i

        def active(carry: tuple[PyTree, PyTree]) -> tuple[tuple[PyTree, PyTree], Any]:
            params, opt_state, metrics = step(*carry, jax.random.fold_in(key, index))
            return (params, opt_state), metrics

        def idle(carry: tuple[PyTree, PyTree]) -> tuple[tuple[PyTree, PyTree], Any]:
            zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), metrics_shape)
            return carry, zeros

        carry, metrics = jax.lax.cond(index < stop, active, idle, carry)
        return carry, (metrics, index < stop)

    (params, opt_state), (metrics, taken) = jax.lax.scan(
        one, (params, opt_state), jnp.arange(length)
    )
    return params, opt_state, metrics, taken


@eqx.filter_jit
def fit(
    params: PyTree,
    opt_state: PyTree,
    key: PRNGKeyArray,
    length: int,
    loss: LossFn,
    minibatch: Callable[..., PyTree],
    config: OptimiserConfig,
    batch_keys: int = 1,
    start: Int[Array, ""] | int = 0,
    stop: Int[Array, ""] | int | None = None,
) -> tuple[PyTree, PyTree, dict[str, Array], Bool[Array, " length"]]:
    """Compiled :func:`scan_steps` of :func:`gradient_step` with :func:`optimiser`\ (``config``,
    horizon ``stop``, else ``start + length``). ``loss`` and ``minibatch`` are static: pass
    the same function objects on every call (module-level functions, or closures built
    once) so that the program compiles once; data they close over is baked into it."""
    horizon = start + length if stop is None else stop
    step = gradient_step(loss, optimiser(config, horizon), minibatch, batch_keys)
    return scan_steps(step, params, opt_state, key, length, start, stop)
