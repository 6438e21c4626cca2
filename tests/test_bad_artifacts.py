"""Damaged, incomplete or inconsistent artifact directories are refused with a clear error.

Each case starts from a small lp-sphere archive saved once per module (or the bundled
generator) and breaks one thing: a missing file or config key, a value of the wrong type,
non-finite stored values, duplicate or float cells, unknown arrays, a grid shape that does
not match the stored cells. Files and modes written by ``save_pretrained`` are checked too.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import zoo
from zoo.archive import Archive
from zoo.archive_artifact import ArchiveArtifact, archive_spec, load_archive
from zoo.errors import (
    ArtifactError,
    ConfigError,
    InvalidRepoIdError,
    NonFiniteError,
    QDZooError,
    ShapeError,
)
from zoo.generator import Generator, as_key
from zoo.serialization import atomic_path, sha256_file
from zoo.tasks import make

BUNDLED_GENERATOR = Path(zoo.__file__).parent / "data" / "walker2d-uni-ldm"


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4x4 lp-sphere archive (vector genomes of size 4) saved without a heatmap."""
    task = make("lp-sphere", dimension=4)
    genomes = task.init_genomes(jax.random.key(0), 48)
    result = task.evaluate(genomes, jax.random.key(1))
    archive = Archive.grid(
        genomes[0], (4, 4), task.spec.descriptor_low, task.spec.descriptor_high,
        qd_offset=task.spec.qd_offset,
    )  # fmt: skip
    archive, _ = archive.insert(genomes, result.fitness, result.descriptors)
    spec = task.spec
    config = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": None,
        "archive": archive_spec(archive, spec.descriptor_names),
    }
    path = tmp_path_factory.mktemp("bad") / "archive"
    ArchiveArtifact(archive, config).save_pretrained(path, plot=False)
    return path


def _copy(saved: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(saved, out)
    return out


def _edit_config(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))


