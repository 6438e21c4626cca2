"""TD3 (Fujimoto et al., 2018): a twin critic and a greedy actor learnt from a replay buffer.

The learner behind the policy-gradient emitters (PGA-ME and its relatives). Its state is a
pytree (:class:`TD3State`) that lives in an emitter's state inside the jitted QD loop;
:func:`train` runs any number of updates in one ``lax.scan`` (:func:`training.fit.scan_steps`).

One update on a minibatch of ``(s, a, r, s', terminated)`` drawn from the buffer:

- target action ``a' = clip(pi_target(s') + clip(N(0, policy_noise^2), -noise_clip,
  noise_clip), -1, 1)`` (actions live in ``[-1, 1]``, the range of a tanh policy);
- target ``y = r + discount * (1 - terminated) * min(Q1_target, Q2_target)(s', a')``: the
  bootstrap is cut only where the environment terminated the episode; a step cut by the
  time limit (``truncated``) still bootstraps from ``s'``;
- critic loss ``mean((Q1(s, a) - y)^2) + mean((Q2(s, a) - y)^2)``, one Adam step;
- every ``policy_delay``-th update (the 2nd, 4th, ...): one Adam step of the actor on
  ``-mean Q1(s, pi(s))`` and Polyak averaging of both targets,
  ``target <- tau * online + (1 - tau) * target`` (as in the TD3 paper's code).

The actor is a :class:`models.policy.MLPPolicy` with the archive's policy spec, so it can be
inserted into an archive as a genome. Its observation normaliser (if any) is not trained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray, PyTree

from models.critic import TwinCritic
from models.policy import MLPPolicy
from training import fit, replay
from zoo.errors import ConfigError
from zoo.tasks.base import Transitions

__all__ = [
    "MinibatchTransform",
    "TD3Config",
    "TD3State",
    "actor_loss",
    "critic_loss",
    "critic_targets",
    "flatten_transitions",
    "init",
    "train",
    "transition_template",
]


MinibatchTransform = Callable[[dict[str, Array]], dict[str, Array]]
"""``transform(rows) -> rows``: maps a minibatch sampled from the buffer (``{name: [n, ...]}``)
to the minibatch an update reads (the keys of :func:`transition_template`)."""


@dataclasses.dataclass(frozen=True)
class TD3Config:
    """TD3 hyperparameters (hashable: a static part of :class:`TD3State`).

    Attributes:
        critic_hidden_sizes: widths of each Q network's hidden layers (relu).
        critic_learning_rate: Adam learning rate of the critic.
        actor_learning_rate: Adam learning rate of the greedy actor.
        discount: the discount factor gamma.
        tau: Polyak averaging rate of the target networks.
        policy_noise: std of the Gaussian noise on the target action.
        noise_clip: the target noise is clipped to ``[-noise_clip, noise_clip]``.
        policy_delay: the actor and the targets are updated every ``policy_delay`` updates.
        batch_size: transitions per minibatch.
    """

    critic_hidden_sizes: tuple[int, ...] = (256, 256)
    critic_learning_rate: float = 3e-4
    actor_learning_rate: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    policy_noise: float = 0.2
    noise_clip: float = 0.5
    policy_delay: int = 2
    batch_size: int = 256

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "critic_hidden_sizes", tuple(int(h) for h in self.critic_hidden_sizes)
        )
        if not self.critic_hidden_sizes or any(h < 1 for h in self.critic_hidden_sizes):
            raise ConfigError(
                f"critic_hidden_sizes must be positive widths, got {self.critic_hidden_sizes}; "
                "pass e.g. [256, 256]"
            )
        for name in ("critic_learning_rate", "actor_learning_rate"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 <= self.discount <= 1 or not 0 < self.tau <= 1:
            raise ConfigError(
                f"TD3 needs discount in [0, 1] and tau in (0, 1], got discount={self.discount}, "
                f"tau={self.tau}"
            )
        if self.policy_noise < 0 or self.noise_clip < 0:
            raise ConfigError(
                f"policy_noise and noise_clip must be >= 0, got {self.policy_noise} and "
                f"{self.noise_clip}"
            )
        for name in ("policy_delay", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class TD3State(eqx.Module):
    """Everything a TD3 learner changes, plus its (static) hyperparameters.

    Attributes:
        critic / target_critic: the twin critic and its Polyak-averaged copy.
        actor / target_actor: the greedy actor (an archive genome) and its copy.
        critic_opt_state / actor_opt_state: Adam states.
        steps: updates done so far (int32 scalar); numbers the updates for the delay.
        config: the hyperparameters.
    """

    critic: TwinCritic
    target_critic: TwinCritic
    actor: MLPPolicy
    target_actor: MLPPolicy
    critic_opt_state: PyTree
    actor_opt_state: PyTree
    steps: Int[Array, ""]
    config: TD3Config = eqx.field(static=True)


def _adam(learning_rate: float) -> optax.GradientTransformation:
    return fit.optimiser(fit.OptimiserConfig(learning_rate=learning_rate))


def transition_template(observation_size: int, action_size: int) -> dict[str, Array]:
    """One stored transition (zeros): ``observation [obs]``, ``action [act]``, ``reward []``,
    ``next_observation [obs]``, ``terminated []`` (1.0 where the episode ended there)."""
    return {
        "observation": jnp.zeros((observation_size,), jnp.float32),
        "action": jnp.zeros((action_size,), jnp.float32),
        "reward": jnp.zeros((), jnp.float32),
        "next_observation": jnp.zeros((observation_size,), jnp.float32),
        "terminated": jnp.zeros((), jnp.float32),
    }


def flatten_transitions(
    transitions: Transitions,
) -> tuple[dict[str, Array], Bool[Array, " rows"]]:
    """The ``[B, T, ...]`` transitions of an evaluation as rows ``[B * T, ...]`` shaped like
    :func:`transition_template`, and the mask of the valid steps ``[B * T]`` (what
    :func:`training.replay.add` keeps)."""
    batch, time = transitions.rewards.shape
    rows = batch * time
    flat = {
        "observation": transitions.observations.reshape(rows, -1),
        "action": transitions.actions.reshape(rows, -1),
        "reward": transitions.rewards.reshape(rows),
        "next_observation": transitions.next_observations.reshape(rows, -1),
        "terminated": transitions.terminated.reshape(rows).astype(jnp.float32),
    }
    return flat, transitions.valid.reshape(rows)


def init(key: PRNGKeyArray, actor: MLPPolicy, config: TD3Config) -> TD3State:
    """A fresh learner around ``actor`` (the greedy actor's initial parameters): a new twin
    critic sized from the actor's input and output, targets equal to the online networks,
    fresh Adam states, zero steps."""
    observation_size = int(actor.weights[0].shape[1])
    action_size = int(actor.weights[-1].shape[0])
    critic = TwinCritic(observation_size, action_size, config.critic_hidden_sizes, key=key)
    # Copies, not the same arrays: the state may be donated, and a donated array must
    # appear once in it.
    return TD3State(
        critic=critic,
        target_critic=_copy(critic),
        actor=actor,
        target_actor=_copy(actor),
        critic_opt_state=_adam(config.critic_learning_rate).init(critic),
        actor_opt_state=_adam(config.actor_learning_rate).init(actor),
        steps=jnp.zeros((), jnp.int32),
        config=config,
    )


def _copy(tree: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _frozen_normaliser(policy: MLPPolicy) -> MLPPolicy:
    """``policy`` with no gradient through its observation normaliser (if it has one)."""
    if policy.obs_mean is None or policy.obs_std is None:
        return policy
    return eqx.tree_at(
        lambda p: (p.obs_mean, p.obs_std),
        policy,
        (jax.lax.stop_gradient(policy.obs_mean), jax.lax.stop_gradient(policy.obs_std)),
    )


def actor_loss(
    policy: MLPPolicy,
    critic: TwinCritic,
    observations: Float[Array, "n obs"],
    critic_observations: Float[Array, "n critic_obs"] | None = None,
) -> Float[Array, ""]:
    """``-mean Q1(s, policy(s))`` over ``observations`` (the deterministic policy gradient's
    objective; the critic is not differentiated).

    With ``critic_observations`` the critic sees those rows instead of ``observations``
    (``-mean Q1(c, policy(s))``): a policy of the observation alone scored by a critic of a
    wider input, e.g. the observation and a target descriptor."""
    policy = _frozen_normaliser(policy)
    critic = jax.lax.stop_gradient(critic)
    actions = jax.vmap(policy)(observations)
    if critic_observations is None:
        critic_observations = observations
    return -jnp.mean(jax.vmap(critic.q1)(critic_observations, actions))


def critic_targets(
    state: TD3State, batch: dict[str, Array], key: PRNGKeyArray
) -> Float[Array, " n"]:
    """The TD3 targets ``y [n]`` of a minibatch (see the module docstring): smoothed target
    action, clipped double-Q, bootstrap cut only on ``terminated``."""
    config = state.config
    next_observation = batch["next_observation"]
    next_action = jax.vmap(state.target_actor)(next_observation)
    noise = config.policy_noise * jax.random.normal(key, next_action.shape, next_action.dtype)
    noise = jnp.clip(noise, -config.noise_clip, config.noise_clip)
    next_action = jnp.clip(next_action + noise, -1.0, 1.0)
    next_q = jnp.min(jax.vmap(state.target_critic)(next_observation, next_action), axis=-1)
    bootstrap = config.discount * (1.0 - batch["terminated"]) * next_q
    return jax.lax.stop_gradient(batch["reward"] + bootstrap)


def critic_loss(
    critic: TwinCritic, targets: Float[Array, " n"], batch: dict[str, Array]
) -> Float[Array, ""]:
    """``mean((Q1 - y)^2) + mean((Q2 - y)^2)`` on ``batch`` for the targets ``y``."""
    q = jax.vmap(critic)(batch["observation"], batch["action"])  # [n, 2]
    return jnp.sum(jnp.mean((q - targets[:, None]) ** 2, axis=0))


def _polyak(online: PyTree, target: PyTree, tau: float) -> PyTree:
    return jax.tree_util.tree_map(lambda o, t: tau * o + (1.0 - tau) * t, online, target)


def _update(
    state: TD3State,
    buffer: replay.ReplayBuffer,
    key: PRNGKeyArray,
    transform: MinibatchTransform | None = None,
) -> tuple[TD3State, dict[str, Array]]:
    """One TD3 update (critic always; actor and targets on every ``policy_delay``-th)."""
    config = state.config
    k_batch, k_noise = jax.random.split(key)
    batch = replay.sample(buffer, k_batch, config.batch_size)
    if transform is not None:
        batch = transform(batch)
    targets = critic_targets(state, batch, k_noise)
    loss, grads = jax.value_and_grad(critic_loss)(state.critic, targets, batch)
    updates, critic_opt_state = _adam(config.critic_learning_rate).update(
        grads, state.critic_opt_state, state.critic
    )
    critic = optax.apply_updates(state.critic, updates)
    state = dataclasses.replace(state, critic=critic, critic_opt_state=critic_opt_state)
    delayed = (state.steps + 1) % config.policy_delay == 0

    def update_actor(state: TD3State) -> tuple[TD3State, Array]:
        a_loss, grads = jax.value_and_grad(actor_loss)(
            state.actor, state.critic, batch["observation"]
        )
        updates, actor_opt_state = _adam(config.actor_learning_rate).update(
            grads, state.actor_opt_state, state.actor
        )
        actor = optax.apply_updates(state.actor, updates)
        state = dataclasses.replace(
            state,
            actor=actor,
            actor_opt_state=actor_opt_state,
            target_actor=_polyak(actor, state.target_actor, config.tau),
            target_critic=_polyak(state.critic, state.target_critic, config.tau),
        )
        return state, a_loss

    def keep(state: TD3State) -> tuple[TD3State, Array]:
        return state, jnp.zeros((), loss.dtype)

    state, a_loss = jax.lax.cond(delayed, update_actor, keep, state)
    state = dataclasses.replace(state, steps=state.steps + 1)
    return state, {"critic_loss": loss, "actor_loss": a_loss, "actor_updated": delayed}


def train(
    state: TD3State,
    buffer: replay.ReplayBuffer,
    key: PRNGKeyArray,
    steps: int,
    transform: MinibatchTransform | None = None,
) -> tuple[TD3State, dict[str, Array]]:
    """``steps`` (static, >= 1) TD3 updates on minibatches of ``buffer`` in one ``lax.scan``.

    Update ``s`` (counted over the learner's life, ``state.steps``) draws from
    ``fold_in(key, s)``. With ``transform``, every sampled minibatch (the buffer's rows) is
    mapped through it before the update, which then reads the keys of
    :func:`transition_template` from the result (a descriptor-conditioned learner widens the
    observations and reshapes the rewards there). Returns the new state and scalar metrics:
    ``critic_loss`` (mean over the updates), ``actor_loss`` (mean over the actor updates; 0
    if none).
    """
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"TD3 trains for a positive number of steps, got {steps!r}")

    def step(
        learner: TD3State, unused: Any, key: PRNGKeyArray
    ) -> tuple[TD3State, Any, dict[str, Array]]:
        learner, metrics = _update(learner, buffer, key, transform)
        return learner, unused, metrics

    state, _, metrics, _ = fit.scan_steps(step, state, None, key, steps, start=state.steps)
    actor_steps = jnp.sum(metrics["actor_updated"])
    return state, {
        "critic_loss": jnp.mean(metrics["critic_loss"]),
        "actor_loss": jnp.sum(metrics["actor_loss"]) / jnp.maximum(actor_steps, 1),
    }
