"""The episodic task protocol: what a task whose genomes are policies acting in an
environment implements, and the one ``evaluate`` built on it.

An :class:`EpisodicTask` exposes batched functions (leading axis ``B`` on every leaf of a
state, of an accumulator and of every array they return):

- ``reset(key, B) -> state``: ``B`` initial states under the task's reset protocol;
- ``step(state, actions [B, act]) -> (state, reward [B], done [B])``; ``done`` is True
  when the environment terminates the episode on this step (never for the time limit,
  which the episode loop applies);
- ``observe(state) -> [B, obs]``: what the policy sees;
- the descriptor accumulator: ``init_descriptor(state) -> acc``,
  ``accumulate_descriptor(acc, next_state, valid [B]) -> acc`` after every step, and
  ``finalise_descriptor(acc, valid_steps [B]) -> [B, k]``.

:func:`zoo.tasks.episodes.run_episodes` is the one loop that drives them; ``evaluate``,
sequencing (:mod:`zoo.sequence`) and rendering all run episodes through it. A learned
dynamics model can stand in for ``step`` (``task.evaluate(policies, key, step=model)``)::

    task = zoo.tasks.make("point-maze")
    state = task.reset(key, 4)
    state, reward, done = task.step(state, jnp.zeros((4, 2)))
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from models.policy import MLPPolicy, PolicySpec
from zoo.errors import ConfigError, ShapeError, TaskMismatchError
from zoo.tasks.base import Evaluation, Task, TaskSpec
from zoo.tasks.episodes import StepFn, run_episodes

RESETS = ("deterministic", "stochastic")


class EpisodicTask(Task):
    """A task whose genomes are policies, evaluated on one episode each.

    Subclasses set ``spec`` (with ``genome="policy"``, ``observation_size``,
    ``action_size``, ``episode_length`` and ``reset``), implement :meth:`default_policy`
    and the batched protocol below; :meth:`evaluate` and :meth:`init_genomes` are shared.
    Every protocol method is pure and jit-compatible.
    """

    # -- the protocol -------------------------------------------------------------------
    @abc.abstractmethod
    def reset(self, key: PRNGKeyArray, batch: int) -> Any:
        """``batch`` initial states (leading axis ``batch`` on every leaf).

        ``spec.reset == "deterministic"``: one fixed state broadcast to the batch (``key``
        is ignored); ``"stochastic"``: an independent draw per episode from ``key``.
        """

    @abc.abstractmethod
    def step(
        self, state: Any, actions: Float[Array, "batch act"]
    ) -> tuple[Any, Float[Array, " batch"], Bool[Array, " batch"]]:
        """One step of every episode of the batch.

        Args:
            state: batched state (from :meth:`reset` or a previous step).
            actions: ``[B, act]`` the policies' outputs.

        Returns:
            ``(next_state, reward [B], done [B])``; ``done`` is True when the environment
            terminates the episode on this step (the time limit is not ``done``).
        """

    @abc.abstractmethod
    def observe(self, state: Any) -> Float[Array, "batch obs"]:
        """The observations ``[B, obs]`` the policies see in ``state``."""

    @abc.abstractmethod
    def init_descriptor(self, state: Any) -> Any:
        """The descriptor accumulator before the first step (leading axis ``B``)."""

    @abc.abstractmethod
    def accumulate_descriptor(
        self, accumulator: Any, next_state: Any, valid: Bool[Array, " batch"]
    ) -> Any:
        """The accumulator after a step that led to ``next_state``.

        ``valid[b]`` is False once episode ``b`` has terminated: its entries must stay
        unchanged (use ``jnp.where``, never a product, so that non-finite values after
        termination do not leak in).
        """

    @abc.abstractmethod
    def finalise_descriptor(
        self, accumulator: Any, valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch k"]:
        """Descriptors ``[B, k]`` from the final accumulator and the number of valid steps."""

    # -- shared -------------------------------------------------------------------------
    def init_genomes(
        self, key: PRNGKeyArray, size: int, policy: PolicySpec | None = None
    ) -> MLPPolicy:
        """``size`` random policies (leading batch axis ``size`` on every leaf).

        Args:
            key: initialisation randomness.
            size: population size.
            policy: the architecture; :meth:`default_policy` when ``None``.
        """
        policy = policy or self.default_policy()
        if policy is None:
            raise ConfigError(
                f"task {self.spec.name!r} has no default policy and none was given; pass "
                f"PolicySpec({self.spec.observation_size}, {self.spec.action_size}, ...)"
            )
        check_policy_spec(policy, self.spec)
        return policy.init_population(key, size)

    def evaluate(
        self,
        genomes: Any,
        key: PRNGKeyArray,
        *,
        transitions: bool = False,
        step: StepFn | None = None,
    ) -> Evaluation:
        """Evaluate a population of ``B`` policies, one episode each.

        Args:
            genomes: policies with a leading batch axis ``B`` on every array leaf (any
                Equinox module mapping ``[obs] -> [act]`` once unbatched).
            key: reset randomness (ignored with ``reset="deterministic"``).
            transitions: also return the ``[B, episode_length, ...]``
                :class:`~zoo.tasks.base.Transitions`.
            step: replaces :meth:`step` (same contract), e.g. a learned dynamics model
                for imagined rollouts; ``None`` runs the task's dynamics.

        Returns:
            fitness ``[B]`` (sum of rewards over valid steps), descriptors ``[B, k]``.
        """
        check_policy_population(genomes, self.spec)
        state = self.reset(key, population_size(genomes))
        policies = batched_policy(genomes)
        result = run_episodes(
            self,
            lambda observations, t: policies(observations),
            state,
            self.spec.episode_length,
            step=step,
            transitions=transitions,
        )
        descriptors = self.finalise_descriptor(result.accumulator, result.valid_steps)
        return Evaluation(result.returns, descriptors, result.transitions)


# ---------------------------------------------------------------------------------------
# Policy populations
# ---------------------------------------------------------------------------------------


def batched_policy(genomes: Any) -> Callable[[Float[Array, "batch obs"]], Array]:
    """``[B, obs] -> [B, act]`` with each policy of the population on its own row."""
    apply = eqx.filter_vmap(lambda p, o: p(o))
    return lambda observations: apply(genomes, observations)


def population_size(genomes: Any) -> int:
    """Leading axis of the first array leaf of a population."""
    leaves = jax.tree_util.tree_leaves(genomes)
    if not leaves:
        raise ShapeError("expected a population with at least one array leaf, got none")
    return int(leaves[0].shape[0])


def check_policy_population(genomes: Any, spec: TaskSpec) -> None:
    """Raise a helpful error when a policy population does not fit the task.

    Any population must be a module (a callable pytree) whose array leaves share one
    leading batch size; the layer sizes of :class:`models.MLPPolicy` populations are
    checked too, those of other modules are trusted.

    Raises:
        TaskMismatchError: an array (vector genomes) or another non-callable; an MLP of
            other observation or action sizes.
        ShapeError: no array leaf, a scalar leaf, or leaves of different leading sizes.
    """
    if eqx.is_array(genomes) or not callable(genomes):
        shape = getattr(genomes, "shape", None)
        given = f"an array of shape {tuple(shape)}" if shape is not None else type(genomes).__name__
        raise TaskMismatchError(
            f"task {spec.name!r} evaluates policies (a batch of modules mapping "
            f"[{spec.observation_size}] observations to [{spec.action_size}] actions), got "
            f"{given}; vector genomes are for tasks with genome='vector' (e.g. lp-sphere). "
            "Build policies with task.default_policy().init_population(key, n)"
        )
    if isinstance(genomes, MLPPolicy) and genomes.weights[0].ndim != 3:
        raise ShapeError(
            f"task {spec.name!r} evaluates a population (every weight with a leading batch "
            f"axis), got a first weight of shape {genomes.weights[0].shape}; build one with "
            "PolicySpec.init_population or add an axis with jax.tree.map(lambda x: x[None], p)"
        )
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(genomes) if eqx.is_array(leaf)]
    if not leaves:
        raise ShapeError(
            f"task {spec.name!r} evaluates a population of policies, got a module with no "
            "array leaf; build one with task.default_policy().init_population(key, n)"
        )
    sizes = sorted({leaf.shape[0] if leaf.ndim else None for leaf in leaves}, key=str)
    if len(sizes) != 1 or sizes[0] is None:
        raise ShapeError(
            f"task {spec.name!r} evaluates a population: every array leaf needs the same "
            f"leading batch axis, got leading sizes {sizes} (None: a scalar leaf); stack "
            "policies of one architecture with jax.tree.map(lambda *x: jnp.stack(x), *policies)"
        )
    if not isinstance(genomes, MLPPolicy):
        return
    obs, act = genomes.weights[0].shape[-1], genomes.weights[-1].shape[-2]
    if (obs, act) != (spec.observation_size, spec.action_size):
        raise TaskMismatchError(
            f"task {spec.name!r} expects policies with observation_size="
            f"{spec.observation_size} and action_size={spec.action_size}, got {obs} and "
            f"{act}; use task.default_policy() or a PolicySpec with these sizes"
        )


def check_policy_spec(policy: PolicySpec, spec: TaskSpec) -> None:
    """Raise :class:`TaskMismatchError` when ``policy`` does not fit the task's sizes."""
    if (policy.observation_size, policy.action_size) != (
        spec.observation_size,
        spec.action_size,
    ):
        raise TaskMismatchError(
            f"task {spec.name!r} needs observation_size={spec.observation_size} and "
            f"action_size={spec.action_size}, but the policy spec has "
            f"observation_size={policy.observation_size} and "
            f"action_size={policy.action_size}; build it with "
            f"PolicySpec({spec.observation_size}, {spec.action_size}, hidden_sizes=...) "
            "or use task.default_policy()"
        )


def check_task_arguments(
    name: str, episode_length: int, reset: str, hidden: Sequence[int]
) -> tuple[int, ...]:
    """Validate the common constructor arguments of an episodic task.

    Returns:
        ``hidden`` as a tuple of ints.

    Raises:
        ConfigError: ``episode_length < 1``, an unknown reset protocol or a hidden size < 1.
    """
    if int(episode_length) < 1:
        raise ConfigError(f"task {name!r}: episode_length must be >= 1, got {episode_length}")
    if reset not in RESETS:
        raise ConfigError(f"task {name!r}: reset must be one of {list(RESETS)}, got {reset!r}")
    hidden = tuple(int(h) for h in hidden)
    if any(h < 1 for h in hidden):
        raise ConfigError(f"task {name!r}: policy_hidden_sizes must be >= 1, got {hidden}")
    return hidden
