"""Sequencing: one episode in which the acting policy switches every few steps.

A sequence of ``S`` policies (given, or generated for ``S`` conditions) drives one episode of
a policy task: policy ``i`` acts during steps ``[i * L, (i + 1) * L)`` where ``L`` is
``steps_per_segment``. When ``S * L`` is shorter than the task's episode length the last
policy keeps control until the end; segments that would start after the episode length
never run. The episode ends early when the environment terminates (a Brax robot falling).

The paper's protocol (:func:`sequencing_success_rate`): split the episode into 4 windows of
equal length, each driven by a policy generated for a different condition; an episode
*succeeds* when it lasts at least 80% of the episode length::

    task = zoo.tasks.make("walker2d-uni")
    generator = zoo.load_generator("walker2d-uni-ldm")
    result = zoo.sequence(task, [[0.2, 0.8], [0.8, 0.2]], 50, generator=generator, key=key)
    result.length, result.episode_return, result.segment_descriptors
    # a text-conditioned generator: one prompt per segment
    zoo.sequence(task, ["walk forward", "hop in place"], 50, generator=text_gen, key=key)

The ``E`` episodes of a batch run through the tasks' episodic protocol and the one episode
loop, :func:`zoo.tasks.episodes.run_episodes` (same reset protocol, same reward, a step is
valid when the episode had not terminated before it), so a sequence whose segments all
hold the same policy gives that policy's ``Task.evaluate`` return and length. At step
``t`` the segment index ``min(t // L, S - 1)`` selects each episode's acting policy from
its stacked ``[S]`` policies; each segment keeps its own descriptor accumulator, started
from the state the segment begins in.

Supported tasks: every :class:`zoo.tasks.protocol.EpisodicTask` (the Brax locomotion tasks
``*-uni``, ``ant-omni`` and ``point-maze``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from models.policy import MLPPolicy
from zoo.errors import ConfigError, ShapeError
from zoo.tasks.base import Task
from zoo.tasks.episodes import run_episodes
from zoo.tasks.protocol import (
    EpisodicTask,
    batched_policy,
    check_policy_population,
)

__all__ = [
    "SampleFn",
    "SequenceResult",
    "as_sample_fn",
    "run_sequences",
    "sequence",
    "sequencing_success_rate",
]

SampleFn = Callable[[PRNGKeyArray, Float[Array, "n k"]], Any]
"""``sample_fn(key, measures [n, k]) -> policies`` (a population with leading axis ``n``)."""


class SequenceResult(eqx.Module):
    """What a sequenced episode achieved; ``*batch`` is ``()`` for :func:`sequence`.

    Attributes:
        length: ``[*batch]`` int32 valid steps (the steps before termination, the
            terminating step included), at most the episode length.
        episode_return: ``[*batch]`` sum of rewards over valid steps.
        segment_returns: ``[*batch, S]`` sum of rewards of each segment's valid steps
            (the last segment includes the steps after ``S * L`` if any).
        segment_steps: ``[*batch, S]`` int32 valid steps of each segment (0 for a segment
            that never started because the episode had ended).
        segment_descriptors: ``[*batch, S, k]`` the task's descriptor computed on each
            segment's valid steps alone (feet contact fractions, final position); NaN for
            a segment with no valid step.
        conditions: ``[*batch, S, k]`` the conditions the policies were generated for, or
            ``None`` when policies were given or generated for text alone.
        prompts: the ``S`` text prompts the policies were generated for (``None`` without
            text).
    """

    length: Int[Array, "*batch"]
    episode_return: Float[Array, "*batch"]
    segment_returns: Float[Array, "*batch segments"]
    segment_steps: Int[Array, "*batch segments"]
    segment_descriptors: Float[Array, "*batch segments k"]
    conditions: Float[Array, "*batch segments k"] | None = None
    prompts: tuple[str, ...] | None = eqx.field(static=True, default=None)


# ------------------------------------------------------------------------- samplers


def as_sample_fn(
    generator_or_sample_fn: Any,
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    clip: bool = False,
) -> SampleFn:
    """``sample_fn(key, measures [n, k]) -> n policies`` from a generator or a callable.

    A generator (anything with a ``sample`` method, e.g. :class:`zoo.generator.Generator`)
    is wrapped as ``generator.sample(key, measures, num_samples=1, sampler=sampler,
    steps=steps, guidance=guidance, clip=clip)``; a plain callable is returned unchanged.

    Raises:
        ConfigError: neither a generator nor a callable.
    """
    sample = getattr(generator_or_sample_fn, "sample", None)
    if callable(sample):

        def sample_fn(key: PRNGKeyArray, measures: Float[Array, "n k"]) -> Any:
            return sample(
                key,
                measures,
                num_samples=1,
                sampler=sampler,
                steps=steps,
                guidance=guidance,
                clip=clip,
            )

        return sample_fn
    if callable(generator_or_sample_fn):
        return generator_or_sample_fn
    raise ConfigError(
        f"expected a generator (with a sample method) or a callable sample_fn(key, measures), "
        f"given {type(generator_or_sample_fn).__name__}; load one with zoo.load_generator(name)"
    )


def _check_generator_task(generator_or_sample_fn: Any, task: Task) -> None:
    """Let a generator refuse a task it was not trained for (a callable is trusted)."""
    check = getattr(generator_or_sample_fn, "check_task", None)
    if callable(check):
        check(task)


# ---------------------------------------------------------------- episode protocol


def _check_task(task: Task) -> EpisodicTask:
    """``task`` if it runs episodes, else a :class:`ConfigError`."""
    if not isinstance(task, EpisodicTask):
        raise ConfigError(
            f"sequencing runs episodes of policy tasks (the Brax locomotion tasks and "
            f"point-maze), given {task!r}; make one with zoo.tasks.make('walker2d-uni')"
        )
    return task


class _SegmentState(NamedTuple):
    """The task's state and the reward ``[E]`` of the step that led to it."""

    inner: Any
    reward: Float[Array, " episodes"]


