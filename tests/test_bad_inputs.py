"""Bad inputs to training and to a policy task's ``evaluate`` raise qdzoo errors that say
what was expected, what was given and how to fix it; the CLI prints one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from training.cli import main
from training.qd.run import Run, TrainConfig
from zoo import tasks
from zoo.errors import ConfigError, ShapeError, TaskMismatchError

TRAIN = ["train", "--evaluations", "16", "--batch-size", "16", "--quiet"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI on a user error; check exit status 2 and one ``error:`` line; return it."""
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_hidden_size_zero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = [*TRAIN, "--task", "point-maze", "--out", str(tmp_path / "a")]
    line = run_cli([*args, "--hidden", "0"], capsys)
    assert "--hidden" in line and "given 0" in line and "--hidden 64 64" in line
    line = run_cli([*args, "--hidden", "8", "-3"], capsys)
    assert "given 8 -3" in line
    assert not (tmp_path / "a").exists()
    config = TrainConfig(task="point-maze", policy={"hidden_sizes": [0]})
    with pytest.raises(ConfigError, match=r"invalid policy .*hidden sizes must be >= 1"):
        Run(config)


def test_cvt_with_more_cells_than_samples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [*TRAIN, "--task", "lp-sphere", "--out", str(tmp_path / "a")]
    line = run_cli([*args, "--cvt", "60000"], capsys)
    assert "60000 CVT cells" in line and "given 50000" in line and "--cvt-samples" in line
    line = run_cli([*args, "--cvt", "64", "--cvt-samples", "32"], capsys)
    assert "64 CVT cells" in line and "given 32" in line
    line = run_cli([*args, "--cvt", "0"], capsys)
    assert "--cvt" in line and "positive integer, got 0" in line
    with pytest.raises(ConfigError, match="raise cvt_samples"):
        TrainConfig(task="lp-sphere", cvt_cells=100, cvt_samples=99)


@pytest.fixture(scope="module")
def maze() -> tasks.Task:
    return tasks.make("point-maze", episode_length=5, policy_hidden_sizes=[4])


def test_vector_population_for_a_policy_task(maze: tasks.Task) -> None:
    with pytest.raises(TaskMismatchError, match=r"evaluates policies .* array of shape \(4, 10\)"):
        maze.evaluate(jnp.zeros((4, 10)), jax.random.key(0))
    with pytest.raises(TaskMismatchError, match="got list"):
        maze.evaluate([jnp.zeros((4, 10))], jax.random.key(0))


def test_ragged_population(maze: tasks.Task) -> None:
    policies = maze.default_policy().init_population(jax.random.key(0), 4)
    ragged = type(policies)(
        weights=(policies.weights[0][:3], *policies.weights[1:]),
        biases=policies.biases,
        obs_mean=policies.obs_mean,
        obs_std=policies.obs_std,
        activation=policies.activation,
        output_activation=policies.output_activation,
    )
    with pytest.raises(ShapeError, match=r"same leading batch axis, got leading sizes \[3, 4\]"):
        maze.evaluate(ragged, jax.random.key(0))
    single = jax.tree_util.tree_map(lambda x: x[0], policies)
    with pytest.raises(ShapeError, match="evaluates a population"):
        maze.evaluate(single, jax.random.key(0))


def test_info_handles_every_artifact_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo import ArchiveArtifact, Generator, load_artifact

    assert isinstance(load_artifact("walker2d-uni-ldm"), Generator)
    assert isinstance(load_artifact("walker2d-uni-map-elites"), ArchiveArtifact)
    capsys.readouterr()
    assert main(["info", "walker2d-uni-ldm"]) == 0
    out = capsys.readouterr().out
    assert "archive     walker2d-uni-map-elites: 158 elites" in out
    assert "reward_ratio" in out and "vae_decoder" in out


def test_a_mistyped_local_path_says_no_such_directory(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    line = run_cli(["info", "runs/does-not-exist"], capsys)
    assert "there is no local directory 'runs/does-not-exist' (check the path)" in line
    assert "as a Hub repo id failed" in line and "HF_HUB_OFFLINE" in line
