"""Runs stopped at any point (Ctrl-C, kill -9, a kill mid-write) resume to the result of the
uninterrupted run, for both tessellations of ``qdzoo train`` and for ``qdzoo distill``.

The fast tests stop runs in-process (a ``KeyboardInterrupt`` raised at a chosen checkpoint
write); real signals (SIGINT, SIGKILL) at several points of real runs are marked slow.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
import pytest

from training.cli import main
from training.qd.run import STATE_FILE, TrainConfig, train
from training.rundir import CHECKPOINT_DIR, METRICS_LOG, RUN_RECORD, RunDir
from zoo.archive_artifact import ArchiveArtifact, load_archive
from zoo.errors import OutputExistsError

# lp-sphere in 4 dimensions, 6 iterations of 16 in chunks of 2: a few seconds per run.
BASE = {
    "task": "lp-sphere",
    "task_kwargs": {"dimension": 4},
    "evaluations": 16 * 6,
    "batch_size": 16,
    "seed": 5,
    "chunk": 2,
}
CONFIGS = {
    "grid": TrainConfig(**BASE, grid=(8, 8)),
    "cvt": TrainConfig(**BASE, cvt_cells=32, cvt_samples=1000),
}
TESSELLATION_ARGS = {"grid": ["--grid", "8", "8"], "cvt": ["--cvt", "32", "--cvt-samples", "1000"]}


def cli_args(tessellation: str, evaluations: int = 16 * 6, chunk: int = 2) -> list[str]:
    """``qdzoo train`` arguments of ``CONFIGS[tessellation]`` (other budget or chunk)."""
    return [
        "train", "--task", "lp-sphere", "--task-arg", "dimension=4", "--evaluations",
        str(evaluations), "--batch-size", "16", "--seed", "5", "--chunk", str(chunk),
        *TESSELLATION_ARGS[tessellation], "--quiet",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ArchiveArtifact]:
    """The uninterrupted run of each config."""
    root = tmp_path_factory.mktemp("reference")
    return {
        name: train(cfg, root / name, progress=False, save=False) for name, cfg in CONFIGS.items()
    }


def assert_same_archive(a: ArchiveArtifact, b: ArchiveArtifact) -> None:
    for field in ("occupied", "fitness", "descriptors", "genomes"):
        np.testing.assert_array_equal(
            np.asarray(getattr(a.archive, field)), np.asarray(getattr(b.archive, field))
        )


def log_iterations(out: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (out / METRICS_LOG).read_text().splitlines()]


def interrupt_at_save(monkeypatch: pytest.MonkeyPatch, n: int) -> Callable[[], None]:
    """Make the ``n``-th checkpoint write raise ``KeyboardInterrupt`` (as Ctrl-C right before
    it); return a function that restores the real writes."""
    real = RunDir.save
    count = {"saves": 0}

    def save(self: RunDir, name: str, tree: Any) -> None:
        count["saves"] += 1
        if count["saves"] == n:
            raise KeyboardInterrupt
        real(self, name, tree)

    monkeypatch.setattr(RunDir, "save", save)
    return lambda: monkeypatch.setattr(RunDir, "save", real)


def simulate_kill_mid_write(out: Path) -> Path:
    """What a kill during a checkpoint write and a log append leaves behind: a temporary
    directory beside the checkpoint and a half-written last log line."""
    orphan = out / CHECKPOINT_DIR / f".tmp-{STATE_FILE}-k1ll3d"
    orphan.mkdir(parents=True)
    (orphan / STATE_FILE).write_bytes(b"\x00" * 10)
    with open(out / METRICS_LOG, "a") as log:
        log.write('{"iteration": 9, "qd_sco')
    return orphan


@pytest.mark.parametrize("tessellation", ["grid", "cvt"])
def test_interrupted_run_resumes_to_the_uninterrupted_archive(
    tessellation: str,
    references: dict[str, ArchiveArtifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, out = CONFIGS[tessellation], tmp_path / "run"
    restore = interrupt_at_save(monkeypatch, 2)  # chunk 2 ran and logged; checkpoint: chunk 1
    with pytest.raises(KeyboardInterrupt, match=r"\(iteration 2\) is intact: continue with"):
        train(config, out, progress=False)
    restore()
    assert log_iterations(out) == [1, 2, 3, 4]
    orphan = simulate_kill_mid_write(out)
    resumed = train(config, out, resume=True, progress=False, save=False)
    assert_same_archive(resumed, references[tessellation])
    assert log_iterations(out) == [1, 2, 3, 4, 5, 6]
    assert not orphan.exists()
    # resuming a run killed after its last checkpoint (or a finished one) gives it back
    again = train(config, out, resume=True, progress=False, save=False)
    assert_same_archive(again, references[tessellation])


def test_run_stopped_before_its_first_checkpoint_resumes_from_the_beginning(
    references: dict[str, ArchiveArtifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "run"
    restore = interrupt_at_save(monkeypatch, 1)
    assert main([*cli_args("cvt"), "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted before the first checkpoint" in err and "--resume" in err
    assert "Traceback" not in err
    restore()
    assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir()) == [RUN_RECORD]
    with pytest.raises(OutputExistsError, match="pass --resume"):
        train(CONFIGS["cvt"], out, progress=False)
    (out / CHECKPOINT_DIR / ".tmp-run.json-x").write_text("{")
    resumed = train(CONFIGS["cvt"], out, resume=True, progress=False, save=False)
    assert_same_archive(resumed, references["cvt"])
    assert not (out / CHECKPOINT_DIR / ".tmp-run.json-x").exists()


def test_ctrl_c_reports_the_checkpointed_iteration_or_a_plain_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import training.qd.run

    restore = interrupt_at_save(monkeypatch, 3)
    assert main([*cli_args("grid"), "--out", str(tmp_path / "a")]) == 130
    err = capsys.readouterr().err
    assert "(iteration 4) is intact: continue with --resume" in err and "Traceback" not in err
    restore()

    def stopped(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # Ctrl-C before the run began: no message of its own

    monkeypatch.setattr(training.qd.run, "train", stopped)
    assert main([*cli_args("grid"), "--out", str(tmp_path / "b")]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted while the run was starting") and "--resume" in err


# ------------------------------------------------------------------------ real signals
def _launch(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "training.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _signal_when(
    proc: subprocess.Popen[str], ready: Callable[[], bool], signum: int, timeout: float = 180
) -> tuple[int, str]:
    """Send ``signum`` once ``ready()`` holds; return the exit status and stderr."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    if proc.poll() is None:
        proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