class _Segments(NamedTuple):
    """Per-segment statistics of ``E`` episodes of ``S`` segments.

    ``accumulators`` holds the task's descriptor accumulator of every segment (leaves
    ``[E, S, ...]``); ``t`` counts the steps taken.
    """

    t: Int[Array, ""]
    accumulators: Any
    returns: Float[Array, "episodes segments"]
    steps: Int[Array, "episodes segments"]


class _SegmentedProtocol:
    """The episodic protocol of ``task`` with one descriptor accumulator per segment.

    Steps ``[i L, (i + 1) L)`` belong to segment ``i`` (the last segment keeps the steps
    after ``S L``). Segment ``i``'s accumulator starts from ``task.init_descriptor`` of
    the state the segment begins in. The rewards travel in the state so that the
    accumulator can sum them per segment.
    """

    def __init__(self, task: EpisodicTask, segments: int, steps_per_segment: int) -> None:
        self.task = task
        self.segments = segments
        self.steps_per_segment = steps_per_segment

    def segment(self, t: Int[Array, ""]) -> Int[Array, ""]:
        """The segment that acts at step ``t``."""
        return jnp.minimum(t // self.steps_per_segment, self.segments - 1)

    def wrap(self, state: Any) -> _SegmentState:
        """The task's batched initial ``state`` with a zero reward ``[E]``."""
        batch = jax.tree_util.tree_leaves(state)[0].shape[0]
        return _SegmentState(state, jnp.zeros((batch,), jnp.float32))

    def step(self, state: _SegmentState, actions: Array) -> tuple[_SegmentState, Array, Array]:
        """The task's step; the reward ``[E]`` is also kept in the next state."""
        nxt, reward, done = self.task.step(state.inner, actions)
        return _SegmentState(nxt, reward), reward, done

    def observe(self, state: _SegmentState) -> Array:
        """The task's observations ``[E, obs]``."""
        return self.task.observe(state.inner)

    def init_descriptor(self, state: _SegmentState) -> _Segments:
        """Every segment's accumulator from the initial state; zero returns and steps."""
        first = self.task.init_descriptor(state.inner)
        batch = state.reward.shape[0]
        return _Segments(
            t=jnp.zeros((), jnp.int32),
            accumulators=jax.tree_util.tree_map(
                lambda x: jnp.broadcast_to(x[:, None], (x.shape[0], self.segments, *x.shape[1:])),
                first,
            ),
            returns=jnp.zeros((batch, self.segments), jnp.float32),
            steps=jnp.zeros((batch, self.segments), jnp.int32),
        )

    def accumulate_descriptor(
        self, acc: _Segments, next_state: _SegmentState, valid: Bool[Array, " episodes"]
    ) -> _Segments:
        """Accumulate step ``acc.t`` into its segment; start the next segment if due."""
        segment = self.segment(acc.t)
        current = jax.tree_util.tree_map(lambda stack: stack[:, segment], acc.accumulators)
        updated = self.task.accumulate_descriptor(current, next_state.inner, valid)
        stacks = jax.tree_util.tree_map(
            lambda stack, value: stack.at[:, segment].set(value.astype(stack.dtype)),
            acc.accumulators,
            updated,
        )
        # The next segment describes its own steps: it starts from the state it gets.
        t = acc.t + 1
        raw = t // self.steps_per_segment
        starts = (t % self.steps_per_segment == 0) & (raw < self.segments)
        following = jnp.minimum(raw, self.segments - 1)
        fresh = self.task.init_descriptor(next_state.inner)
        stacks = jax.tree_util.tree_map(
            lambda stack, new: stack.at[:, following].set(
                jnp.where(starts, new, stack[:, following]).astype(stack.dtype)
            ),
            stacks,
            fresh,
        )
        return _Segments(
            t=t,
            accumulators=stacks,
            returns=acc.returns.at[:, segment].add(jnp.where(valid, next_state.reward, 0.0)),
            steps=acc.steps.at[:, segment].add(valid.astype(jnp.int32)),
        )


@eqx.filter_jit
def _run(
    task: EpisodicTask, policies: MLPPolicy, key: PRNGKeyArray, steps_per_segment: int
) -> tuple[Array, Array, Array, Array, Array]:
    """``E`` episodes at once, driven by ``policies`` ``[E, S]``.

    Initial states come from the task's reset protocol for a batch of ``E`` (as
    ``Task.evaluate`` draws them). Returns ``(length [E], episode_return [E],
    segment_returns [E, S], segment_steps [E, S], segment_descriptors [E, S, k])``.
    """
    episodes, segments = policies.weights[0].shape[:2]
    protocol = _SegmentedProtocol(task, segments, steps_per_segment)

    def act(observations: Array, t: Array) -> Array:
        segment = protocol.segment(t)
        acting = jax.tree_util.tree_map(lambda x: x[:, segment], policies)
        return batched_policy(acting)(observations)

    result = run_episodes(
        protocol,
        act,
        protocol.wrap(task.reset(key, episodes)),
        task.spec.episode_length,
    )
    final: _Segments = result.accumulator
    flat = jax.tree_util.tree_map(
        lambda x: x.reshape(episodes * segments, *x.shape[2:]), final.accumulators
    )
    descriptors = task.finalise_descriptor(flat, final.steps.reshape(-1))
    descriptors = descriptors.reshape(episodes, segments, -1)
    descriptors = jnp.where(final.steps[..., None] > 0, descriptors, jnp.nan)
    return (
        result.valid_steps,
        result.returns,
        final.returns,
        final.steps,
        descriptors.astype(jnp.float32),
    )


# --------------------------------------------------------------------- public API


def _check_steps(steps_per_segment: Any) -> int:
    if (
        isinstance(steps_per_segment, bool)
        or not isinstance(steps_per_segment, int | np.integer)
        or steps_per_segment < 1
    ):
        raise ConfigError(
            f"steps_per_segment must be an integer >= 1, given {steps_per_segment!r}; e.g. "
            "episode_length // number of segments"
        )
    return int(steps_per_segment)


def _check_conditions(
    conditions: Any, task: Task, shape: tuple[str, ...]
) -> Float[np.ndarray, "..."]:
    """``conditions`` as a float32 array of ``len(shape)`` axes whose last is ``k``."""
    k = task.spec.descriptor_size
    try:
        values = np.asarray(conditions, np.float32)
    except (TypeError, ValueError):
        raise ShapeError(
            f"conditions must be numbers of shape [{', '.join(shape)}] with k={k}, given "
            f"{conditions!r}"
        ) from None
    if values.ndim != len(shape) or values.shape[-1] != k or 0 in values.shape:
        raise ShapeError(
            f"conditions must have shape [{', '.join(shape)}] with k={k} (task "
            f"{task.spec.name!r}: {', '.join(task.spec.descriptor_names)}), given shape "
            f"{values.shape}"
        )
    return values


def _stack_policies(policies: Any) -> MLPPolicy | None:
    """A stacked ``[S]`` population from one policy, a population or a list; else None."""
    if isinstance(policies, MLPPolicy):
        if policies.weights[0].ndim == 2:  # one policy: a sequence of one segment
            return jax.tree_util.tree_map(lambda x: x[None], policies)
        return policies
    if (
        isinstance(policies, Sequence)
        and len(policies) > 0
        and all(isinstance(p, MLPPolicy) for p in policies)
    ):
        try:
            return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *policies)
        except (ValueError, TypeError) as error:
            raise ShapeError(
                f"the policies of a sequence must share one architecture: {error}"
            ) from None
    return None


