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
    assert run_dir.counter("state.safetensors", "step") is None
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


def test_counter_reads_replicated_counters_and_reports_bad_ones(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.save("a.safetensors", {"iteration": jnp.asarray([2530], jnp.int32)})
    assert run_dir.counter("a.safetensors", "iteration") == 2530
    run_dir.save("b.safetensors", {"iteration": jnp.full((4,), 7, jnp.int32)})
    assert run_dir.counter("b.safetensors", "iteration") == 7
    run_dir.save("c.safetensors", {"iteration": jnp.arange(3)})
    with pytest.raises(ArtifactError, match=r"expected one 'iteration' value, found \[0, 1, 2\]"):
        run_dir.counter("c.safetensors", "iteration")
    with pytest.raises(ArtifactError, match="has no 'step' array"):
        run_dir.counter("a.safetensors", "step")
    (tmp_path / CHECKPOINT_DIR / "d.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError):
        run_dir.counter("d.safetensors", "step")


def test_torn_last_log_line_is_dropped_and_a_damaged_one_reported(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    run_dir.start({"seed": 0})
    with run_dir.open_log() as log:
        RunDir.write_rows(log, [{"iteration": i} for i in (1, 2, 3)])
        log.write('{"iteration": 9, "qd_sco')
    run_dir.truncate_log(lambda row: row["iteration"] <= 2)
    assert (tmp_path / METRICS_LOG).read_text() == '{"iteration": 1}\n{"iteration": 2}\n'
    (tmp_path / METRICS_LOG).write_text('{"iteration": 1}\n{"itera\n{"iteration": 3}\n')
    with pytest.raises(ArtifactError, match="line 2 is not valid JSON"):
        run_dir.truncate_log(lambda row: True)


def test_temporaries_of_interrupted_writes_are_removed(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path / "run")
    run_dir.start(RECORD)
    run_dir.save("state.safetensors", {"step": jnp.asarray(3)})
    orphans = [
        run_dir.checkpoint_dir / ".tmp-state.safetensors-abc",
        run_dir.path / ".tmp-archive.safetensors-def",
        run_dir.path / ".old-vae-123",
    ]
    for orphan in orphans:
        orphan.mkdir()
        (orphan / "part").write_bytes(b"x")
    (run_dir.checkpoint_dir / ".tmp-run.json").write_text("{")
    assert run_dir.prepare(RECORD, resume=True, overwrite=False, parts=PARTS) is True
    assert not any(path.exists() for path in orphans)
    assert sorted(p.name for p in run_dir.checkpoint_dir.iterdir()) == [
        RUN_RECORD,
        "state.safetensors",
    ]
    assert run_dir.counter("state.safetensors", "step") == 3
