"""The improvement-ranking ES emitter and the ES-based algorithms (CMA-ME, CMA-MAE and its
sep-CMA / LM-MA / OpenAI-ES variants): ranking as pyribs, starts and restarts, pytree
genomes, registry checks, and CMA-MAE end to end through ``qdzoo train`` on LP-sphere."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ribs.emitters.rankers import ImprovementRanker, TwoStageImprovementRanker

from training.cli import main
from training.es import BACKENDS
from training.qd import algorithms
from training.qd.emitters.evolution_strategy import EvolutionStrategyEmitter, rank
from training.rundir import METRICS_LOG
from zoo.archive import Archive, InsertInfo
from zoo.errors import ConfigError
from zoo.tasks import make
from zoo.tasks.base import Evaluation

N = 6


@pytest.mark.parametrize(
    ("ranker", "reference"), [("imp", ImprovementRanker), ("2imp", TwoStageImprovementRanker)]
)
def test_ranking_matches_pyribs(ranker: str, reference: type) -> None:
    rng = np.random.default_rng(0)
    status = rng.integers(0, 3, 32)
    value = rng.normal(size=32)
    if ranker == "2imp":
        # Ties: pyribs' lexsort is stable, so its order is defined (its argsort is not).
        value = np.round(value, 1)
    order, values = rank(jnp.asarray(status), jnp.asarray(value), ranker)
    expected_order, expected_values = reference().rank(
        None, None, None, {"status": status, "value": value}
    )
    np.testing.assert_array_equal(order, expected_order)
    np.testing.assert_allclose(values, expected_values)


def _archive(template: Any) -> Archive:
    return Archive.grid(template, (4, 4), -1.0, 1.0, learning_rate=0.5, threshold_min=0.0)


def _info(status: Any, improvement: Any) -> InsertInfo:
    status = jnp.asarray(status, jnp.int32)
    return InsertInfo(status, jnp.asarray(improvement, jnp.float32), jnp.zeros_like(status))


def _tell(emitter: EvolutionStrategyEmitter, state: Any, archive: Archive, genomes: Any, info: Any):
    evaluation = Evaluation(jnp.zeros(emitter.batch_size), jnp.zeros((emitter.batch_size, 2)))
    tell = eqx.filter_jit(emitter.tell)
    return tell(jax.random.key(1), state, archive, genomes, evaluation, info, None)


def _ask(emitter: EvolutionStrategyEmitter, state: Any, archive: Archive) -> Any:
    return eqx.filter_jit(emitter.ask)(jax.random.key(3), state, archive, None)


@pytest.mark.parametrize("es", list(BACKENDS))
def test_emitter_starts_learns_and_restarts(es: str) -> None:
    emitter = EvolutionStrategyEmitter(
        num_emitters=3, population=4, sigma0=0.3, es=es, restart_rule="no_improvement"
    )
    batch = emitter.batch_size
    archive = _archive(jnp.zeros(N))
    state = emitter.init(jax.random.key(0), archive)
    random = jax.random.uniform(jax.random.key(2), (batch, N), minval=-1, maxval=1)
    fitness = 1.0 + jnp.arange(batch, dtype=jnp.float32)
    archive, info = archive.insert(random, fitness, random[:, :2])
    # Iteration 0: the random batch starts every ES at x0 = 0 (with start="elite": at an
    # elite), nothing learnt or counted.
    state, metrics = _tell(emitter, state, archive, random, info)
    assert bool(state.started) and int(metrics["restarts"]) == 0
    np.testing.assert_array_equal(state.es.mean, 0)
    np.testing.assert_allclose(metrics["sigma"], 0.3)
    from_elites = dataclasses.replace(emitter, start="elite")
    elite_state, _ = _tell(
        from_elites, emitter.init(jax.random.key(0), archive), archive, random, info
    )
    elites = archive.genomes[archive.occupied]
    for mean in elite_state.es.mean:
        assert bool(jnp.any(jnp.all(elites == mean, axis=1)))

    genomes, state = _ask(emitter, state, archive)
    assert genomes.shape == (batch, N)
    # ES 0 adds solutions (it learns), ES 1 and 2 add nothing (no_improvement: restart).
    status = jnp.zeros(batch, jnp.int32).at[:2].set(2)
    improvement = jnp.where(status > 0, 1.0, -1.0) * jnp.arange(1, batch + 1)
    before = state.es.mean
    state, metrics = _tell(emitter, state, archive, genomes, _info(status, improvement))
    assert int(metrics["restarts"]) == 2
    assert not bool(jnp.all(state.es.mean[0] == before[0]))
    assert bool(jnp.all(jnp.isfinite(state.es.mean)))


def test_basic_rule_keeps_an_es_that_adds_nothing() -> None:
    emitter = EvolutionStrategyEmitter(num_emitters=2, population=4, sigma0=0.3)
    archive = _archive(jnp.zeros(N))
    state = emitter.init(jax.random.key(0), archive)
    state = eqx.tree_at(lambda s: s.started, state, jnp.asarray(True))
    genomes, state = _ask(emitter, state, archive)
    improvement = -jnp.arange(1.0, 9.0)
    state, metrics = _tell(emitter, state, archive, genomes, _info(jnp.zeros(8), improvement))
    assert int(metrics["restarts"]) == 0
    assert float(metrics["sigma"]) != pytest.approx(0.3)  # "mu" selection still updates


def test_pytree_genomes() -> None:
    """Policies are pytrees: the ES works on their flattened vectors."""
    template = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
    emitter = EvolutionStrategyEmitter(num_emitters=2, population=4, sigma0=0.1, es="sep-cma")
    archive = _archive(template)
    state = emitter.init(jax.random.key(0), archive)
    assert state.es.mean.shape == (2, 9)
    genomes, _ = _ask(emitter, state, archive)
    assert genomes["w"].shape == (8, 2, 3) and genomes["b"].shape == (8, 3)
    state, _ = _tell(emitter, state, archive, genomes, _info(jnp.zeros(8), jnp.zeros(8)))
    assert bool(jnp.all(jnp.isfinite(state.es.mean)))


def test_emitter_argument_checks() -> None:
    with pytest.raises(ConfigError, match="unknown ES"):
        EvolutionStrategyEmitter(num_emitters=2, population=4, sigma0=0.1, es="nes")
    with pytest.raises(ConfigError, match="ranker must be one of"):
        EvolutionStrategyEmitter(num_emitters=2, population=4, sigma0=0.1, ranker="best")
    with pytest.raises(ConfigError, match="must be even"):
        EvolutionStrategyEmitter(num_emitters=2, population=5, sigma0=0.1, es="openai")
    with pytest.raises(ConfigError, match="at least 2 solutions"):
        EvolutionStrategyEmitter(num_emitters=2, population=1, sigma0=0.1)


def test_registry_entries() -> None:
    task = make("lp-sphere", dimension=10)
    for name in ("cma-me", "cma-mae", "sep-cma-mae", "lm-ma-mae", "openai-mae"):
        algorithm = algorithms.get(name)
        hp = algorithm.resolved(task, {"num_emitters": 5})
        emitter = algorithm.build(task, 40, hp)
        assert emitter.batch_size == 40 and emitter.num_emitters == 5
        expected = (1.0, -math.inf) if name == "cma-me" else (0.01, 0.0)
        assert algorithm.archive_settings(hp) == expected
        with pytest.raises(ConfigError, match="multiple of 5.*given 42.*--batch-size 40"):
            algorithm.build(task, 42, hp)
    # The paper's defaults on vector tasks: 15 ES of sigma0 0.5.
    cma_mae = algorithms.get("cma-mae")
    emitter = cma_mae.build(task, 540, cma_mae.hyperparameters())
    assert (emitter.num_emitters, emitter.population, emitter.sigma0) == (15, 36, 0.5)
    # threshold_min defaults to the task's lowest fitness; one above it would keep solutions
    # out.
    maze = make("point-maze")
    resolved = cma_mae.resolved(maze)
    assert resolved["threshold_min"] == maze.spec.min_fitness < 0
    assert resolved["num_emitters"] == 5 and resolved["sigma0"] == 0.02  # policy defaults
    with pytest.raises(ConfigError, match="threshold_min=0.0 is above the lowest fitness"):
        cma_mae.build(maze, 40, cma_mae.hyperparameters({"threshold_min": 0.0}))


def _train(tmp_path: Path, algo: str, *extra: str) -> dict[str, Any]:
    out = tmp_path / algo
    args = [
        "train", "--task", "lp-sphere", "--algo", algo, "--task-arg", "dimension=10",
        "--grid", "10", "10", "--batch-size", "40", "--evaluations", "2000", "--chunk", "25",
        "--seed", "0", "--quiet", "--out", str(out), *extra,
    ]  # fmt: skip
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    return {"rows": rows, "config": config}


def test_cma_mae_through_the_cli_beats_map_elites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Equal budget (2,000 evaluations) on a 10-D LP-sphere: CMA-MAE (5 ES x 8) fills a
    larger and better archive than MAP-Elites with its registry defaults."""
    bad = ["train", "--task", "lp-sphere", "--algo", "cma-mae", "--batch-size", "40",
           "--evaluations", "80", "--quiet", "--out", str(tmp_path / "bad")]  # fmt: skip
    assert main(bad) != 0
    assert "--batch-size must be a multiple of 15; given 40" in capsys.readouterr().err
    cma_mae = _train(tmp_path, "cma-mae", "--set", "num_emitters=5")
    map_elites = _train(tmp_path, "map-elites")
    rows = cma_mae["rows"]
    assert [row["evaluations"] for row in rows[-1:]] == [2000]
    assert all(math.isfinite(row["sigma"]) and row["sigma"] > 0 for row in rows)
    assert rows[-1]["restarts"] >= 0
    hyperparameters = cma_mae["config"]["algorithm"]["hyperparameters"]
    assert hyperparameters["archive_learning_rate"] == 0.01
    assert hyperparameters["threshold_min"] == 0.0
    ours, theirs = rows[-1], map_elites["rows"][-1]
    assert ours["qd_score"] > 1.5 * theirs["qd_score"], (ours, theirs)
    assert ours["coverage"] > theirs["coverage"], (ours, theirs)
