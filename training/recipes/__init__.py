"""Recipes: the named training configs that reproduce the zoo's pretrained artifacts.

A recipe is a JSON file ``training/recipes/<name>.json``::

    {
      "name": "walker2d-uni-map-elites",
      "description": "one sentence",
      "catalog_name": "walker2d-uni-map-elites",   # the zoo catalog entry it makes, or null
      "repo_id": "qdzoo/walker2d-uni-map-elites",   # where the artifact is published
      "genome_dtype": "float32",                    # genome dtype of the saved artifact
      "train": { ...a TrainConfig as a dict... },
      "robust": {"episodes": 8, "seed": 0}          # optional: robust re-evaluation
    }

``run_recipe(name, out)`` (``qdzoo recipe run NAME``) trains it, saves the artifact (with a
``tour.gif`` of a few elites or sampled policies for its model card, when the task has a
scene) and, with
``bundle=True``, copies the artifact into the package (``zoo/data/<catalog name>/``) and
updates the catalog entry's metrics and size.

Before it is saved, every elite is re-evaluated on its own, outside the training loop, and
re-inserted into an empty archive of the same spec (:func:`reevaluate_elites`), its genome first
rounded to the recipe's ``genome_dtype``. The stored fitness and descriptors are then what
``task.evaluate`` gives for the stored genomes: the numbers inside the compiled training loop
differ from a standalone evaluation in the last bits, and over a chaotic 100-step rollout that
can move an elite's fitness by a percent or its descriptors by a cell. A recipe with
``robust`` then re-evaluates every elite under the robust protocol (:mod:`zoo.robust`: the mean
over ``episodes`` stochastic episodes) and saves that corrected archive, whose card shows the
metrics before and after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from training.qd.run import TrainConfig, train
from zoo import catalog
from zoo.archive_artifact import ARTIFACT_FILES, ArchiveArtifact, empty_archive
from zoo.artifact import finite_or_none
from zoo.errors import ConfigError, UnknownNameError
from zoo.evaluation import reevaluate, round_genomes
from zoo.tasks.base import genome_template

RECIPES_DIR = Path(__file__).parent
"""Where the recipe files live."""

BUNDLED_LOG_LIMIT = 256 * 1024
"""A run's ``metrics.jsonl`` is bundled only if it is at most this many bytes."""

_KEYS = ("name", "description", "catalog_name", "repo_id", "genome_dtype", "train")
_OPTIONAL_KEYS = ("card_notes", "robust")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named, reproducible training run.

    Attributes:
        name: the recipe name (its file is ``training/recipes/<name>.json``).
        description: one sentence for listings.
        catalog_name: the zoo catalog entry this recipe makes, or ``None``.
        repo_id: the Hub repo the artifact is published to.
        genome_dtype: ``float32`` or ``float16``, the genome dtype of the saved artifact.
        config: the training config.
        card_notes: Markdown shown in the artifact's model card under "Notes" (how the
            archive compares with others, measured), or ``None``.
        robust: ``{"episodes": K, "seed": s}`` to save the archive corrected by a robust
            re-evaluation (:func:`zoo.robust.reevaluate_archive`), or ``None``.
    """

    name: str
    description: str
    catalog_name: str | None
    repo_id: str
    genome_dtype: str
    config: TrainConfig
    card_notes: str | None = None
    robust: dict[str, int] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> Recipe:
        """Build a recipe from its JSON object, checking its keys."""
        missing = [k for k in _KEYS if k not in data]
        unknown = sorted(set(data) - set(_KEYS) - set(_OPTIONAL_KEYS))
        if missing or unknown:
            raise ConfigError(
                f"{source}: missing keys {missing}, unknown keys {unknown}; expected "
                f"{list(_KEYS)} and optionally {list(_OPTIONAL_KEYS)}"
            )
        if data["genome_dtype"] not in ("float32", "float16"):
            raise ConfigError(
                f"{source}: genome_dtype must be 'float32' or 'float16', "
                f"got {data['genome_dtype']!r}"
            )
        robust = data.get("robust")
        if robust is not None and (
            not isinstance(robust, dict)
            or set(robust) - {"episodes", "seed"}
            or not isinstance(robust.get("episodes"), int)
            or robust["episodes"] < 1
            or not isinstance(robust.get("seed", 0), int)
        ):
            raise ConfigError(
                f"{source}: robust must be {{'episodes': K, 'seed': s}} with K >= 1 episodes per "
                f"elite and an integer seed (default 0), got {robust!r}"
            )
        fields = {k: v for k, v in data.items() if k != "train"}
        return cls(**fields, config=TrainConfig.from_dict(data["train"]))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this recipe."""
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "config"
        }
        out["train"] = self.config.to_dict()
        return out


