"""Deceptive ant tasks on Brax: ``ant-trap`` and ``ant-maze`` (walls added to the ant's MJCF).

Both are Brax's ``ant`` (same body, actuators, observation and reset) with fixed box walls
added to its MuJoCo model, and describe a policy by where it ends: the torso ``(x, y)``
after the last valid step, clipped to the descriptor bounds. The layouts follow QDax's
Brax v1 ant-trap and ant-maze (capsules of radius 0.5 there, boxes 1 thick here).

ant-trap (``y`` up, the ant faces ``+x``; descriptor bounds ``[0, 30] x [-8, 8]``)::

      y
     3.5           +=========================+
     2.5           +====================+    |   side walls: x in [6.5, 12.5],
                                        |    |      |y| in [2.5, 3.5]
      0    S ->          pocket         |    |   back wall: x in [11.5, 12.5],
                                        |    |      y in [-3.5, 3.5]
    -2.5           +====================+    |
    -3.5           +=========================+
          x = 0   6.5                 11.5  12.5

S: start (0, 0); the pocket (``x`` in ``[6.5, 11.5]``, ``|y| < 2.5``) opens towards it.

The reward is the ant's (forward velocity + 1 - 0.5 * sum(a^2) per step), so walking
straight ahead leads into the pocket and stops at the back wall (the torso near
``x = 11.25``): to go further a policy must first turn away from the reward.

ant-maze (descriptor bounds ``[-5, 40]^2``, one row 2.5 m, one column 1 m)::

       y
      40  ###############################################
          ##             ##                            ##
          ##             ## west wall                  ##
          ##             ##                            ##
          ##             ##                            ##
          ##             ##                            ##
          ##             ##                            ##
          ##             ##                            ##
      20  ##                                           ##
          ##                       ##                  ##
          ##                       ## east wall        ##
          ##                       ##                  ##
          ##                       ##                  ##
     7.5  ##              ########### <- spur          ##
          ##                       ##                  ##
          ##                       ##                  ##
       0  ##   S                   ##             G    ##
          ##                       ##                  ##
      -5  ###############################################
   x      -5             10        20             35   40

Walls (1 thick, by their extents): the outer square (inner faces at -4.5 and 39.5); west
wall x in [9.5, 10.5], y in [20.5, 39.5]; east wall x in [19.5, 20.5], y in [-4.5, 19.5];
spur x in [10.5, 19.5], y in [7, 8].

S: start (0, 0); G: goal (35, 0). The reward is ``-||(x, y) - goal||`` after each step:
walking towards the goal ends in the dead end under the spur, against the east wall. The
way round passes ``x = 10`` between the spur and the west wall (``y`` in ``[8, 20.5]``),
then the end of the east wall (``y > 19.5``), and comes back down: about 55 m, more than
most gaits cover in a 250-step episode (12.5 s); raise ``episode_length`` to reach the
goal.

Collisions: the walls collide with the ant's four feet (the spheres that touch the floor)
and with its torso sphere (given ``conaffinity="2"``, a bit only the walls have, so the
torso still passes through the floor as in Brax's ant); the leg capsules do not collide,
as in QDax. Walls are 1.5 high. On the ``spring`` backend the torso stops 0.25 (its
radius) before a wall face.

Model-based interface (:mod:`zoo.tasks.imagined`): the model state is ``x = (torso x,
torso y, observation)`` (``[B, 29]``; Brax's ant observation starts with the torso ``z``
and excludes ``x, y``); reward, termination and descriptor are functions of it.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from zoo.errors import ConfigError
from zoo.tasks.base import ResetProtocol, TaskSpec
from zoo.tasks.locomotion import BraxTask, LastTorsoPosition, torso_xy


@dataclasses.dataclass(frozen=True)
class Wall:
    """A box wall standing on the floor, given by its extents in the ``(x, y)`` plane.

    Attributes:
        name: the MJCF geom name.
        x_low, x_high, y_low, y_high: the box's extents (metres).
    """

    name: str
    x_low: float
    x_high: float
    y_low: float
    y_high: float

    def geom(self) -> str:
        """The MJCF ``<geom>`` of the wall (static, in the world body)."""
        cx, cy = (self.x_low + self.x_high) / 2, (self.y_low + self.y_high) / 2
        hx, hy = (self.x_high - self.x_low) / 2, (self.y_high - self.y_low) / 2
        hz = WALL_HEIGHT / 2
        return (
            f'<geom name="{self.name}" type="box" pos="{cx:g} {cy:g} {hz:g}" '
            f'size="{hx:g} {hy:g} {hz:g}" contype="2" conaffinity="1" '
            'rgba="0.35 0.45 0.7 1"/>'
        )


WALL_HEIGHT = 1.5
TRAP_WALLS: tuple[Wall, ...] = (
    Wall("trap_back_wall", 11.5, 12.5, -3.5, 3.5),
    Wall("trap_left_wall", 6.5, 12.5, 2.5, 3.5),
    Wall("trap_right_wall", 6.5, 12.5, -3.5, -2.5),
)
MAZE_WALLS: tuple[Wall, ...] = (
    Wall("maze_south_wall", -5.5, 40.5, -5.5, -4.5),
    Wall("maze_north_wall", -5.5, 40.5, 39.5, 40.5),
    Wall("maze_west_border", -5.5, -4.5, -4.5, 39.5),
    Wall("maze_east_border", 39.5, 40.5, -4.5, 39.5),
    Wall("maze_west_wall", 9.5, 10.5, 20.5, 39.5),
    Wall("maze_east_wall", 19.5, 20.5, -4.5, 19.5),
    Wall("maze_spur", 10.5, 19.5, 7.0, 8.0),
)
TRAP_BOUNDS = ((0.0, -8.0), (30.0, 8.0))
MAZE_BOUNDS = ((-5.0, -5.0), (40.0, 40.0))
MAZE_GOAL = (35.0, 0.0)
# Largest distance to the goal inside the maze's bounds (from the corner (-5, 40)).
MAZE_MAX_DISTANCE = max(
    math.hypot(cx - MAZE_GOAL[0], cy - MAZE_GOAL[1]) for cx in (-5.0, 40.0) for cy in (-5.0, 40.0)
)
# QDax's empirical per-step lower bound of the ant-trap reward (ant-uni's is 3.24).
TRAP_OFFSET = 3.38
# Brax's ant reward and termination parameters (passed explicitly so that the model-based
# reward and termination below use the same numbers).
HEALTHY_REWARD = 1.0
CTRL_COST_WEIGHT = 0.5
HEALTHY_Z_RANGE = (0.2, 1.0)
_TORSO_GEOM = '<geom name="torso_geom" pos="0 0 0" size="0.25" type="sphere"/>'
_TORSO_BODY = '<body name="torso" pos="0 0 0.75">'


def ant_xml(walls: Sequence[Wall]) -> str:
    """Brax's ``ant.xml`` with ``walls`` in the world body and a torso that hits them.

    Raises:
        ConfigError: the installed Brax's ant model is not the one this was written for.
    """
    from etils import epath

    xml = (epath.resource_path("brax") / "envs/assets/ant.xml").read_text()
    if _TORSO_GEOM not in xml or _TORSO_BODY not in xml:
        raise ConfigError(
            "the installed Brax's envs/assets/ant.xml has no torso geom or body of the "
            f"expected form ({_TORSO_GEOM!r}, {_TORSO_BODY!r}); deceptive ant tasks need "
            "brax 0.14 (pip install 'brax==0.14.2')"
        )
    torso = _TORSO_GEOM.replace("/>", ' conaffinity="2"/>')
    xml = xml.replace(_TORSO_GEOM, torso)
    return xml.replace(_TORSO_BODY, "".join(w.geom() for w in walls) + _TORSO_BODY)


@functools.cache
def ant_with_walls(walls: tuple[Wall, ...], backend: str, terminate_when_unhealthy: bool) -> Any:
    """Brax's ant env on ``backend`` (contacts recorded) with ``walls`` in its system.

    The env is built as Brax builds it (timestep and actuator changes of the backend),
    then its system is replaced by the one loaded from :func:`ant_xml` with the same
    options and actuators. Cached: tasks built twice share the env.
    """
    from brax.envs.ant import Ant
    from brax.io import mjcf

    env = Ant(
        backend=backend,
        debug=True,
        ctrl_cost_weight=CTRL_COST_WEIGHT,
        healthy_reward=HEALTHY_REWARD,
        healthy_z_range=HEALTHY_Z_RANGE,
        terminate_when_unhealthy=terminate_when_unhealthy,
    )
    walled = mjcf.loads(ant_xml(walls))
    env.sys = walled.replace(opt=env.sys.opt, actuator=env.sys.actuator)
    return env


class DeceptiveAntTask(LastTorsoPosition, BraxTask):
    """An ant among walls, described by its final torso ``(x, y)`` (common part).

    Subclasses give the walls, the descriptor bounds, the QD offset per step (and the
    per-step fitness bounds if known), the reward (:meth:`reward` of the real step,
    :meth:`model_reward` of a model transition) and whether an unhealthy torso height ends
    the episode; the constructor arguments are the same for all. The protocol state is a
    batched ``brax.envs.State``.
    """

    walls: tuple[Wall, ...]
    descriptor_low: tuple[float, float]
    descriptor_high: tuple[float, float]
    terminate_when_unhealthy: bool
    qd_offset_per_step: float
    fitness_bounds_per_step: tuple[float | None, float | None] = (None, None)

    def __init__(
        self,
        name: str,
        episode_length: int = 250,
        backend: str = "spring",
        reset: ResetProtocol = "deterministic",
        policy_hidden_sizes: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__(name, "ant", episode_length, backend, reset, policy_hidden_sizes)
        self.env = ant_with_walls(self.walls, backend, self.terminate_when_unhealthy)
        self.dt = float(self.env.dt)
        observation_size = self.observation_size
        self.model_state_size = 2 + observation_size
        low, high = self.fitness_bounds_per_step
        self.spec = TaskSpec(
            name=name,
            kwargs=self._kwargs,
            genome="policy",
            descriptor_names=("x_position", "y_position"),
            descriptor_low=self.descriptor_low,
            descriptor_high=self.descriptor_high,
            episode_length=self.episode_length,
            qd_offset=0.0 - self.qd_offset_per_step * self.episode_length,
            reset=reset,
            observation_size=observation_size,
            action_size=int(self.env.action_size),
            min_fitness=None if low is None else low * self.episode_length,
            max_fitness=None if high is None else high * self.episode_length,
        )

    @property
    def wall_names(self) -> tuple[str, ...]:
        """The MJCF geom names of the walls."""
        return tuple(w.name for w in self.walls)

    # -- the episodic protocol ------------------------------------------------------------
    def finalise_descriptor(
        self, position: Float[Array, "batch 2"], valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch 2"]:
        """The final position clipped to the descriptor bounds ``[B, 2]``."""
        return self.model_descriptor(position)

    # -- the model-based interface (zoo.tasks.imagined) ----------------------------------
    def model_state(self, state: Any) -> Float[Array, "batch d"]:
        """``[B, 2 + obs]``: the torso ``(x, y)`` followed by the observation."""
        return jnp.concatenate([torso_xy(state), state.obs], axis=-1)

    def model_observation(self, x: Float[Array, "batch d"]) -> Float[Array, "batch obs"]:
        """The observation in model state ``x``: ``x[:, 2:]``."""
        return x[:, 2:]

    @abc.abstractmethod
    def model_reward(
        self,
        x: Float[Array, "batch d"],
        actions: Float[Array, "batch act"],
        next_x: Float[Array, "batch d"],
    ) -> Float[Array, " batch"]:
        """The reward ``[B]`` of the step from ``x`` with ``actions`` to ``next_x``."""

    def model_done(self, next_x: Float[Array, "batch d"]) -> Bool[Array, " batch"]:
        """Whether the step into ``next_x`` ends the episode ``[B]``: the torso height
        (``next_x[:, 2]``, the first observation) outside ``HEALTHY_Z_RANGE`` when the
        task terminates unhealthy ants, never otherwise."""
        z = next_x[:, 2]
        low, high = HEALTHY_Z_RANGE
        unhealthy = (z < low) | (z > high)
        return unhealthy & self.terminate_when_unhealthy

    def model_descriptor(self, x: Float[Array, "batch d"]) -> Float[Array, "batch 2"]:
        """The descriptor of an episode ending in ``x``: ``x[:, :2]`` clipped to the
        descriptor bounds ``[B, 2]``."""
        return jnp.clip(
            x[:, :2], jnp.asarray(self.descriptor_low), jnp.asarray(self.descriptor_high)
        )


class AntTrapTask(DeceptiveAntTask):
    """The ant in front of a U-shaped trap (geometry in the module docstring).

    Reward per step (Brax's ant, as ``ant-uni``): ``(x' - x) / dt + 1 - 0.5 * sum(a^2)``
    with the torso ``x`` before and after the step and ``dt = 0.05``. The episode ends
    when the torso height leaves ``[0.2, 1.0]``. Descriptor ``[B, 2]``: the final torso
    ``(x, y)`` clipped to ``[0, 30] x [-8, 8]``. QD offset: 3.38 per step, QDax's
    empirical lower bound for its ant-trap (the forward term is unbounded below; record
    the offset, nothing is clipped with it).

    Args:
        name: registry name.
        episode_length: steps per episode.
        backend: Brax pipeline (``spring`` is the fastest on CPU and the one tested).
        reset: ``"deterministic"`` (every episode starts from ``env.reset(key(0))``) or
            ``"stochastic"`` (a fresh key per episode).
        policy_hidden_sizes: hidden sizes of :meth:`default_policy`.
    """

    walls = TRAP_WALLS
    descriptor_low, descriptor_high = TRAP_BOUNDS
    terminate_when_unhealthy = True
    qd_offset_per_step = TRAP_OFFSET

    def model_reward(
        self,
        x: Float[Array, "batch d"],
        actions: Float[Array, "batch act"],
        next_x: Float[Array, "batch d"],
    ) -> Float[Array, " batch"]:
        """Forward velocity + healthy reward - control cost ``[B]`` (Brax's ant reward,
        which :meth:`step` returns)."""
        forward = (next_x[:, 0] - x[:, 0]) / self.dt
        control = CTRL_COST_WEIGHT * jnp.sum(jnp.square(actions), axis=-1)
        return forward + HEALTHY_REWARD - control


class AntMazeTask(DeceptiveAntTask):
    """The ant in a walled maze with a goal behind a wall (geometry in the module docstring).

    Reward per step: ``-||(x, y) - (35, 0)||`` of the torso after the step (no control
    cost, no healthy reward). The episode never terminates early: with a negative reward
    per step, ending an episode by falling would raise its return; a fallen ant just stays
    where it fell. Descriptor ``[B, 2]``: the final torso ``(x, y)`` clipped to
    ``[-5, 40]^2``. Fitness in ``[-56.57 * episode_length, 0]`` (56.57: the largest
    distance to the goal within the bounds); the QD offset is the lower end.

    Args: as :class:`AntTrapTask`.
    """

    walls = MAZE_WALLS
    descriptor_low, descriptor_high = MAZE_BOUNDS
    terminate_when_unhealthy = False
    qd_offset_per_step = MAZE_MAX_DISTANCE
    fitness_bounds_per_step = (-MAZE_MAX_DISTANCE, 0.0)

    def reward(self, state: Any) -> Float[Array, " batch"]:
        """``-||torso (x, y) - goal||`` ``[B]`` after the steps that led to ``state``."""
        position = torso_xy(state)
        return -jnp.linalg.norm(position - jnp.asarray(MAZE_GOAL), axis=-1)

    def model_reward(
        self,
        x: Float[Array, "batch d"],
        actions: Float[Array, "batch act"],
        next_x: Float[Array, "batch d"],
    ) -> Float[Array, " batch"]:
        """``-||next (x, y) - goal||`` ``[B]`` (the reward of :meth:`reward`)."""
        return -jnp.linalg.norm(next_x[:, :2] - jnp.asarray(MAZE_GOAL), axis=-1)
