"""The one QD loop: ``ask -> evaluate -> insert -> tell``, for every algorithm.

A chunk of iterations runs as one jitted ``lax.scan`` with the loop state donated (the
archive, emitter state and any replay buffer are updated in place, never copied); between
chunks the host updates the progress bar, appends the metrics log and writes an atomic
checkpoint.

The batch to evaluate next is part of the state (``pending``): the initial state holds the
task's random initial genomes, and each step ends by asking the emitter for the next batch.
So iteration 0 needs no special case (no ``cond`` around the step) and every chunk of the
same length runs the same compiled program.

One iteration::

    evaluation = evaluate(pending)                      # sharded over the population mesh
    archive, info = archive.insert(pending, ..., emitter.extras(evaluation))
    emitter_state, metrics = emitter.tell(...)          # may learn, may evaluate more
    pending, emitter_state = emitter.ask(...)           # may evaluate more

Evaluations spent by emitters outside the archive go through the same sharded evaluation and
are counted: an iteration costs ``batch_size + extra_evaluations`` evaluations.

An archive that anneals its thresholds (CMA-MAE: learning rate below 1) replaces elites by
worse solutions by design; the loop then also keeps an elitist *result archive* of the same
cells fed with every evaluated batch (pyribs' ``result_archive``). The metrics, the progress
bar and the saved artifact are the result archive's; the annealing archive's QD score and
coverage are logged as ``annealing_qd_score`` and ``annealing_coverage``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jaxtyping import Array, Int, PRNGKeyArray

from models.policy import PolicySpec
from training.qd.emitter import Emitter, EvaluateFn, Metrics
from training.qd.sharding import local_share_evaluate, on_every_device
from zoo.archive import Archive
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation, Task
from zoo.tasks.protocol import population_size


class QDState(eqx.Module):
    """Everything that changes during a run (checkpointed as one pytree).

    ``archive`` is the archive the emitters work with; ``result`` the elitist result archive
    when ``archive`` anneals (else ``None``); :attr:`elites` is whichever holds the best
    solutions found.
    """

    archive: Archive
    emitter_state: Any
    pending: Any
    key: PRNGKeyArray
    iteration: Int[Array, ""]
    result: Archive | None = None

    @property
    def elites(self) -> Archive:
        """The archive of the best solution found per cell: what a run reports and saves."""
        return self.archive if self.result is None else self.result


def result_archive(archive: Archive) -> Archive | None:
    """An empty elitist archive with the cells of ``archive`` when ``archive`` anneals its
    thresholds (learning rate below 1), else ``None``."""
    if archive.learning_rate == 1.0:
        return None
    elitist = dataclasses.replace(
        archive,
        learning_rate=1.0,
        threshold_min=-math.inf,
        thresholds=jnp.full_like(archive.thresholds, -jnp.inf),
    )
    # Own buffers: the loop donates the state, and a buffer may be donated only once.
    return jax.tree_util.tree_map(jnp.copy, elitist)


def init_state(
    task: Task,
    emitter: Emitter,
    archive: Archive,
    key: PRNGKeyArray,
    policy: PolicySpec | None,
) -> QDState:
    """The state before iteration 0: an empty archive, the emitter's initial state and the
    task's random initial genomes as the first batch to evaluate."""
    key, k_emitter, k_genomes = jax.random.split(key, 3)
    return QDState(
        archive=archive,
        emitter_state=emitter.init(k_emitter, archive),
        pending=task.init_genomes(k_genomes, emitter.batch_size, policy),
        key=key,
        iteration=jnp.asarray(0, jnp.int32),
        result=result_archive(archive),
    )


def evaluations_per_iteration(emitter: Emitter) -> int:
    """Evaluations one iteration spends: the batch plus the emitter's extra evaluations."""
    return emitter.batch_size + emitter.extra_evaluations


