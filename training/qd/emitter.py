"""The emitter protocol: how an algorithm proposes genomes and learns from their results.

An emitter is an Equinox module holding its static hyperparameters; its mutable state is a
separate pytree threaded through the QD loop::

    state = emitter.init(key, archive)
    genomes, state = emitter.ask(key, state, archive)
    ...evaluate, insert...
    state = emitter.tell(state, archive, genomes, evaluation, insert_info)

All three are pure and traced inside the jitted loop: no Python loops over individuals, no
host round trips.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
from jaxtyping import PRNGKeyArray

from zoo.archive import Archive, InsertInfo
from zoo.tasks.base import Evaluation


class Emitter(eqx.Module):
    """Base class. Subclasses define ``batch_size`` and implement ``ask``.

    ``needs_trajectory`` tells the loop to ask the task for per-step trajectories (for
    emitters that learn from transitions).
    """

    @property
    @abc.abstractmethod
    def batch_size(self) -> int:
        """Number of genomes returned by one ``ask``."""

    @property
    def needs_trajectory(self) -> bool:
        return False

    def init(self, key: PRNGKeyArray, archive: Archive) -> Any:
        """Initial emitter state (``None`` for stateless emitters)."""
        del key, archive
        return None

    @abc.abstractmethod
    def ask(self, key: PRNGKeyArray, state: Any, archive: Archive) -> tuple[Any, Any]:
        """Propose ``batch_size`` genomes (a population pytree) and the updated state."""

    def tell(
        self,
        state: Any,
        archive: Archive,
        genomes: Any,
        evaluation: Evaluation,
        insert_info: InsertInfo,
    ) -> Any:
        """Update the state with the results of the last ``ask`` (default: unchanged)."""
        del archive, genomes, evaluation, insert_info
        return state