def list_recipes() -> list[str]:
    """The names of every recipe, sorted."""
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))


def load_recipe(name: str) -> Recipe | GeneratorRecipe:
    """The recipe called ``name``.

    Raises:
        UnknownNameError: no such recipe (the message lists them).
        ConfigError: a recipe file with missing or unknown keys.
    """
    path = RECIPES_DIR / f"{name}.json"
    if "/" in name or "\\" in name or not path.is_file():
        raise UnknownNameError("recipe", name, list_recipes())
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"recipe file {path} is not valid JSON ({err})") from err
    kind = GeneratorRecipe if "distill" in data else Recipe
    recipe = kind.from_dict(data, source=str(path))
    if recipe.name != name:
        raise ConfigError(f"recipe file {path} is named {recipe.name!r}; expected {name!r}")
    return recipe


def reevaluate_elites(artifact: ArchiveArtifact, genome_dtype: str = "float32") -> ArchiveArtifact:
    """The archive re-made from a standalone re-evaluation of its elites.

    Every elite's genome is rounded to ``genome_dtype`` (a no-op for ``float32``), re-evaluated
    with the artifact's recorded protocol (:func:`zoo.evaluation.reevaluate`: task and
    constructor arguments, reset, ``jax.random.key(evaluation seed)``) in batches of the
    training batch size, and inserted
    into an empty archive of the same spec. An elite whose re-evaluation lands in another cell
    competes there; one that turns non-finite is dropped. The config gains
    ``training.reevaluation`` with the genome dtype and the metrics before.

    Args:
        artifact: a trained archive artifact with its config.
        genome_dtype: ``float32`` or ``float16``, the dtype the genomes will be stored in.
    """
    config = artifact.config
    cells = artifact.elite_indices()
    batch = int(config.get("training", {}).get("batch_size", len(cells))) or 1
    result = reevaluate(artifact, cells, batch_size=batch, genome_dtype=genome_dtype)
    template = genome_template(artifact.task_spec, artifact.policy_spec)
    centroids = (
        np.asarray(artifact.archive.centroids) if artifact.archive.tessellation == "cvt" else None
    )
    archive = empty_archive(config["archive"], template, centroids)
    for start in range(0, len(cells), batch):  # inserted in the batches they were evaluated in
        rows = slice(start, start + batch)
        archive, _ = archive.insert(
            round_genomes(artifact.genomes(cells[rows]), genome_dtype),
            jnp.asarray(result.fitness[rows]),
            jnp.asarray(result.descriptors[rows]),
        )
    before = {k: finite_or_none(v) for k, v in artifact.metrics().items()}
    training = {
        **config.get("training", {}),
        "reevaluation": {"genome_dtype": genome_dtype, "metrics_before": before},
    }
    return ArchiveArtifact(archive, {**config, "training": training})


