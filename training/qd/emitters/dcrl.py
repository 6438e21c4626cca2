"""The descriptor-conditioned RL emitter of DCRL-ME (Faldor et al., 2024).

A TD3 learner (:mod:`training.td3`) whose critic ``Q(s, a, d')`` and greedy actor
``pi(s, d')`` are conditioned on a target descriptor ``d'`` (normalised to ``[-1, 1]`` with
the task's descriptor bounds; :mod:`models.conditioned`): they are a :class:`TwinCritic` and
an :class:`MLPPolicy` of the widened observation ``[s, d']``, trained by the plain TD3 update
on minibatches mapped through :func:`conditioned_minibatch`.

**Buffer rows.** Every transition is stored with two per-row descriptors of its episode:
``descriptor``, the one the episode achieved (``d``), and ``target_descriptor``, the one its
policy was asked for (``d'``), as in the reference implementation: a policy-gradient
offspring's parent's descriptor, an injected actor's conditioning descriptor, and, for every
other genome of the batch (Iso+LineDD offspring, the initial random genomes), its own
achieved descriptor (``d' = d``).

**Reward.** Every sampled minibatch is reshaped before the update,
``r' = exp(-||d - d'|| / lengthscale) * max(r + reward_offset, 0)``: the similarity kernel
needs non-negative rewards (a zero reward would otherwise beat a negative one and the critic
would learn to miss its target), so the per-step reward is first raised by
``reward_offset`` (the task's per-step lower bound, ``-qd_offset / episode_length``, as the
reference's offset wrapper) and clipped at 0. The archive's fitness is the task's own,
unchanged. The observations become ``[s, d']`` and ``[s', d']``.

**Ask.** ``pg_size`` policy-gradient offspring: uniformly sampled elites, each taking
``pg_steps`` Adam steps (fresh optimiser state per offspring) on ``-mean Q1([s, d'], pi(s))``
with ``d'`` its own (normalised) descriptor; every step draws one minibatch of states shared
by all offspring. Then ``ai_size`` injected actors: descriptors of uniformly sampled elites,
each folded into the greedy actor's first-layer bias (:func:`models.conditioned.fold_descriptor`)
to give an ordinary MLP genome.

Inside a :class:`~training.qd.multi_emitter.MultiEmitter` the emitter's ``tell`` sees the
whole batch (``tells_on_whole_batch``), so the buffer holds every offspring's transitions;
``batch_offset`` says where its own genomes start in that batch (to pair them with the
targets they were asked for).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from models.conditioned import condition, conditioned_spec, fold_descriptor, normalise_descriptors
from models.critic import TwinCritic
from models.policy import MLPPolicy
from training import fit, replay, td3
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from training.qd.emitters.policy_gradient import _policy_spec
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError, ShapeError
from zoo.tasks.base import Evaluation, Transitions

__all__ = [
    "DCRLEmitter",
    "conditioned_minibatch",
    "conditioned_policy_gradient_variation",
    "conditioned_rows",
    "conditioned_template",
]


def conditioned_template(
    observation_size: int, action_size: int, descriptor_size: int
) -> dict[str, Array]:
    """One stored transition (zeros): :func:`training.td3.transition_template` plus the
    episode's achieved ``descriptor [k]`` and ``target_descriptor [k]`` (both normalised)."""
    return {
        **td3.transition_template(observation_size, action_size),
        "descriptor": jnp.zeros((descriptor_size,), jnp.float32),
        "target_descriptor": jnp.zeros((descriptor_size,), jnp.float32),
    }