def _check_stopped(signum: int, returncode: int, err: str, point: str = "") -> None:
    """A run stopped by ``signum`` exits as it should (a run signalled after its last
    checkpoint may have finished first)."""
    if point != "after-last-checkpoint":
        assert returncode == (130 if signum == signal.SIGINT else -signum), err
    if signum == signal.SIGINT and returncode == 130:
        assert "--resume" in err and "Traceback" not in err
        assert len([line for line in err.splitlines() if line.strip()]) == 1, err


@pytest.mark.slow
def test_real_ctrl_c_before_the_first_checkpoint(
    references: dict[str, ArchiveArtifact], tmp_path: Path
) -> None:
    """The real thing once: SIGINT while the first chunk compiles, then --resume."""
    out = tmp_path / "run"
    proc = _launch([*cli_args("cvt"), "--out", str(out)])
    state = out / CHECKPOINT_DIR / STATE_FILE
    returncode, err = _signal_when(
        proc, lambda: (out / CHECKPOINT_DIR / RUN_RECORD).exists(), signal.SIGINT
    )
    _check_stopped(signal.SIGINT, returncode, err)
    if returncode == 130 and not state.exists():
        assert "before the first checkpoint" in err
    assert main([*cli_args("cvt"), "--out", str(out), "--resume"]) == 0
    assert_same_archive(load_archive(out), references["cvt"])


