"""The QD loop, MAP-Elites, checkpoints and resume, the archive artifact, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from training.cli import main
from training.qd import algorithms
from training.qd.run import Run, TrainConfig, train
from training.rundir import CHECKPOINT_DIR, METRICS_LOG
from zoo.archive_artifact import ArchiveArtifact, load_archive
from zoo.errors import (
    ArtifactError,
    ChecksumError,
    ConfigError,
    FormatVersionError,
    OutputExistsError,
    UnknownNameError,
)

# lp-sphere, 20 dimensions, 20x20 grid: cheap, and compiled once per config (the same config
# object is reused so that the Run cache in each test sees identical shapes).
SPHERE = TrainConfig(
    task="lp-sphere",
    task_kwargs={"dimension": 20},
    evaluations=64 * 60,
    batch_size=64,
    grid=(20, 20),
    hyperparameters={"iso_sigma": 0.01, "line_sigma": 0.2, "clip": 5.12},
    seed=3,
    chunk=20,
)


@pytest.fixture(scope="module")
def sphere_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveArtifact]:
    out = tmp_path_factory.mktemp("sphere") / "run"
    return out, train(SPHERE, out, progress=False)


def _normalised_qd(artifact: ArchiveArtifact) -> float:
    return artifact.metrics()["qd_score"] / (100.0 * artifact.archive.num_cells)


def test_map_elites_improves_qd_score_on_lp_sphere(
    sphere_run: tuple[Path, ArchiveArtifact],
) -> None:
    out, artifact = sphere_run
    log = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]
    assert [row["iteration"] for row in log] == list(
        range(1, SPHERE.evaluations // SPHERE.batch_size + 1)
    )
    first, last = log[0], log[-1]
    assert last["qd_score"] > 2 * first["qd_score"] > 0
    assert all(
        b["qd_score"] >= a["qd_score"] for a, b in zip(log[:-1], log[1:], strict=True)
    )  # elitist
    assert last["evaluations"] == SPHERE.evaluations
    # 3,840 evaluations in 20 dimensions: a normalised QD score (QD score / (100 * cells))
    # of at least 0.12 (about a quarter of what MAP-Elites reaches after 5M evaluations).
    assert _normalised_qd(artifact) >= 0.12
    assert artifact.metrics()["coverage"] >= 0.2


def test_resume_gives_the_uninterrupted_archive(
    sphere_run: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    _, full = sphere_run
    # Stop after 2 of 3 chunks by running a shorter config, then hand its checkpoint to a run
    # with the full config (the checkpoint of a run killed after chunk 2 looks the same).
    out = tmp_path / "run"
    partial = TrainConfig(**{**SPHERE.to_dict(), "evaluations": 64 * 40})
    train(partial, out, progress=False, save=False)
    (out / CHECKPOINT_DIR / "run.json").write_text(json.dumps(SPHERE.to_dict()))
    resumed = train(SPHERE, out, resume=True, progress=False)
    a, b = full.archive, resumed.archive
    np.testing.assert_array_equal(np.asarray(a.occupied), np.asarray(b.occupied))
    np.testing.assert_array_equal(np.asarray(a.fitness), np.asarray(b.fitness))
    np.testing.assert_array_equal(np.asarray(a.genomes), np.asarray(b.genomes))
    log = [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]
    assert [row["iteration"] for row in log] == list(
        range(1, SPHERE.evaluations // SPHERE.batch_size + 1)
    )


def test_resume_refuses_a_different_config(sphere_run: tuple[Path, ArchiveArtifact]) -> None:
    out, _ = sphere_run
    other = TrainConfig(**{**SPHERE.to_dict(), "seed": 4})
    with pytest.raises(ConfigError, match="different config"):
        train(other, out, resume=True, progress=False)


def test_existing_output_is_refused_without_resume_or_overwrite(
    sphere_run: tuple[Path, ArchiveArtifact],
) -> None:
    out, _ = sphere_run
    with pytest.raises(OutputExistsError, match="--resume"):
        train(SPHERE, out, progress=False)


def test_saved_archive_round_trip(sphere_run: tuple[Path, ArchiveArtifact], tmp_path: Path) -> None:
    out, artifact = sphere_run
    loaded = load_archive(out)
    for field in ("fitness", "descriptors", "thresholds", "occupied", "genomes"):
        np.testing.assert_array_equal(
            np.asarray(getattr(loaded.archive, field)), np.asarray(getattr(artifact.archive, field))
        )
    assert loaded.metrics() == pytest.approx(artifact.metrics())
    config = json.loads((out / "config.json").read_text())
    assert config["format_version"] == 1 and config["task"]["kwargs"]["dimension"] == 20
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: qdzoo") and "map-elites" in card
    assert (out / "heatmap.png").read_bytes()[:4] == b"\x89PNG"
    # float16 genomes: half the genome bytes, values within float16 precision
    half = artifact.save_pretrained(tmp_path / "half", genome_dtype="float16", plot=False)
    small = load_archive(half)
    np.testing.assert_allclose(
        np.asarray(small.archive.genomes), np.asarray(artifact.archive.genomes), atol=5e-3
    )


def test_stored_elites_reevaluate_to_their_fitness(
    sphere_run: tuple[Path, ArchiveArtifact],
) -> None:
    _, artifact = sphere_run
    task = artifact.make_task()
    cells = artifact.top_indices(5)
    result = task.evaluate(artifact.genomes(cells), jax.random.key(0))
    np.testing.assert_allclose(
        result.fitness, np.asarray(artifact.archive.fitness)[cells], rtol=1e-6
    )


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CHECKPOINT_DIR))
    return dst


def test_corrupted_weights_raise_checksum_error(
    sphere_run: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    d = _copy(sphere_run[0], tmp_path / "a")
    data = bytearray((d / "archive.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (d / "archive.safetensors").write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="sha256"):
        load_archive(d)


def test_newer_format_version_is_refused(
    sphere_run: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    d = _copy(sphere_run[0], tmp_path / "a")
    config = json.loads((d / "config.json").read_text())
    config["format_version"] = 99
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(FormatVersionError, match="version 99"):
        load_archive(d)


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ArtifactError, match="not a qdzoo archive"):
        load_archive(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_archive(tmp_path)


def test_unknown_algorithm_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="map-elites"):
        algorithms.get("nope")
    with pytest.raises(ConfigError, match="iso_sigma"):
        algorithms.get("map-elites").hyperparameters({"sigma": 1.0})


def test_grid_of_wrong_dimension_is_refused() -> None:
    config = TrainConfig(**{**SPHERE.to_dict(), "grid": [5, 5, 5]})
    with pytest.raises(ConfigError, match="one size per descriptor"):
        Run(config).initial_state()


def test_cli_info_eval_plot_and_errors(
    sphere_run: tuple[Path, ArchiveArtifact], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, artifact = sphere_run
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "qd_score" in text and "lp-sphere" in text
    assert main(["eval", str(out), "--top", "3"]) == 0
    text = capsys.readouterr().out
    best = artifact.metrics()["max_fitness"]
    assert f"{best:.4f}" in text
    assert main(["plot", str(out), "-o", str(tmp_path / "h.png")]) == 0
    assert (tmp_path / "h.png").exists()
    # bad inputs: one clear line, exit status 2, no traceback
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("garbage")
    capsys.readouterr()
    assert main(["info", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert main(["train", "--task", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "walker2d-uni" in capsys.readouterr().err
    assert (
        main(["train", "--task", "lp-sphere", "--algo", "nope", "--out", str(tmp_path / "y")]) == 2
    )
    assert "map-elites" in capsys.readouterr().err
    assert main(["train", "--task", "lp-sphere", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_cli_train_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "arm"
    args = [
        "train",
        "--task",
        "arm",
        "--task-arg",
        "num_joints=8",
        "--evaluations",
        "256",
        "--batch-size",
        "32",
        "--grid",
        "8",
        "8",
        "--seed",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert "saved to" in capsys.readouterr().out
    assert load_archive(out).metrics()["num_elites"] > 0
    assert main([*args[:-1], "--overwrite"]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGKILL"])
def test_interrupted_run_resumes_to_the_uninterrupted_archive(
    tmp_path: Path, signal_name: str
) -> None:
    """Ctrl-C or kill -9 mid-run leaves a checkpoint from which --resume finishes the run.

    Slow (a subprocess and two 48,000-evaluation runs); tests/test_kill_resume.py interrupts
    runs in-process at chosen checkpoint writes in the fast suite."""
    import signal
    import subprocess
    import sys
    import time

    args = [
        "train",
        "--task",
        "lp-sphere",
        "--task-arg",
        "dimension=10",
        "--evaluations",
        str(16 * 3000),
        "--batch-size",
        "16",
        "--grid",
        "10",
        "10",
        "--chunk",
        "5",
        "--seed",
        "7",
        "--quiet",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "training.cli", *args, "--out", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    state_file = out / CHECKPOINT_DIR / "state.safetensors"
    deadline = time.time() + 120
    while not state_file.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(getattr(signal, signal_name))
    _, err = proc.communicate(timeout=60)
    if signal_name == "SIGINT" and proc.returncode == 130:
        assert "--resume" in err
    assert main([*args, "--out", str(out), "--resume"]) == 0
    reference = tmp_path / "reference"
    assert main([*args, "--out", str(reference)]) == 0
    a, b = load_archive(out).archive, load_archive(reference).archive
    np.testing.assert_array_equal(np.asarray(a.fitness), np.asarray(b.fitness))
    np.testing.assert_array_equal(np.asarray(a.genomes), np.asarray(b.genomes))
