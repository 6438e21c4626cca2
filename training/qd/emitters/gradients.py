"""Gradients of the fitness and of every descriptor at a batch of points, for differentiable
QD (CMA-MEGA): exact, by automatic differentiation of a vector task's objective, or estimated
by an OpenAI-ES with mirrored sampling and centred-rank normalisation (Tjanaka et al., 2022),
for tasks whose objective cannot be differentiated (policies in a simulator).

Both return the Jacobian ``[points, 1 + descriptors, n]``: row 0 the fitness gradient, then
one row per descriptor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from models.policy import unflatten_population
from training.qd.emitter import EvaluateFn
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation, Task

Objective = Callable[[Float[Array, " n"]], tuple[Float[Array, ""], Float[Array, " d"]]]


def task_objective(task: Task) -> Objective:
    """The differentiable ``genome -> (fitness, descriptors)`` of a vector task.

    Raises:
        ConfigError: the task has no differentiable objective (policy tasks).
    """
    objective = getattr(task, "objective", None)
    if task.spec.genome != "vector" or objective is None:
        raise ConfigError(
            f"exact gradients need a differentiable vector task (lp-sphere, arm, ...); task "
            f"{task.spec.name!r} has {task.spec.genome} genomes. Estimate the gradients "
            "instead (--algo cma-mega-es)"
        )
    return objective


def exact_jacobian(objective: Objective, points: Float[Array, "p n"]) -> Float[Array, "p k n"]:
    """Jacobian of ``(fitness, *descriptors)`` at every point, by reverse-mode AD."""

    def stacked(x: Array) -> Array:
        fitness, descriptors = objective(x)
        return jnp.concatenate([fitness[None], descriptors])

    return jax.vmap(jax.jacrev(stacked))(points)


def centred_ranks(values: Float[Array, " m"]) -> Float[Array, " m"]:
    """Ranks of ``values`` mapped linearly to ``[-0.5, 0.5]`` (the largest gets 0.5)."""
    m = values.shape[0]
    ranks = jnp.argsort(jnp.argsort(values)).astype(values.dtype)
    return ranks / jnp.maximum(m - 1, 1) - 0.5


def fitness_and_descriptors(evaluation: Evaluation) -> Float[Array, "m k"]:
    """``(fitness, *descriptors)`` of every evaluated genome: what CMA-MEGA differentiates."""
    return jnp.concatenate([evaluation.fitness[:, None], evaluation.descriptors], axis=1)


def es_jacobian(
    evaluate: EvaluateFn,
    template: Any,
    points: Float[Array, "p n"],
    key: PRNGKeyArray,
    *,
    samples: int,
    sigma: float,
    outputs: Callable[[Evaluation], Float[Array, "m k"]] = fitness_and_descriptors,
) -> Float[Array, "p k n"]:
    """OpenAI-ES estimate of the Jacobian of ``outputs`` at every point, ``samples``
    evaluations each.

    Each point is perturbed by ``samples / 2`` mirrored pairs ``x +- sigma * eps``; each
    output is rank-normalised over the point's samples separately, and its gradient is
    ``sum_i r_i eps_i / (samples * sigma)``. The ``points * samples`` evaluations go through
    ``evaluate`` (counted in the run's budget, never inserted); ``outputs`` maps their
    :class:`Evaluation` (point-major: the point's samples are consecutive) to ``[m, k]``.
    """
    p, n = points.shape
    half = samples // 2
    k_noise, k_eval = jax.random.split(key)
    eps = jax.random.normal(k_noise, (p, half, n), points.dtype)
    eps = jnp.concatenate([eps, -eps], axis=1)  # [p, samples, n]
    perturbed = points[:, None, :] + sigma * eps
    evaluation = evaluate(unflatten_population(template, perturbed.reshape(p * samples, n)), k_eval)
    values = outputs(evaluation).reshape(p, samples, -1)
    ranks = jax.vmap(jax.vmap(centred_ranks, in_axes=1, out_axes=1))(values)
    return jnp.einsum("psk,psn->pkn", ranks, eps.astype(ranks.dtype)) / (samples * sigma)


def normalise_rows(jacobian: Float[Array, "p k n"], epsilon: float = 1e-8) -> Array:
    """Every gradient scaled to unit norm (``epsilon`` keeps a zero gradient finite)."""
    return jacobian / (jnp.linalg.norm(jacobian, axis=-1, keepdims=True) + epsilon)
