"""Brax locomotion tasks: feet contact (``*-uni``) and final position (``ant-omni``).

Both implement the episodic protocol (:class:`zoo.tasks.protocol.EpisodicTask`) on a batch
of Brax states: ``reset`` / ``step`` / ``observe`` are the Brax env's (vmapped), the
descriptor accumulators keep only running counts (per-foot contact) or the last valid
position, so nothing of size ``episode_length`` is stored unless transitions are asked for.

Brax is imported when a task is built, not when this module is imported.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from models.policy import MLPPolicy, PolicySpec
from zoo.errors import ConfigError, ShapeError
from zoo.tasks.base import ResetProtocol, TaskSpec
from zoo.tasks.episodes import run_episodes
from zoo.tasks.protocol import EpisodicTask, check_task_arguments

BACKENDS = ("spring", "positional", "generalized", "mjx")

# ---------------------------------------------------------------------------------------
# Brax tasks
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Foot:
    """A foot of a Brax robot.

    Attributes:
        name: descriptor name stem (the descriptor is ``f"{name}_contact"``).
        link: name of the link in ``env.sys.link_names``.
        child: if True, the foot is the (unnamed) child link of ``link``; Brax leaves the
            ant's lower legs unnamed.
    """

    name: str
    link: str
    child: bool = False


FEET: dict[str, tuple[Foot, ...]] = {
    "hopper": (Foot("foot", "foot"),),
    "walker2d": (Foot("foot", "foot"), Foot("foot_left", "foot_left")),
    "halfcheetah": (Foot("bfoot", "bfoot"), Foot("ffoot", "ffoot")),
    # QDax (Brax v1) calls these '$ Body 4', '$ Body 7', '$ Body 10', '$ Body 13'.
    "ant": (
        Foot("front_left_foot", "aux_1", child=True),
        Foot("front_right_foot", "aux_2", child=True),
        Foot("back_left_foot", "aux_3", child=True),
        Foot("back_right_foot", "aux_4", child=True),
    ),
    "humanoid": (Foot("left_shin", "left_shin"), Foot("right_shin", "right_shin")),
}

# QDax's reward offsets per step (empirical lower bounds of the per-step reward; record
# them, never clip with them). QDax *adds* offset * episode_length to every fitness; our
# TaskSpec.qd_offset is *subtracted*, so the specs store -offset * episode_length.
FEET_CONTACT_OFFSET: dict[str, float] = {
    "ant": 3.24,
    "walker2d": 1.413,
    "halfcheetah": 9.231,
    "hopper": 0.9,
    "humanoid": 0.0,
}
FINAL_POSITION_OFFSET: dict[str, float] = {"ant": 3.0}
FORWARD_REWARD_METRIC: dict[str, str] = {"ant": "reward_forward"}


def foot_link_indices(sys: Any, env_name: str) -> tuple[int, ...]:
    """Link indices of the feet of ``env_name`` in the Brax system ``sys``."""
    names = list(sys.link_names)
    parents = [int(p) for p in sys.link_parents]
    indices = []
    for foot in FEET[env_name]:
        if foot.link not in names:
            raise ConfigError(
                f"{env_name}: no link {foot.link!r} in this Brax version; links: {names}"
            )
        parent = names.index(foot.link)
        if not foot.child:
            indices.append(parent)
            continue
        children = [i for i, p in enumerate(parents) if p == parent]
        if len(children) != 1:
            raise ConfigError(
                f"{env_name}: expected one child link of {foot.link!r}, found {children}"
            )
        indices.append(children[0])
    return tuple(indices)


def feet_contact(
    pipeline_state: Any, foot_links: Sequence[int] | Int[Array, " feet"]
) -> Bool[Array, " feet"]:
    """Which feet touch the ground in one (unbatched) Brax pipeline state.

    A foot touches when some contact pairs its link with the floor (link index -1, in
    either order) at distance ``dist <= 0``. The env must be built with ``debug=True`` so
    that ``pipeline_state.contact`` is filled.

    Args:
        pipeline_state: a ``brax.base.State`` with ``contact.link_idx`` (a pair of ``[C]``
            arrays) and ``contact.dist`` (``[C]``).
        foot_links: the link index of each foot, ``[feet]``.

    Returns:
        ``[feet]`` booleans.
    """
    contact = pipeline_state.contact
    if contact is None:
        raise ConfigError("pipeline_state.contact is empty: build the Brax env with debug=True")
    first, second = contact.link_idx
    touching = contact.dist <= 0.0
    feet = jnp.asarray(foot_links, jnp.int32)[:, None]  # [feet, 1]
    on_floor = ((first[None] == -1) & (second[None] == feet)) | (
        (second[None] == -1) & (first[None] == feet)
    )
    return jnp.any(on_floor & touching[None], axis=1)


@functools.cache
def brax_env(env_name: str, backend: str) -> Any:
    """The Brax env ``env_name`` on ``backend`` with contacts recorded (``debug=True``).

    Cached: tasks on the same env share one (stateless) env object, so building a task
    twice, or ``ant-uni`` and ``ant-omni``, loads the model once.
    """
    from brax import envs

    return envs.get_environment(env_name, backend=backend, debug=True)


@functools.cache
def brax_observation_size(env: Any) -> int:
    """The observation size of the Brax env ``env``, from the shape of a traced reset.

    Brax's ``env.observation_size`` runs a reset op by op on every access (seconds per call
    for hopper or humanoid, one small compile per op); tracing it costs a fraction of that,
    and the envs are cached, so each is traced once.
    """
    return int(jax.eval_shape(env.reset, jax.random.key(0)).obs.shape[-1])


class BraxTask(EpisodicTask):
    """Common part of the Brax tasks: env, reset protocol, policy spec, step and reward.

    The state is a batched ``brax.envs.State``. Subclasses define the descriptor
    accumulator (``init_descriptor`` / ``accumulate_descriptor`` / ``finalise_descriptor``)
    and may change the per-step reward with :meth:`reward`.
    """

    env_name: str
    episode_length: int
    backend: str
    reset_protocol: ResetProtocol
    policy_hidden_sizes: tuple[int, ...]

    def __init__(
        self,
        name: str,
        env_name: str,
        episode_length: int,
        backend: str,
        reset: ResetProtocol,
        policy_hidden_sizes: Sequence[int],
    ) -> None:
        self.policy_hidden_sizes = check_task_arguments(
            name, episode_length, reset, policy_hidden_sizes
        )
        if backend not in BACKENDS:
            raise ConfigError(
                f"task {name!r}: backend must be one of {list(BACKENDS)}, got {backend!r} "
                "(spring is the fastest on CPU)"
            )
        self.name = name
        self.env_name = env_name
        self.episode_length = int(episode_length)
        self.backend = backend
        self.reset_protocol = reset
        self.env = brax_env(env_name, backend)
        self._rollout_fn: Any = None

    @property
    def observation_size(self) -> int:
        """The size of the env's observations (the policy's input)."""
        return brax_observation_size(self.env)

    @property
    def _kwargs(self) -> dict[str, Any]:
        return {
            "episode_length": self.episode_length,
            "backend": self.backend,
            "reset": self.reset_protocol,
            "policy_hidden_sizes": list(self.policy_hidden_sizes),
        }

    def default_policy(self) -> PolicySpec:
        """``PolicySpec(obs, act, policy_hidden_sizes)`` with tanh layers."""
        return PolicySpec(
            observation_size=self.observation_size,
            action_size=int(self.env.action_size),
            hidden_sizes=self.policy_hidden_sizes,
        )

    def reset_noise(self) -> dict[str, Any] | None:
        """The Brax env's ``reset_noise_scale``: ``env.reset`` perturbs the initial joint
        positions and velocities by noise of that scale."""
        scale = getattr(self.env, "_reset_noise_scale", None)
        if scale is None:
            return None
        return {"kind": "brax", "env": self.env_name, "reset_noise_scale": float(scale)}

    # -- the episodic protocol ------------------------------------------------------------
    def reset(self, key: PRNGKeyArray, batch: int) -> Any:
        """``batch`` initial Brax states (leading axis ``batch``) under the reset protocol.

        Deterministic: ``env.reset(jax.random.key(0))`` for everyone, ``key`` is ignored.
        Stochastic: ``env.reset`` with one split of ``key`` per episode.
        """
        if self.reset_protocol == "deterministic":
            state = self.env.reset(jax.random.key(0))
            return jax.tree_util.tree_map(
                lambda x: jnp.broadcast_to(x, (batch, *jnp.shape(x))), state
            )
        return jax.vmap(self.env.reset)(jax.random.split(key, batch))

    def reward(self, state: Any) -> Float[Array, " batch"]:
        """The task's reward ``[B]`` of the steps that led to the batched ``state``."""
        return state.reward

    def step(
        self, state: Any, actions: Float[Array, "batch act"]
    ) -> tuple[Any, Float[Array, " batch"], Array]:
        """``env.step`` on every episode; returns ``(next_state, reward [B], done [B])``.

        ``done`` is the env's termination flag (``state.done``: the torso left its
        healthy range), never the time limit.
        """
        nxt = jax.vmap(self.env.step)(state, actions)
        return nxt, self.reward(nxt), nxt.done

    def observe(self, state: Any) -> Float[Array, "batch obs"]:
        """The Brax observations ``state.obs`` ``[B, obs]``."""
        return state.obs

    # -- rendering ------------------------------------------------------------------------
    def rollout_states(self, policy: MLPPolicy, key: PRNGKeyArray | None = None) -> list[Any]:
        """Roll out ONE policy (no batch axis) and return its Brax pipeline states.

        The episode is the one :meth:`evaluate` runs for a population of one (``reset``
        with batch 1, :meth:`step`). The list starts with the initial state and stops at
        termination (or after ``episode_length`` steps). Render it with
        ``brax.io.html.render(task.env.sys, states)``.

        Args:
            policy: a single policy (``MLPPolicy`` without batch axis).
            key: reset key for ``reset="stochastic"`` (default ``jax.random.key(0)``).
        """
        if policy.weights[0].ndim != 2:
            raise ShapeError(
                f"rollout_states renders ONE policy (weights [out, in]), given a first "
                f"weight of shape {policy.weights[0].shape}; pick one with "
                "jax.tree.map(lambda x: x[i], population)"
            )
        if self._rollout_fn is None:

            def rollout(p: MLPPolicy, k: PRNGKeyArray) -> tuple[Any, Any, Array]:
                state = self.reset(k, 1)
                result = run_episodes(
                    self,
                    lambda observations, t: jax.vmap(p)(observations),
                    state,
                    self.episode_length,
                    record=lambda s: s.pipeline_state,
                )
                return state.pipeline_state, result.records, result.valid_steps[0]

            self._rollout_fn = eqx.filter_jit(rollout)
        first, states, length = self._rollout_fn(policy, jax.random.key(0) if key is None else key)
        length = int(length)
        initial = jax.tree_util.tree_map(lambda x: x[0], first)
        rest = [jax.tree_util.tree_map(lambda x, i=i: x[0, i], states) for i in range(length)]
        return [initial, *rest]