def conditioned_rows(
    transitions: Transitions,
    descriptors: Float[Array, "batch k"],
    targets: Float[Array, "batch k"],
) -> tuple[dict[str, Array], Bool[Array, " rows"]]:
    """The ``[B, T, ...]`` transitions as rows ``[B * T, ...]`` shaped like
    :func:`conditioned_template`, every row of episode ``b`` carrying ``descriptors[b]`` and
    ``targets[b]``, and the mask of the valid steps ``[B * T]``.

    Raises:
        ShapeError: ``descriptors`` or ``targets`` is not ``[B, k]``.
    """
    rows, valid = td3.flatten_transitions(transitions)
    batch, time = transitions.rewards.shape
    for name, value in (("descriptors", descriptors), ("targets", targets)):
        if value.ndim != 2 or value.shape[0] != batch:
            raise ShapeError(
                f"{name} must be [{batch}, k], one row per episode of the transitions; given "
                f"shape {value.shape}"
            )
    rows["descriptor"] = jnp.repeat(descriptors, time, axis=0)
    rows["target_descriptor"] = jnp.repeat(targets, time, axis=0)
    return rows, valid


def conditioned_minibatch(
    batch: dict[str, Array], lengthscale: float, reward_offset: float
) -> dict[str, Array]:
    """The TD3 minibatch of a minibatch of :func:`conditioned_template` rows: observations
    ``[s, d']`` and ``[s', d']``, reward
    ``exp(-||d - d'|| / lengthscale) * max(r + reward_offset, 0)``."""
    target = batch["target_descriptor"]
    distance = jnp.linalg.norm(batch["descriptor"] - target, axis=-1)
    similarity = jnp.exp(-distance / lengthscale)
    return {
        "observation": condition(batch["observation"], target),
        "action": batch["action"],
        "reward": similarity * jnp.maximum(batch["reward"] + reward_offset, 0.0),
        "next_observation": condition(batch["next_observation"], target),
        "terminated": batch["terminated"],
    }


def conditioned_policy_gradient_variation(
    key: PRNGKeyArray,
    parents: MLPPolicy,
    targets: Float[Array, "n k"],
    critic: TwinCritic,
    buffer: replay.ReplayBuffer,
    steps: int,
    learning_rate: float,
    batch_size: int,
) -> tuple[MLPPolicy, Float[Array, ""]]:
    """``steps`` Adam steps of every parent (a population ``[n, ...]``, plain policies of
    ``s``) on ``-mean Q1([s, targets[i]], pi_i(s))`` (:func:`training.td3.actor_loss`), each
    from a fresh optimiser state; step ``s`` draws one minibatch of ``batch_size``
    observations from ``buffer`` shared by all parents.

    Returns the offspring ``[n, ...]`` and their mean loss at the last step.
    """
    optimiser = fit.optimiser(fit.OptimiserConfig(learning_rate=learning_rate))

    def step(
        policies: MLPPolicy, opt_states: Any, key: PRNGKeyArray
    ) -> tuple[MLPPolicy, Any, dict[str, Array]]:
        observations = replay.sample(buffer, key, batch_size)["observation"]

        def one(
            policy: MLPPolicy, opt_state: Any, target: Float[Array, " k"]
        ) -> tuple[MLPPolicy, Any, Array]:
            conditioned = condition(
                observations, jnp.broadcast_to(target, (batch_size, *target.shape))
            )
            loss, grads = jax.value_and_grad(td3.actor_loss)(
                policy, critic, observations, conditioned
            )
            updates, opt_state = optimiser.update(grads, opt_state, policy)
            return optax.apply_updates(policy, updates), opt_state, loss

        policies, opt_states, losses = jax.vmap(one)(policies, opt_states, targets)
        return policies, opt_states, {"loss": jnp.mean(losses)}

    opt_states = jax.vmap(optimiser.init)(parents)
    children, _, metrics, _ = fit.scan_steps(step, parents, opt_states, key, steps)
    return children, metrics["loss"][-1]


