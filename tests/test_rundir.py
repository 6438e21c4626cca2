"""The run directory shared by ``qdzoo train`` and ``qdzoo distill``."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from training.rundir import CHECKPOINT_DIR, METRICS_LOG, RUN_RECORD, RunDir
from zoo.errors import ArtifactError, ConfigError, OutputExistsError, ShapeError

RECORD = {"config": {"seed": 0, "lr": 0.1, "sizes": (4, 4)}, "archive": "abc"}
PARTS = {"config": "config", "archive": "archive (its elites differ)"}


def test_fresh_existing_overwrite_and_resume(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.prepare(RECORD, resume=False, overwrite=False) is False
    run_dir.start(RECORD)
    stored = json.loads((tmp_path / "run" / CHECKPOINT_DIR / RUN_RECORD).read_text())
    assert stored["config"]["sizes"] == [4, 4]
    with pytest.raises(OutputExistsError, match="--resume .* or --overwrite"):
        run_dir.prepare(RECORD, resume=False, overwrite=False)
    assert run_dir.prepare(RECORD, resume=True, overwrite=False, parts=PARTS) is True
    (run_dir.path / "artifact.txt").write_text("x")
    assert run_dir.prepare(RECORD, resume=False, overwrite=True) is False
    assert not run_dir.path.exists()
    # --resume with nothing started yet is a fresh run; with foreign files it is refused
    assert run_dir.prepare(RECORD, resume=True, overwrite=False) is False
    run_dir.path.mkdir()
    (run_dir.path / "notes.txt").write_text("x")
    with pytest.raises(ArtifactError, match="has no distillation checkpoint"):
        RunDir(run_dir.path, kind="distillation").prepare(RECORD, resume=True, overwrite=False)


def test_resume_with_another_record_names_the_difference(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.start(RECORD)
    other = {**RECORD, "config": {**RECORD["config"], "seed": 4}}
    with pytest.raises(
        ConfigError, match=r"different config \(stored vs given: .*'seed': \(0, 4\)"
    ):
        run_dir.prepare(other, resume=True, overwrite=False, parts=PARTS)
    with pytest.raises(ConfigError, match=r"different archive \(its elites differ\); resume"):
        run_dir.prepare({**RECORD, "archive": "abd"}, resume=True, overwrite=False, parts=PARTS)
    # the whole record as one config, compared in a canonical form
    flat = RunDir(tmp_path / "flat")
    flat.start({"seed": 0})
    with pytest.raises(ConfigError, match=r"'seed': \(0, 1\)"):
        flat.prepare({"seed": 1}, resume=True, overwrite=False)
    canonical = lambda d: {"seed": 0, "chunk": 10, **d}  # noqa: E731 - a default added since
    assert flat.prepare({"seed": 0, "chunk": 10}, resume=True, overwrite=False, canonical=canonical)


def test_checkpoints_round_trip_and_counters(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    tree = {"step": jnp.asarray(7, jnp.int32), "params": (jnp.ones((2, 3)), jnp.arange(4.0))}
    assert not run_dir.has_checkpoint("state.safetensors")
    assert run_dir.counter("state.safetensors", "step") == 0
    run_dir.save("state.safetensors", tree)
    assert run_dir.has_checkpoint("state.safetensors")
    assert run_dir.counter("state.safetensors", "step") == 7
    template = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
    loaded = run_dir.load("state.safetensors", template)
    for a, b in zip(
        jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(tree), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    wrong = {
        **template,
        "params": (jax.ShapeDtypeStruct((3, 2), jnp.float32), template["params"][1]),
    }
    with pytest.raises(ShapeError, match="expected shape"):
        run_dir.load("state.safetensors", wrong)
    with pytest.raises(ArtifactError, match="does not exist"):
        run_dir.load("other.safetensors", template)


def test_log_rows_are_appended_and_truncated_to_the_checkpoint(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.start({"seed": 0})
    with run_dir.open_log() as log:
        RunDir.write_rows(log, [{"phase": "vae", "step": s} for s in (10, 20, 30)])
        log.write("\n")
        RunDir.write_rows(log, [{"phase": "diffusion", "step": s} for s in (10, 20)])
    last = {"vae": 20, "diffusion": 10}
    run_dir.truncate_log(lambda row: row["step"] <= last[row["phase"]])
    rows = [json.loads(line) for line in (tmp_path / METRICS_LOG).read_text().splitlines()]
    assert rows == [
        {"phase": "vae", "step": 10},
        {"phase": "vae", "step": 20},
        {"phase": "diffusion", "step": 10},
    ]
    run_dir.start({"seed": 0})  # a fresh start empties the log
    assert not (tmp_path / METRICS_LOG).exists()
    run_dir.truncate_log(lambda row: True)  # no log: nothing to do
