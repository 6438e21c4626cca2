"""What every task is: a spec, a genome initialiser and a batched ``evaluate``.

A task evaluates a *batch of genomes* at once. For the control tasks a genome is an
:class:`models.MLPPolicy` (a population is the module with a leading batch axis); for the
benchmark functions (``arm``, ``lp-sphere``) it is a plain vector ``[batch, n]``. The
control tasks share the episodic protocol of :mod:`zoo.tasks.protocol`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from models.policy import PolicySpec
from zoo.errors import ConfigError

ResetProtocol = Literal["deterministic", "stochastic"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task, recorded in every artifact made on it.

    Attributes:
        name: registry name (``zoo.tasks.make(name, **kwargs)`` rebuilds the task).
        kwargs: the constructor overrides the task was made with (JSON-serialisable).
        genome: ``"policy"`` (an MLP policy acts in an environment) or ``"vector"``.
        genome_size: length of a vector genome; ``None`` for policy tasks.
        observation_size / action_size: policy input and output sizes (``None`` for vectors).
        descriptor_names: one name per descriptor dimension.
        descriptor_low / descriptor_high: descriptor bounds (values outside go to edge cells).
        episode_length: steps per episode (1 for benchmark functions).
        qd_offset: subtracted from every fitness in the QD score (already multiplied by the
            episode length); makes the QD score a sum of positive numbers.
        reset: ``"deterministic"`` (every episode starts from one fixed state; evaluation is
            a pure function of the genome) or ``"stochastic"`` (a fresh key per episode).
        min_fitness / max_fitness: known fitness bounds if any (used for normalised scores).
    """

    name: str
    kwargs: dict[str, Any]
    genome: Literal["policy", "vector"]
    descriptor_names: tuple[str, ...]
    descriptor_low: tuple[float, ...]
    descriptor_high: tuple[float, ...]
    episode_length: int
    qd_offset: float
    reset: ResetProtocol
    genome_size: int | None = None
    observation_size: int | None = None
    action_size: int | None = None
    min_fitness: float | None = None
    max_fitness: float | None = None

    @property
    def descriptor_size(self) -> int:
        return len(self.descriptor_names)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("descriptor_names", "descriptor_low", "descriptor_high"):
            d[k] = list(d[k])
        return d


class Transitions(eqx.Module):
    """Per-step data of a batch of ``B`` episodes of ``T`` steps (returned only when asked:
    it is large).

    Step ``t`` of episode ``b`` went from ``observations[b, t]`` with ``actions[b, t]`` to
    ``next_observations[b, t]`` and earned ``rewards[b, t]``. Entries of invalid steps are
    zero.

    Attributes:
        observations: ``[B, T, obs]`` what the policy saw before each step.
        actions: ``[B, T, act]`` what it did.
        rewards: ``[B, T]`` the reward of each step.
        next_observations: ``[B, T, obs]`` the observation after each step (equal to
            ``observations[:, t + 1]`` while the episode goes on).
        terminated: ``[B, T]`` bool, True on the step at which the environment ended the
            episode (a robot falling, the goal reached): nothing follows it, a value
            target must not bootstrap from ``next_observations`` there.
        truncated: ``[B, T]`` bool, True on the last step ``T - 1`` of an episode that
            was still running (cut by the time limit, not terminated): the value of
            ``next_observations`` there is still worth bootstrapping from.
        valid: ``[B, T]`` bool, True for the steps before termination (the terminating
            step included); once False it stays False.
        model_states: ``[B, T, d]`` the task's model state (``task.model_state``) before
            each step, for tasks that support learned dynamics models; ``None`` otherwise.
        next_model_states: ``[B, T, d]`` the model state after each step, or ``None``.
    """

    observations: Float[Array, "batch time obs"]
    actions: Float[Array, "batch time act"]
    rewards: Float[Array, "batch time"]
    next_observations: Float[Array, "batch time obs"]
    terminated: Bool[Array, "batch time"]
    truncated: Bool[Array, "batch time"]
    valid: Bool[Array, "batch time"]
    model_states: Float[Array, "batch time d"] | None = None
    next_model_states: Float[Array, "batch time d"] | None = None


class Evaluation(eqx.Module):
    """The result of :meth:`Task.evaluate` for a batch of ``B`` genomes.

    Attributes:
        fitness: ``[B]`` (for episodic tasks the sum of rewards over valid steps).
        descriptors: ``[B, k]``.
        transitions: the per-step :class:`Transitions`, only with ``transitions=True``.
    """

    fitness: Float[Array, " batch"]
    descriptors: Float[Array, "batch k"]
    transitions: Transitions | None = None


class Task(abc.ABC):
    """A QD task. Subclasses set ``spec`` and implement ``evaluate`` and ``init_genomes``.

    Tasks whose genomes act in an environment step by step derive from
    :class:`zoo.tasks.protocol.EpisodicTask`, which implements ``evaluate`` once.
    """

    spec: TaskSpec

    @abc.abstractmethod
    def evaluate(self, genomes: Any, key: PRNGKeyArray, *, transitions: bool = False) -> Evaluation:
        """Evaluate a batch of genomes. Pure and jit-compatible.

        Args:
            genomes: a population (pytree with a leading batch axis on every array leaf).
            key: randomness for stochastic resets (ignored by deterministic tasks).
            transitions: also return the per-step :class:`Transitions` (large: only when
                a consumer needs them).

        Returns:
            ``Evaluation(fitness [B], descriptors [B, k], transitions)``.
        """

    @abc.abstractmethod
    def init_genomes(self, key: PRNGKeyArray, size: int, policy: PolicySpec | None = None) -> Any:
        """``size`` random initial genomes (a population)."""

    def default_policy(self) -> PolicySpec | None:
        """The policy spec used when none is given (``None`` for vector tasks)."""
        return None

    def reset_noise(self) -> dict[str, Any] | None:
        """What a stochastic reset perturbs, and by how much (JSON-able, recorded by the
        robust evaluation protocol); ``None`` for a task without one."""
        return None

    @property
    def descriptor_bounds(self) -> tuple[Array, Array]:
        """``(low [k], high [k])`` descriptor bounds."""
        return jnp.asarray(self.spec.descriptor_low), jnp.asarray(self.spec.descriptor_high)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec.name!r}, {self.spec.kwargs})"


def genome_template(spec: TaskSpec, policy: PolicySpec | None) -> Any:
    """One genome with the right structure and shapes for ``spec`` (values meaningless).

    Used to allocate archives and to rebuild stored genomes from a config.
    """
    if spec.genome == "vector":
        if spec.genome_size is None:
            raise ConfigError(
                f"task {spec.name!r} has vector genomes but its spec gives no genome_size; "
                "rebuild the spec with zoo.tasks.make(name).spec"
            )
        return jnp.zeros((spec.genome_size,))
    if policy is None:
        raise ConfigError(
            f"task {spec.name!r} evolves policies and needs a policy spec to build genomes, "
            "given None; pass task.default_policy() or a PolicySpec"
        )
    return policy.template()