def _result(
    arrays: tuple[Array, ...], conditions: Array | None, prompts: tuple[str, ...] | None = None
) -> SequenceResult:
    length, episode_return, segment_returns, segment_steps, descriptors = arrays
    return SequenceResult(
        length=length,
        episode_return=episode_return,
        segment_returns=segment_returns,
        segment_steps=segment_steps,
        segment_descriptors=descriptors,
        conditions=conditions,
        prompts=prompts,
    )


def run_sequences(
    task: Task, policies: MLPPolicy, key: PRNGKeyArray, steps_per_segment: int
) -> SequenceResult:
    """A batch of ``E`` sequenced episodes, each driven by its own ``S`` policies.

    Args:
        task: a Brax locomotion task or ``point-maze``.
        policies: an :class:`MLPPolicy` population with two leading axes ``[E, S]`` (episode,
            segment) on every array leaf.
        key: reset randomness (one split per episode under ``reset="stochastic"``, drawn as
            ``Task.evaluate`` draws it for a batch of ``E``; ignored when deterministic).
        steps_per_segment: ``L``, steps each policy acts before the next one takes over.

    Returns:
        A :class:`SequenceResult` with a leading ``[E]`` axis. Compiled once per task,
        ``(E, S)`` and ``L``.
    """
    steps_per_segment = _check_steps(steps_per_segment)
    _check_task(task)
    if not isinstance(policies, MLPPolicy) or policies.weights[0].ndim != 4:
        raise ShapeError(
            "policies must be an MLPPolicy population with leading axes [episodes, segments] "
            "on every leaf (weights of shape [E, S, out, in])"
        )
    flat = jax.tree_util.tree_map(lambda x: x.reshape(-1, *x.shape[2:]), policies)
    check_policy_population(flat, task.spec)
    return _result(_run(task, policies, key, steps_per_segment), None)


