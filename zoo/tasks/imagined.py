"""Imagined episodes: a task whose dynamics are a model of another task's.

:class:`ImaginedTask` wraps an episodic task that implements the model-based interface
(``model_state``, ``model_observation``, ``model_reward``, ``model_done``,
``model_descriptor`` and ``model_state_size``, e.g. the point maze) and a one-step model
``model_step(key, x [B, d], actions [B, a], members [B]) -> next_x [B, d]`` of its flat
model state. It is itself an :class:`~zoo.tasks.protocol.EpisodicTask` (same spec), so
``imagined.evaluate(policies, key)`` runs imagined episodes through the one episode loop,
with the same fitness and descriptor accounting as real ones:

- reset: ``x = task.model_state(task.reset(key, B))`` (the same start states as a real
  evaluation with ``key``), one ensemble member per episode drawn from ``key`` too;
- step: ``next_x = model_step(...)``, reward ``task.model_reward(x, actions, next_x)``
  (or the model's own reward when ``model_step`` returns ``(next_x, reward)``), done
  ``task.model_done(next_x)``;
- observation ``task.model_observation(x)``; descriptor ``task.model_descriptor`` of the
  model state after the last valid step.

Member sampling (PETS trajectory sampling): ``"ts-inf"`` keeps the member drawn at reset
for the whole episode; ``"ts-1"`` draws a new member for every episode at every step. The
draws (:func:`draw_members`) are stratified when the ensemble size divides the batch: each
member gets exactly ``B / E`` episodes, in random order, so that a model step can run each
member on its own rows only (:func:`training.dynamics.predict_step`).
With the true dynamics as ``model_step`` an imagined evaluation equals the real one::

    task = zoo.tasks.make("point-maze")
    imagined = ImaginedTask(task, lambda key, x, a, m: point_maze.move(x, a))
    imagined.evaluate(policies, key)  # == task.evaluate(policies, key)

``zoo`` does not train models: :func:`training.dynamics.imagination_step` turns a fitted
:class:`training.dynamics.DynamicsModel` into a ``model_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from models.policy import PolicySpec
from zoo.errors import ConfigError, ShapeError, TaskMismatchError
from zoo.tasks.protocol import EpisodicTask

__all__ = [
    "MODEL_METHODS",
    "SAMPLINGS",
    "ImaginedState",
    "ImaginedTask",
    "ModelStep",
    "draw_members",
]

MODEL_METHODS = (
    "model_state",
    "model_observation",
    "model_reward",
    "model_done",
    "model_descriptor",
)
"""The batched methods of the model-based interface (plus the ``model_state_size`` int)."""
SAMPLINGS = ("ts-inf", "ts-1")
"""Member sampling: one member per episode (``"ts-inf"``) or per step (``"ts-1"``)."""


def draw_members(key: PRNGKeyArray, batch: int, members: int) -> Int[Array, " batch"]:
    """One ensemble member per row, ``[batch]`` int32 in ``[0, members)``.

    When ``members`` divides ``batch`` the draw is stratified: a random permutation of
    ``batch / members`` copies of every member (each member predicts the same number of
    rows); otherwise each row draws its member uniformly and independently.
    """
    if batch % members == 0:
        return jax.random.permutation(key, jnp.arange(batch, dtype=jnp.int32) % members)
    return jax.random.randint(key, (batch,), 0, members, jnp.int32)


ModelStep = Callable[..., Any]
"""``model_step(key, x [B, d], actions [B, a], members [B] int) -> next_x [B, d]``, or
``-> (next_x [B, d], reward [B])`` for a model that also predicts the reward."""


class ImaginedState(eqx.Module):
    """The protocol state of a batch of ``B`` imagined episodes.

    Attributes:
        x: ``[B, d]`` model states.
        members: ``[B]`` int32, the ensemble member of each episode (with ``"ts-1"`` the
            member that made the last step).
        key: the batch's randomness for the model and the member draws (one key, no batch
            axis).
    """

    x: Float[Array, "batch d"]
    members: Int[Array, " batch"]
    key: PRNGKeyArray


class ImaginedTask(EpisodicTask):
    """``task`` with its dynamics replaced by ``model_step`` (see the module docstring).

    Args:
        task: an episodic task with the model-based interface.
        model_step: the one-step model of the model state (:data:`ModelStep`).
        members: the number ``E`` of ensemble members ``model_step`` chooses among (member
            indices are drawn uniformly in ``[0, E)``); 1 for a single model.
        sampling: ``"ts-inf"`` (member per episode, drawn at reset) or ``"ts-1"`` (member
            redrawn every step).

    Raises:
        TaskMismatchError: ``task`` lacks a method of the model-based interface.
        ConfigError: ``members`` is not a positive integer or ``sampling`` is unknown.
    """

    def __init__(
        self,
        task: EpisodicTask,
        model_step: ModelStep,
        members: int = 1,
        sampling: str = "ts-inf",
    ) -> None:
        missing = [name for name in (*MODEL_METHODS, "model_state_size") if not hasattr(task, name)]
        if missing:
            name = getattr(getattr(task, "spec", None), "name", type(task).__name__)
            raise TaskMismatchError(
                f"task {name!r} does not support model-based rollouts: it lacks "
                f"{', '.join(missing)}; use a task with the model-based interface "
                "(model_state, model_observation, model_reward, model_done, "
                "model_descriptor, model_state_size), e.g. point-maze"
            )
        if not isinstance(members, int) or isinstance(members, bool) or members < 1:
            raise ConfigError(
                f"members must be a positive integer (the ensemble size), got {members!r}"
            )
        if sampling not in SAMPLINGS:
            raise ConfigError(
                f"unknown member sampling {sampling!r}; expected one of {list(SAMPLINGS)} "
                "('ts-inf': one member per episode, 'ts-1': a member per step)"
            )
        self.task = task
        self.model_step = model_step
        self.members = members
        self.sampling = sampling
        self.spec = task.spec

    def default_policy(self) -> PolicySpec | None:
        """The wrapped task's default policy."""
        return self.task.default_policy()

    def __repr__(self) -> str:
        return f"ImaginedTask({self.task!r}, members={self.members}, sampling={self.sampling!r})"

    # -- the episodic protocol ------------------------------------------------------------
    def reset(self, key: PRNGKeyArray, batch: int) -> ImaginedState:
        """The wrapped task's start states for ``key`` as model states, and one member per
        episode (both drawn from ``key``; a deterministic task ignores it for the states)."""
        x = self.task.model_state(self.task.reset(key, batch))
        member_key, model_key = jax.random.split(jax.random.fold_in(key, 1))
        members = draw_members(member_key, batch, self.members)
        return ImaginedState(x=x, members=members, key=model_key)

    def step(
        self, state: ImaginedState, actions: Float[Array, "batch act"]
    ) -> tuple[ImaginedState, Float[Array, " batch"], Bool[Array, " batch"]]:
        """One model step: ``(next_state, reward [B], done [B])`` from the wrapped task's
        ``model_reward`` and ``model_done`` on the predicted model state.

        Raises:
            ShapeError: ``model_step`` returns next states of another shape than ``x``.
        """
        key, step_key, member_key = jax.random.split(state.key, 3)
        members = state.members
        if self.sampling == "ts-1":
            members = draw_members(member_key, members.shape[0], self.members)
        out = self.model_step(step_key, state.x, actions, members)
        next_x, reward = out if isinstance(out, tuple) else (out, None)
        if jnp.shape(next_x) != state.x.shape:
            raise ShapeError(
                f"model_step must return next model states shaped like x {state.x.shape}, "
                f"got {jnp.shape(next_x)}; it maps (key, x [B, d], actions [B, a], "
                "members [B]) to next_x [B, d]"
            )
        if reward is None:
            reward = self.task.model_reward(state.x, actions, next_x)
        done = self.task.model_done(next_x)
        return ImaginedState(x=next_x, members=members, key=key), reward, done

    def observe(self, state: ImaginedState) -> Float[Array, "batch obs"]:
        """``task.model_observation(x)``."""
        return self.task.model_observation(state.x)

    def init_descriptor(self, state: ImaginedState) -> Float[Array, "batch d"]:
        """The start model state (the accumulator is the model state after the last valid
        step)."""
        return state.x

    def accumulate_descriptor(
        self,
        last: Float[Array, "batch d"],
        next_state: ImaginedState,
        valid: Bool[Array, " batch"],
    ) -> Float[Array, "batch d"]:
        """The model state after the last valid step."""
        return jnp.where(valid[:, None], next_state.x, last)

    def finalise_descriptor(
        self, last: Float[Array, "batch d"], valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch k"]:
        """``task.model_descriptor`` of the model state after the last valid step."""
        return self.task.model_descriptor(last)