class CountingEvaluate:
    """The evaluation handed to emitters; counts, while the step is traced, how many genomes
    the emitter evaluates per iteration, so that the declared budget can be checked."""

    def __init__(self, evaluate: EvaluateFn) -> None:
        self._evaluate = evaluate
        self.count = 0

    def __call__(self, genomes: Any, key: PRNGKeyArray, *, transitions: bool = False) -> Evaluation:
        self.count += population_size(genomes)
        return self._evaluate(genomes, key, transitions=transitions)

    def check(self, emitter: Emitter) -> None:
        if self.count != emitter.extra_evaluations:
            raise ConfigError(
                f"{type(emitter).__name__} declares extra_evaluations="
                f"{emitter.extra_evaluations} per iteration but evaluated {self.count} genomes "
                "through the loop's evaluate; make extra_evaluations return what ask and tell "
                "evaluate, so that the budget counts them"
            )


def make_step(
    task: Task, emitter: Emitter, mesh: Mesh | None = None
) -> Callable[[QDState], tuple[QDState, Metrics]]:
    """One QD iteration as a pure function ``state -> (state, metrics)``.

    With a ``mesh``, each device evaluates its share of the batch (and of any extra
    evaluations) and the results are gathered; asking, inserting and telling are small and
    run identically on every device (one all-gather per evaluation, instead of collectives
    inside the archive update).

    Metrics: the archive's (:meth:`Archive.metrics`), ``iteration``, ``added`` (new or
    improved cells), ``evaluations`` (spent so far) and the emitter's own.
    """
    evaluate = local_share_evaluate(task, mesh)
    per_iteration = evaluations_per_iteration(emitter)

    def step(state: QDState) -> tuple[QDState, Metrics]:
        key, k_eval, k_ask = jax.random.split(state.key, 3)
        k_tell = jax.random.fold_in(state.key, 1)
        emitter_evaluate = CountingEvaluate(evaluate)
        genomes = state.pending
        evaluation = evaluate(genomes, k_eval, transitions=emitter.needs_transitions)
        extras = emitter.extras(evaluation)
        archive, info = state.archive.insert(
            genomes, evaluation.fitness, evaluation.descriptors, extras
        )
        result = state.result
        if result is not None:
            result, _ = result.insert(genomes, evaluation.fitness, evaluation.descriptors, extras)
        emitter_state, emitter_metrics = emitter.tell(
            k_tell, state.emitter_state, archive, genomes, evaluation, info, emitter_evaluate
        )
        pending, emitter_state = emitter.ask(k_ask, emitter_state, archive, emitter_evaluate)
        emitter_evaluate.check(emitter)
        new_state = QDState(archive, emitter_state, pending, key, state.iteration + 1, result)
        metrics = dict(new_state.elites.metrics())
        if result is not None:
            annealing = archive.metrics()
            metrics["annealing_qd_score"] = annealing["qd_score"]
            metrics["annealing_coverage"] = annealing["coverage"]
        metrics["iteration"] = new_state.iteration
        metrics["added"] = jnp.sum(info.status > 0)
        metrics["evaluations"] = new_state.iteration * per_iteration
        clash = set(metrics) & set(emitter_metrics)
        if clash:
            raise ConfigError(
                f"{type(emitter).__name__} reports metrics {sorted(clash)} whose names the "
                "loop uses; rename them"
            )
        metrics.update(emitter_metrics)
        return new_state, metrics

    return step if mesh is None else on_every_device(step, mesh)


def make_chunk(
    step: Callable[[QDState], tuple[QDState, Metrics]],
) -> Callable[[QDState, int], tuple[QDState, Metrics]]:
    """``chunk(state, length)``: ``length`` iterations as one jitted scan.

    The state argument is donated; ``length`` is static (one compilation per distinct
    length: a run uses at most two, its chunk size and the remainder). Metrics have a
    leading axis of ``length``.
    """

    def chunk(state: QDState, length: int) -> tuple[QDState, Metrics]:
        return jax.lax.scan(lambda s, _: step(s), state, None, length=length)

    return jax.jit(chunk, static_argnums=(1,), donate_argnums=(0,))
