"""A deceptive 2-D point maze in pure JAX (no Brax): cheap, good for model-based QD tests.

Geometry (arena ``[-1, 1]^2``, ``y`` up)::

     y = 1 +-------------------------------+
           |      G                        |   G: goal zone, centre (-0.5, 0.8),
           |                               |      square of half-width 0.05
     y=0.2 |=======================        |   upper wall: x in [-1, 0.5]
           |                               |
           |                               |
    y=-0.5 |         ======================|   lower wall: x in [-0.5, 1]
           |              S                |   S: start (0, -0.85)
    y = -1 +-------------------------------+
         x = -1                          x = 1

The reward pulls straight up towards the goal, into the lower wall: to reach the goal a
policy must first go left around the lower wall, then right around the upper one (the
maze is deceptive). Same layout as the QDax point maze.

Dynamics: the action (from the policy, ``[2]``) is clipped to ``[-1, 1]`` and scaled by
1/10, then added to the position. A move that crosses a wall is stopped 0.005 before the
wall on the side it came from (its ``x`` move still happens: the point slides along the
wall), then the position is clipped to the arena. Reward: ``-||position - goal||`` after
each step. The episode ends when the point enters the goal zone (that step is valid).
Observation: the position ``(x, y)``. Descriptor: the final position, in ``[-1, 1]^2``.

Resets: deterministic starts at ``(0, -0.85)``; stochastic draws ``x ~ U(-0.1, 0.1)`` and
``y ~ U(-1, -0.7)`` per episode.

Model-based interface (:mod:`zoo.tasks.imagined`): the model state is the position ``[2]``
(it is also the observation and the descriptor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from models.policy import PolicySpec
from zoo.tasks.base import ResetProtocol, TaskSpec
from zoo.tasks.protocol import EpisodicTask, check_task_arguments

ARENA = (-1.0, 1.0)
GOAL = (-0.5, 0.8)
GOAL_HALF_WIDTH = 0.05
START = (0.0, -0.85)
STOCHASTIC_START = {"x": (-0.1, 0.1), "y": (-1.0, -0.7)}
"""A stochastic reset draws ``x`` and ``y`` uniformly in these ranges."""
ACTION_SCALE = 0.1
WALL_MARGIN = 0.005
# Horizontal walls: (y, x_low, x_high).
WALLS: tuple[tuple[float, float, float], ...] = ((-0.5, -0.5, 1.0), (0.2, -1.0, 0.5))


def move(position: Float[Array, "... 2"], action: Float[Array, "... 2"]) -> Float[Array, "... 2"]:
    """One step of the maze dynamics (walls and arena borders), any leading axes."""
    delta = jnp.clip(action, -1.0, 1.0) * ACTION_SCALE
    old_x, old_y = position[..., 0], position[..., 1]
    x, y = old_x + delta[..., 0], old_y + delta[..., 1]
    for wall_y, x_low, x_high in WALLS:
        below = old_y < wall_y
        crosses = below != (y < wall_y)
        safe_dy = jnp.where(crosses, y - old_y, 1.0)
        x_at_wall = old_x + (wall_y - old_y) / safe_dy * (x - old_x)
        blocked = crosses & (x_at_wall >= x_low) & (x_at_wall <= x_high)
        stop = jnp.where(below, wall_y - WALL_MARGIN, wall_y + WALL_MARGIN)
        y = jnp.where(blocked, stop, y)
    low, high = ARENA
    return jnp.stack([jnp.clip(x, low, high), jnp.clip(y, low, high)], axis=-1)


def distance_to_goal(position: Float[Array, "... 2"]) -> Float[Array, "..."]:
    """Euclidean distance from ``position`` to the goal centre."""
    return jnp.linalg.norm(position - jnp.asarray(GOAL), axis=-1)


def in_goal(position: Float[Array, "... 2"]) -> Bool[Array, "..."]:
    """Whether ``position`` is inside the goal square."""
    return jnp.all(jnp.abs(position - jnp.asarray(GOAL)) <= GOAL_HALF_WIDTH, axis=-1)


# Largest possible distance to the goal inside the arena (from the corner (1, -1)).
MAX_DISTANCE = max(math.hypot(cx - GOAL[0], cy - GOAL[1]) for cx in ARENA for cy in ARENA)


class PointMazeTask(EpisodicTask):
    """The deceptive point maze (see the module docstring for the geometry).

    Fitness: the sum over valid steps of ``-distance to goal`` (in
    ``[-2.3431 * episode_length, 0]``; reaching the goal early ends the episode, so fast
    policies score best). Descriptor ``[B, 2]``: the final ``(x, y)`` in ``[-1, 1]^2``.
    The QD offset is ``-2.3431 * episode_length`` (the lowest possible fitness).

    The state of the episodic protocol is the batch of positions ``[B, 2]``; it is also
    the observation and the descriptor accumulator (the position after the last valid
    step).

    Args:
        name: registry name.
        episode_length: steps per episode (100 as in QDax / GDA-QD).
        reset: ``"deterministic"`` or ``"stochastic"``.
        policy_hidden_sizes: hidden sizes of :meth:`default_policy`.
    """

    observation_size = 2
    action_size = 2
    model_state_size = 2

    def __init__(
        self,
        name: str,
        episode_length: int = 100,
        reset: ResetProtocol = "deterministic",
        policy_hidden_sizes: Sequence[int] = (64, 64),
    ) -> None:
        self.policy_hidden_sizes = check_task_arguments(
            name, episode_length, reset, policy_hidden_sizes
        )
        self.episode_length = int(episode_length)
        self.reset_protocol = reset
        self.spec = TaskSpec(
            name=name,
            kwargs={
                "episode_length": self.episode_length,
                "reset": reset,
                "policy_hidden_sizes": list(self.policy_hidden_sizes),
            },
            genome="policy",
            descriptor_names=("x_position", "y_position"),
            descriptor_low=(ARENA[0], ARENA[0]),
            descriptor_high=(ARENA[1], ARENA[1]),
            episode_length=self.episode_length,
            qd_offset=-MAX_DISTANCE * self.episode_length,
            reset=reset,
            observation_size=self.observation_size,
            action_size=self.action_size,
            min_fitness=-MAX_DISTANCE * self.episode_length,
            max_fitness=0.0,
        )

    def default_policy(self) -> PolicySpec:
        """``PolicySpec(2, 2, policy_hidden_sizes)`` with tanh layers."""
        return PolicySpec(self.observation_size, self.action_size, self.policy_hidden_sizes)

    def reset_noise(self) -> dict[str, Any]:
        """The uniform ranges of a stochastic start position (:data:`STOCHASTIC_START`)."""
        return {"kind": "uniform start", **{k: list(v) for k, v in STOCHASTIC_START.items()}}

    # -- the episodic protocol ------------------------------------------------------------
    def reset(self, key: PRNGKeyArray, batch: int) -> Float[Array, "batch 2"]:
        """Start positions ``[B, 2]`` under the reset protocol (``key`` ignored if
        deterministic)."""
        if self.reset_protocol == "deterministic":
            return jnp.broadcast_to(jnp.asarray(START, jnp.float32), (batch, 2))
        (x_low, x_high), (y_low, y_high) = STOCHASTIC_START["x"], STOCHASTIC_START["y"]
        low, high = jnp.asarray([x_low, y_low]), jnp.asarray([x_high, y_high])
        return jax.random.uniform(key, (batch, 2), minval=low, maxval=high)

    def step(
        self, state: Float[Array, "batch 2"], actions: Float[Array, "batch 2"]
    ) -> tuple[Float[Array, "batch 2"], Float[Array, " batch"], Bool[Array, " batch"]]:
        """:func:`move`; reward ``-distance to goal`` ``[B]``; done when in the goal ``[B]``."""
        nxt = move(state, actions)
        return nxt, -distance_to_goal(nxt), in_goal(nxt)

    def observe(self, state: Float[Array, "batch 2"]) -> Float[Array, "batch 2"]:
        """The position is the observation."""
        return state

    def init_descriptor(self, state: Float[Array, "batch 2"]) -> Float[Array, "batch 2"]:
        """The start position (the descriptor of an episode with no valid step)."""
        return state

    def accumulate_descriptor(
        self,
        final: Float[Array, "batch 2"],
        next_state: Float[Array, "batch 2"],
        valid: Bool[Array, " batch"],
    ) -> Float[Array, "batch 2"]:
        """The position after the last valid step."""
        return jnp.where(valid[:, None], next_state, final)

    def finalise_descriptor(
        self, final: Float[Array, "batch 2"], valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch 2"]:
        """The final position ``[B, 2]``."""
        return final

    # -- the model-based interface (zoo.tasks.imagined) ----------------------------------
    def model_state(self, state: Float[Array, "batch 2"]) -> Float[Array, "batch 2"]:
        """The model state of protocol states: the position ``[B, 2]``."""
        return state

    def model_observation(self, x: Float[Array, "batch 2"]) -> Float[Array, "batch 2"]:
        """The observation in model state ``x``: the position."""
        return x

    def model_reward(
        self,
        x: Float[Array, "batch 2"],
        actions: Float[Array, "batch 2"],
        next_x: Float[Array, "batch 2"],
    ) -> Float[Array, " batch"]:
        """``-distance to goal`` of ``next_x`` ``[B]`` (the reward of :meth:`step`)."""
        return -distance_to_goal(next_x)

    def model_done(self, next_x: Float[Array, "batch 2"]) -> Bool[Array, " batch"]:
        """Whether ``next_x`` is in the goal ``[B]`` (the termination of :meth:`step`)."""
        return in_goal(next_x)

    def model_descriptor(self, x: Float[Array, "batch 2"]) -> Float[Array, "batch 2"]:
        """The descriptor of an episode ending in ``x``: the position, clipped to the arena
        (the descriptor bounds; real positions are always inside)."""
        return jnp.clip(x, ARENA[0], ARENA[1])
