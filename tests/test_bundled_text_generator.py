"""The bundled text-conditioned generators (``walker2d-uni-text-ldm`` and the robust archives'
``*-ascii-me-robust-text-ldm``): they load offline, take text, measures and both, share the
bundled measures-only generator's VAE, and their cards show what example prompts produced;
and :func:`training.distill.text_evaluation.evaluate_prompts` on a tiny setting. The sentence
encoder (all-MiniLM-L6-v2) must be set up (``qdzoo text-setup``, which ``scripts/test.sh``
runs); without it these tests fail with the command to run.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from huggingface_hub import constants

from training.distill.text_evaluation import evaluate_prompts, format_prompt_examples
from training.recipes import GeneratorRecipe, load_recipe
from zoo import catalog, hub
from zoo.archive_artifact import load_archive
from zoo.errors import ConfigError
from zoo.generator import load_generator

NAME = "walker2d-uni-text-ldm"
ARCHIVE = "walker2d-uni-map-elites"
TEXT_GENERATORS = sorted(
    entry.name
    for entry in catalog.list_models("generator")
    if entry.bundled and getattr(load_recipe(entry.recipe), "text_examples", None) is not None
)
"""Every bundled generator whose recipe measures text prompts."""


@pytest.fixture(scope="module")
def generator():  # noqa: ANN201
    return load_generator(NAME)


def test_bundled_text_generator_loads_offline_and_takes_every_condition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the Hub was asked for {args}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "resolve_local_or_hub", refuse)
    monkeypatch.setattr(hub, "_snapshot", refuse)
    gen = load_generator(NAME)
    assert gen.conditions == ("measures", "text")
    key = jax.random.key(0)
    options = {"steps": 4, "num_samples": 2}
    for policies, rows in (
        (gen.sample(key, text=["quickly lunge forward", "slowly shuffle forward"], **options), 4),
        (gen.sample(key, measures=[[0.2, 0.8]], **options), 2),
        (gen.sample(key, measures=[[0.2, 0.8]], text=["hop forward"], **options), 2),
    ):
        leaves = jax.tree_util.tree_leaves(policies)
        assert all(x.shape[0] == rows for x in leaves)
        assert all(bool(np.all(np.isfinite(np.asarray(x)))) for x in leaves)


def test_the_robust_archives_have_text_generators() -> None:
    robust = {f"{t}-ascii-me-robust-text-ldm" for t in ("walker2d-uni", "hopper-uni")}
    assert {NAME, "halfcheetah-uni-ascii-me-robust-text-ldm", *robust} <= set(TEXT_GENERATORS)


@pytest.mark.parametrize("name", TEXT_GENERATORS)
def test_bundle_matches_its_recipe_catalog_entry_and_card(name: str) -> None:
    generator = load_generator(name)
    entry = catalog.get_entry(name)
    recipe = load_recipe(name)
    assert isinstance(recipe, GeneratorRecipe) and recipe.init is not None
    assert entry.kind == "generator" and entry.recipe == name and entry.repo_id == recipe.repo_id
    path = entry.bundled_path()
    assert path is not None
    assert entry.size == sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    config = generator.config
    assert config["recipe"] == name and config["conditions"] == ["measures", "text"]
    assert config["training"]["config"]["condition"] == "both"
    for key, value in recipe.distill.items():
        assert config["training"]["config"][key] == value
    assert entry.metrics["qd_score"] == config["metrics"]["reconstructed_qd_score"]
    # the VAE is the measures-only generator's, unchanged (vae_steps 0, same archive)
    measures_only = load_generator(recipe.init)
    assert measures_only.config["recipe"] == recipe.init
    assert load_recipe(recipe.init).archive == recipe.archive
    for a, b in zip(
        jax.tree_util.tree_leaves(generator.vae), jax.tree_util.tree_leaves(measures_only.vae),
        strict=True,
    ):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    examples = config["text_examples"]
    assert [row["prompt"] for row in examples["prompts"]] == recipe.text_examples["prompts"]
    assert any(not row["seen"] for row in examples["prompts"])  # a paraphrase not trained on
    card = (path / "README.md").read_text()
    assert "### What text prompts produce" in card
    for row in examples["prompts"]:
        assert row["prompt"] in card
        assert sum(count for _, count in row["produced"]) <= row["samples"]
    # prompts are judged on as many episodes per policy as the archive's labels were read from
    labels = json.loads((load_archive(recipe.archive).path / "labels.json").read_text())
    episodes = labels.get("episodes", 1)
    assert examples["settings"].get("episodes", 1) == episodes
    assert (f"; {episodes} episodes per policy, features averaged" in card) == (episodes > 1)


@pytest.mark.parametrize("name", sorted({load_recipe(name).archive for name in TEXT_GENERATORS}))
def test_archive_ships_its_labels(name: str) -> None:
    archive = load_archive(name)
    data = json.loads((archive.path / "labels.json").read_text())
    assert data["format"] == "qdzoo-labels" and data["task"] == archive.config["task"]["name"]
    assert data["archive"] in (name, f"zoo/data/{name}")  # as given to `qdzoo label`
    assert sorted(r["cell"] for r in data["labels"]) == archive.cells.tolist()
    # a robust archive's labels are read from its protocol's episodes, features averaged
    evaluation = archive.config.get("evaluation", {})
    robust = evaluation.get("protocol") == "robust"
    assert data["episodes"] == (evaluation["episodes"] if robust else 1)
    assert "`labels.json` describes every elite" in (archive.path / "README.md").read_text()


@pytest.mark.slow  # 40 s of rollouts; the bundled generator's card was made by it
def test_evaluate_prompts_on_a_tiny_setting(generator) -> None:  # noqa: ANN001
    archive = load_archive(ARCHIVE)
    prompts = ["slowly shuffle forward", "it bounces ahead on its left foot"]
    # guidance 2: the text and unconditional (guidance 0) samples share one compiled sampler
    out = evaluate_prompts(
        generator, archive, prompts, jax.random.key(0), samples=2, steps=4, guidance=2.0
    )
    assert out["settings"]["samples"] == 2 and out["settings"]["archive_elites"] == 158
    labels = json.loads((archive.path / "labels.json").read_text())["labels"]
    assert out["settings"]["speed_reference"] == labels[0]["speed_reference"]
    first, second = out["prompts"]
    assert first["seen"] and not second["seen"]
    assert first["parts"]["gait"] == "shuffle" and second["parts"]["foot"] == ["on", "left"]
    for row in out["prompts"]:
        assert sum(count for _, count in row["produced"]) == 2
        for name in ("match", "unconditional_match", "archive_match"):
            assert set(row[name]) == {"gait", "direction", "foot", "all"}
            assert all(v is None or 0 <= v <= 1 for v in row[name].values())
        assert row["match"]["all"] <= min(row["match"]["gait"], row["match"]["foot"])
        assert np.isfinite(row["mean_return"])
    assert out["unconditional"]["samples"] == 4 and out["settings"]["episodes"] == 1
    assert "bounces ahead" in format_prompt_examples(out)
    # labels read from K episodes per elite: the samples are judged on K episodes too
    data = json.loads((archive.path / "labels.json").read_text())
    two = evaluate_prompts(
        generator, archive, prompts[:1], jax.random.key(0), samples=1, steps=4, guidance=2.0,
        labels={**data, "episodes": 2},
    )  # fmt: skip
    assert two["settings"]["episodes"] == 2 and len(two["prompts"][0]["match"]) == 4
    with pytest.raises(ConfigError, match="prompts"):
        evaluate_prompts(generator, archive, [], jax.random.key(0))
    with pytest.raises(ConfigError, match="text-conditioned"):
        evaluate_prompts(load_generator("walker2d-uni-ldm"), archive, prompts, jax.random.key(0))


def test_generator_recipe_init_and_text_examples_are_checked() -> None:
    data = json.loads(json.dumps(load_recipe(NAME).__dict__))
    assert GeneratorRecipe.from_dict(data) == load_recipe(NAME)
    measures_only = {**data, "distill": {**data["distill"], "condition": "measures"}}
    with pytest.raises(ConfigError, match="text-conditioned"):
        GeneratorRecipe.from_dict(measures_only)
    with pytest.raises(ConfigError, match="prompts"):
        GeneratorRecipe.from_dict({**data, "text_examples": {"prompts": []}})
    with pytest.raises(ConfigError, match="init"):
        GeneratorRecipe.from_dict({**data, "init": 3})
    with pytest.raises(ConfigError, match="weights_dtype"):
        GeneratorRecipe.from_dict({**data, "weights_dtype": "int8"})
    assert (
        GeneratorRecipe.from_dict({**data, "weights_dtype": "float16"}).weights_dtype == "float16"
    )
    with pytest.raises(ConfigError, match="unknown keys"):
        GeneratorRecipe.from_dict({**data, "labels": "x.json"})