def sequence(
    task: Task,
    conditions_or_policies: Any,
    steps_per_segment: int,
    *,
    key: PRNGKeyArray,
    generator: Any = None,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    clip: bool = False,
    text: Sequence[str] | None = None,
) -> SequenceResult:
    """Run ONE episode of ``task`` that switches policy every ``steps_per_segment`` steps.

    Args:
        task: a Brax locomotion task (``zoo.tasks.make("walker2d-uni")``) or ``point-maze``.
        conditions_or_policies: either the ``S`` policies (a list of single
            :class:`MLPPolicy`, or one population with a leading ``[S]`` axis), or ``S``
            conditions ``[S, k]`` (measures, one row per segment) for which ``generator``
            samples one policy each, or ``S`` text prompts (a list of strings, one per
            segment) for a generator that takes text; ``None`` with ``text``.
        steps_per_segment: ``L``: policy ``i`` acts during steps ``[i L, (i + 1) L)``; the
            last one keeps acting until the episode length when ``S L`` is shorter.
        key: randomness: split into a sampling key (conditions only) and a reset key
            (``reset="stochastic"`` tasks).
        generator: a :class:`zoo.generator.Generator` or a ``sample_fn(key, measures [n, k])
            -> policies``; required with conditions.
        sampler, steps, guidance, clip: passed to ``generator.sample``.
        text: ``S`` prompts given next to ``[S, k]`` measures, for a generator that takes
            both (or in place of ``conditions_or_policies=None``).

    Returns:
        A :class:`SequenceResult` without batch axis: ``length`` (steps before
        termination), ``episode_return`` and per-segment returns, steps and descriptors.

    Raises:
        ConfigError: a task that is not a policy task, conditions without a generator, or
            a bad ``steps_per_segment``.
        ConditionError: text for a generator that does not take it (or measures for a
            text-only one).
        ShapeError: conditions that are not ``[S, k]`` or policies that do not fit the task.
        TaskMismatchError: a generator trained for another task.
    """
    steps_per_segment = _check_steps(steps_per_segment)
    _check_task(task)
    sample_key, reset_key = jax.random.split(key)
    prompts = _prompts(conditions_or_policies, text)
    if prompts is not None:
        options = {"sampler": sampler, "steps": steps, "guidance": guidance, "clip": clip}
        return _text_sequence(
            task, conditions_or_policies, prompts, steps_per_segment, generator,
            (sample_key, reset_key), options,
        )  # fmt: skip
    policies = _stack_policies(conditions_or_policies)
    conditions = None
    if policies is None:
        if generator is None:
            raise ConfigError(
                "conditions need a generator to turn them into policies: pass "
                "generator=zoo.load_generator(name), or pass the policies themselves"
            )
        values = _check_conditions(conditions_or_policies, task, ("S", "k"))
        _check_generator_task(generator, task)
        sample_fn = as_sample_fn(
            generator, sampler=sampler, steps=steps, guidance=guidance, clip=clip
        )
        conditions = jnp.asarray(values)
        policies = sample_fn(sample_key, conditions)
    check_policy_population(policies, task.spec)
    batched = jax.tree_util.tree_map(lambda x: x[None], policies)
    arrays = _run(task, batched, reset_key, steps_per_segment)
    return _result(tuple(a[0] for a in arrays), conditions)


