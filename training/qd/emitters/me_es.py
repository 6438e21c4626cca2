"""ME-ES (Colas et al., 2020): MAP-Elites whose offspring come from OpenAI-ES steps that
alternate between exploiting (fitness) and exploring (novelty), following QDax's
``MEESEmitter`` defaults.

Each of ``num_emitters`` instances (vmapped; the batch is one offspring per instance):

- every ``steps_per_parent`` generations picks a new parent from the archive and flips its
  phase: *exploit* picks uniformly among the ``exploit_cells`` fittest elites, *explore*
  among the ``explore_cells`` elites whose descriptors are most novel;
- every generation estimates the gradient of the phase's objective at its current point
  from ``samples`` mirrored perturbations (evaluated outside the archive and counted in the
  budget; :func:`~training.qd.emitters.gradients.es_jacobian`), takes an Adam step (L2
  coefficient ``l2_coefficient``) and emits the new point.

Novelty is the mean distance to the ``neighbours`` nearest descriptors of a buffer of the
descriptors of every offspring so far (a ring of ``novelty_capacity``). QDax also samples
exploit parents among recently updated cells half of the time; this emitter does not.
Metrics: ``explore`` (fraction of instances exploring) and ``novelty_size``.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from models.policy import flatten_population, unflatten_population
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from training.qd.emitters.gradients import es_jacobian
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation


def novelty(
    descriptors: Float[Array, "m d"],
    buffer: Float[Array, "c d"],
    size: Int[Array, ""],
    neighbours: int,
) -> Float[Array, " m"]:
    """Mean distance of each descriptor to its ``neighbours`` nearest among the first
    ``size`` rows of ``buffer`` (fewer when the buffer holds fewer; 0 when it is empty)."""
    distances = jnp.linalg.norm(descriptors[:, None, :] - buffer[None, :, :], axis=-1)
    valid = jnp.arange(buffer.shape[0]) < size
    distances = jnp.where(valid[None, :], distances, jnp.inf)
    k = min(neighbours, buffer.shape[0])
    nearest = -jax.lax.top_k(-distances, k)[0]  # [m, k] ascending
    used = jnp.arange(k) < jnp.minimum(size, k)
    total = jnp.sum(jnp.where(used[None, :], nearest, 0), axis=1)
    return total / jnp.maximum(jnp.minimum(size, k), 1).astype(total.dtype)


class MEESState(eqx.Module):
    """What changes during a run.

    Attributes:
        theta: ``[E, n]`` each instance's current point.
        optimiser: Adam states of the instances (stacked).
        explore: ``[E]`` whether each instance is in its explore phase.
        generation: ``[]`` generations since the start.
        buffer: ``[capacity, d]`` novelty buffer of offspring descriptors (a ring).
        added: ``[]`` descriptors added to the buffer so far (it keeps the last
            ``capacity``).
    """

    theta: Float[Array, "e n"]
    optimiser: Any
    explore: Array
    generation: Int[Array, ""]
    buffer: Float[Array, "c d"]
    added: Int[Array, ""]

    @property
    def size(self) -> Int[Array, ""]:
        """Rows of the buffer in use."""
        return jnp.minimum(self.added, self.buffer.shape[0])


class MEESEmitter(Emitter):
    """ME-ES's explore-exploit emitter (see the module doc)."""

    num_emitters: int
    descriptor_size: int
    samples: int = 1000
    sigma: float = 0.02
    steps_per_parent: int = 10
    learning_rate: float = 0.01
    l2_coefficient: float = 0.0
    neighbours: int = 10
    exploit_cells: int = 2
    explore_cells: int = 5
    novelty_capacity: int = 4096
    use_explore: bool = True

    def __check_init__(self) -> None:
        if self.num_emitters < 1:
            raise ConfigError(f"me-es needs at least 1 instance, given {self.num_emitters}")
        if self.samples < 2 or self.samples % 2:
            raise ConfigError(
                "samples (evaluations per ES gradient, in mirrored pairs) must be an even "
                f"number >= 2, given {self.samples!r}"
            )
        for name in ("steps_per_parent", "neighbours", "exploit_cells", "explore_cells"):
            if getattr(self, name) < 1:
                raise ConfigError(f"me-es {name} must be >= 1, given {getattr(self, name)!r}")

    @property
    def batch_size(self) -> int:
        return self.num_emitters

    @property
    def extra_evaluations(self) -> int:
        return self.num_emitters * self.samples

    def _optimiser(self) -> optax.GradientTransformation:
        # L2 regularisation (added to the gradient before Adam), not decoupled weight decay.
        return optax.chain(
            optax.add_decayed_weights(self.l2_coefficient), optax.adam(self.learning_rate)
        )

    def init(self, key: PRNGKeyArray, archive: Archive) -> MEESState:
        del key
        flat, _ = flatten_population(archive.genomes)
        theta = jnp.zeros((self.num_emitters, flat.shape[1]), flat.dtype)
        return MEESState(
            theta=theta,
            optimiser=jax.vmap(self._optimiser().init)(theta),
            # Flipped at the first parent selection: the first parents exploit.
            explore=jnp.ones((self.num_emitters,), bool),
            generation=jnp.zeros((), jnp.int32),
            buffer=jnp.zeros((self.novelty_capacity, self.descriptor_size), flat.dtype),
            added=jnp.zeros((), jnp.int32),
        )

    def _parents(
        self, key: PRNGKeyArray, state: MEESState, archive: Archive, explore: Array
    ) -> Float[Array, "e n"]:
        """One parent per instance: among the fittest (exploit) or most novel (explore)."""
        occupied = archive.occupied
        fitness = jnp.where(occupied, archive.fitness, -jnp.inf)
        novel = novelty(archive.descriptors, state.buffer, state.size, self.neighbours)
        novel = jnp.where(occupied, novel, -jnp.inf)
        cells = archive.num_cells
        _, fittest = jax.lax.top_k(fitness, min(self.exploit_cells, cells))
        _, newest = jax.lax.top_k(novel, min(self.explore_cells, cells))
        k_fit, k_nov = jax.random.split(key)
        count = jnp.maximum(jnp.sum(occupied), 1)
        pick_fit = fittest[
            jax.random.randint(k_fit, (self.num_emitters,), 0, jnp.minimum(count, fittest.shape[0]))
        ]
        pick_nov = newest[
            jax.random.randint(k_nov, (self.num_emitters,), 0, jnp.minimum(count, newest.shape[0]))
        ]
        chosen = jnp.where(explore, pick_nov, pick_fit)
        flat, _ = flatten_population(archive.genomes)
        return flat[chosen]

    def ask(
        self, key: PRNGKeyArray, state: MEESState, archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, MEESState]:
        k_parent, k_grad = jax.random.split(key)
        new_parent = state.generation % self.steps_per_parent == 0
        flipped = ~state.explore if self.use_explore else jnp.zeros_like(state.explore)
        explore = jnp.where(new_parent, flipped, state.explore)
        theta = jax.lax.cond(
            new_parent,
            lambda: self._parents(k_parent, state, archive, explore),
            lambda: state.theta,
        )
        fresh = jax.vmap(self._optimiser().init)(theta)
        optimiser = jax.tree_util.tree_map(
            lambda a, b: jnp.where(new_parent, a, b), fresh, state.optimiser
        )

        template = one_genome(archive)
        phase = jnp.repeat(explore, self.samples)

        def objective(evaluation: Evaluation) -> Array:
            scores = novelty(evaluation.descriptors, state.buffer, state.size, self.neighbours)
            return jnp.where(phase, scores, evaluation.fitness)[:, None]

        gradient = es_jacobian(
            evaluate,
            template,
            theta,
            k_grad,
            samples=self.samples,
            sigma=self.sigma,
            outputs=objective,
        )[:, 0]
        # Adam minimises: ascend the objective.
        updates, optimiser = jax.vmap(self._optimiser().update)(-gradient, optimiser, theta)
        theta = optax.apply_updates(theta, updates)
        new_state = eqx.tree_at(
            lambda s: (s.theta, s.optimiser, s.explore), state, (theta, optimiser, explore)
        )
        return unflatten_population(template, theta), new_state

    def tell(
        self,
        key: PRNGKeyArray,
        state: MEESState,
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[MEESState, Metrics]:
        del key, archive, genomes, insert_info, evaluate
        descriptors = evaluation.descriptors.astype(state.buffer.dtype)
        rows = (state.added + jnp.arange(descriptors.shape[0])) % self.novelty_capacity
        buffer = state.buffer.at[rows].set(descriptors)
        added = state.added + descriptors.shape[0]
        # The first tell is the task's random genomes: they seed the novelty buffer only.
        generation = state.generation + jnp.where(state.added > 0, 1, 0)
        new_state = eqx.tree_at(
            lambda s: (s.buffer, s.added, s.generation), state, (buffer, added, generation)
        )
        return new_state, {
            "explore": jnp.mean(state.explore.astype(jnp.float32)),
            "novelty_size": new_state.size,
        }