class DCRLEmitter(Emitter):
    """DCRL-ME's descriptor-conditioned policy-gradient and actor-injection operator.

    Attributes:
        pg_size: policy-gradient offspring per ask (sampled elites, conditioned on their own
            descriptors).
        ai_size: injected actors per ask (the greedy actor folded with sampled descriptors).
        td3_config: the TD3 learner's hyperparameters (critic, actor, targets, minibatch).
        descriptor_low / descriptor_high: the task's descriptor bounds (normalisation).
        reward_offset: added to every per-step reward before clipping at 0 (the task's
            per-step reward lower bound, ``-qd_offset / episode_length``).
        lengthscale: of the similarity kernel ``exp(-||d - d'|| / lengthscale)`` (in
            normalised descriptor units).
        critic_steps: TD3 updates per ``tell``.
        pg_steps: Adam steps per policy-gradient offspring (0: the parents unchanged).
        policy_learning_rate: Adam learning rate of the offspring's steps.
        buffer_size: replay-buffer capacity in transitions (checkpointed every chunk).
        batch_offset: the row where this emitter's genomes start in the batch its ``tell``
            sees (its position in a :class:`~training.qd.multi_emitter.MultiEmitter`; 0
            alone).
    """

    pg_size: int
    ai_size: int
    td3_config: td3.TD3Config = eqx.field(static=True)
    descriptor_low: tuple[float, ...] = eqx.field(static=True)
    descriptor_high: tuple[float, ...] = eqx.field(static=True)
    reward_offset: float = 0.0
    lengthscale: float = 0.1
    critic_steps: int = 3000
    pg_steps: int = 150
    policy_learning_rate: float = 5e-3
    buffer_size: int = 1_000_000
    batch_offset: int = 0

    def __check_init__(self) -> None:
        for name in ("pg_size", "ai_size", "pg_steps", "batch_offset"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(
                    f"DCRLEmitter.{name} must be a non-negative integer, given {value!r}"
                )
        for name in ("critic_steps", "buffer_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"DCRLEmitter.{name} must be a positive integer, given {value!r}")
        if self.pg_size + self.ai_size < 1:
            raise ConfigError(
                "DCRLEmitter needs pg_size + ai_size >= 1 genomes per ask, given "
                f"pg_size={self.pg_size}, ai_size={self.ai_size}"
            )
        for name in ("lengthscale", "policy_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, given {getattr(self, name)!r}")
        low, high = self.descriptor_low, self.descriptor_high
        if (
            not low
            or len(low) != len(high)
            or any(not h > lo for lo, h in zip(low, high, strict=True))
        ):
            raise ConfigError(
                "DCRLEmitter needs descriptor bounds with low < high in every dimension, given "
                f"low={low}, high={high}; pass the task's spec.descriptor_low / _high"
            )

    @property
    def batch_size(self) -> int:
        return self.pg_size + self.ai_size

    @property
    def needs_transitions(self) -> bool:
        return True

    @property
    def tells_on_whole_batch(self) -> bool:
        return True

    def normalise(self, descriptors: Float[Array, "... k"]) -> Float[Array, "... k"]:
        """Descriptors mapped to ``[-1, 1]`` with the task's bounds."""
        return normalise_descriptors(descriptors, self.descriptor_low, self.descriptor_high)

    def init(self, key: PRNGKeyArray, archive: Archive) -> dict[str, Any]:
        """``{"buffer", "learner", "targets", "asked", "pg_loss"}``: an empty buffer, a
        fresh TD3 learner whose actor is conditioned on the archive's descriptors, the
        targets of the last ask ``[batch_size, k]`` (zeros), whether there was one (False:
        the first ``tell`` sees the initial random genomes) and the last offspring loss."""
        descriptor_size = len(self.descriptor_low)
        if archive.descriptor_size != descriptor_size:
            raise ConfigError(
                f"DCRLEmitter was given {descriptor_size}-dimensional descriptor bounds, but the "
                f"archive has {archive.descriptor_size}-dimensional descriptors; build it from "
                "the same task"
            )
        k_actor, k_critic = jax.random.split(key)
        spec = _policy_spec(one_genome(archive))
        actor = conditioned_spec(spec, descriptor_size).init(k_actor)
        learner = td3.init(k_critic, actor, self.td3_config)
        template = conditioned_template(spec.observation_size, spec.action_size, descriptor_size)
        return {
            "buffer": replay.init(template, self.buffer_size),
            "learner": learner,
            "targets": jnp.zeros((self.batch_size, descriptor_size), jnp.float32),
            "asked": jnp.zeros((), bool),
            "pg_loss": jnp.zeros((), jnp.float32),
        }

    def ask(
        self, key: PRNGKeyArray, state: dict[str, Any], archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, dict[str, Any]]:
        del evaluate
        learner: td3.TD3State = state["learner"]
        k_parents, k_steps, k_injected = jax.random.split(key, 3)
        parts, targets = [], []
        pg_loss = state["pg_loss"]
        if self.pg_size > 0:
            parents, cells = archive.sample(k_parents, self.pg_size)
            parent_targets = self.normalise(archive.descriptors[cells])
            if self.pg_steps > 0:
                parents, pg_loss = conditioned_policy_gradient_variation(
                    k_steps,
                    parents,
                    parent_targets,
                    learner.critic,
                    state["buffer"],
                    self.pg_steps,
                    self.policy_learning_rate,
                    self.td3_config.batch_size,
                )
            parts.append(parents)
            targets.append(parent_targets)
        if self.ai_size > 0:
            _, cells = archive.sample(k_injected, self.ai_size)
            injected_targets = self.normalise(archive.descriptors[cells])
            injected = jax.vmap(fold_descriptor, in_axes=(None, 0))(learner.actor, injected_targets)
            parts.append(injected)
            targets.append(injected_targets)
        # In the archive's dtypes (the learner's actor is float32 whatever the genomes are).
        genomes = jax.tree_util.tree_map(
            lambda stored, *xs: jnp.concatenate([x.astype(stored.dtype) for x in xs]),
            archive.genomes,
            *parts,
        )
        state = {
            **state,
            "targets": jnp.concatenate(targets).astype(jnp.float32),
            "asked": jnp.ones((), bool),
            "pg_loss": pg_loss,
        }
        return genomes, state

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
        """Add the batch's valid transitions (with their achieved and target descriptors) to
        the buffer, then ``critic_steps`` TD3 updates on reshaped minibatches. Metrics:
        ``critic_loss``, ``actor_loss`` (greedy actor), ``pg_loss`` (the offspring's last
        step, from the previous ask), ``buffer_size``."""
        del archive, genomes, insert_info, evaluate
        transitions = evaluation.transitions
        if transitions is None:
            raise ConfigError(
                "the DCRL emitter needs the evaluation's transitions, given none; run it "
                "through the QD loop, which honours needs_transitions"
            )
        batch = evaluation.descriptors.shape[0]
        start, stop = self.batch_offset, self.batch_offset + self.batch_size
        if stop > batch:
            raise ConfigError(
                f"DCRLEmitter's genomes are rows {start}..{stop - 1} of the batch its tell sees "
                f"(batch_offset={start}, batch_size={self.batch_size}), but the batch has "
                f"{batch} rows; set batch_offset to the emitter's position in its MultiEmitter"
            )
        achieved = self.normalise(evaluation.descriptors).astype(jnp.float32)
        own = jnp.where(state["asked"], state["targets"], achieved[start:stop])
        targets = achieved.at[start:stop].set(own)
        rows, valid = conditioned_rows(transitions, achieved, targets)
        buffer = replay.add(state["buffer"], rows, valid)
        transform = functools.partial(
            conditioned_minibatch, lengthscale=self.lengthscale, reward_offset=self.reward_offset
        )
        learner, metrics = td3.train(
            state["learner"], buffer, key, self.critic_steps, transform=transform
        )
        metrics = {**metrics, "pg_loss": state["pg_loss"], "buffer_size": replay.size(buffer)}
        return {**state, "buffer": buffer, "learner": learner}, metrics
