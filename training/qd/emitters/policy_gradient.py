"""The TD3 policy-gradient emitter of PGA-ME (Nilsson & Cully, 2021).

Each iteration, ``tell`` adds the transitions of the emitter's genomes to a replay buffer and
trains a TD3 learner (:mod:`training.td3`: twin critic and greedy actor) for
``critic_steps`` updates; ``ask`` then proposes

- ``size - 1`` policy-gradient offspring: uniformly sampled elites, each taking ``pg_steps``
  Adam steps (learning rate ``policy_learning_rate``, a fresh optimiser state per offspring)
  on ``-mean Q1(s, pi(s))``; every step draws one minibatch of states from the buffer that
  all offspring share (drawn once, not once per offspring; the offspring are vmapped);
- the greedy actor itself, as one genome (so the archive may keep it).

Inside a :class:`training.qd.multi_emitter.MultiEmitter` (PGA-ME pairs it with Iso+LineDD)
``tell`` sees the whole batch (``tells_on_whole_batch``), so the buffer holds the transitions
of every offspring, Iso+LineDD ones included, as in the reference implementation. The
buffer's capacity is a static
shape and it is checkpointed with the loop state: every chunk writes
``capacity * 4 * (2 * obs + act + 2)`` bytes (1M transitions: 168 MB on walker2d-uni,
32 MB on point-maze).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from models.critic import TwinCritic
from models.policy import MLPPolicy, PolicySpec, unflatten_population
from training import fit, replay, td3
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation

__all__ = [
    "PRESETS",
    "PolicyGradientEmitter",
    "critic_fitness_gradient",
    "init_learning",
    "learn",
    "policy_gradient_variation",
    "resolve_preset",
]

PRESETS: dict[str, dict[str, Any]] = {
    "qdax": {
        "critic_steps": 300,
        "pg_steps": 100,
        "transition_batch": 256,
        "policy_learning_rate": 1e-3,
    },
    "paper": {
        "critic_steps": 3000,
        "pg_steps": 150,
        "transition_batch": 100,
        "policy_learning_rate": 5e-3,
    },
    "cpu": {
        "critic_steps": 50,
        "pg_steps": 10,
        "transition_batch": 128,
        "policy_learning_rate": 1e-3,
    },
}
"""The per-iteration training budgets: QDax's defaults, the PGA-ME papers' settings, and a
budget a 2-core CPU can afford on locomotion tasks (about 30x less policy-gradient compute
per offspring than ``qdax``), used by the CPU-sized recipes and benchmarks."""


def resolve_preset(hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """``hyperparameters`` with every ``None`` among the preset's keys replaced by the value
    of the preset named by ``hyperparameters["preset"]`` (explicit values win).

    Raises:
        ConfigError: an unknown preset name, or a value of the wrong type.
    """
    name = hyperparameters.get("preset", "qdax")
    if name not in PRESETS:
        raise ConfigError(
            f"the policy-gradient preset must be one of {sorted(PRESETS)}, given {name!r}; "
            "pass e.g. --set preset=paper"
        )
    resolved = dict(hyperparameters)
    for key, value in PRESETS[name].items():
        given = resolved.get(key)
        if given is None:
            resolved[key] = value
            continue
        try:
            resolved[key] = type(value)(given)
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"policy-gradient hyperparameter {key}={given!r}: expected a "
                f"{type(value).__name__} like {value!r} (the {name!r} preset's value)"
            ) from err
    return resolved


def _policy_spec(policy: Any) -> PolicySpec:
    """The :class:`PolicySpec` of one MLP policy (read off its shapes and activations)."""
    if not isinstance(policy, MLPPolicy):
        raise ConfigError(
            "the policy-gradient emitter trains MLP policies, but the archive's genomes are "
            f"{type(policy).__name__}; use a task whose genome is 'policy' (e.g. point-maze, "
            "walker2d-uni)"
        )
    return PolicySpec(
        observation_size=int(policy.weights[0].shape[1]),
        action_size=int(policy.weights[-1].shape[0]),
        hidden_sizes=tuple(int(w.shape[0]) for w in policy.weights[:-1]),
        activation=policy.activation,
        output_activation=policy.output_activation,
        normalise_observations=policy.obs_mean is not None,
    )


def policy_gradient_variation(
    key: PRNGKeyArray,
    parents: MLPPolicy,
    critic: TwinCritic,
    buffer: replay.ReplayBuffer,
    steps: int,
    learning_rate: float,
    batch_size: int,
) -> tuple[MLPPolicy, Float[Array, ""]]:
    """``steps`` Adam steps of every parent (a population ``[n, ...]``) on
    :func:`training.td3.actor_loss`, each from a fresh optimiser state; step ``s`` draws one
    minibatch of ``batch_size`` observations from ``buffer`` shared by all parents.

    Returns the offspring ``[n, ...]`` and their mean loss at the last step.
    """
    optimiser = fit.optimiser(fit.OptimiserConfig(learning_rate=learning_rate))

    def loss(
        policy: MLPPolicy, observations: Float[Array, "m obs"], key: PRNGKeyArray
    ) -> tuple[Array, dict[str, Array]]:
        del key
        value = td3.actor_loss(policy, critic, observations)
        return value, {"loss": value}

    def observations(key: PRNGKeyArray) -> Float[Array, "m obs"]:
        return replay.sample(buffer, key, batch_size)["observation"]

    step = fit.gradient_step(loss, optimiser, observations)
    # The key is not mapped: every offspring draws the same minibatch, computed once.
    shared = jax.vmap(step, in_axes=(0, 0, None))
    opt_states = jax.vmap(optimiser.init)(parents)
    children, _, metrics, _ = fit.scan_steps(shared, parents, opt_states, key, steps)
    return children, jnp.mean(metrics["loss"][-1])


def init_learning(
    key: PRNGKeyArray, archive: Archive, config: td3.TD3Config, buffer_size: int
) -> dict[str, Any]:
    """``{"buffer", "learner"}``: an empty replay buffer of ``buffer_size`` transitions and a
    fresh TD3 learner whose greedy actor has the archive's policy spec."""
    k_actor, k_critic = jax.random.split(key)
    spec = _policy_spec(one_genome(archive))
    learner = td3.init(k_critic, spec.init(k_actor), config)
    template = td3.transition_template(spec.observation_size, spec.action_size)
    return {"buffer": replay.init(template, buffer_size), "learner": learner}