def _prompts(conditions_or_policies: Any, text: Any) -> tuple[str, ...] | None:
    """The segments' prompts: ``text``, or ``conditions_or_policies`` when it is a list of
    strings; ``None`` without text.

    Raises:
        ConfigError: prompts that are not a non-empty list of strings, or two lists of them.
    """
    as_text = (
        isinstance(conditions_or_policies, Sequence)
        and not isinstance(conditions_or_policies, str)
        and len(conditions_or_policies) > 0
        and all(isinstance(c, str) for c in conditions_or_policies)
    )
    if isinstance(conditions_or_policies, str):
        raise ConfigError(
            f"text segments are a list of prompts, one per segment, given the single string "
            f"{conditions_or_policies[:40]!r}; pass [{conditions_or_policies[:40]!r}]"
        )
    if as_text and text is not None:
        raise ConfigError("give the prompts once: as conditions_or_policies or as text, not both")
    prompts = conditions_or_policies if as_text else text
    if prompts is None:
        return None
    if (
        isinstance(prompts, str)
        or not isinstance(prompts, Sequence)
        or not prompts
        or not all(isinstance(p, str) and p.strip() for p in prompts)
    ):
        raise ConfigError(
            f"text must be a list of non-empty prompts, one per segment, given {prompts!r:.80}"
        )
    return tuple(prompts)