POINTS = ["before-first-checkpoint", "mid-run", "after-last-checkpoint"]
SIGNALS = [signal.SIGINT, signal.SIGKILL]


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.parametrize("tessellation", ["grid", "cvt"])
def test_killed_training_resumes_to_the_uninterrupted_archive(
    tessellation: str, point: str, signum: int, tmp_path: Path
) -> None:
    args = cli_args(tessellation, evaluations=16 * 600, chunk=5)  # 120 chunks
    out, reference = tmp_path / "run", tmp_path / "reference"
    checkpoint = out / CHECKPOINT_DIR
    ready = {
        "before-first-checkpoint": lambda: (checkpoint / RUN_RECORD).exists(),
        "mid-run": lambda: (RunDir(out).counter(STATE_FILE, "iteration") or 0) >= 50,
        "after-last-checkpoint": lambda: RunDir(out).counter(STATE_FILE, "iteration") == 600,
    }[point]
    returncode, err = _signal_when(_launch([*args, "--out", str(out)]), ready, signum)
    _check_stopped(signum, returncode, err, point)
    if (out / METRICS_LOG).exists():
        simulate_kill_mid_write(out)
    assert main([*args, "--out", str(out), "--resume"]) == 0
    assert main([*args, "--out", str(reference)]) == 0
    assert_same_archive(load_archive(out), load_archive(reference))
    assert log_iterations(out) == log_iterations(reference) == list(range(1, 601))
    assert not list(checkpoint.glob(".tmp-*"))


# --------------------------------------------------------------------------- distill
DISTILL_SETTINGS: dict[str, Any] = {
    "vae": {
        "latent_size": 8, "cnn_channels": [2, 2], "cnn_grid": 2, "vector_width": 8,
        "projection_width": 16, "node_size": 8, "message_rounds": 1, "num_heads": 2,
        "head_width": 8, "basis_size": 8, "basis_width": 16, "normaliser_width": 8,
    },
    "denoiser": {"width": 16, "num_blocks": 1, "num_heads": 2, "time_embedding_size": 16},
    "condition_encoder": {"num_tokens": 2, "token_size": 8, "width": 16},
    "vae_steps": 200,
    "diffusion_steps": 200,
    "behaviour_weight": 0.0,
    "num_timesteps": 20,
    "chunk": 10,
    "eval_every": 100,
    "seed": 3,
}  # fmt: skip


@pytest.fixture(scope="module")
def maze_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small point-maze archive of 8-8 policies to distil."""
    out = tmp_path_factory.mktemp("maze") / "archive"
    config = TrainConfig(
        task="point-maze",
        task_kwargs={"episode_length": 10, "policy_hidden_sizes": [8, 8]},
        evaluations=64,
        batch_size=32,
        grid=(5, 5),
        seed=1,
    )
    train(config, out, progress=False)
    return out


def distill_args(archive: Path, out: Path) -> list[str]:
    sets = [f"--set={name}={json.dumps(value)}" for name, value in DISTILL_SETTINGS.items()]
    return ["distill", str(archive), "--out", str(out), "--quiet", *sets]


@pytest.mark.slow
@pytest.mark.parametrize("signum", SIGNALS, ids=["SIGINT", "SIGKILL"])
@pytest.mark.parametrize("point", POINTS)
def test_killed_distillation_resumes_to_the_uninterrupted_generator(
    point: str, signum: int, maze_archive: Path, tmp_path: Path
) -> None:
    from zoo.generator import load_generator

    out, reference = tmp_path / "run", tmp_path / "reference"
    run_dir = RunDir(out)
    ready = {
        "before-first-checkpoint": lambda: run_dir.record_path.exists(),
        "mid-run": lambda: (run_dir.counter("vae.safetensors", "step") or 0) >= 50,
        "after-last-checkpoint": lambda: run_dir.counter("diffusion.safetensors", "step") == 200,
    }[point]
    returncode, err = _signal_when(_launch(distill_args(maze_archive, out)), ready, signum)
    _check_stopped(signum, returncode, err, point)
    if (out / METRICS_LOG).exists():
        (run_dir.checkpoint_dir / ".tmp-vae.safetensors-k1ll3d").mkdir()
        with open(out / METRICS_LOG, "a") as log:
            log.write('{"phase": "vae", "st')
    assert main([*distill_args(maze_archive, out), "--resume"]) == 0
    assert main(distill_args(maze_archive, reference)) == 0
    a, b = load_generator(out), load_generator(reference)
    weights = lambda g: eqx.filter((g.vae, g.denoiser, g.measure_encoder), eqx.is_array)  # noqa: E731
    for x, y in zip(
        jax.tree_util.tree_leaves(weights(a)), jax.tree_util.tree_leaves(weights(b)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.latent_scale == b.latent_scale
    rows = lambda d: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k in ("phase", "step")}
        for line in (d / METRICS_LOG).read_text().splitlines()
    ]
    assert rows(out) == rows(reference)
    assert not list(run_dir.checkpoint_dir.glob(".tmp-*"))
