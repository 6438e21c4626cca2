"""The episode loop: every episode of every episodic task runs through :func:`run_episodes`.

A batch of ``B`` episodes advances in lock step. The loop keeps only running sums in its
carry (return, the task's descriptor accumulator, the number of valid steps), so nothing
of size ``episode_length`` is stored unless transitions (or per-step records) are asked
for:

- ``transitions=False``: a ``lax.while_loop`` that stops as soon as every episode of the
  batch has terminated (or after ``episode_length`` steps);
- ``transitions=True``: a fixed-length ``lax.scan`` that also stacks the per-step
  :class:`~zoo.tasks.base.Transitions` (with the model states before and after each step
  when the task has a ``model_state`` method: what a learned dynamics model trains on).

Both paths run the same step function and mask every quantity with ``jnp.where`` after
termination, so they give identical returns and accumulators. A step is *valid* when the
episode had not terminated before it (the terminating step itself is valid, as in QDax).

The environment step can be replaced (``step=``) by any function with the same contract,
e.g. a learned dynamics model (imagination).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from zoo.errors import ShapeError
from zoo.tasks.base import Transitions

StepFn = Callable[[Any, Float[Array, "batch act"]], tuple[Any, Float[Array, " batch"], Array]]
"""``step(state, actions [B, act]) -> (next_state, reward [B], done [B])``.

