"""The imagination emitter of DA-QD (Lim et al., 2022): MAP-Elites in a learned dynamics model.

Each ``ask`` copies the archive and runs MAP-Elites (Iso+LineDD variation) on the copy with
the policies rolled out in a learned dynamics model instead of the environment
(:class:`zoo.tasks.imagined.ImaginedTask`, TS-inf: one ensemble member per imagined episode),
until ``size`` solutions were added to the imagined archive (new or improved cells) or
``max_imagined_iterations`` imagined iterations ran. The solutions added in imagination are
the batch sent to the real environment:

- more than ``size`` additions: the first ``size`` (in imagined order);
- fewer: the collected ones repeated in order to fill the batch;
- none: the last imagined offspring (counted in the ``fallbacks`` metric).

The imagined loop is one ``lax.while_loop`` over imagined iterations inserting into the
archive copy (:meth:`zoo.archive.Archive.insert`), traced once inside the QD loop's step.

``tell`` adds the real transitions of the emitter's own genomes (the imagination-selected
policies; in a :class:`~training.qd.multi_emitter.MultiEmitter` it sees only its slice) to a
replay buffer of :class:`training.dynamics.DynamicsData` rows (the task's *model states*,
``Transitions.model_states``), and refits the model with
:func:`training.dynamics.fit_dynamics` every ``retrain_every`` iterations, starting with the
loop's iteration 0 (the task's random initial population). The loop tells before it asks,
so the first ``ask`` of a run already imagines with a fitted model. An ``ask`` on a state
straight from :meth:`ImaginationEmitter.init` (untrained model) still returns valid genomes:
Iso+LineDD offspring of the archive's elites, selected by an uninformative model.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PRNGKeyArray

from training import dynamics, replay
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from training.qd.emitters.iso_line import iso_line_variation
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation, Transitions
from zoo.tasks.imagined import ImaginedTask
from zoo.tasks.protocol import EpisodicTask

__all__ = ["ImaginationEmitter", "Imagined", "dynamics_rows"]


class Imagined(NamedTuple):
    """The outcome of one imagined MAP-Elites run (:meth:`ImaginationEmitter.imagine`).

    Attributes:
        genomes: ``[size, ...]`` the proposals for real evaluation.
        status: ``[size]`` int32, the status each proposal got when it was inserted in the
            imagined archive (2 new cell, 1 improved cell; 0 for fallback proposals).
        additions: int32, solutions added to the imagined archive (may exceed ``size``).
        iterations: int32, imagined iterations run.
        fallback: bool, nothing was added: the proposals are the last imagined offspring.
        archive: the imagined archive after the run.
    """

    genomes: Any
    status: Int[Array, " size"]
    additions: Int[Array, ""]
    iterations: Int[Array, ""]
    fallback: Bool[Array, ""]
    archive: Archive


class _Carry(NamedTuple):
    iteration: Int[Array, ""]
    key: PRNGKeyArray
    archive: Archive
    collected: Any
    status: Int[Array, " size"]
    count: Int[Array, ""]
    last: Any


def dynamics_rows(transitions: Transitions) -> tuple[dynamics.DynamicsData, Bool[Array, " rows"]]:
    """The ``[B, T, ...]`` transitions of an evaluation as model-state rows ``[B * T, ...]``
    and the mask of the valid steps ``[B * T]`` (what :func:`training.replay.add` keeps).

    Raises:
        ConfigError: the transitions carry no model states (the task has no ``model_state``).
    """
    if transitions.model_states is None or transitions.next_model_states is None:
        raise ConfigError(
            "a dynamics model trains on the task's model states, but the transitions carry "
            "none: the task does not implement model_state (see docs/ARCHITECTURE.md); use a "
            "task that supports model-based QD (e.g. point-maze)"
        )
    batch, time = transitions.rewards.shape
    rows = batch * time
    data = dynamics.DynamicsData(
        states=transitions.model_states.reshape(rows, -1),
        actions=transitions.actions.reshape(rows, -1),
        next_states=transitions.next_model_states.reshape(rows, -1),
        rewards=transitions.rewards.reshape(rows),
    )
    return data, transitions.valid.reshape(rows)


def _zeros_like_rows(tree: Any, n: int) -> Any:
    """Zeros shaped like ``n`` rows of every leaf of ``tree`` (leading axis replaced)."""
    return jax.tree_util.tree_map(lambda x: jnp.zeros((n, *x.shape[1:]), x.dtype), tree)


class ImaginationEmitter(Emitter):
    """DA-QD's imagination: real evaluation only for what improved an imagined archive.

    Attributes:
        size: genomes per ask (the solutions added in imagination).
        task: the episodic task (it must implement the model-state methods, see
            ``zoo.tasks.imagined``).
        dynamics_config: the ensemble and its fit (``training.dynamics.DynamicsConfig``).
        imagined_batch_size: offspring per imagined iteration.
        max_imagined_iterations: imagined iterations at most per ask (100 in the paper).
        retrain_every: refit the model every this many iterations (25 in the paper).
        buffer_size: capacity of the buffer of real transitions (rows).
        iso_sigma / line_sigma: the imagined Iso+LineDD variation (0.01 / 0.1 in the paper).
        sample: imagined steps draw from each member's Gaussian (False: its mean).
    """

    size: int
    task: EpisodicTask = eqx.field(static=True)
    dynamics_config: dynamics.DynamicsConfig = eqx.field(static=True)
    imagined_batch_size: int = 256
    max_imagined_iterations: int = 100
    retrain_every: int = 25
    buffer_size: int = 1_000_000
    iso_sigma: float = 0.01
    line_sigma: float = 0.1
    sample: bool = True

    def __check_init__(self) -> None:
        for name in (
            "size",
            "imagined_batch_size",
            "max_imagined_iterations",
            "retrain_every",
            "buffer_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"ImaginationEmitter.{name} must be a positive integer, given {value!r}"
                )
        if not hasattr(self.task, "model_state"):
            raise ConfigError(
                f"task {self.task.spec.name!r} does not support model-based QD: it has no "
                "model_state / model_observation / model_reward / model_done / "
                "model_descriptor methods; pick a task that has them (e.g. point-maze)"
            )

    @property
    def batch_size(self) -> int:
        return self.size

    @property
    def needs_transitions(self) -> bool:
        return True

    # ----------------------------------------------------------------------- state

    def init(self, key: PRNGKeyArray, archive: Archive) -> dict[str, Any]:
        """``{"model", "buffer", "iteration", "fit", "status", ...}``: an untrained model,
        an empty buffer of real model-state transitions, the iteration counter (0), the last
        fit's metrics (zeros), the imagined statuses of the pending proposals (zeros) and
        the last imagination's counters."""
        spec = self.task.spec
        d, a = int(self.task.model_state_size), int(spec.action_size)
        model = dynamics.init_dynamics(key, self.dynamics_config, d, a)
        buffer = replay.init(dynamics.DynamicsData.zeros(d, a), self.buffer_size)
        fit_shapes = jax.eval_shape(
            lambda: dynamics.fit_dynamics(key, model, self.dynamics_config, buffer)[1]
        )
        return {
            "model": model,
            "buffer": buffer,
            "iteration": jnp.zeros((), jnp.int32),
            "fit": jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), fit_shapes),
            "status": jnp.zeros((self.size,), jnp.int32),
            "imagined_additions": jnp.zeros((), jnp.int32),
            "imagined_iterations": jnp.zeros((), jnp.int32),
            "fallbacks": jnp.zeros((), jnp.int32),
        }

    # ------------------------------------------------------------------- imagination

    def imagined_task(self, model: dynamics.DynamicsModel) -> ImaginedTask:
        """The task with its dynamics replaced by ``model`` (TS-inf member sampling)."""

        def model_step(key: PRNGKeyArray, x: Array, actions: Array, members: Array) -> Array:
            return dynamics.predict_step(model, key, x, actions, members, sample=self.sample)[0]

        return ImaginedTask(
            self.task, model_step, members=self.dynamics_config.members, sampling="ts-inf"
        )

    def imagine(
        self, key: PRNGKeyArray, model: dynamics.DynamicsModel, archive: Archive
    ) -> Imagined:
        """Run MAP-Elites on a copy of ``archive`` in ``model`` and collect ``size``
        proposals (see the module docstring)."""
        imagined = self.imagined_task(model)
        m = self.imagined_batch_size
        extras = {name: _zeros_like_rows(value, m) for name, value in archive.extras.items()}
        template = one_genome(archive)
        collected = jax.tree_util.tree_map(
            lambda x: jnp.zeros((self.size, *x.shape), x.dtype), template
        )
        last = jax.tree_util.tree_map(lambda x: jnp.zeros((m, *x.shape), x.dtype), template)

        def body(carry: _Carry) -> _Carry:
            key, k_parents, k_partners, k_var, k_eval = jax.random.split(carry.key, 5)
            parents, _ = carry.archive.sample(k_parents, m)
            partners, _ = carry.archive.sample(k_partners, m)
            children = iso_line_variation(k_var, parents, partners, self.iso_sigma, self.line_sigma)
            evaluation = imagined.evaluate(children, k_eval)
            archive, info = carry.archive.insert(
                children, evaluation.fitness, evaluation.descriptors, extras
            )
            added = info.status > 0
            slot = carry.count + jnp.cumsum(added, dtype=jnp.int32) - 1
            target = jnp.where(added, slot, self.size)  # past the end: dropped
            collected = jax.tree_util.tree_map(
                lambda c, x: c.at[target].set(x, mode="drop"), carry.collected, children
            )
            status = carry.status.at[target].set(info.status, mode="drop")
            return _Carry(
                iteration=carry.iteration + 1,
                key=key,
                archive=archive,
                collected=collected,
                status=status,
                count=carry.count + jnp.sum(added, dtype=jnp.int32),
                last=children,
            )

        def cond(carry: _Carry) -> Array:
            return (carry.iteration < self.max_imagined_iterations) & (carry.count < self.size)

        init = _Carry(
            iteration=jnp.zeros((), jnp.int32),
            key=key,
            archive=archive,
            collected=collected,
            status=jnp.zeros((self.size,), jnp.int32),
            count=jnp.zeros((), jnp.int32),
            last=last,
        )
        final = jax.lax.while_loop(cond, body, init)
        fallback = final.count == 0
        # Fewer than `size` additions: repeat the collected ones in order; none: the last
        # imagined offspring (repeated if the imagined batch is smaller than `size`).
        index = jnp.arange(self.size, dtype=jnp.int32)
        repeat = index % jnp.maximum(jnp.minimum(final.count, self.size), 1)
        genomes = jax.tree_util.tree_map(
            lambda c, last: jnp.where(fallback, last[index % m], c[repeat]),
            final.collected,
            final.last,
        )
        status = jnp.where(fallback, 0, final.status[repeat])
        return Imagined(genomes, status, final.count, final.iteration, fallback, final.archive)

    # ---------------------------------------------------------------------- ask/tell

    def ask(
        self, key: PRNGKeyArray, state: dict[str, Any], archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, dict[str, Any]]:
        del evaluate
        result = self.imagine(key, state["model"], archive)
        return result.genomes, {
            **state,
            "status": result.status,
            "imagined_additions": result.additions,
            "imagined_iterations": result.iterations,
            "fallbacks": state["fallbacks"] + result.fallback.astype(jnp.int32),
        }

    def tell(
        self,
        key: PRNGKeyArray,
        state: dict[str, Any],
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[dict[str, Any], Metrics]:
        """Add the real transitions of the emitter's genomes to the buffer; refit the model
        when ``iteration % retrain_every == 0``.

        Metrics: ``imagined_additions`` and ``imagined_iterations`` (of the ask that made
        these genomes), ``fallbacks`` (asks so far with no imagined addition),
        ``real_agreement`` (fraction of the proposals added in imagination that were also
        added to the real archive), ``retrained`` (1 when the model was refit now), the last
        fit's ``holdout_loss``, ``holdout_mse``, ``train_loss`` and ``steps_run`` (prefixed
        ``model_``), and ``buffer_size``.
        """
        del archive, genomes, evaluate
        if evaluation.transitions is None:
            raise ConfigError(
                "the imagination emitter needs the evaluation's transitions, given none; run "
                "it through the QD loop, which honours needs_transitions"
            )
        rows, valid = dynamics_rows(evaluation.transitions)
        buffer = replay.add(state["buffer"], rows, valid)
        retrain = state["iteration"] % self.retrain_every == 0

        def refit(model: dynamics.DynamicsModel) -> tuple[dynamics.DynamicsModel, Any]:
            return dynamics.fit_dynamics(key, model, self.dynamics_config, buffer)

        def keep(model: dynamics.DynamicsModel) -> tuple[dynamics.DynamicsModel, Any]:
            return model, state["fit"]

        model, fit_metrics = jax.lax.cond(retrain, refit, keep, state["model"])
        imagined = state["status"] > 0
        really_added = imagined & (insert_info.status > 0)
        agreement = jnp.sum(really_added) / jnp.maximum(jnp.sum(imagined), 1)
        new_state = {
            **state,
            "model": model,
            "buffer": buffer,
            "iteration": state["iteration"] + 1,
            "fit": fit_metrics,
        }
        metrics = {
            "imagined_additions": state["imagined_additions"],
            "imagined_iterations": state["imagined_iterations"],
            "fallbacks": state["fallbacks"],
            "real_agreement": agreement.astype(jnp.float32),
            "retrained": retrain.astype(jnp.int32),
            "buffer_size": replay.size(buffer),
            **{f"model_{name}": value for name, value in fit_metrics.items()},
        }
        return new_state, metrics
