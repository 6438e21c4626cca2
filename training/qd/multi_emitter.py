"""Several emitters in one algorithm: the batch split among them in fixed proportions.

A :class:`MultiEmitter` asks each of its emitters for its share, concatenates the genomes in
emitter order, and in ``tell`` hands every emitter its own slice of the genomes, of the
evaluation (transitions included) and of the insertion info; an emitter whose
``tells_on_whole_batch`` is True (a learner fed by every offspring's transitions) gets the
whole batch instead. Its state is the tuple of the
emitters' states; its metrics are theirs, prefixed with the emitter's name
(``"pg/critic_loss"``). Per-elite extras are the union of the emitters' extras, computed on
the whole batch (every solution is inserted, whoever asked for it).

Like pyribs' scheduler over emitters and QDax's ``MultiEmitter``, but pure: the whole split
is traced once inside the jitted loop.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from training.qd.emitter import Emitter, EvaluateFn, Metrics
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks.base import Evaluation, TaskSpec


def _slice(tree: Any, start: int, size: int) -> Any:
    """Rows ``[start, start + size)`` of every array leaf (leading batch axis)."""
    return jax.tree_util.tree_map(lambda x: x[start : start + size], tree)


class MultiEmitter(Emitter):
    """Run ``emitters`` side by side; the batch is the concatenation of their asks.

    Attributes:
        emitters: the emitters, in batch order.
        names: one distinct name per emitter (metric prefixes).
    """

    emitters: tuple[Emitter, ...]
    names: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, emitters: Sequence[Emitter], names: Sequence[str] | None = None) -> None:
        emitters = tuple(emitters)
        if not emitters:
            raise ConfigError("MultiEmitter needs at least one emitter, given none")
        names = tuple(names) if names is not None else tuple(str(i) for i in range(len(emitters)))
        if len(names) != len(emitters) or len(set(names)) != len(names):
            raise ConfigError(
                f"MultiEmitter needs one distinct name per emitter: {len(emitters)} emitters, "
                f"given names {list(names)}"
            )
        self.emitters = emitters
        self.names = names

    @property
    def batch_size(self) -> int:
        return sum(e.batch_size for e in self.emitters)

    @property
    def needs_transitions(self) -> bool:
        return any(e.needs_transitions for e in self.emitters)

    @property
    def extra_evaluations(self) -> int:
        return sum(e.extra_evaluations for e in self.emitters)

    def _offsets(self) -> list[int]:
        offsets, start = [], 0
        for emitter in self.emitters:
            offsets.append(start)
            start += emitter.batch_size
        return offsets

    def extras_template(self, spec: TaskSpec) -> dict[str, Array]:
        merged: dict[str, Array] = {}
        for name, emitter in zip(self.names, self.emitters, strict=True):
            template = emitter.extras_template(spec)
            clash = set(template) & set(merged)
            if clash:
                raise ConfigError(
                    f"emitter {name!r} declares per-elite extras {sorted(clash)} that another "
                    "emitter of the same MultiEmitter declares too; give them distinct names"
                )
            merged.update(template)
        return merged

    def extras(self, evaluation: Evaluation) -> dict[str, Array]:
        merged: dict[str, Array] = {}
        for emitter in self.emitters:
            merged.update(emitter.extras(evaluation))
        return merged

    def init(self, key: PRNGKeyArray, archive: Archive) -> tuple[Any, ...]:
        keys = jax.random.split(key, len(self.emitters))
        return tuple(e.init(k, archive) for e, k in zip(self.emitters, keys, strict=True))

    def ask(
        self, key: PRNGKeyArray, state: tuple[Any, ...], archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, tuple[Any, ...]]:
        keys = jax.random.split(key, len(self.emitters))
        asked, states = [], []
        for emitter, k, s in zip(self.emitters, keys, state, strict=True):
            genomes, s = emitter.ask(k, s, archive, evaluate)
            asked.append(genomes)
            states.append(s)
        genomes = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *asked)
        return genomes, tuple(states)

    def tell(
        self,
        key: PRNGKeyArray,
        state: tuple[Any, ...],
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
        evaluate: EvaluateFn,
    ) -> tuple[tuple[Any, ...], Metrics]:
        keys = jax.random.split(key, len(self.emitters))
        states, metrics = [], {}
        parts = zip(self.names, self.emitters, keys, state, self._offsets(), strict=True)
        for name, emitter, k, s, start in parts:
            if emitter.tells_on_whole_batch:
                told = (genomes, evaluation, insert_info)
            else:
                size = emitter.batch_size
                told = tuple(_slice(x, start, size) for x in (genomes, evaluation, insert_info))
            s, m = emitter.tell(k, s, archive, *told, evaluate)
            states.append(s)
            metrics.update({f"{name}/{metric}": value for metric, value in m.items()})
        return tuple(states), metrics


def split_batch(batch_size: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Split ``batch_size`` among emitters in the given proportions (largest remainder).

    ``split_batch(256, (0.5, 0.25, 0.25)) == (128, 64, 64)``. Every emitter gets at least one
    genome; the sizes add up to ``batch_size``.

    Raises:
        ConfigError: a fraction that is not positive, or a batch too small to give every
            emitter one genome.
    """
    if not fractions or any(not f > 0 for f in fractions):
        raise ConfigError(f"fractions must be positive numbers, given {list(fractions)}")
    if batch_size < len(fractions):
        raise ConfigError(
            f"batch_size={batch_size} cannot give each of {len(fractions)} emitters a genome; "
            f"use a batch of at least {len(fractions)}"
        )
    total = float(sum(fractions))
    exact = [batch_size * f / total for f in fractions]
    sizes = [max(1, int(x)) for x in exact]
    # Most under-allocated first when adding; most over-allocated first when removing.
    order = sorted(range(len(exact)), key=lambda i: (sizes[i] - exact[i], i))
    for j in itertools.cycle(order):
        if sum(sizes) >= batch_size:
            break
        sizes[j] += 1
    for j in itertools.cycle(reversed(order)):
        if sum(sizes) <= batch_size:
            break
        if sizes[j] > 1:
            sizes[j] -= 1
    return tuple(sizes)
