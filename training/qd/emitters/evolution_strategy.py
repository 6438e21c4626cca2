"""Improvement-ranking evolution-strategy emitters: CMA-ME, CMA-MAE and their scalable
variants (Fontaine et al., 2020; Fontaine & Nikolaidis, 2023; Tjanaka et al., 2022).

An :class:`EvolutionStrategyEmitter` holds ``num_emitters`` independent ES instances
(:mod:`training.es`, vmapped: one jitted program for all of them), each sampling
``population`` solutions around its own mean; the batch is their concatenation. After the
archive insertion, each instance ranks its own solutions with the insertion info, as
pyribs 0.12's ``EvolutionStrategyEmitter``:

- ranker ``"2imp"`` (two-stage improvement, CMA-ME): new cells first, then improved cells,
  then rejected solutions, each group by improvement value; ``"imp"`` (CMA-MAE): by
  improvement value alone (with a finite ``threshold_min`` every value is on one scale);
- parents: ``"filter"``, the solutions the archive accepted; ``"mu"``, the best half;
- the ES update (``tell``) from that ranking;
- a restart from a random elite of the archive when the ES's own stopping rules fire
  (``should_restart``: tolerances on sigma and the covariance, flat ranking values) or,
  with restart rule ``"no_improvement"``, when none of its solutions was accepted
  (``"basic"``: only the ES's rules).

The loop's iteration 0 inserts the task's random genomes, which no ES asked for: the first
``tell`` does not learn from them; every ES starts at ``x0 = 0`` as in pyribs (or, with
``start="elite"``, at a random elite of the archive they filled). Restarts go to a random
elite (the zero vector while the archive is empty). Genomes of any pytree shape are
flattened to vectors (:func:`models.policy.flatten_population`), so the same emitter evolves
benchmark vectors and policies. Metrics: ``sigma`` (mean step size over the instances) and
``restarts`` (restarts so far, all instances).

Memory: full CMA-ES keeps ``O(n^2)`` matrices per instance (``n`` = genome size), which is
what the sep-CMA-ES (``O(n)``), LM-MA-ES (``O(lambda n)``) and OpenAI-ES (``O(n)``)
variants avoid on neural-network policies.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Int, PRNGKeyArray

from models.policy import flatten_population, unflatten_population
from training.es import BACKENDS
from training.qd.emitter import Emitter, EvaluateFn, Metrics, one_genome
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation

RANKERS = ("imp", "2imp")
SELECTION_RULES = ("mu", "filter")
RESTART_RULES = ("basic", "no_improvement")
STARTS = ("zeros", "elite")


class EvolutionStrategyEmitterState(eqx.Module):
    """What changes during a run.

    Attributes:
        es: the ES states, stacked (leading axis ``num_emitters``).
        restarts: ``[]`` int32, restarts so far (all instances; the start is not counted).
        started: ``[]`` bool, whether the instances have been started from the archive.
    """

    es: Any
    restarts: Int[Array, ""]
    started: Array


def select_instances(mask: Array, new: Any, old: Any) -> Any:
    """Per instance (leading axis), ``new`` where ``mask`` else ``old``."""

    def pick(a: Array, b: Array) -> Array:
        return jnp.where(mask.reshape(mask.shape + (1,) * (a.ndim - 1)), a, b)

    return jax.tree_util.tree_map(pick, new, old)


def rank(
    status: Int[Array, " batch"], improvement: Array, ranker: str
) -> tuple[Int[Array, " batch"], Array]:
    """Ranking indices (best first) and ranking values of one ES's solutions.

    ``"imp"``: by improvement; ``"2imp"``: by status (2 new, 1 improved, 0 rejected), then
    improvement, with values ``[batch, 2]`` = (status, improvement). Ties go to the later
    solution (reversed stable sorts; pyribs' ``"2imp"`` does the same, its ``"imp"`` leaves
    the order of ties to NumPy's unstable sort).
    """
    if ranker == "imp":
        return jnp.flip(jnp.argsort(improvement, stable=True)), improvement
    order = jnp.flip(jnp.lexsort((improvement, status)))
    return order, jnp.stack([status.astype(improvement.dtype), improvement], axis=-1)


class EvolutionStrategyEmitter(Emitter):
    """``num_emitters`` ES instances ranked by archive improvement (see the module doc).

    Attributes:
        num_emitters: independent ES instances.
        population: solutions per instance and iteration (``lambda``); the batch is
            ``num_emitters * population``.
        sigma0: initial step size (OpenAI-ES: the fixed noise scale).
        es: ``"cma"``, ``"sep-cma"``, ``"lm-ma"`` or ``"openai"`` (:data:`training.es.BACKENDS`).
        ranker: ``"imp"`` or ``"2imp"``.
        selection_rule: ``"mu"`` or ``"filter"``.
        restart_rule: ``"basic"`` or ``"no_improvement"``.
        bounds: ``(low, high)`` for every parameter, or ``None``.
        es_options: extra keyword arguments of the ES's ``init``, as ``(name, value)`` pairs
            (e.g. ``(("pyribs_rank_one", True),)``, ``(("learning_rate", 0.01),)``).
        start: where every ES starts: ``"zeros"`` (``x0 = 0``, pyribs' benchmark and RL
            setting) or ``"elite"`` (a random elite of the archive the task's random genomes
            filled); restarts always go to a random elite.
    """

    num_emitters: int
    population: int
    sigma0: float
    es: str = "cma"
    ranker: str = "imp"
    selection_rule: str = "mu"
    restart_rule: str = "basic"
    bounds: tuple[float, float] | None = None
    es_options: tuple[tuple[str, Any], ...] = ()
    start: str = "zeros"

    def __check_init__(self) -> None:
        if self.es not in BACKENDS:
            raise ConfigError(f"unknown ES {self.es!r}; expected one of {sorted(BACKENDS)}")
        for name, value, valid in (
            ("ranker", self.ranker, RANKERS),
            ("selection_rule", self.selection_rule, SELECTION_RULES),
            ("restart_rule", self.restart_rule, RESTART_RULES),
            ("start", self.start, STARTS),
        ):
            if value not in valid:
                raise ConfigError(f"{name} must be one of {list(valid)}, given {value!r}")
        if not isinstance(self.num_emitters, int) or self.num_emitters < 1:
            raise ConfigError(
                f"num_emitters must be a positive integer, given {self.num_emitters!r}"
            )
        if not isinstance(self.population, int) or self.population < 2:
            raise ConfigError(
                f"each ES needs at least 2 solutions per iteration (batch_size / num_emitters),"
                f" given {self.population!r}; raise the batch size or lower num_emitters"
            )
        if not float(self.sigma0) > 0:
            raise ConfigError(f"sigma0 must be a positive number, given {self.sigma0!r}")
        options = dict(self.es_options)
        if self.es == "openai" and options.get("mirror_sampling", True) and self.population % 2:
            raise ConfigError(
                f"OpenAI-ES samples mirrored pairs: solutions per ES (batch_size / "
                f"num_emitters) must be even, given {self.population}; pick a batch size "
                "that gives an even number per ES"
            )

    @property
    def batch_size(self) -> int:
        return self.num_emitters * self.population

    def _init_one(self, mean: Array) -> Any:
        low, high = self.bounds if self.bounds is not None else (None, None)
        return BACKENDS[self.es].init(
            mean,
            self.sigma0,
            batch_size=self.population,
            lower_bounds=low,
            upper_bounds=high,
            **dict(self.es_options),
        )

    def _fresh(self, means: Array) -> Any:
        """ES states started at ``means`` ``[num_emitters, n]``."""
        one = self._init_one(jnp.zeros(means.shape[1], means.dtype))
        stacked = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (self.num_emitters, *x.shape)), one
        )
        return eqx.tree_at(lambda s: s.mean, stacked, means)

    def init(self, key: PRNGKeyArray, archive: Archive) -> EvolutionStrategyEmitterState:
        del key
        flat, _ = ravel_pytree(one_genome(archive))
        means = jnp.zeros((self.num_emitters, flat.shape[0]), flat.dtype)
        return EvolutionStrategyEmitterState(
            es=self._fresh(means),
            restarts=jnp.zeros((), jnp.int32),
            started=jnp.asarray(False),
        )

    def ask(
        self,
        key: PRNGKeyArray,
        state: EvolutionStrategyEmitterState,
        archive: Archive,
        evaluate: EvaluateFn,
    ) -> tuple[Any, EvolutionStrategyEmitterState]:
        del evaluate
        keys = jax.random.split(key, self.num_emitters)
        solutions = jax.vmap(BACKENDS[self.es].ask)(keys, state.es)
        template = one_genome(archive)
        flat = solutions.reshape(self.batch_size, -1)
        return unflatten_population(template, flat), state

    def tell(
        self,
        key: PRNGKeyArray,
        state: EvolutionStrategyEmitterState,
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[EvolutionStrategyEmitterState, Metrics]:
        del evaluation, evaluate
        module = BACKENDS[self.es]
        shape = (self.num_emitters, self.population)
        flat, _ = flatten_population(genomes)
        solutions = flat.reshape(*shape, -1)
        status = insert_info.status.reshape(shape)
        improvement = insert_info.improvement.reshape(shape).astype(flat.dtype)

        order, values = jax.vmap(lambda s, v: rank(s, v, self.ranker))(status, improvement)
        accepted = jnp.sum(status > 0, axis=1)
        if self.selection_rule == "filter":
            num_parents = accepted
        else:
            num_parents = jnp.full((self.num_emitters,), self.population // 2)
        told = jax.vmap(module.tell)(state.es, solutions, order, num_parents)
        sorted_values = jax.vmap(lambda v, o: v[o])(values, order)
        restart = jax.vmap(module.should_restart)(told, sorted_values)
        if self.restart_rule == "no_improvement":
            restart = restart | (accepted == 0)
        # Iteration 0 (the task's random genomes): start every ES, learn nothing.
        restart = jnp.where(state.started, restart, True)

        elites, cells = archive.sample(key, self.num_emitters)
        starts, _ = flatten_population(elites)
        starts = jnp.where((cells >= 0)[:, None], starts, 0).astype(flat.dtype)
        if self.start == "zeros":  # the first start is x0 = 0; restarts go to elites
            starts = jnp.where(state.started, starts, 0)
        es = select_instances(restart, self._fresh(starts), told)
        restarts = state.restarts + jnp.where(state.started, jnp.sum(restart, dtype=jnp.int32), 0)
        new_state = EvolutionStrategyEmitterState(
            es=es, restarts=restarts, started=jnp.asarray(True)
        )
        return new_state, {"sigma": jnp.mean(es.sigma), "restarts": restarts}