def run_recipe(
    name: str,
    out: str | Path | None = None,
    *,
    bundle: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Train recipe ``name`` into ``out`` and save its artifact there (an archive, or for a
    generator recipe a distilled and evaluated generator).

    Args:
        name: a recipe name (:func:`list_recipes`).
        out: the run directory (default ``runs/recipes/<name>``).
        bundle: also copy the artifact into ``zoo/data/<catalog name>/`` and update the
            catalog entry (metrics, size, bundled path).
        resume, overwrite, progress: as for :func:`training.qd.run.train`.

    Returns:
        The saved artifact (elites re-evaluated, genomes rounded as the recipe says).
    """
    recipe = load_recipe(name)
    out = Path(out) if out is not None else Path("runs") / "recipes" / name
    if isinstance(recipe, GeneratorRecipe):
        return run_generator_recipe(
            recipe, out, bundle=bundle, resume=resume, overwrite=overwrite, progress=progress
        )
    if bundle and recipe.catalog_name is None:
        raise ConfigError(f"recipe {name!r} has no catalog_name, so it cannot be bundled")
    artifact = train(
        recipe.config, out, resume=resume, overwrite=overwrite, progress=progress, save=False
    )
    artifact = reevaluate_elites(artifact, recipe.genome_dtype)
    if recipe.robust is not None:
        from zoo.robust import reevaluate_archive

        artifact = reevaluate_archive(
            artifact, recipe.robust["episodes"], recipe.robust.get("seed", 0)
        )
    artifact.config["recipe"] = recipe.name
    if recipe.card_notes:
        artifact.config["notes"] = recipe.card_notes
    artifact.save_pretrained(out, genome_dtype=recipe.genome_dtype, gif=True)
    if bundle:
        bundle_artifact(out, recipe)
    return artifact


def bundle_artifact(run_dir: str | Path, recipe: Recipe) -> Path:
    """Copy the artifact in ``run_dir`` into the package and update its catalog entry.

    Only the published files (:data:`zoo.archive_artifact.ARTIFACT_FILES`) are copied, the
    metrics log only if it is small; the bundled directory is replaced atomically.
    """
    if recipe.catalog_name is None:
        raise ConfigError(f"recipe {recipe.name!r} has no catalog_name, so it cannot be bundled")
    run_dir = Path(run_dir)
    artifact = ArchiveArtifact.from_directory(run_dir)  # checks it before it is shipped
    target = catalog.DATA_DIR / recipe.catalog_name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; the bundled copy is package data
    try:
        for file in ARTIFACT_FILES:
            source = run_dir / file
            if not source.is_file():
                continue
            if file == "metrics.jsonl" and source.stat().st_size > BUNDLED_LOG_LIMIT:
                continue
            shutil.copyfile(source, staging / file)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(target, old)
            os.rename(staging, target)
            shutil.rmtree(old)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in target.iterdir() if p.is_file())
    metrics = artifact.config["metrics"]
    entry = catalog.CatalogEntry(
        name=recipe.catalog_name,
        kind="archive",
        task=recipe.config.task,
        algorithm=recipe.config.algorithm,
        repo_id=recipe.repo_id,
        recipe=recipe.name,
        size=size,
        metrics={k: metrics.get(k) for k in catalog.METRIC_NAMES},
        bundled=recipe.catalog_name,
        description=recipe.description,
        protocol=catalog.protocol_of(artifact.config),
    )
    catalog.write_entry(entry)
    return target


_GENERATOR_KEYS = (
    "name",
    "description",
    "catalog_name",
    "repo_id",
    "archive",
    "distill",
    "evaluation",
)
_GENERATOR_OPTIONAL_KEYS = ("init", "text_examples", "weights_dtype")


@dataclasses.dataclass(frozen=True)
class GeneratorRecipe:
    """A named, reproducible distillation of an archive into a generator.

    Its JSON has ``archive`` (a catalog name, Hub repo id or directory), ``distill`` (a
    :class:`training.distill.DistillConfig` as a dict) and ``evaluation`` (keyword arguments
    of :func:`training.distill.evaluation.evaluate_generator`: sampler, steps, guidance, seed),
    next to the keys every recipe has. Optionally ``init``: a generator (catalog name, Hub
    repo id or directory) to warm start from, as ``qdzoo distill --init`` (with
    ``"vae_steps": 0`` its VAE is kept unchanged); and, for a text-conditioned generator,
    ``text_examples``: keyword arguments of
    :func:`training.distill.text_evaluation.evaluate_prompts` (``prompts``, ``samples``,
    ``seed``; sampler, steps and guidance are the evaluation's), measured after the
    evaluation and shown in the model card. A text-conditioned recipe reads the labels file
    beside its archive (``labels.json``, ``qdzoo label``). ``weights_dtype`` (default
    ``"float32"``): ``"float16"`` rounds every weight before the evaluation, so the figures
    are those of the generator as stored, at half the size
    (:meth:`zoo.generator.Generator.with_weights_dtype`).
    """

    name: str
    description: str
    catalog_name: str | None
    repo_id: str
    archive: str
    distill: dict[str, Any]
    evaluation: dict[str, Any]
    init: str | None = None
    text_examples: dict[str, Any] | None = None
    weights_dtype: str = "float32"

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> GeneratorRecipe:
        missing = [k for k in _GENERATOR_KEYS if k not in data]
        unknown = sorted(set(data) - set(_GENERATOR_KEYS) - set(_GENERATOR_OPTIONAL_KEYS))
        if missing or unknown:
            raise ConfigError(
                f"{source}: missing keys {missing}, unknown keys {unknown}; "
                f"expected {list(_GENERATOR_KEYS)} and optionally "
                f"{list(_GENERATOR_OPTIONAL_KEYS)}"
            )
        from training.distill import DistillConfig
        from zoo.generator import WEIGHTS_DTYPES, text_prompts

        config = DistillConfig.from_dict(data["distill"])  # validate now, not after training
        if data.get("weights_dtype", "float32") not in WEIGHTS_DTYPES:
            raise ConfigError(
                f"{source}: weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)} (how the "
                f"generator's weights are stored), got {data['weights_dtype']!r}"
            )
        if data.get("init") is not None and not isinstance(data["init"], str):
            raise ConfigError(
                f"{source}: init must be a generator's catalog name, Hub repo id or directory "
                f"(a string), got {data['init']!r}"
            )
        examples = data.get("text_examples")
        if examples is not None:
            prompts = examples.get("prompts") if isinstance(examples, dict) else None
            if "text" not in config.conditions:
                raise ConfigError(
                    f"{source}: text_examples need a text-conditioned generator; the distill "
                    f"config has condition {config.condition!r} (set 'condition' to 'text' or "
                    "'both', or drop text_examples)"
                )
            try:
                if not isinstance(prompts, list):
                    raise ConfigError("prompts must be a list")
                text_prompts(prompts)  # the check gen.sample(text=...) makes
            except ConfigError:
                raise ConfigError(
                    f"{source}: text_examples must be an object with 'prompts', a non-empty "
                    f"list of non-empty strings, got {examples!r}"
                ) from None
        return cls(**data)


def run_generator_recipe(
    recipe: GeneratorRecipe,
    out: Path,
    *,
    bundle: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> Any:
    """Distil ``recipe.archive``, evaluate the generator with the paper's protocol, record the
    metrics and images in its config and card, save it to ``out`` and optionally bundle it."""
    from training.distill import DistillConfig, distill
    from zoo.archive_artifact import load_archive
    from zoo.generator import load_generator

    archive = load_archive(recipe.archive)
    config = DistillConfig.from_dict(recipe.distill)
    init = None if recipe.init is None else load_generator(recipe.init)
    generator = distill(
        archive,
        config,
        out,
        init=init,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        source=recipe.archive,
        labels=recipe_labels(recipe, archive) if "text" in config.conditions else None,
    )
    return evaluate_generator_recipe(recipe, generator, archive, out, bundle=bundle)


def recipe_labels(recipe: GeneratorRecipe, archive: Any) -> Path:
    """The labels file of a text-conditioned recipe: ``labels.json`` beside its archive.

    Raises:
        ConfigError: the archive has none (the message says how to write it).
    """
    from zoo.archive_artifact import LABELS_NAME

    path = None if archive.path is None else Path(archive.path) / LABELS_NAME
    if path is None or not path.is_file():
        raise ConfigError(
            f"recipe {recipe.name!r} is conditioned on text and needs the labels of its "
            f"archive {recipe.archive!r} beside it ({LABELS_NAME}), found none at {path}; write "
            f"them with `qdzoo label {recipe.archive} --out ARCHIVE_DIR/{LABELS_NAME}`"
        )
    return path


def evaluate_generator_recipe(
    recipe: GeneratorRecipe, generator: Any, archive: Any, out: Path, *, bundle: bool = False
) -> Any:
    """Evaluate a distilled generator as ``recipe`` says (the paper's protocol, and its
    ``text_examples`` prompts), record the results in its config and card, save it to ``out``
    and optionally bundle it; return it."""
    from training.distill.evaluation import evaluate_generator, record_in_generator

    if recipe.weights_dtype != generator.config.get("weights_dtype", "float32"):
        generator = generator.with_weights_dtype(recipe.weights_dtype)  # evaluate what is stored
    settings = dict(recipe.evaluation)
    seed = int(settings.pop("seed", 0))
    metrics = evaluate_generator(generator, archive, jax.random.key(seed), out_dir=out, **settings)
    record_in_generator(generator, metrics, metrics.get("images"))
    if recipe.text_examples is not None:
        from training.distill.text_evaluation import evaluate_prompts

        examples = dict(recipe.text_examples)
        generator.config["text_examples"] = evaluate_prompts(
            generator,
            archive,
            examples.pop("prompts"),
            jax.random.key(int(examples.pop("seed", seed))),
            **{k: settings[k] for k in ("sampler", "steps", "guidance") if k in settings},
            **examples,
        )
    generator.config["recipe"] = recipe.name
    generator.save_pretrained(out, gif=True)
    if bundle:
        bundle_generator(out, recipe, metrics)
    return generator


def bundle_generator(run_dir: Path, recipe: GeneratorRecipe, metrics: dict[str, Any]) -> Path:
    """Copy the generator in ``run_dir`` (without its checkpoint) into the package and update
    its catalog entry; the catalog metrics are those of the reconstructed archive."""
    from zoo.generator import Generator

    if recipe.catalog_name is None:
        raise ConfigError(f"recipe {recipe.name!r} has no catalog_name, so it cannot be bundled")
    generator = Generator.from_pretrained(run_dir)  # checks it before it is shipped
    target = catalog.DATA_DIR / recipe.catalog_name
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        shutil.copytree(
            run_dir,
            staging / "copy",
            ignore=shutil.ignore_patterns("checkpoint", "metrics.jsonl", ".tmp-*"),
        )
        if target.exists():
            shutil.rmtree(target)
        os.rename(staging / "copy", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    entry = catalog.CatalogEntry(
        name=recipe.catalog_name,
        kind="generator",
        task=generator.config["task"]["name"],
        algorithm="policy-ldm",
        repo_id=recipe.repo_id,
        recipe=recipe.name,
        size=size,
        metrics={
            "qd_score": metrics.get("reconstructed_qd_score"),
            "coverage": metrics.get("reconstructed_coverage"),
            "max_fitness": metrics.get("reconstructed_max_fitness"),
            **{k: metrics.get(k) for k in catalog.GENERATOR_METRIC_NAMES},
        },
        bundled=recipe.catalog_name,
        description=recipe.description,
        protocol=catalog.protocol_of(generator.config),
    )
    catalog.write_entry(entry)
    return target


__all__ = [
    "RECIPES_DIR",
    "GeneratorRecipe",
    "Recipe",
    "bundle_generator",
    "evaluate_generator_recipe",
    "recipe_labels",
    "run_generator_recipe",
    "bundle_artifact",
    "list_recipes",
    "load_recipe",
    "reevaluate_elites",
    "run_recipe",
]
