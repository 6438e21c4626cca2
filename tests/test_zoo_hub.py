"""Archives on the Hub, the zoo catalog, the recipes and the bundled pretrained archive.

The Hub tests run the real ``huggingface_hub`` client against the in-process server of
``tests/hub_server.py``. The bundled archive is loaded with the network cut off.
"""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
from hub_server import HubServer, hub_server_fixture  # noqa: F401  (the hub_server fixture)
from huggingface_hub import constants

import training.recipes as recipes
import zoo
from training.cli import main
from training.qd.run import TrainConfig, train
from training.recipes import GeneratorRecipe, list_recipes, load_recipe, reevaluate_elites
from training.rundir import CHECKPOINT_DIR
from zoo import catalog, errors, hub
from zoo.archive_artifact import ARTIFACT_FILES, ArchiveArtifact, load_archive
from zoo.errors import ConfigError, QDZooError, UnknownNameError

REPO = "qdzoo-tests/sphere-archive"
BUNDLED = "walker2d-uni-map-elites"

TINY = TrainConfig(
    task="lp-sphere",
    task_kwargs={"dimension": 4},
    evaluations=32 * 4,
    batch_size=32,
    grid=(5, 5),
    seed=1,
    chunk=4,
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveArtifact]:
    """A small lp-sphere run directory (artifact + checkpoint/ + metrics.jsonl)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    return out, train(TINY, out, progress=False)


def assert_same_archive(a: ArchiveArtifact, b: ArchiveArtifact) -> None:
    for field in ("fitness", "descriptors", "thresholds", "occupied"):
        np.testing.assert_array_equal(
            np.asarray(getattr(a.archive, field)), np.asarray(getattr(b.archive, field))
        )
    for x, y in zip(
        jax.tree_util.tree_leaves(a.archive.genomes),
        jax.tree_util.tree_leaves(b.archive.genomes),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def cut_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode on, and any attempt to reach the Hub fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "resolve_local_or_hub", refuse)
    monkeypatch.setattr(hub, "_snapshot", refuse)


# ------------------------------------------------------------------------ Hub round trip


def test_push_to_hub_then_load_by_repo_id(
    hub_server: HubServer, tiny_run: tuple[Path, ArchiveArtifact]
) -> None:
    _, artifact = tiny_run
    sha = artifact.push_to_hub(REPO, token=hub_server.token)
    files = hub_server.files(REPO, sha)
    assert {"config.json", "archive.safetensors", "README.md", "heatmap.png"} <= set(files)
    loaded = load_archive(REPO)
    assert_same_archive(loaded, artifact)
    assert loaded.config["task"] == artifact.config["task"]
    assert loaded.metrics() == pytest.approx(artifact.metrics())


def test_second_revision_and_the_first_by_revision(
    hub_server: HubServer, tiny_run: tuple[Path, ArchiveArtifact]
) -> None:
    _, first = tiny_run
    sha1 = first.push_to_hub(REPO, token=hub_server.token)
    shifted = eqx.tree_at(lambda a: a.fitness, first.archive, first.archive.fitness + 1.0)
    second = ArchiveArtifact(shifted, dict(first.config))
    sha2 = second.push_to_hub(REPO, token=hub_server.token, commit_message="v2")
    assert sha1 != sha2
    assert_same_archive(load_archive(REPO), second)
    assert_same_archive(load_archive(REPO, revision=sha1), first)
    assert_same_archive(load_archive(REPO, revision=sha2), second)


def test_cli_push_pull_info_end_to_end(
    hub_server: HubServer,
    tiny_run: tuple[Path, ArchiveArtifact],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run_dir, artifact = tiny_run
    assert (run_dir / CHECKPOINT_DIR).is_dir()  # a run directory: the checkpoint must stay home
    assert main(["push", str(run_dir), REPO, "--token", hub_server.token, "--message", "m1"]) == 0
    assert REPO in capsys.readouterr().out
    remote = hub_server.files(REPO)
    assert not any(name.startswith(CHECKPOINT_DIR) for name in remote)
    assert set(remote) - {".gitattributes"} == {
        f for f in ARTIFACT_FILES if (run_dir / f).is_file()
    }

    out = tmp_path / "pulled"
    assert main(["pull", REPO, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    for name in ARTIFACT_FILES:
        if (run_dir / name).is_file():
            assert (out / name).read_bytes() == (run_dir / name).read_bytes()
    assert_same_archive(load_archive(out), artifact)

    assert main(["pull", REPO]) == 0  # into the cache; prints the snapshot path
    cached = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert cached.is_dir() and str(cached).startswith(constants.HF_HUB_CACHE)

    assert main(["info", REPO]) == 0
    text = capsys.readouterr().out
    assert "lp-sphere" in text and f"{artifact.metrics()['qd_score']:.6g}" in text


def test_cli_push_refuses_a_directory_that_is_no_artifact(
    hub_server: HubServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text('{"model_type": "bert"}')
    assert main(["push", str(tmp_path / "junk"), REPO, "--token", hub_server.token]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a qdzoo archive" in err
    assert "Traceback" not in err
    with pytest.raises(KeyError):
        hub_server.repo(REPO)  # nothing was created


def test_missing_repo_and_revision_are_qdzoo_errors(
    hub_server: HubServer,
    tiny_run: tuple[Path, ArchiveArtifact],
    capsys: pytest.CaptureFixture[str],
) -> None:
    tiny_run[1].push_to_hub(REPO, token=hub_server.token)
    with pytest.raises(errors.HubRepoNotFoundError, match="qdzoo-tests/missing"):
        load_archive("qdzoo-tests/missing")
    with pytest.raises(errors.HubRevisionNotFoundError, match="'v9'"):
        load_archive(REPO, revision="v9")
    assert main(["info", "qdzoo-tests/missing"]) == 2
    assert main(["pull", REPO, "--revision", "v9"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
    assert "not found" in err[0] and "'v9'" in err[1]


def test_offline_mode_loads_from_the_cache(
    hub_server: HubServer,
    tiny_run: tuple[Path, ArchiveArtifact],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, artifact = tiny_run
    artifact.push_to_hub(REPO, token=hub_server.token)
    load_archive(REPO)  # fills the cache
    count = len(hub_server.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert_same_archive(load_archive(REPO), artifact)
    assert len(hub_server.requests) == count
    with pytest.raises(errors.HubOfflineError, match="HF_HUB_OFFLINE"):
        load_archive("qdzoo-tests/never-downloaded")


def test_catalog_name_with_a_revision_goes_to_its_repo(
    hub_server: HubServer, tiny_run: tuple[Path, ArchiveArtifact]
) -> None:
    repo_id = catalog.get_entry(BUNDLED).repo_id
    sha = tiny_run[1].push_to_hub(repo_id, token=hub_server.token)
    assert load_archive(BUNDLED, revision=sha).config["task"]["name"] == "lp-sphere"


def test_hub_errors_are_qdzoo_errors() -> None:
    for error in (
        errors.HubRepoNotFoundError,
        errors.HubRevisionNotFoundError,
        errors.HubFileNotFoundError,
        errors.HubAuthError,
        errors.HubOfflineError,
        errors.HubConnectionError,
        errors.InvalidRepoIdError,
        errors.UnsafeRepoPathError,
        errors.ArtifactNotFoundError,
        errors.UnknownModelError,
    ):
        assert issubclass(error, QDZooError)


# ----------------------------------------------------------------- catalog and recipes


def test_list_models_and_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    entries = zoo.list_models()
    assert BUNDLED in [e.name for e in entries]
    entry = catalog.get_entry(BUNDLED)
    assert isinstance(entry, zoo.CatalogEntry) and entry.kind == "archive"
    assert entry.task == "walker2d-uni" and entry.algorithm == "map-elites"
    assert zoo.list_models(kind="generator") == [e for e in entries if e.kind == "generator"]
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert BUNDLED in text and entry.repo_id in text
    assert main(["recipe", "list"]) == 0
    assert BUNDLED in capsys.readouterr().out


def test_unknown_name_lists_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    with pytest.raises(errors.UnknownModelError, match=BUNDLED) as caught:
        load_archive("walker2d-uni-map-elite")
    assert "walker2d-uni-map-elite'" in str(caught.value)
    assert isinstance(caught.value, UnknownNameError)
    with pytest.raises(UnknownNameError, match=BUNDLED):
        load_recipe("nope")
    assert main(["info", "nope"]) == 2
    assert main(["pull", "nope"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") and BUNDLED in line for line in err)


def test_catalog_and_recipes_are_in_step() -> None:
    entries = {e.name: e for e in catalog.list_models()}
    recipes = {name: load_recipe(name) for name in list_recipes()}
    assert BUNDLED in recipes
    for entry in entries.values():
        if entry.recipe is not None:
            assert entry.recipe in recipes, f"{entry.name} names a missing recipe {entry.recipe}"
            recipe = recipes[entry.recipe]
            assert recipe.catalog_name == entry.name
            assert recipe.repo_id == entry.repo_id
            if isinstance(recipe, GeneratorRecipe):
                assert entry.kind == "generator"
                assert catalog.get_entry(recipe.archive).task == entry.task
            else:
                assert entry.kind == "archive"
                assert recipe.config.task == entry.task
                assert recipe.config.algorithm == entry.algorithm
    for name, recipe in recipes.items():
        if recipe.catalog_name is not None:
            assert recipe.catalog_name in entries, f"recipe {name} names a missing entry"
            assert entries[recipe.catalog_name].recipe == name


def test_reevaluated_elites_store_what_their_genomes_score(
    tiny_run: tuple[Path, ArchiveArtifact],
) -> None:
    _, artifact = tiny_run
    same = reevaluate_elites(artifact)  # a pure function task: nothing changes
    assert_same_archive(same, artifact)
    assert same.config["training"]["reevaluation"]["metrics_before"]["qd_score"] == (
        pytest.approx(artifact.metrics()["qd_score"])
    )
    half = reevaluate_elites(artifact, "float16")
    cells = half.elite_indices()
    genomes = np.asarray(half.genomes(cells))
    np.testing.assert_array_equal(genomes, genomes.astype(np.float16).astype(np.float32))
    result = half.make_task().evaluate(half.genomes(cells), jax.random.key(0))
    np.testing.assert_allclose(result.fitness, np.asarray(half.archive.fitness)[cells], rtol=1e-6)


def test_recipe_run_bundles_and_updates_the_catalog(
    tiny_run: tuple[Path, ArchiveArtifact],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    recipe_dir, data_dir = tmp_path / "recipes", tmp_path / "data"
    recipe_dir.mkdir()
    data_dir.mkdir()
    recipe = {
        "name": "tiny-sphere",
        "description": "a test recipe",
        "catalog_name": "tiny-sphere",
        "repo_id": "qdzoo-tests/tiny-sphere",
        "genome_dtype": "float16",
        "train": TINY.to_dict(),
        "card_notes": "Scores **twice** the QD of a random search.",
    }
    (recipe_dir / "tiny-sphere.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(recipes, "RECIPES_DIR", recipe_dir)
    monkeypatch.setattr(catalog, "DATA_DIR", data_dir)
    monkeypatch.setattr(catalog, "CATALOG_PATH", data_dir / "catalog.json")
    out = tmp_path / "run"
    assert main(["recipe", "run", "tiny-sphere", "--out", str(out), "--bundle", "--quiet"]) == 0
    assert "bundled to" in capsys.readouterr().out
    entry = catalog.get_entry("tiny-sphere")
    bundled = entry.bundled_path()
    assert bundled == data_dir / "tiny-sphere" and (out / CHECKPOINT_DIR).is_dir()
    assert not (bundled / CHECKPOINT_DIR).exists()
    loaded = load_archive("tiny-sphere")
    assert loaded.config["genome_dtype"] == "float16" and loaded.config["recipe"] == "tiny-sphere"
    assert {k: loaded.config["metrics"][k] for k in catalog.METRIC_NAMES} == dict(entry.metrics)
    assert entry.size == sum(f.stat().st_size for f in bundled.iterdir())
    assert "## Notes\n\nScores **twice** the QD" in (bundled / "README.md").read_text()
    # the same training config as the module's tiny run, before rounding
    before = loaded.config["training"]["reevaluation"]["metrics_before"]
    assert before["qd_score"] == pytest.approx(tiny_run[1].metrics()["qd_score"])


def test_a_recipe_with_robust_saves_the_corrected_archive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``"robust": {"episodes": K}`` re-evaluates the trained elites over K stochastic episodes
    and saves that archive; the catalog entry says so in its protocol."""
    recipe_dir, data_dir = tmp_path / "recipes", tmp_path / "data"
    recipe_dir.mkdir()
    data_dir.mkdir()
    train = TrainConfig(
        task="point-maze",
        task_kwargs={"episode_length": 10, "policy_hidden_sizes": [4]},
        evaluations=16 * 2,
        batch_size=16,
        grid=(4, 4),
        seed=2,
        chunk=2,
    )
    recipe = {
        "name": "tiny-maze",
        "description": "a test recipe",
        "catalog_name": "tiny-maze",
        "repo_id": "qdzoo-tests/tiny-maze",
        "genome_dtype": "float32",
        "train": train.to_dict(),
        "robust": {"episodes": 3, "seed": 5},
    }
    (recipe_dir / "tiny-maze.json").write_text(json.dumps(recipe))
    monkeypatch.setattr(recipes, "RECIPES_DIR", recipe_dir)
    monkeypatch.setattr(catalog, "DATA_DIR", data_dir)
    monkeypatch.setattr(catalog, "CATALOG_PATH", data_dir / "catalog.json")
    out = tmp_path / "run"
    assert main(["recipe", "run", "tiny-maze", "--out", str(out), "--bundle", "--quiet"]) == 0
    loaded = load_archive("tiny-maze")
    evaluation = loaded.config["evaluation"]
    assert (evaluation["protocol"], evaluation["episodes"], evaluation["seed"]) == ("robust", 3, 5)
    assert loaded.config["task"]["kwargs"]["reset"] == "stochastic"
    assert "metrics_before" in loaded.config["reevaluation"]
    assert catalog.get_entry("tiny-maze").protocol == "robust: 3 stochastic episodes"
    bad = {**recipe, "robust": {"episodes": 0}}
    (recipe_dir / "tiny-maze.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="robust must be"):
        recipes.load_recipe("tiny-maze")


def test_bundled_artifacts_match_their_catalog_entries() -> None:
    bundled = [e for e in catalog.list_models("archive") if e.bundled is not None]
    assert BUNDLED in [e.name for e in bundled]
    for entry in bundled:
        path = entry.bundled_path()
        assert path is not None and path.parent == catalog.DATA_DIR
        files = sorted(p.name for p in path.iterdir())
        assert set(files) <= set(ARTIFACT_FILES), files  # no checkpoint/, nothing else
        assert entry.size == sum(p.stat().st_size for p in path.iterdir())
        # Small enough to ship in the package: at most 14 MiB (ASCII-ME's archive carries
        # every elite's trajectory states as extras; sep-CMA-MAE's 156 elites of 19,590
        # parameters take 12 MB in float32, which they need: rounded to float16 they lose a
        # fifth of their cells; a card's tour GIF is about 1 MiB).
        assert entry.size <= 14 * 1024 * 1024
        config = json.loads((path / "config.json").read_text())
        assert {k: config["metrics"][k] for k in catalog.METRIC_NAMES} == dict(entry.metrics)
        if entry.recipe is not None:
            recipe = load_recipe(entry.recipe)
            assert TrainConfig.from_dict(config["training"]["config"]) == recipe.config
            assert config["genome_dtype"] == recipe.genome_dtype
            assert config["recipe"] == recipe.name
        card = (path / "README.md").read_text()
        assert "evaluations" in card and f"{config['training']['evaluations']}" in card
        if entry.recipe is not None and recipe.card_notes:
            assert recipe.card_notes in card


def recipe_of(entry: catalog.CatalogEntry) -> GeneratorRecipe:
    recipe = load_recipe(entry.recipe)
    assert isinstance(recipe, GeneratorRecipe)
    return recipe


def test_bundled_generators_match_their_entries_and_source_archives() -> None:
    """Every bundled generator: its files and figures are its catalog entry's, it was distilled
    from its recipe's archive as bundled now (same elites), and the demo pair is one of them."""
    from training.cli import DEMO_ARCHIVE, DEMO_GENERATOR
    from training.distill.run import archive_fingerprint

    bundled = [e for e in catalog.list_models("generator") if e.bundled is not None]
    assert DEMO_GENERATOR in [e.name for e in bundled]
    for entry in bundled:
        path = entry.bundled_path()
        assert path is not None and not (path / CHECKPOINT_DIR).exists()
        assert entry.size == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        # small enough to ship: 15 MiB, the humanoid generator's float16 VAE (11.3 MiB, the
        # archive basis of its 244 x 64 first layer) plus its denoiser and a 2.3 MiB tour GIF
        assert entry.size <= 15 * 1024 * 1024
        assert all(p.stat().st_size <= 12 * 1024 * 1024 for p in path.rglob("*"))
        config = json.loads((path / "config.json").read_text())
        assert config.get("weights_dtype", "float32") == recipe_of(entry).weights_dtype
        metrics = config["metrics"]
        assert entry.metrics["qd_score"] == metrics["reconstructed_qd_score"]
        assert entry.metrics["coverage"] == metrics["reconstructed_coverage"]
        for name in catalog.GENERATOR_METRIC_NAMES:
            assert entry.metrics[name] == metrics.get(name), (entry.name, name)
        assert entry.recipe is not None and config["recipe"] == entry.recipe
        recipe = load_recipe(entry.recipe)
        assert isinstance(recipe, GeneratorRecipe)
        source = load_archive(recipe.archive)
        assert config["source_archive"]["fingerprint"] == archive_fingerprint(source)
        rollouts = config["evaluation"]["rollouts"]
        episodes = (source.config.get("evaluation") or {}).get("episodes")
        assert rollouts == (episodes or 1)  # a robust archive's generator: its protocol's K
        if entry.name == DEMO_GENERATOR:
            assert recipe.archive == DEMO_ARCHIVE


def test_bundled_archive_loads_offline_and_reevaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    cut_network(monkeypatch)
    artifact = zoo.load_archive(BUNDLED)
    assert artifact.config["task"]["name"] == "walker2d-uni"
    assert artifact.task_spec.reset == "deterministic"
    metrics = catalog.get_entry(BUNDLED).metrics
    assert artifact.metrics()["qd_score"] == pytest.approx(metrics["qd_score"], rel=1e-6)
    task = artifact.make_task()
    cells = artifact.top_indices(3)
    result = jax.jit(task.evaluate)(artifact.genomes(cells), jax.random.key(0))
    # Stored values come from a standalone evaluation in batches of 256; a batch of 3 rounds
    # differently in the last bits, which a 100-step rollout amplifies only slightly.
    np.testing.assert_allclose(
        np.asarray(result.fitness), np.asarray(artifact.archive.fitness)[cells], rtol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(result.descriptors),
        np.asarray(artifact.archive.descriptors)[cells],
        atol=0.011,  # at most one foot-contact step of 100
    )


def test_recorded_paths_leave_out_this_machines_directories() -> None:
    assert catalog.recorded_path(catalog.DATA_DIR / "x" / "labels.json") == "zoo/data/x/labels.json"
    assert catalog.recorded_path(Path.cwd() / "runs" / "a") == "runs/a"
    assert catalog.recorded_path(Path.home() / ".cache" / "g") == "~/.cache/g"
