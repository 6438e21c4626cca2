"""MAP-Elites gives bit-identical archives to those of the code before the QD-core
refactor (digests in tests/golden_map_elites.py)."""

from __future__ import annotations

import pytest
from golden_map_elites import DIGESTS, POINT_MAZE, RECIPE, RECIPE_SHORT, run_digest


def test_point_maze_archive_is_unchanged() -> None:
    assert run_digest(POINT_MAZE) == DIGESTS["point_maze"]


@pytest.mark.slow  # walker2d compiles: about a minute; the point-maze digest stays fast
def test_bundled_recipe_first_chunks_are_unchanged() -> None:
    assert run_digest(RECIPE_SHORT) == DIGESTS["recipe_short"]


@pytest.mark.slow
def test_bundled_recipe_archive_is_unchanged() -> None:
    assert run_digest(RECIPE) == DIGESTS["recipe"]


def test_recorded_task_builds_the_runs_policy() -> None:
    """A run with ``--hidden`` records task kwargs whose default policy is the run's."""
    from training.qd.run import Run, TrainConfig

    run = Run(TrainConfig.from_dict(POINT_MAZE))
    assert run.task.default_policy() == run.policy
    assert run.task.spec.kwargs["policy_hidden_sizes"] == [16, 16]