def _edit_arrays(path: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    """Rewrite archive.safetensors through ``edit`` and record its new checksum."""
    weights = path / "archive.safetensors"
    arrays = dict(load_file(weights))
    edit(arrays)
    save_file(arrays, weights)
    _edit_config(
        path, lambda c: c["files"]["archive.safetensors"].update(sha256=sha256_file(weights))
    )


def _delete(dotted: str) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        del node[last]

    return edit


def _set(dotted: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(config: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _delete_sha(config: dict[str, Any]) -> None:
    del config["files"]["archive.safetensors"]["sha256"]


# ------------------------------------------------------------------ incomplete configs

CONFIG_CASES = [
    ("missing task.spec", _delete("task.spec"), "'task.spec'"),
    ("missing task.name", _delete("task.name"), "'task.name'"),
    ("missing num_cells", _delete("archive.num_cells"), "'archive.num_cells'"),
    ("missing tessellation", _delete("archive.tessellation"), "'archive.tessellation'"),
    ("missing grid_shape", _delete("archive.grid_shape"), "archive.grid_shape"),
    ("missing low", _delete("archive.low"), "'archive.low'"),
    ("missing learning_rate", _delete("archive.learning_rate"), "'archive.learning_rate'"),
    ("missing threshold_min", _delete("archive.threshold_min"), "'archive.threshold_min'"),
    ("missing qd_offset", _delete("archive.qd_offset"), "'archive.qd_offset'"),
    ("missing genome", _delete("task.spec.genome"), "'task.spec.genome'"),
    ("missing names", _delete("task.spec.descriptor_names"), "'task.spec.descriptor_names'"),
    ("missing policy", _delete("policy"), "'policy'"),
    ("missing sha256", _delete_sha, "'sha256'"),
    ("num_cells lots", _set("archive.num_cells", "lots"), "'archive.num_cells' must be a posi"),
    ("format_version 0", _set("format_version", 0), "format_version must be an integer >= 1"),
    ("format_version true", _set("format_version", True), "format_version must be an integer"),
    ("tessellation hex", _set("archive.tessellation", "hex"), 'one of "grid", "cvt"'),
    ("grid_shape 5x5", _set("archive.grid_shape", [5, 5]), "product is archive.num_cells"),
    ("policy for vector", _set("task.spec.genome", "policy"), "'policy' must describe the MLP"),
]


@pytest.mark.parametrize(
    ("edit", "fragment"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_an_incomplete_config_names_the_key(
    saved: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    path = _copy(saved, tmp_path)
    _edit_config(path, edit)
    with pytest.raises(ArtifactError) as caught:
        load_archive(path)
    assert fragment in str(caught.value)
    assert "config.json" in str(caught.value)


def test_the_writer_checks_the_same_schema(saved: Path) -> None:
    artifact = load_archive(saved)
    artifact.config = {**artifact.config, "archive": {**artifact.config["archive"]}}
    del artifact.config["archive"]["learning_rate"]
    with pytest.raises(ConfigError, match="'archive.learning_rate'"):
        artifact.save_pretrained(saved.parent / "never", plot=False)
    assert not (saved.parent / "never").exists()


def test_a_missing_weight_file_or_name(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    (path / "archive.safetensors").unlink()
    with pytest.raises(ArtifactError, match="archive.safetensors is missing"):
        load_archive(path)
    with pytest.raises(InvalidRepoIdError, match="empty name"):
        load_archive("")
    with pytest.raises(ArtifactError, match="is a generator, not an archive"):
        load_archive("walker2d-uni-ldm")


# ------------------------------------------------------------------ stored arrays


def test_non_finite_values_are_refused_with_their_rows(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)

    def poison(name: str, value: float) -> Callable[[dict[str, np.ndarray]], None]:
        def edit(arrays: dict[str, np.ndarray]) -> None:
            arrays[name] = arrays[name].copy()
            arrays[name][2] = value

        return edit

    _edit_arrays(path, poison("genomes", np.nan))
    with pytest.raises(NonFiniteError, match=r"'genomes' holds NaN or infinite values .* \[2\]"):
        load_archive(path)
    path = _copy(saved, tmp_path / "b")
    _edit_arrays(path, poison("fitness", np.inf))
    with pytest.raises(NonFiniteError, match=r"'fitness' .* row\(s\) \[2\]"):
        load_archive(path)


def test_structural_damage_is_refused(saved: Path, tmp_path: Path) -> None:
    cases: list[tuple[Callable[[dict[str, np.ndarray]], None], type[Exception], str]] = []

    def duplicate(a: dict[str, np.ndarray]) -> None:
        for k in a:
            a[k] = np.concatenate([a[k], a[k][:1]])

    def float_cells(a: dict[str, np.ndarray]) -> None:
        a["cells"] = a["cells"].astype(np.float32)

    def extra(a: dict[str, np.ndarray]) -> None:
        a["weights"] = np.zeros(3, np.float32)

    cases = [
        (duplicate, ArtifactError, "appear more than once"),
        (float_cells, ArtifactError, "integer cell indices"),
        (extra, ArtifactError, "arrays an archive does not have: ['weights']"),
    ]
    for i, (edit, error, fragment) in enumerate(cases):
        path = _copy(saved, tmp_path / str(i))
        _edit_arrays(path, edit)
        with pytest.raises(error) as caught:
            load_archive(path)
        assert fragment in str(caught.value)


def test_a_grid_shape_that_does_not_match_the_cells(saved: Path, tmp_path: Path) -> None:
    path = _copy(saved, tmp_path)
    _edit_config(path, _set("archive.grid_shape", [2, 8]))  # still 16 cells
    with pytest.raises(ArtifactError, match="archive.grid_shape, low/high or the centroids"):
        load_archive(path)
    path = _copy(saved, tmp_path / "b")
    _edit_config(path, _set("archive.num_cells", 25))
    with pytest.raises(ArtifactError, match="product is archive.num_cells"):
        load_archive(path)
    assert issubclass(ShapeError, QDZooError)


# ------------------------------------------------------------------ generators


def test_a_damaged_generator_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gen"
    shutil.copytree(BUNDLED_GENERATOR, path, ignore=shutil.ignore_patterns("*.png"))
    _edit_config(path, _delete("descriptors.low"))
    with pytest.raises(ArtifactError, match="'descriptors.low'"):
        Generator.from_directory(path)
    shutil.rmtree(path)
    shutil.copytree(BUNDLED_GENERATOR, path, ignore=shutil.ignore_patterns("*.png"))
    (path / "vae" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="vae/model.safetensors is missing"):
        Generator.from_directory(path)
    with pytest.raises(ArtifactError, match="is an archive, not a generator"):
        zoo.load_generator("walker2d-uni-map-elites")


def test_integer_seeds_are_keys_and_other_keys_are_explained() -> None:
    assert (
        jax.random.key_data(as_key(3)).tolist() == jax.random.key_data(jax.random.key(3)).tolist()
    )
    key = jax.random.key(1)
    assert as_key(key) is key
    for bad in ("0", 1.5, True, np.zeros(3)):
        with pytest.raises(ConfigError, match=r"jax.random.key\(0\)"):
            as_key(bad)


# ------------------------------------------------------------------ files on disk


def test_written_files_follow_the_umask_and_replace_atomically(saved: Path, tmp_path: Path) -> None:
    artifact = load_archive(saved)
    old = os.umask(0o022)
    try:
        out = tmp_path / "out"
        (out / "checkpoint").mkdir(parents=True)
        (out / "checkpoint" / "state.safetensors").write_bytes(b"x")
        artifact.save_pretrained(out, plot=False)
        for name in ("archive.safetensors", "config.json", "README.md"):
            assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
        # Saving again replaces the artifact files one by one (config.json last) and keeps
        # the unrelated checkpoint/ beside them; no staging directory is left behind.
        artifact.save_pretrained(out, plot=False)
        assert (out / "checkpoint" / "state.safetensors").read_bytes() == b"x"
        assert sorted(p.name for p in out.iterdir()) == [
            "README.md", "archive.safetensors", "checkpoint", "config.json",
        ]  # fmt: skip
        os.umask(0o077)
        with atomic_path(tmp_path / "private.txt") as tmp:
            tmp.write_text("x")
        assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    load_archive(out)


def test_distillation_refuses_non_finite_elites(tmp_path: Path) -> None:
    """An in-memory archive (never saved) with a NaN weight is refused before training."""
    import equinox as eqx

    from training.distill import DistillConfig, distill

    task = make("point-maze", episode_length=5, policy_hidden_sizes=(4,))
    genomes = task.init_genomes(jax.random.key(0), 4)
    archive = Archive.grid(
        jax.tree_util.tree_map(lambda x: x[0], genomes), (2, 2),
        task.spec.descriptor_low, task.spec.descriptor_high, qd_offset=task.spec.qd_offset,
    )  # fmt: skip
    low, high = np.asarray(task.spec.descriptor_low), np.asarray(task.spec.descriptor_high)
    descriptors = low + (high - low) * np.array([[0.2, 0.2], [0.8, 0.2], [0.2, 0.8], [0.8, 0.8]])
    archive, _ = archive.insert(genomes, np.zeros(4, np.float32), descriptors)
    archive = eqx.tree_at(
        lambda a: a.genomes.weights[0], archive, archive.genomes.weights[0].at[1, 0, 0].set(np.nan)
    )
    spec = task.spec
    config = {
        "task": {"name": spec.name, "kwargs": spec.kwargs, "spec": spec.to_dict()},
        "policy": task.default_policy().to_dict(),
        "archive": archive_spec(archive, spec.descriptor_names),
    }
    with pytest.raises(
        NonFiniteError, match=r"genomes.*NaN or infinite for 1 elite\(s\) \(cells \[1\]"
    ):
        distill(ArchiveArtifact(archive, config), DistillConfig(), tmp_path / "gen", progress=False)
    assert not (tmp_path / "gen").exists()