def _text_sequence(
    task: Task,
    conditions_or_policies: Any,
    prompts: tuple[str, ...],
    steps_per_segment: int,
    generator: Any,
    keys: tuple[PRNGKeyArray, PRNGKeyArray],
    options: dict[str, Any],
) -> SequenceResult:
    """:func:`sequence` of segments described by ``prompts`` (and measures ``[S, k]``, when
    ``conditions_or_policies`` holds them)."""
    sample_key, reset_key = keys
    if generator is None:
        raise ConfigError(
            "text segments need a generator to turn them into policies: pass "
            "generator=zoo.load_generator(path) (one distilled with --condition text or both)"
        )
    conditions = None
    if not (
        conditions_or_policies is None
        or (
            isinstance(conditions_or_policies, Sequence)
            and all(isinstance(c, str) for c in conditions_or_policies)
        )
    ):
        values = _check_conditions(conditions_or_policies, task, ("S", "k"))
        if values.shape[0] != len(prompts):
            raise ShapeError(
                f"one prompt per segment: given {values.shape[0]} rows of measures and "
                f"{len(prompts)} prompts"
            )
        conditions = jnp.asarray(values)
    _check_generator_task(generator, task)
    sample = getattr(generator, "sample", None)
    if callable(sample):
        policies = sample(sample_key, conditions, num_samples=1, text=list(prompts), **options)
    elif callable(generator):
        policies = generator(sample_key, list(prompts))
    else:
        raise ConfigError(
            f"expected a generator (with a sample method) or a callable sample_fn(key, "
            f"prompts), given {type(generator).__name__}; load one with zoo.load_generator"
        )
    check_policy_population(policies, task.spec)
    batched = jax.tree_util.tree_map(lambda x: x[None], policies)
    arrays = _run(task, batched, reset_key, steps_per_segment)
    return _result(tuple(a[0] for a in arrays), conditions, prompts)


def sequencing_success_rate(
    task: Task,
    generator_or_sample_fn: Any,
    conditions_list: Float[ArrayLike, "episodes segments k"],
    key: PRNGKeyArray,
    segments: int = 4,
    threshold: float = 0.8,
    *,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float = 1.0,
    clip: bool = False,
) -> float:
    """Fraction of sequenced episodes that last at least ``threshold`` of the episode length.

    The paper's protocol: each of the ``E`` episodes is split into ``segments`` windows of
    equal length ``ceil(episode_length / segments)``, each driven by a policy generated for
    that window's condition; an episode succeeds when its length (steps before
    termination) is ``>= threshold * episode_length``. All ``E * segments`` policies are
    sampled in one call and the ``E`` episodes run batched.

    Args:
        task: a Brax locomotion task or ``point-maze``.
        generator_or_sample_fn: a generator, or ``sample_fn(key, measures [n, k]) ->
            policies`` (e.g. "the archive elite nearest to each measure", the paper's
            baseline).
        conditions_list: ``[E, segments, k]`` conditions, one row of ``segments`` per episode.
        key: split into a sampling key and a reset key.
        segments: windows per episode (4 in the paper).
        threshold: fraction of the episode length an episode must last (0.8).
        sampler, steps, guidance, clip: passed to ``generator.sample``.

    Returns:
        The success rate in ``[0, 1]``.
    """
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ConfigError(f"segments must be an integer >= 1, given {segments!r}")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"threshold must be a fraction in [0, 1], given {threshold!r}")
    _check_task(task)
    values = _check_conditions(conditions_list, task, ("episodes", "segments", "k"))
    if values.shape[1] != segments:
        raise ShapeError(
            f"conditions_list must have {segments} conditions per episode (segments="
            f"{segments}), given shape {values.shape}"
        )
    _check_generator_task(generator_or_sample_fn, task)
    sample_fn = as_sample_fn(
        generator_or_sample_fn, sampler=sampler, steps=steps, guidance=guidance, clip=clip
    )
    episodes, k = values.shape[0], values.shape[2]
    sample_key, reset_key = jax.random.split(key)
    flat = sample_fn(sample_key, jnp.asarray(values.reshape(episodes * segments, k)))
    check_policy_population(flat, task.spec)
    policies = jax.tree_util.tree_map(lambda x: x.reshape(episodes, segments, *x.shape[1:]), flat)
    episode_length = task.spec.episode_length
    steps_per_segment = math.ceil(episode_length / segments)
    length = _run(task, policies, reset_key, steps_per_segment)[0]
    success = np.asarray(length) >= float(threshold) * episode_length
    return float(np.mean(success))
