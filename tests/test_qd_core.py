"""The QD core: multi-emitters, transitions, per-elite extras, emitter metrics and extra
evaluations counted in the budget, end to end through ``qdzoo train`` with a test-only
algorithm (tests/toy_algorithm.py), checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from golden_map_elites import archive_digest
from toy_algorithm import NAME, register_toy_algorithm

from training.cli import main
from training.qd.emitter import Emitter, EvaluateFn
from training.qd.loop import init_state, make_step
from training.qd.multi_emitter import MultiEmitter, split_batch
from training.qd.run import Run, TrainConfig, train
from training.rundir import CHECKPOINT_DIR, METRICS_LOG
from zoo.archive import Archive
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.tasks import make

BATCH = 16
EPISODE = 20
TOY = TrainConfig(
    task="point-maze",
    algorithm=NAME,
    evaluations=9 * 2 * BATCH,  # 9 iterations of 16 inserted + 16 probe evaluations
    batch_size=BATCH,
    grid=(5, 5),
    task_kwargs={"episode_length": EPISODE},
    policy={"hidden_sizes": [8]},
    seed=1,
    chunk=3,
)
CLI_ARGS = [
    "train",
    "--task",
    "point-maze",
    "--algo",
    NAME,
    "--evaluations",
    str(TOY.evaluations),
    "--batch-size",
    str(BATCH),
    "--grid",
    "5",
    "5",
    "--episode-length",
    str(EPISODE),
    "--hidden",
    "8",
    "--seed",
    "1",
    "--chunk",
    "3",
    "--quiet",
]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_toy_algorithm()
    out = tmp_path_factory.mktemp("toy") / "run"
    assert main([*CLI_ARGS, "--out", str(out)]) == 0
    return out


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]


def test_split_batch() -> None:
    assert split_batch(256, (0.5, 0.25, 0.25)) == (128, 64, 64)
    assert split_batch(10, (1, 1, 1)) == (4, 3, 3)
    assert split_batch(3, (0.98, 0.01, 0.01)) == (1, 1, 1)
    assert sum(split_batch(101, (0.3, 0.7))) == 101
    with pytest.raises(ConfigError, match="at least 3"):
        split_batch(2, (1, 1, 1))
    with pytest.raises(ConfigError, match="positive"):
        split_batch(8, (1, 0))


def test_multi_emitter_names_must_be_distinct() -> None:
    from training.qd.emitters.iso_line import IsoLineEmitter

    with pytest.raises(ConfigError, match="distinct name"):
        MultiEmitter([IsoLineEmitter(size=2), IsoLineEmitter(size=2)], names=("a", "a"))


def test_toy_algorithm_runs_through_the_cli(toy_run: Path) -> None:
    log = _log(toy_run)
    per_iteration = 2 * BATCH
    assert [row["iteration"] for row in log] == list(range(1, 10))
    # The budget counts the probe's extra evaluations: 9 iterations of 32, not 18 of 16.
    assert [row["evaluations"] for row in log] == [per_iteration * i for i in range(1, 10)]
    # Emitter metrics, prefixed by the emitter's name, merged into every row.
    for row in log:
        assert row["probe/mean_reward"] < 0  # point maze rewards are -distance
        assert 0 <= row["probe/added"] <= BATCH // 2
    # Learning state carried across iterations (and chunks): valid steps seen accumulate.
    steps = [row["probe/steps_seen"] for row in log]
    assert all(b > a for a, b in zip(steps[:-1], steps[1:], strict=True))
    # Its replay buffer fills up to capacity with valid transitions only; the reward model
    # trained on it in tell learns (its loss falls).
    sizes = [row["probe/buffer_size"] for row in log]
    assert sizes == [min(s, 2048) for s in steps]
    losses = [row["probe/model_loss"] for row in log]
    assert losses[-1] < losses[0]
    # Each emitter is handed exactly the slice it asked for (iteration 1 tells on the
    # random initial batch, which nobody asked for).
    assert [row["probe/slice_matches"] for row in log] == [0] + [1] * 8
    config = json.loads((toy_run / "config.json").read_text())
    assert config["training"]["evaluations"] == 9 * per_iteration
    assert config["training"]["evaluations_per_iteration"] == per_iteration


def test_toy_extras_are_stored_saved_and_loaded(toy_run: Path) -> None:
    artifact = load_archive(toy_run)
    archive = artifact.archive
    occupied = np.asarray(archive.occupied)
    assert occupied.sum() > 3
    rewards = np.asarray(archive.extras["rewards"])
    assert rewards.shape == (archive.num_cells, EPISODE)
    # Every elite's stored per-step rewards add up to its fitness (sum over valid steps).
    np.testing.assert_allclose(
        rewards[occupied].sum(axis=1), np.asarray(archive.fitness)[occupied], rtol=1e-5
    )
    assert np.all(rewards[~occupied] == 0)


def test_toy_resume_is_identical(toy_run: Path, tmp_path: Path) -> None:
    register_toy_algorithm()
    out = tmp_path / "run"
    # Stop after 2 of 3 chunks, then resume with the full config (what a run killed after
    # its second checkpoint leaves behind).
    partial = TrainConfig(**{**TOY.to_dict(), "evaluations": 6 * 2 * BATCH})
    train(partial, out, progress=False, save=False)
    (out / CHECKPOINT_DIR / "run.json").write_text(json.dumps(TOY.to_dict()))
    assert main([*CLI_ARGS, "--out", str(out), "--resume"]) == 0
    full, resumed = load_archive(toy_run).archive, load_archive(out).archive
    assert archive_digest(resumed) == archive_digest(full)
    np.testing.assert_array_equal(
        np.asarray(resumed.extras["rewards"]), np.asarray(full.extras["rewards"])
    )
    assert _log(out) == _log(toy_run)


class _Undeclared(Emitter):
    """Evaluates genomes in ask without declaring them: the loop must refuse."""

    size: int = 4

    @property
    def batch_size(self) -> int:
        return self.size

    def ask(
        self, key: jax.Array, state: Any, archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, Any]:
        genomes, _ = archive.sample(key, self.size)
        evaluate(genomes, key)
        return genomes, state


def test_undeclared_extra_evaluations_are_refused() -> None:
    task = make("lp-sphere", dimension=4)
    emitter = _Undeclared()
    archive = Archive.grid(jnp.zeros(4), (3, 3), (-1.0, -1.0), (1.0, 1.0))
    state = init_state(task, emitter, archive, jax.random.key(0), None)
    with pytest.raises(ConfigError, match="extra_evaluations=0 per iteration but evaluated 4"):
        jax.eval_shape(make_step(task, emitter), state)


def test_budget_sets_the_iterations() -> None:
    register_toy_algorithm()
    run = Run(TrainConfig(**{**TOY.to_dict(), "evaluations": 100}))
    assert run.evaluations_per_iteration == 2 * BATCH
    assert run.iterations == 4  # ceil(100 / 32)


class _Told(Emitter):
    """Reports how many genomes its ``tell`` received."""

    size: int
    whole: bool = False

    @property
    def batch_size(self) -> int:
        return self.size

    @property
    def tells_on_whole_batch(self) -> bool:
        return self.whole

    def ask(
        self, key: jax.Array, state: Any, archive: Archive, evaluate: EvaluateFn
    ) -> tuple[Any, Any]:
        return archive.sample(key, self.size)[0], state

    def tell(self, key, state, archive, genomes, evaluation, insert_info, evaluate):  # type: ignore[no-untyped-def]
        told = evaluation.fitness.shape[0]
        assert genomes.shape[0] == insert_info.status.shape[0] == told
        return state, {"told": jnp.asarray(told)}


def test_multi_emitter_slices_or_whole_batch() -> None:
    task = make("lp-sphere", dimension=4)
    emitter = MultiEmitter([_Told(3), _Told(5, whole=True)], names=("own", "all"))
    assert emitter.batch_size == 8
    archive = Archive.grid(jnp.zeros(4), (3, 3), (-1.0, -1.0), (1.0, 1.0))
    state = init_state(task, emitter, archive, jax.random.key(0), None)
    _, metrics = jax.jit(make_step(task, emitter))(state)
    assert int(metrics["own/told"]) == 3
    assert int(metrics["all/told"]) == 8