def learn(
    state: dict[str, Any], evaluation: Evaluation, key: PRNGKeyArray, critic_steps: int
) -> tuple[dict[str, Any], Metrics]:
    """Add the evaluation's valid transitions to ``state["buffer"]``, then ``critic_steps``
    TD3 updates of ``state["learner"]``. Metrics: ``critic_loss``, ``actor_loss`` (greedy
    actor), ``buffer_size``."""
    transitions = evaluation.transitions
    if transitions is None:
        raise ConfigError(
            "a TD3 learner needs the evaluation's transitions, given none; run it through "
            "the QD loop, which honours needs_transitions"
        )
    rows, valid = td3.flatten_transitions(transitions)
    buffer = replay.add(state["buffer"], rows, valid)
    learner, metrics = td3.train(state["learner"], buffer, key, critic_steps)
    metrics = {**metrics, "buffer_size": replay.size(buffer)}
    return {**state, "buffer": buffer, "learner": learner}, metrics


def critic_fitness_gradient(
    key: PRNGKeyArray,
    points: Float[Array, "p n"],
    template: MLPPolicy,
    state: dict[str, Any],
    batch_size: int,
) -> Float[Array, "p n"]:
    """The gradient of ``mean Q1(s, pi(s))`` with respect to each flat policy ``points[i]``
    (the TD3 critic's estimate of the fitness gradient), over one minibatch of ``batch_size``
    buffer observations shared by all points."""
    learner: td3.TD3State = state["learner"]
    observations = replay.sample(state["buffer"], key, batch_size)["observation"]

    def ascent(flat: Float[Array, " n"]) -> Float[Array, " n"]:
        def objective(x: Float[Array, " n"]) -> Float[Array, ""]:
            policy = jax.tree_util.tree_map(lambda a: a[0], unflatten_population(template, x[None]))
            return -td3.actor_loss(policy, learner.critic, observations)

        return jax.grad(objective)(flat)

    return jax.vmap(ascent)(points)


