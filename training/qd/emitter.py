"""The emitter contract: how an algorithm proposes genomes and learns from their results.

An emitter is an Equinox module holding its static hyperparameters (and, for learned
operators, nothing that changes); everything that changes during a run is its *state*, a
separate pytree threaded through the QD loop and checkpointed with it::

    state = emitter.init(key, archive)
    genomes, state = emitter.ask(key, state, archive, evaluate)
    ...the loop evaluates the genomes and inserts them (with emitter.extras(evaluation))...
    state, metrics = emitter.tell(key, state, archive, genomes, evaluation, info, evaluate)

All of it is pure and traced inside the jitted loop: no Python loops over individuals, no
host round trips. What an emitter may ask of the loop:

- ``needs_transitions``: the evaluation of its genomes carries per-step
  :class:`zoo.tasks.Transitions` (to fill a replay buffer, train a critic or a dynamics
  model). Nothing of size ``episode_length`` is built when no emitter asks.
- ``extras_template`` / ``extras``: per-elite arrays stored in the archive beside each elite
  on insertion (e.g. an elite's states and rewards-to-go), computed from the evaluation of
  the whole batch.
- ``evaluate``: evaluations the archive never sees (ES gradient estimates, perturbations),
  run through the loop's own sharded evaluation. They are declared as
  ``extra_evaluations`` per iteration, counted against the run's evaluation budget, and
  checked when the step is traced.
- ``tell`` trains what the emitter learns (critic, ES, dynamics model) and returns metrics
  (scalars) that the loop merges into ``metrics.jsonl`` and the progress bar.

The first call to ``tell`` receives the task's random initial genomes (the loop's iteration
0), which the emitter did not ask for.
"""

from __future__ import annotations

import abc
from typing import Any, Protocol

import equinox as eqx
import jax
from jaxtyping import Array, PRNGKeyArray

from zoo.archive import Archive, InsertInfo
from zoo.tasks.base import Evaluation, TaskSpec

Metrics = dict[str, Array]


class EvaluateFn(Protocol):
    """The loop's evaluation as handed to emitters: a batch of genomes -> :class:`Evaluation`.

    ``transitions=True`` also returns the per-step transitions. Every genome evaluated
    through it counts against the run's budget.
    """

    def __call__(
        self, genomes: Any, key: PRNGKeyArray, *, transitions: bool = False
    ) -> Evaluation: ...


class Emitter(eqx.Module):
    """Base class. Subclasses define ``batch_size`` and implement ``ask``."""

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """Number of genomes returned by one ``ask`` (all of them go to the archive)."""

    @property
    def needs_transitions(self) -> bool:
        """Whether ``tell`` needs ``evaluation.transitions`` of its genomes."""
        return False

    @property
    def tells_on_whole_batch(self) -> bool:
        """In a :class:`~training.qd.multi_emitter.MultiEmitter`, whether ``tell`` receives
        the whole batch (every emitter's genomes, evaluation and insertion info) instead of
        its own slice: for learners whose data is every offspring's transitions (a TD3
        critic's replay buffer, ASCII-ME's trajectory buffer)."""
        return False

    @property
    def extra_evaluations(self) -> int:
        """Genomes evaluated per iteration through ``evaluate`` (outside the archive)."""
        return 0

    def extras_template(self, spec: TaskSpec) -> dict[str, Array]:
        """ONE elite's per-elite extra arrays (zeros of the right shapes and dtypes).

        The loop builds the archive with them and stores ``extras(evaluation)`` beside every
        elite it inserts. Default: none.
        """
        del spec
        return {}

    def extras(self, evaluation: Evaluation) -> dict[str, Array]:
        """The per-elite extras of every solution of the batch, ``{name: [batch, ...]}``,
        with exactly the keys of :meth:`extras_template`."""
        del evaluation
        return {}

    def init(self, key: PRNGKeyArray, archive: Archive) -> Any:
        """Initial emitter state (``None`` for stateless emitters)."""
        del key, archive
        return None

    @abc.abstractmethod
    def ask(
        self, key: PRNGKeyArray, state: Any, archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, Any]:
        """Propose ``batch_size`` genomes (a population pytree) and the updated state."""

    def tell(
        self,
        key: PRNGKeyArray,
        state: Any,
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[Any, Metrics]:
        """Learn from the results of the last ``ask``: the updated state and metrics.

        ``archive`` is the archive after the insertion; ``insert_info`` says what happened
        to each genome. Default: state unchanged, no metrics.
        """
        del key, archive, genomes, evaluation, insert_info, evaluate
        return state, {}


def one_genome(archive: Archive) -> Any:
    """One genome of the archive's structure (its first cell, without the cells axis): the
    template to unflatten vectors into, or to read a policy's spec from."""
    return jax.tree_util.tree_map(lambda x: x[0], archive.genomes)
