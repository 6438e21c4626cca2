"""The gradient-arborescence emitter of CMA-MEGA (Fontaine & Nikolaidis, 2021), as pyribs
0.12's ``GradientArborescenceEmitter``.

Each of ``num_emitters`` instances keeps a solution point ``theta`` and a CMA-ES over the
``1 + descriptors`` gradient coefficients (mean 0, step ``sigma0``). One iteration:

1. the Jacobian ``J`` of ``(fitness, *descriptors)`` at ``theta``, each row normalised to unit
   length (:mod:`~training.qd.emitters.gradients`: exact or OpenAI-ES estimated; or, for
   CMA-MEGA (TD3, ES), the fitness row from a TD3 critic trained on the transitions of every
   evaluated batch and the descriptor rows from the ES);
2. ``population`` coefficient vectors ``c`` from the CMA-ES; the offspring are
   ``theta + c @ J`` and, first, ``theta`` itself (pyribs' ``ask_dqd`` solution, inserted into
   the archive too), so each instance emits ``population + 1`` genomes;
3. after insertion, its offspring are ranked by archive improvement (two-stage: new cells
   first; :func:`~training.qd.emitters.evolution_strategy.rank`) and the CMA-ES learns from
   the ranking of their coefficients;
4. ``theta`` steps towards the log-weighted mean of the ``num_parents`` best offspring
   (``"mu"``: half of them; ``"filter"``: those the archive accepted) by gradient ascent with
   learning rate ``learning_rate`` or by Adam (``grad_opt``);
5. an instance restarts at a random elite with fresh coefficient CMA-ES and optimiser when
   the CMA-ES's own rules fire or (restart rule ``"no_improvement"``) when the archive
   accepted none of its offspring.

Every instance starts at ``x0 = 0`` (pyribs' benchmark setting); the first ``tell`` (the
task's random genomes, which no instance asked for) changes nothing. Metrics: ``restarts``
and ``step`` (mean length of theta's last step).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from models.policy import flatten_population, unflatten_population
from training import td3
from training.es import cma_es
from training.es.common import recombination_weights
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from training.qd.emitters.evolution_strategy import (
    RESTART_RULES,
    SELECTION_RULES,
    rank,
    select_instances,
)
from training.qd.emitters.gradients import (
    Objective,
    es_jacobian,
    exact_jacobian,
    normalise_rows,
)
from training.qd.emitters.policy_gradient import (
    critic_fitness_gradient,
    init_learning,
    learn,
)
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation

GRADIENT_OPTIMISERS = ("gradient_ascent", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class GradientArborescenceState(eqx.Module):
    """What changes during a run (leading axis ``num_emitters`` on every array but the
    counters).

    Attributes:
        theta: ``[E, n]`` the solution points.
        moments: ``[E, 2, n]`` Adam's first and second moments (zeros for gradient ascent).
        steps: ``[E]`` Adam steps since the instance's last restart.
        coefficients: stacked coefficient CMA-ES states.
        jacobian: ``[E, 1 + d, n]`` the normalised Jacobian used by the last ``ask``.
        sampled: ``[E, population, 1 + d]`` the coefficients of the last ``ask``.
        restarts: ``[]`` restarts so far (the start is not counted).
        started: ``[]`` whether the instances have been started from the archive.
    """

    theta: Float[Array, "e n"]
    moments: Float[Array, "e 2 n"]
    steps: Int[Array, " e"]
    coefficients: Any
    jacobian: Float[Array, "e k n"]
    sampled: Float[Array, "e p k"]
    restarts: Int[Array, ""]
    started: Array
    critic: Any = None


class GradientArborescenceEmitter(Emitter):
    """CMA-MEGA's emitter (see the module doc).

    Attributes:
        num_emitters: independent instances.
        population: coefficient samples per instance and iteration; each instance emits
            ``population + 1`` genomes (its offspring and ``theta``).
        num_coefficients: ``1 + `` the task's number of descriptors.
        sigma0: initial step size of the coefficient CMA-ES.
        learning_rate: of the step of ``theta``.
        grad_opt: ``"gradient_ascent"`` or ``"adam"``.
        selection_rule: ``"mu"`` or ``"filter"``.
        restart_rule: ``"basic"`` or ``"no_improvement"``.
        objective: the task's differentiable objective for exact gradients, or ``None`` to
            estimate them with ``es_samples`` evaluations of noise ``es_sigma`` per instance.
        td3_config: with ES gradients, take the fitness gradient from a TD3 critic with these
            settings instead (``critic_steps`` updates per iteration on a replay buffer of
            ``buffer_size`` transitions; its gradient is averaged over one minibatch of
            ``td3_config.batch_size`` buffer observations). The critic is never reset.
    """

    num_emitters: int
    population: int
    num_coefficients: int
    sigma0: float
    learning_rate: float
    grad_opt: str = "gradient_ascent"
    selection_rule: str = "mu"
    restart_rule: str = "no_improvement"
    objective: Objective | None = eqx.field(default=None, static=True)
    es_samples: int = 100
    es_sigma: float = 0.02
    td3_config: td3.TD3Config | None = eqx.field(default=None, static=True)
    critic_steps: int = 300
    buffer_size: int = 1_000_000

    def __check_init__(self) -> None:
        for name, value, valid in (
            ("grad_opt", self.grad_opt, GRADIENT_OPTIMISERS),
            ("selection_rule", self.selection_rule, SELECTION_RULES),
            ("restart_rule", self.restart_rule, RESTART_RULES),
        ):
            if value not in valid:
                raise ConfigError(f"{name} must be one of {list(valid)}, given {value!r}")
        if not isinstance(self.population, int) or self.population < 2:
            raise ConfigError(
                "each CMA-MEGA instance needs at least 2 coefficient samples per iteration "
                f"(batch_size / num_emitters - 1), given {self.population!r}; raise the "
                "batch size or lower num_emitters"
            )
        if self.objective is None and (self.es_samples < 2 or self.es_samples % 2):
            raise ConfigError(
                "es_samples (evaluations per gradient estimate, in mirrored pairs) must be an "
                f"even number >= 2, given {self.es_samples!r}"
            )
        if not (self.sigma0 > 0 and self.learning_rate > 0):
            raise ConfigError(
                f"sigma0 and learning_rate must be positive, given {self.sigma0!r} and "
                f"{self.learning_rate!r}"
            )

    @property
    def batch_size(self) -> int:
        return self.num_emitters * (self.population + 1)

    @property
    def needs_transitions(self) -> bool:
        return self.td3_config is not None

    @property
    def extra_evaluations(self) -> int:
        return 0 if self.objective is not None else self.num_emitters * self.es_samples

    def _coefficient_es(self, dtype: jnp.dtype) -> Any:
        one = cma_es.init(
            jnp.zeros(self.num_coefficients, dtype), self.sigma0, batch_size=self.population
        )
        return jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (self.num_emitters, *x.shape)), one
        )

    def _fresh(self, theta: Float[Array, "e n"]) -> GradientArborescenceState:
        e, n = theta.shape
        return GradientArborescenceState(
            theta=theta,
            moments=jnp.zeros((e, 2, n), theta.dtype),
            steps=jnp.zeros((e,), jnp.int32),
            coefficients=self._coefficient_es(theta.dtype),
            jacobian=jnp.zeros((e, self.num_coefficients, n), theta.dtype),
            sampled=jnp.zeros((e, self.population, self.num_coefficients), theta.dtype),
            restarts=jnp.zeros((), jnp.int32),
            started=jnp.asarray(False),
        )

    def init(self, key: PRNGKeyArray, archive: Archive) -> GradientArborescenceState:
        flat, _ = flatten_population(archive.genomes)
        state = self._fresh(jnp.zeros((self.num_emitters, flat.shape[1]), flat.dtype))
        if self.td3_config is None:
            return state
        critic = init_learning(key, archive, self.td3_config, self.buffer_size)
        return dataclasses.replace(state, critic=critic)

    def ask(
        self,
        key: PRNGKeyArray,
        state: GradientArborescenceState,
        archive: Archive,
        evaluate: EvaluateFn,
    ) -> tuple[Any, GradientArborescenceState]:
        k_grad, k_coeff = jax.random.split(key)
        template = one_genome(archive)
        if self.objective is not None:
            jacobian = exact_jacobian(self.objective, state.theta)
        elif self.td3_config is not None:
            k_es, k_critic = jax.random.split(k_grad)
            descriptors = es_jacobian(
                evaluate,
                template,
                state.theta,
                k_es,
                samples=self.es_samples,
                sigma=self.es_sigma,
                outputs=lambda evaluation: evaluation.descriptors,
            )
            fitness = critic_fitness_gradient(
                k_critic, state.theta, template, state.critic, self.td3_config.batch_size
            )
            jacobian = jnp.concatenate([fitness[:, None, :], descriptors], axis=1)
        else:
            jacobian = es_jacobian(
                evaluate,
                template,
                state.theta,
                k_grad,
                samples=self.es_samples,
                sigma=self.es_sigma,
            )
        jacobian = normalise_rows(jacobian.astype(state.theta.dtype))
        keys = jax.random.split(k_coeff, self.num_emitters)
        coefficients = jax.vmap(cma_es.ask)(keys, state.coefficients)  # [E, p, k]
        offspring = state.theta[:, None, :] + jnp.einsum("epk,ekn->epn", coefficients, jacobian)
        batch = jnp.concatenate([state.theta[:, None, :], offspring], axis=1)
        genomes = unflatten_population(template, batch.reshape(self.batch_size, -1))
        return genomes, eqx.tree_at(
            lambda s: (s.jacobian, s.sampled), state, (jacobian, coefficients)
        )

    def _step_theta(
        self, state: GradientArborescenceState, step: Float[Array, "e n"]
    ) -> tuple[Array, Array, Array]:
        """``theta`` moved along ``step`` (an ascent direction): ``(theta, moments, steps)``."""
        if self.grad_opt == "gradient_ascent":
            return state.theta + self.learning_rate * step, state.moments, state.steps
        b1, b2 = ADAM_BETAS
        t = state.steps + 1
        gradient = -step
        m = b1 * state.moments[:, 0] + (1 - b1) * gradient
        v = b2 * state.moments[:, 1] + (1 - b2) * gradient**2
        tf = t.astype(step.dtype)[:, None]
        rate = self.learning_rate * jnp.sqrt(1 - b2**tf) / (1 - b1**tf)
        theta = state.theta - rate * m / (jnp.sqrt(v) + ADAM_EPSILON)
        return theta, jnp.stack([m, v], axis=1), t

    def tell(
        self,
        key: PRNGKeyArray,
        state: GradientArborescenceState,
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[GradientArborescenceState, Metrics]:
        del evaluate
        critic, learner_metrics = state.critic, {}
        if self.td3_config is not None:
            key, k_learn = jax.random.split(key)
            critic, learner_metrics = learn(state.critic, evaluation, k_learn, self.critic_steps)
        state = dataclasses.replace(state, critic=None)
        shape = (self.num_emitters, self.population + 1)
        flat, _ = flatten_population(genomes)
        offspring = flat.reshape(*shape, -1)[:, 1:]  # theta itself is not ranked
        status = insert_info.status.reshape(shape)[:, 1:]
        improvement = insert_info.improvement.reshape(shape)[:, 1:].astype(flat.dtype)

        order, values = jax.vmap(lambda s, v: rank(s, v, "2imp"))(status, improvement)
        accepted = jnp.sum(status > 0, axis=1)
        if self.selection_rule == "filter":
            num_parents = accepted
        else:
            num_parents = jnp.full((self.num_emitters,), self.population // 2)
        coefficients = jax.vmap(cma_es.tell)(state.coefficients, state.sampled, order, num_parents)

        def parent_mean(solutions: Array, indices: Array, mu: Array) -> Array:
            weights, _ = recombination_weights(mu, self.population, solutions.dtype)
            return weights @ solutions[indices]

        new_mean = jax.vmap(parent_mean)(offspring, order, num_parents)
        step = jnp.where((num_parents > 0)[:, None], new_mean - state.theta, 0)
        theta, moments, steps = self._step_theta(state, step)
        told = eqx.tree_at(
            lambda s: (s.theta, s.moments, s.steps, s.coefficients),
            state,
            (theta, moments, steps, coefficients),
        )

        sorted_values = jax.vmap(lambda v, o: v[o])(values, order)
        restart = jax.vmap(cma_es.should_restart)(coefficients, sorted_values)
        if self.restart_rule == "no_improvement":
            restart = restart | (accepted == 0)

        elites, cells = archive.sample(key, self.num_emitters)
        starts, _ = flatten_population(elites)
        starts = jnp.where((cells >= 0)[:, None], starts, 0).astype(flat.dtype)
        fresh = self._fresh(starts)
        new = select_instances(restart, fresh, told)
        # Iteration 0 (genomes no instance asked for): stay at x0 = 0, learn nothing.
        new = jax.tree_util.tree_map(
            lambda a, b: jnp.where(state.started, a, b), new, self._fresh(state.theta)
        )
        restarts = state.restarts + jnp.where(state.started, jnp.sum(restart, dtype=jnp.int32), 0)
        moved = jnp.linalg.norm(theta - state.theta, axis=-1)
        new = eqx.tree_at(lambda s: (s.restarts, s.started), new, (restarts, jnp.asarray(True)))
        new = dataclasses.replace(new, critic=critic)
        step_length = jnp.mean(jnp.where(state.started, moved, 0))
        return new, {**learner_metrics, "restarts": restarts, "step": step_length}