class PolicyGradientEmitter(Emitter):
    """PGA-ME's TD3 policy-gradient operator plus greedy-actor injection.

    Attributes:
        size: genomes per ask: ``size - 1`` policy-gradient offspring and the greedy actor.
        td3_config: the TD3 learner's hyperparameters (critic, actor, targets, minibatch).
        critic_steps: TD3 updates per ``tell``.
        pg_steps: Adam steps per policy-gradient offspring (0: the parents unchanged).
        policy_learning_rate: Adam learning rate of the offspring's steps.
        buffer_size: replay-buffer capacity in transitions (checkpointed every chunk).
    """

    size: int
    td3_config: td3.TD3Config = eqx.field(static=True)
    critic_steps: int = 300
    pg_steps: int = 100
    policy_learning_rate: float = 1e-3
    buffer_size: int = 1_000_000

    def __check_init__(self) -> None:
        for name in ("size", "critic_steps", "buffer_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"PolicyGradientEmitter.{name} must be a positive integer, given {value!r}"
                )
        if not isinstance(self.pg_steps, int) or self.pg_steps < 0:
            raise ConfigError(
                f"PolicyGradientEmitter.pg_steps must be a non-negative integer, given "
                f"{self.pg_steps!r}"
            )
        if not self.policy_learning_rate > 0:
            raise ConfigError(
                f"policy_learning_rate must be positive, given {self.policy_learning_rate!r}"
            )

    @property
    def batch_size(self) -> int:
        return self.size

    @property
    def needs_transitions(self) -> bool:
        return True

    @property
    def tells_on_whole_batch(self) -> bool:
        return True

    def init(self, key: PRNGKeyArray, archive: Archive) -> dict[str, Any]:
        """``{"buffer", "learner", "pg_loss"}``: an empty buffer, a fresh TD3 learner whose
        actor has the archive's policy spec, and the last offspring loss (0)."""
        return {
            **init_learning(key, archive, self.td3_config, self.buffer_size),
            "pg_loss": jnp.zeros((), jnp.float32),
        }

    def ask(
        self, key: PRNGKeyArray, state: dict[str, Any], archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, dict[str, Any]]:
        del evaluate
        learner: td3.TD3State = state["learner"]
        actor = jax.tree_util.tree_map(lambda x: x[None], learner.actor)
        offspring = self.size - 1
        if offspring == 0:
            return actor, state
        k_parents, k_steps = jax.random.split(key)
        parents, _ = archive.sample(k_parents, offspring)
        pg_loss = state["pg_loss"]
        if self.pg_steps > 0:
            parents, pg_loss = policy_gradient_variation(
                k_steps,
                parents,
                learner.critic,
                state["buffer"],
                self.pg_steps,
                self.policy_learning_rate,
                self.td3_config.batch_size,
            )
        genomes = jax.tree_util.tree_map(
            lambda x, a: jnp.concatenate([x, a.astype(x.dtype)]), parents, actor
        )
        return genomes, {**state, "pg_loss": pg_loss}

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
        """Add the batch's valid transitions to the buffer, then ``critic_steps`` TD3
        updates. Metrics: ``critic_loss``, ``actor_loss`` (greedy actor), ``pg_loss`` (the
        offspring's last step, from the previous ask), ``buffer_size``."""
        del archive, genomes, insert_info, evaluate
        state, metrics = learn(state, evaluation, key, self.critic_steps)
        return state, {**metrics, "pg_loss": state["pg_loss"]}