class FeetContactTask(BraxTask):
    """Unidirectional locomotion: reward the brax reward, describe the gait by feet contact.

    Descriptor (``[B, feet]``, in ``[0, 1]``): the fraction of valid steps after which
    each foot touches the floor (see :func:`feet_contact`; the state after each step is
    tested). Fitness: the sum of the Brax reward (forward velocity + healthy reward -
    control cost) over valid steps; episodes end when the torso leaves its healthy range.

    Feet: hopper ``foot``; walker2d ``foot``, ``foot_left``; halfcheetah ``bfoot``,
    ``ffoot``; ant the four lower legs (children of ``aux_1`` .. ``aux_4``: front left,
    front right, back left, back right); humanoid ``left_shin``, ``right_shin``.

    Args:
        name: registry name.
        env_name: Brax environment (``hopper``, ``walker2d``, ``halfcheetah``, ``ant``,
            ``humanoid``).
        episode_length: steps per episode.
        backend: Brax pipeline (``spring`` is the fastest on CPU).
        reset: ``"deterministic"`` (every episode starts from ``env.reset(key(0))``) or
            ``"stochastic"`` (a fresh key per episode).
        policy_hidden_sizes: hidden sizes of :meth:`default_policy`.
    """

    def __init__(
        self,
        name: str,
        env_name: str,
        episode_length: int = 250,
        backend: str = "spring",
        reset: ResetProtocol = "deterministic",
        policy_hidden_sizes: Sequence[int] = (64, 64),
    ) -> None:
        if env_name not in FEET:
            raise ConfigError(
                f"task {name!r}: no feet known for env {env_name!r}; expected one of {sorted(FEET)}"
            )
        super().__init__(name, env_name, episode_length, backend, reset, policy_hidden_sizes)
        self.foot_links = foot_link_indices(self.env.sys, env_name)
        feet = len(self.foot_links)
        self.spec = TaskSpec(
            name=name,
            kwargs=self._kwargs,
            genome="policy",
            descriptor_names=tuple(f"{f.name}_contact" for f in FEET[env_name]),
            descriptor_low=(0.0,) * feet,
            descriptor_high=(1.0,) * feet,
            episode_length=self.episode_length,
            qd_offset=0.0 - FEET_CONTACT_OFFSET[env_name] * self.episode_length,
            reset=reset,
            observation_size=self.observation_size,
            action_size=int(self.env.action_size),
        )

    def init_descriptor(self, state: Any) -> Int[Array, "batch feet"]:
        """Per-foot contact counts ``[B, feet]``, zero before the first step."""
        batch = state.obs.shape[0]
        return jnp.zeros((batch, len(self.foot_links)), jnp.int32)

    def accumulate_descriptor(
        self, counts: Int[Array, "batch feet"], next_state: Any, valid: Bool[Array, " batch"]
    ) -> Int[Array, "batch feet"]:
        """Add one to each foot that touches the floor after a valid step."""
        touching = jax.vmap(lambda ps: feet_contact(ps, self.foot_links))(next_state.pipeline_state)
        return counts + (touching & valid[:, None]).astype(jnp.int32)

    def finalise_descriptor(
        self, counts: Int[Array, "batch feet"], valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch feet"]:
        """Contact fractions ``counts / valid_steps`` ``[B, feet]``."""
        steps = jnp.maximum(valid_steps, 1).astype(jnp.float32)
        return counts.astype(jnp.float32) / steps[:, None]


def torso_xy(state: Any) -> Float[Array, "batch 2"]:
    """The torso ``(x, y)`` ``[B, 2]`` of a batch of Brax states."""
    return state.pipeline_state.x.pos[:, 0, :2]


class LastTorsoPosition:
    """The descriptor accumulator of the final-position tasks: the torso ``(x, y)`` after the
    last valid step (mixed into a :class:`BraxTask`, which finalises it)."""

    def init_descriptor(self, state: Any) -> Float[Array, "batch 2"]:
        """The torso ``(x, y)`` ``[B, 2]`` of the initial states."""
        return torso_xy(state)

    def accumulate_descriptor(
        self, position: Float[Array, "batch 2"], next_state: Any, valid: Bool[Array, " batch"]
    ) -> Float[Array, "batch 2"]:
        """The torso ``(x, y)`` after the last valid step."""
        return jnp.where(valid[:, None], torso_xy(next_state), position)


class FinalPositionTask(LastTorsoPosition, BraxTask):
    """Omnidirectional locomotion: go anywhere, describe the policy by where it ends.

    Descriptor (``[B, 2]``): the torso ``(x, y)`` after the last valid step, clipped to
    ``[-30, 30]^2``. Fitness: the sum over valid steps of the Brax reward without its
    forward-velocity term, i.e. for the ant ``1 - 0.5 * sum(a^2)`` per step (in
    ``[-3, 1]``; QD offset 3 per step).

    Args: as :class:`FeetContactTask` (``env_name`` must be ``ant``).
    """

    bound = 30.0

    def __init__(
        self,
        name: str,
        env_name: str,
        episode_length: int = 250,
        backend: str = "spring",
        reset: ResetProtocol = "deterministic",
        policy_hidden_sizes: Sequence[int] = (64, 64),
    ) -> None:
        if env_name not in FINAL_POSITION_OFFSET:
            raise ConfigError(
                f"task {name!r}: final-position task defined for {sorted(FINAL_POSITION_OFFSET)},"
                f" got env {env_name!r}"
            )
        super().__init__(name, env_name, episode_length, backend, reset, policy_hidden_sizes)
        self.spec = TaskSpec(
            name=name,
            kwargs=self._kwargs,
            genome="policy",
            descriptor_names=("x_position", "y_position"),
            descriptor_low=(-self.bound, -self.bound),
            descriptor_high=(self.bound, self.bound),
            episode_length=self.episode_length,
            qd_offset=0.0 - FINAL_POSITION_OFFSET[env_name] * self.episode_length,
            reset=reset,
            observation_size=self.observation_size,
            action_size=int(self.env.action_size),
        )

    def reward(self, state: Any) -> Float[Array, " batch"]:
        """The Brax reward without its forward-velocity term, ``[B]``."""
        return state.reward - state.metrics[FORWARD_REWARD_METRIC[self.env_name]]

    def finalise_descriptor(
        self, position: Float[Array, "batch 2"], valid_steps: Int[Array, " batch"]
    ) -> Float[Array, "batch 2"]:
        """The final position clipped to ``[-bound, bound]^2``."""
        return jnp.clip(position, -self.bound, self.bound)