``state`` is a batched environment state (leading axis ``B`` on every leaf); ``done`` is
nonzero on the step at which the environment ends an episode (termination, not the time
limit). A replacement for a task's step (a learned model) must return states that the
task's ``observe`` and ``accumulate_descriptor`` accept.
"""

ActFn = Callable[[Float[Array, "batch obs"], Int[Array, ""]], Float[Array, "batch act"]]
"""``act(observations [B, obs], t []) -> actions [B, act]``; ``t`` is the step index (0 on
the first step), for policies that change over time (sequencing); most ignore it."""


class Episodic(Protocol):
    """What :func:`run_episodes` needs from a task (batched functions, leading axis ``B``).

    :class:`zoo.tasks.protocol.EpisodicTask` documents the contract of each method.
    """

    def step(self, state: Any, actions: Float[Array, "batch act"]) -> tuple[Any, Array, Array]:
        """``(state, actions [B, act]) -> (next_state, reward [B], done [B])``."""
        ...

    def observe(self, state: Any) -> Float[Array, "batch obs"]:
        """``state -> observations [B, obs]``."""
        ...

    def init_descriptor(self, state: Any) -> Any:
        """Descriptor accumulator before the first step."""
        ...

    def accumulate_descriptor(
        self, accumulator: Any, next_state: Any, valid: Bool[Array, " batch"]
    ) -> Any:
        """Accumulator after a step; entries with ``valid`` False unchanged."""
        ...


class EpisodeResult(NamedTuple):
    """What :func:`run_episodes` returns for a batch of ``B`` episodes of at most ``T`` steps.

    Attributes:
        returns: ``[B]`` sum of rewards over valid steps.
        accumulator: the task's descriptor accumulator after the last step (give it to the
            task's ``finalise_descriptor`` with ``valid_steps``).
        valid_steps: ``[B]`` int32 number of valid steps (>= 1 when ``episode_length >= 1``).
        transitions: ``[B, T, ...]`` :class:`Transitions`, only with ``transitions=True``.
        records: ``record(next_state)`` after every step, stacked as leaves ``[B, T, ...]``
            (not masked: use ``transitions.valid``), only when ``record`` is given.
    """

    returns: Float[Array, " batch"]
    accumulator: Any
    valid_steps: Int[Array, " batch"]
    transitions: Transitions | None = None
    records: Any = None


class _Carry(NamedTuple):
    t: Int[Array, ""]
    state: Any
    alive: Bool[Array, " batch"]
    returns: Float[Array, " batch"]
    accumulator: Any
    valid_steps: Int[Array, " batch"]


class _Step(NamedTuple):
    observations: Array
    actions: Array
    rewards: Array
    next_observations: Array
    done: Array
    valid: Array
    records: Any
    model_states: Array | None
    next_model_states: Array | None


def run_episodes(
    task: Episodic,
    act: ActFn,
    state: Any,
    episode_length: int,
    *,
    step: StepFn | None = None,
    transitions: bool = False,
    record: Callable[[Any], Any] | None = None,
) -> EpisodeResult:
    """Run a batch of ``B`` episodes of at most ``episode_length`` steps from ``state``.

    Args:
        task: the episodic protocol (``step``, ``observe``, ``init_descriptor``,
            ``accumulate_descriptor``), usually a :class:`zoo.tasks.protocol.EpisodicTask`.
        act: the batched policy, ``act(observations [B, obs], t) -> actions [B, act]``.
        state: batched initial state (leading axis ``B`` on every leaf), e.g.
            ``task.reset(key, B)``.
        episode_length: the maximum number of steps ``T`` (the time limit).
        step: replaces ``task.step`` (same contract, see :data:`StepFn`), e.g. a learned
            dynamics model; ``None`` runs the task's own dynamics.
        transitions: also return the per-step :class:`Transitions` (``[B, T, ...]``,
            entries of invalid steps zero) from a fixed-length ``lax.scan``; otherwise a
            ``lax.while_loop`` stops once every episode is done. When ``task`` has a
            ``model_state(state) -> [B, d]`` method they also carry ``model_states`` and
            ``next_model_states`` (``[B, T, d]``), else these are ``None``.
        record: ``record(next_state) -> pytree`` stored after every step (scan path, leaves
            ``[B, T, ...]`` in :attr:`EpisodeResult.records`), e.g. the Brax pipeline
            states to render an episode.

    Returns:
        An :class:`EpisodeResult`; ``returns``, ``accumulator`` and ``valid_steps`` are
        identical whether or not transitions or records are asked for.
    """
    step_fn: StepFn = task.step if step is None else step
    model_state = getattr(task, "model_state", None) if transitions else None
    leaves = jax.tree_util.tree_leaves(state)
    if not leaves:
        raise ShapeError(
            "run_episodes expected a batched state (leading axis B on every array leaf), "
            "given a state with no array leaf; build it with task.reset(key, batch)"
        )
    batch = leaves[0].shape[0]

    def body(carry: _Carry) -> tuple[_Carry, _Step]:
        observations = task.observe(carry.state)
        actions = act(observations, carry.t)
        next_state, reward, done = step_fn(carry.state, actions)
        alive = carry.alive
        returns = carry.returns + jnp.where(alive, reward, 0.0)
        accumulator = task.accumulate_descriptor(carry.accumulator, next_state, alive)
        valid_steps = carry.valid_steps + alive.astype(jnp.int32)
        new = _Carry(
            t=carry.t + 1,
            state=next_state,
            alive=alive & (done == 0),
            returns=returns,
            accumulator=accumulator,
            valid_steps=valid_steps,
        )
        out = _Step(
            observations=observations,
            actions=actions,
            rewards=reward,
            next_observations=task.observe(next_state) if transitions else None,
            done=done,
            valid=alive,
            records=None if record is None else record(next_state),
            model_states=None if model_state is None else model_state(carry.state),
            next_model_states=None if model_state is None else model_state(next_state),
        )
        return new, out

    init = _Carry(
        t=jnp.zeros((), jnp.int32),
        state=state,
        alive=jnp.ones((batch,), bool),
        returns=jnp.zeros((batch,), jnp.float32),
        accumulator=task.init_descriptor(state),
        valid_steps=jnp.zeros((batch,), jnp.int32),
    )

    if not transitions and record is None:
        final = jax.lax.while_loop(
            lambda c: (c.t < episode_length) & jnp.any(c.alive),
            lambda c: body(c)[0],
            init,
        )
        return EpisodeResult(final.returns, final.accumulator, final.valid_steps)

    final, steps = jax.lax.scan(lambda c, _: body(c), init, None, length=episode_length)
    records = None
    if record is not None:
        records = jax.tree_util.tree_map(lambda x: jnp.swapaxes(x, 0, 1), steps.records)
    result = None
    if transitions:
        valid = steps.valid  # [T, B]

        def batch_major(x: Array) -> Array:
            x = jnp.where(valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim)), x, 0)
            return jnp.swapaxes(x, 0, 1)

        ended = steps.done != 0
        last = (jnp.arange(episode_length) == episode_length - 1)[:, None]
        result = Transitions(
            observations=batch_major(steps.observations),
            actions=batch_major(steps.actions),
            rewards=batch_major(steps.rewards),
            next_observations=batch_major(steps.next_observations),
            terminated=jnp.swapaxes(valid & ended, 0, 1),
            truncated=jnp.swapaxes(valid & ~ended & last, 0, 1),
            valid=jnp.swapaxes(valid, 0, 1),
            model_states=None if model_state is None else batch_major(steps.model_states),
            next_model_states=(
                None if model_state is None else batch_major(steps.next_model_states)
            ),
        )
    return EpisodeResult(final.returns, final.accumulator, final.valid_steps, result, records)
