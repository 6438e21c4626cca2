"""A test-only algorithm that exercises every part of the QD core at once.

``toy-probe`` is a :class:`MultiEmitter` of Iso+LineDD (half the batch) and a
:class:`ProbeEmitter` (the other half) that

- spends extra evaluations: for each of its genomes it evaluates two Gaussian perturbations
  of a random elite through the loop's ``evaluate`` and proposes the better one;
- uses transitions: ``tell`` reads the rewards and validity mask of its own slice;
- learns state and reports metrics: its transitions go into a replay buffer
  (training/replay.py) on which a small reward model (linear in the next observation) takes
  a few Adam steps per iteration (training/fit.py); it reports that model's loss, a running
  count of valid steps seen, the mean reward, and whether the slice it was handed is exactly
  what it asked for;
- declares a per-elite extra: every elite keeps its per-step rewards (which add up to its
  fitness).

It is written exactly as docs/ARCHITECTURE.md says an algorithm is added: one emitter, one
registry entry (:func:`register_toy_algorithm`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from training import fit, replay
from training.qd import algorithms
from training.qd.emitter import Emitter, EvaluateFn, Metrics
from training.qd.emitters.iso_line import IsoLineEmitter
from training.qd.multi_emitter import MultiEmitter, split_batch
from zoo.archive import Archive, InsertInfo
from zoo.tasks.base import Evaluation, Task, TaskSpec

NAME = "toy-probe"


class ProbeEmitter(Emitter):
    """Best of two evaluated perturbations of a random elite, per genome."""

    size: int
    observation_size: int
    sigma: float = 0.05
    capacity: int = 2048
    model_steps: int = 4
    model_batch: int = 64

    @property
    def _optimiser(self) -> Any:
        return fit.optimiser(fit.OptimiserConfig(learning_rate=1e-2))

    @property
    def batch_size(self) -> int:
        return self.size

    @property
    def needs_transitions(self) -> bool:
        return True

    @property
    def extra_evaluations(self) -> int:
        return 2 * self.size

    def extras_template(self, spec: TaskSpec) -> dict[str, Array]:
        return {"rewards": jnp.zeros((spec.episode_length,), jnp.float32)}

    def extras(self, evaluation: Evaluation) -> dict[str, Array]:
        transitions = evaluation.transitions
        assert transitions is not None
        return {"rewards": jnp.where(transitions.valid, transitions.rewards, 0.0)}

    def init(self, key: PRNGKeyArray, archive: Archive) -> dict[str, Any]:
        del key
        model = {"w": jnp.zeros((self.observation_size,)), "b": jnp.zeros(())}
        one = {"next_observation": jnp.zeros((self.observation_size,)), "reward": jnp.zeros(())}
        return {
            "buffer": replay.init(one, self.capacity),
            "model": model,
            "opt_state": self._optimiser.init(model),
            "steps_seen": jnp.zeros((), jnp.int32),
            "asked": jax.tree_util.tree_map(
                lambda x: jnp.zeros((self.size, *x.shape[1:]), x.dtype), archive.genomes
            ),
        }

    def ask(
        self, key: PRNGKeyArray, state: dict[str, Any], archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, dict[str, Any]]:
        k_parents, k_noise, k_eval = jax.random.split(key, 3)
        parents, _ = archive.sample(k_parents, self.size)
        pairs = jax.tree_util.tree_map(lambda x: jnp.concatenate([x, x]), parents)
        leaves, treedef = jax.tree_util.tree_flatten(pairs)
        noise_keys = jax.random.split(k_noise, len(leaves))
        candidates = jax.tree_util.tree_unflatten(
            treedef,
            [
                x + self.sigma * jax.random.normal(k, x.shape, x.dtype)
                for k, x in zip(noise_keys, leaves, strict=True)
            ],
        )
        fitness = evaluate(candidates, k_eval).fitness
        first_better = fitness[: self.size] >= fitness[self.size :]

        def pick(x: Array) -> Array:
            mask = first_better.reshape((self.size,) + (1,) * (x.ndim - 1))
            return jnp.where(mask, x[: self.size], x[self.size :])

        children = jax.tree_util.tree_map(pick, candidates)
        return children, {**state, "asked": children}

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
        transitions = evaluation.transitions
        assert transitions is not None
        valid = transitions.valid
        steps = jnp.sum(valid, dtype=jnp.int32)
        same = jax.tree_util.tree_map(lambda a, b: jnp.all(a == b), genomes, state["asked"])
        flat = {
            "next_observation": transitions.next_observations.reshape(-1, self.observation_size),
            "reward": transitions.rewards.reshape(-1),
        }
        buffer = replay.add(state["buffer"], flat, valid.reshape(-1))

        def loss(model: dict[str, Array], batch: dict[str, Array], key: Array) -> Any:
            del key
            predicted = batch["next_observation"] @ model["w"] + model["b"]
            error = jnp.mean((predicted - batch["reward"]) ** 2)
            return error, {"loss": error}

        step = fit.gradient_step(
            loss, self._optimiser, lambda k: replay.sample(buffer, k, self.model_batch)
        )
        model, opt_state, model_metrics, _ = fit.scan_steps(
            step, state["model"], state["opt_state"], key, self.model_steps
        )
        metrics = {
            "model_loss": model_metrics["loss"][-1],
            "buffer_size": replay.size(buffer),
            "mean_reward": jnp.sum(jnp.where(valid, transitions.rewards, 0.0))
            / jnp.maximum(steps, 1),
            "steps_seen": state["steps_seen"] + steps,
            "slice_matches": jnp.all(jnp.stack(jax.tree_util.tree_leaves(same))).astype(jnp.int32),
            "added": jnp.sum(insert_info.status > 0),
        }
        new_state = {
            **state,
            "buffer": buffer,
            "model": model,
            "opt_state": opt_state,
            "steps_seen": metrics["steps_seen"],
        }
        return new_state, metrics


def build(task: Task, batch_size: int, hp: dict[str, Any]) -> Emitter:
    ga, probe = split_batch(batch_size, (0.5, 0.5))
    return MultiEmitter(
        [
            IsoLineEmitter(size=ga, iso_sigma=hp["iso_sigma"], line_sigma=hp["line_sigma"]),
            ProbeEmitter(
                size=probe,
                observation_size=task.spec.observation_size or 0,
                sigma=hp["probe_sigma"],
            ),
        ],
        names=("ga", "probe"),
    )


def register_toy_algorithm() -> algorithms.Algorithm:
    """Register ``toy-probe`` (idempotent)."""
    return algorithms.register(
        algorithms.Algorithm(
            name=NAME,
            summary="test-only: Iso+LineDD + best-of-two probes with transitions and extras",
            citation="",
            defaults={"iso_sigma": 0.01, "line_sigma": 0.1, "probe_sigma": 0.05},
            build=build,
        ),
        replace=True,
    )
