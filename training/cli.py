"""The ``qdzoo`` command line.

Every user error (a :class:`zoo.errors.QDZooError`) is printed as one ``error: ...`` line
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, QDZooError, UnknownModelError

Command = Callable[[argparse.Namespace], int]


def _parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as JSON when they can be)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} takes NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name] = json.loads(value)
        except json.JSONDecodeError:
            out[name] = value
    return out


def _load(path_or_id: str, revision: str | None = None):  # type: ignore[no-untyped-def]
    from zoo.archive_artifact import load_archive

    return load_archive(path_or_id, revision=revision)


# ----------------------------------------------------------------------------- commands
def cmd_tasks(args: argparse.Namespace) -> int:
    from zoo import tasks

    print(f"{'task':<18} {'genome':<7} {'descriptors':<34} {'episode':>7} {'reset':<13}")
    for name in tasks.names():
        spec = tasks.make(name).spec
        desc = ", ".join(spec.descriptor_names)
        print(
            f"{name:<18} {spec.genome:<7} {desc[:34]:<34} {spec.episode_length:>7} {spec.reset:<13}"
        )
    return 0


def train_config_from_args(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from training.qd.run import TrainConfig

    task_kwargs = _parse_assignments(args.task_arg, "--task-arg")
    if args.episode_length is not None:
        task_kwargs["episode_length"] = args.episode_length
    if args.backend is not None:
        task_kwargs["backend"] = args.backend
    policy = None
    if args.hidden is not None:
        if any(size < 1 for size in args.hidden):
            raise ConfigError(
                f"--hidden takes the widths of the policy's hidden layers, each >= 1; given "
                f"{' '.join(map(str, args.hidden))} (e.g. --hidden 64 64)"
            )
        policy = {"hidden_sizes": list(args.hidden)}
    sizes = {} if args.cvt_samples is None else {"cvt_samples": args.cvt_samples}
    return TrainConfig(
        task=args.task,
        algorithm=args.algo,
        evaluations=args.evaluations,
        batch_size=args.batch_size,
        grid=tuple(args.grid) if args.grid else None,
        cvt_cells=args.cvt,
        task_kwargs=task_kwargs,
        hyperparameters=_parse_assignments(args.set, "--set"),
        policy=policy,
        seed=args.seed,
        chunk=args.chunk,
        **sizes,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from training.qd.run import train

    config = train_config_from_args(args)
    artifact = train(
        config, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet
    )
    print_metrics(artifact)
    print(f"saved to {args.out}")
    return 0


def print_metrics(artifact: Any) -> None:
    cfg = artifact.config
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    if "algorithm" in cfg:
        print(f"algorithm   {cfg['algorithm']['name']}")
    arch = cfg["archive"]
    shape = (
        "x".join(map(str, arch["grid_shape"])) if arch["grid_shape"] else f"{arch['num_cells']} CVT"
    )
    print(f"archive     {arch['tessellation']} {shape} cells, offset {arch['qd_offset']:g}")
    if "training" in cfg:
        t = cfg["training"]
        print(
            f"training    {t['evaluations']} evaluations, batch {t['batch_size']}, seed {t['seed']}"
        )
    for k, v in artifact.metrics().items():
        print(f"{k:<15}{v:.6g}")


def print_generator_info(generator: Any) -> None:
    """A generator's task, source archive, sizes and recorded evaluation figures."""
    cfg = generator.config
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    source = cfg.get("source_archive", {})
    if source:
        name = source.get("name") or source.get("recipe") or "(unnamed)"
        print(f"archive     {name}: {source.get('num_elites')} elites")
    counts = generator.num_parameters()
    print(f"parameters  {', '.join(f'{k} {v}' for k, v in counts.items())}")
    for k, v in cfg.get("metrics", {}).items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            print(f"{k:<27}{v:.6g}")


def cmd_info(args: argparse.Namespace) -> int:
    from zoo.generator import Generator
    from zoo.loading import load_artifact

    artifact = load_artifact(args.path, revision=args.revision)
    if isinstance(artifact, Generator):
        print_generator_info(artifact)
    else:
        print_metrics(artifact)
    return 0


def reevaluate_top(artifact: Any, top: int) -> Any:
    """The ``top`` best elites re-evaluated in one batch (:func:`zoo.evaluation.reevaluate`)."""
    from zoo.evaluation import reevaluate

    cells = artifact.top_indices(top)
    return reevaluate(artifact, cells, batch_size=max(len(cells), 1))


def print_reevaluation(result: Any, reset: str) -> None:
    """Print a :class:`zoo.evaluation.Reevaluation`: stored vs measured, one row per cell."""
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    print(f"re-evaluation ({reset} reset):")
    print(
        f"{'cell':>6} {'stored fitness':>15} {'measured':>12}  {'stored descriptors':<24} measured"
    )
    for i, cell in enumerate(result.cells):
        print(
            f"{int(cell):>6} {float(result.stored_fitness[i]):>15.4f} "
            f"{float(result.fitness[i]):>12.4f}  "
            f"{fmt(result.stored_descriptors[i].tolist()):<24} "
            f"{fmt(result.descriptors[i].tolist())}"
        )


def cmd_eval(args: argparse.Namespace) -> int:
    artifact = _load(args.path, args.revision)
    print_reevaluation(reevaluate_top(artifact, args.top), artifact.task_spec.reset)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from zoo.plot import plot_archive

    path = plot_archive(_load(args.path, args.revision), args.output)
    print(f"wrote {path}")
    return 0


DEMO_GENERATOR = "walker2d-uni-ldm"
DEMO_MEASURES = ((0.2, 0.8), (0.8, 0.2), (0.5, 0.5), (0.7, 0.7))


def cmd_demo(args: argparse.Namespace) -> int:
    """The quick-start job: sample policies from the bundled generator for a few requested
    feet-contact measures, roll them out, report, render (``--train``: train an archive)."""
    if args.train:
        return demo_train(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"loading the bundled generator {DEMO_GENERATOR!r} (no network needed)")
    measures = [value for pair in DEMO_MEASURES for value in pair]
    sample_args = argparse.Namespace(
        generator=DEMO_GENERATOR,
        measures=measures,
        n=1,
        seed=args.seed,
        sampler="ddim",
        steps=None,
        guidance=1.0,
        clip=False,
        render=str(out / "rollout.html"),
    )
    return cmd_sample(sample_args)


def demo_train(args: argparse.Namespace) -> int:
    """Train a small archive on the default task, print metrics, re-evaluate, plot."""
    from training.qd.run import TrainConfig, train
    from zoo.plot import plot_archive

    out = Path(args.out)
    config = TrainConfig(
        task="walker2d-uni",
        task_kwargs={"episode_length": 100},
        evaluations=args.evaluations,
        batch_size=256,
        grid=(16, 16),
        seed=args.seed,
        chunk=5,
    )
    print(f"training MAP-Elites on walker2d-uni ({config.evaluations} evaluations) into {out}")
    artifact = train(config, out, overwrite=True)
    print_metrics(artifact)
    print_reevaluation(reevaluate_top(artifact, 5), artifact.task_spec.reset)
    png = plot_archive(artifact, out / "heatmap.png")
    print(f"heatmap: {png}")
    return 0


def _human_size(size: int) -> str:
    """``2_950_000`` -> ``"2.8 MiB"``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _metric(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the zoo catalog as a table."""
    from zoo.catalog import list_models

    entries = list_models(args.kind)
    head = (
        f"{'name':<26} {'kind':<9} {'task':<14} {'algorithm':<11} {'size':>9} "
        f"{'qd_score':>10} {'coverage':>8} {'max_fit':>8}  {'bundled':<7} repo id"
    )
    print(head)
    for e in entries:
        m = e.metrics
        coverage = "-" if m["coverage"] is None else f"{100 * m['coverage']:.1f}%"
        print(
            f"{e.name:<26} {e.kind:<9} {e.task:<14} {e.algorithm:<11} {_human_size(e.size):>9} "
            f"{_metric(m['qd_score'], '.5g'):>10} {coverage:>8} "
            f"{_metric(m['max_fitness'], '.4g'):>8}  {'yes' if e.bundled_path() else 'no':<7} "
            f"{e.repo_id}"
        )
    return 0


def _repo_id(name: str) -> str:
    """A catalog name's repo id, or ``name`` itself if it is a ``namespace/name`` id."""
    from zoo import catalog

    entry = catalog.find_entry(name)
    if entry is not None:
        return entry.repo_id
    if "/" not in name:
        raise UnknownModelError(name, catalog.names())
    return name


def cmd_pull(args: argparse.Namespace) -> int:
    """Download a Hub repo (or a catalog entry's repo) into the cache or a directory."""
    from zoo import hub

    repo_id = hub.check_repo_id(_repo_id(args.repo_id))
    if args.out is None:
        if Path(repo_id).is_dir():
            raise ConfigError(
                f"{repo_id!r} is a local directory here, so it would not be pulled; run from "
                "another directory, or pass --out DIR to download the Hub repo into DIR"
            )
        path = hub.resolve_local_or_hub(repo_id, args.revision, token=args.token)
    else:
        path = hub.download_to(
            repo_id, args.out, args.revision, token=args.token, overwrite=args.overwrite
        )
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    at = f" at {args.revision}" if args.revision else ""
    print(f"pulled {repo_id}{at}: {', '.join(files)}")
    print(path)
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Check an archive directory and upload its published files as one commit."""
    from zoo.archive_artifact import ArchiveArtifact

    sha, names = ArchiveArtifact.push_saved(
        args.dir,
        args.repo_id,
        private=args.private,
        token=args.token,
        commit_message=args.message,
    )
    print(f"pushed {', '.join(names)} to {args.repo_id} (commit {sha})")
    return 0


def cmd_recipe_list(args: argparse.Namespace) -> int:
    """Print the recipes and their budgets."""
    from training.recipes import GeneratorRecipe, list_recipes, load_recipe

    head = f"{'recipe':<26} {'task':<14} {'algorithm':<11} {'evaluations':>11} {'batch':>5}"
    print(f"{head}  catalog")
    for name in list_recipes():
        r = load_recipe(name)
        if isinstance(r, GeneratorRecipe):
            steps = f"{r.distill.get('vae_steps', '?')}+{r.distill.get('diffusion_steps', '?')}"
            print(
                f"{name:<26} {'from ' + r.archive:<26} {'distil ' + steps:>17}  "
                f"{r.catalog_name or '-'}"
            )
            continue
        c = r.config
        print(
            f"{name:<26} {c.task:<14} {c.algorithm:<11} {c.evaluations:>11} {c.batch_size:>5}  "
            f"{r.catalog_name or '-'}"
        )
    return 0


def cmd_recipe_run(args: argparse.Namespace) -> int:
    """Train a recipe, save its artifact, optionally bundle it into the package."""
    from training.recipes import run_recipe

    out = args.out or str(Path("runs") / "recipes" / args.name)
    artifact = run_recipe(
        args.name,
        out,
        bundle=args.bundle,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    if hasattr(artifact, "archive"):
        print_metrics(artifact)
    else:  # a generator recipe: its evaluation against the source archive
        for name, value in artifact.config.get("metrics", {}).items():
            print(f"{name:<28}{value:.6g}" if isinstance(value, float) else f"{name:<28}{value}")
    print(f"saved to {out}")
    if args.bundle:
        from training.recipes import load_recipe
        from zoo.catalog import get_entry

        entry = get_entry(str(load_recipe(args.name).catalog_name))
        print(f"bundled to {entry.bundled_path()} ({_human_size(entry.size)}); catalog updated")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """Distil an archive into a policy generator (policy VAE, then latent diffusion)."""
    from training.distill import DistillConfig, distill
    from zoo.generator import load_generator

    settings = _parse_assignments(args.set, "--set")
    for name in ("vae_steps", "diffusion_steps", "seed", "chunk"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    config = DistillConfig.from_dict(settings)
    archive = _load(args.archive, args.revision)
    init = None if args.init is None else load_generator(args.init)
    generator = distill(
        archive,
        config,
        args.out,
        init=init,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.quiet,
        source=args.archive,
    )
    cfg = generator.config
    final = cfg["training"]["final"]
    print(f"task        {cfg['task']['name']}  {json.dumps(cfg['task']['kwargs'])}")
    print(
        f"archive     {args.archive}: {cfg['source_archive']['num_elites']} elites"
        + (f", warm start from {args.init}" if args.init else "")
    )
    for phase, steps in (("vae", config.vae_steps), ("diffusion", config.diffusion_steps)):
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in final.get(phase, {}).items())
        print(f"{phase:<11} {steps} steps; {numbers}")
    counts = generator.num_parameters()
    print(
        f"parameters  {', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"latent scale {generator.latent_scale:.4g}"
    )
    print(f"saved to {args.out}")
    return 0


# ------------------------------------------------------------------ generator commands
def _load_generator(name_or_path: str) -> Any:
    from zoo.generator import load_generator

    return load_generator(name_or_path)


def measures_from_args(values: Sequence[float], generator: Any) -> Any:
    """``--measures`` numbers as a ``[conditions, k]`` array (``k`` numbers per condition).

    Raises:
        ConfigError: a count that is not a positive multiple of the generator's ``k``.
    """
    import numpy as np

    low = tuple(float(v) for v in generator.descriptor_low)
    high = tuple(float(v) for v in generator.descriptor_high)
    k = len(low)
    if not values or len(values) % k:
        names = getattr(generator, "descriptor_names", None)
        named = f" ({', '.join(names)})" if names else ""
        raise ConfigError(
            f"--measures takes {k} numbers per condition{named}, in "
            f"[{', '.join(f'{v:g}' for v in low)}] .. [{', '.join(f'{v:g}' for v in high)}]"
            f"; given {len(values)}: {' '.join(map(str, values))}"
        )
    return np.asarray(values, np.float32).reshape(-1, k)


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample policies for the requested measures, roll them out, print what they did."""
    import jax

    from zoo.rollouts import can_render, render_html, sample_rollouts

    if args.n < 1:
        raise ConfigError(f"--n must be >= 1 (policies per condition), given {args.n}")
    generator = _load_generator(args.generator)
    measures = measures_from_args(args.measures, generator)
    out = sample_rollouts(
        generator,
        measures,
        args.n,
        args.seed,
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        clip=args.clip,
    )
    fmt = lambda v: "[" + ", ".join(f"{x:.3f}" for x in v) + "]"  # noqa: E731
    task = out.task
    print(f"task {task.spec.name}: {', '.join(task.spec.descriptor_names)}")
    print(f"{'#':>3}  {'requested':<22} {'achieved':<22} {'error':>7} {'return':>10}")
    for i, (want, got, error, ret) in enumerate(
        zip(out.requested, out.achieved, out.errors, out.returns, strict=True)
    ):
        print(f"{i:>3}  {fmt(want):<22} {fmt(got):<22} {error:>7.3f} {ret:>10.2f}")
    if args.render:
        if not can_render(task):
            raise ConfigError(
                f"--render needs a Brax task with a 3-D scene; the generator's task "
                f"{task.spec.name!r} has none. Drop --render"
            )
        first = jax.tree_util.tree_map(lambda x: x[0], out.policies)
        path = render_html(task, first, out.reset_key, args.render)
        print(f"wrote {path} (policy 0)")
    return 0


def source_archive(generator: Any) -> str:
    """The name of the archive a generator was distilled from, as its config records it."""
    config = getattr(generator, "config", {})
    name = (config.get("source_archive") or {}).get("name")
    if not name:
        raise ConfigError(
            "the generator's config does not name its source archive; pass --archive ARCHIVE "
            "(a directory, catalog name or Hub repo id)"
        )
    return str(name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The paper's evaluation protocol of a generator against its source archive."""
    import shutil

    import jax

    from training.distill.evaluation import evaluate_generator, format_metrics, record_in_generator

    directory = Path(args.generator)
    if args.record and not directory.is_dir():
        raise ConfigError(
            f"--record writes into a local generator directory; {args.generator!r} is not "
            "one (pull it first with `qdzoo pull NAME --out DIR`)"
        )
    generator = _load_generator(args.generator)
    archive = _load(args.archive or source_archive(generator))
    out_dir = args.out or (str(directory) if args.record else None)
    metrics = evaluate_generator(
        generator,
        archive,
        jax.random.key(args.seed),
        sampler=args.sampler,
        steps=args.steps,
        guidance=args.guidance,
        out_dir=out_dir,
        batch_size=args.batch_size,
        test_regions=args.test_regions,
        rollouts=args.rollouts,
    )
    print(format_metrics(metrics))
    for path in metrics["images"].values():
        print(f"wrote {path}")
    if args.record:
        for path in metrics["images"].values():
            if Path(path).resolve().parent != directory.resolve():
                shutil.copyfile(path, directory / Path(path).name)
        record_in_generator(generator, metrics)
        generator.save_pretrained(directory)
        print(f"recorded the metrics in {directory / 'config.json'} and its card")
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qdzoo", description="Train, share and reuse Quality-Diversity archives."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("tasks", help="list the tasks")
    p.set_defaults(fn=cmd_tasks)

    p = sub.add_parser("train", help="train an archive")
    p.add_argument("--task", required=True)
    p.add_argument("--algo", default="map-elites", help="QD algorithm (default: map-elites)")
    p.add_argument(
        "--evaluations",
        type=int,
        default=10_000,
        help="budget of evaluations spent, those of emitters outside the archive included",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--episode-length", type=int, default=None)
    p.add_argument(
        "--backend", default=None, help="brax pipeline (spring, positional, generalized, mjx)"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--grid", type=int, nargs="+", metavar="D", help="grid cells per descriptor")
    g.add_argument("--cvt", type=int, metavar="C", help="number of CVT cells")
    p.add_argument(
        "--cvt-samples",
        type=int,
        default=None,
        metavar="N",
        help="uniform samples the CVT centroids are fitted on (default 50000; >= --cvt)",
    )
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="policy hidden sizes")
    p.add_argument("--set", action="append", metavar="NAME=VALUE", help="algorithm hyperparameter")
    p.add_argument(
        "--task-arg", action="append", metavar="NAME=VALUE", help="task constructor argument"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--chunk", type=int, default=10, help="iterations per compiled chunk")
    p.add_argument("--out", required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    for name, fn, text in (
        ("info", cmd_info, "print an archive's or a generator's metrics"),
        ("eval", cmd_eval, "re-evaluate the best elites"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("path", help="artifact directory, catalog name or Hub repo id")
        p.add_argument("--revision", default=None)
        if name == "eval":
            p.add_argument("--top", type=int, default=10)
        p.set_defaults(fn=fn)

    p = sub.add_parser("plot", help="write an archive heatmap")
    p.add_argument("path")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--revision", default=None)
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser(
        "demo",
        help="the quick-start job: sample policies for requested measures from the bundled "
        "generator, roll them out, report, render (--train: train an archive instead)",
    )
    p.add_argument("--out", default="runs/demo")
    p.add_argument(
        "--train",
        action="store_true",
        help="train a MAP-Elites archive on walker2d-uni, report, re-evaluate, plot",
    )
    p.add_argument("--evaluations", type=int, default=25_600)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_demo)

    p = sub.add_parser("list", help="the zoo catalog: pretrained archives and generators")
    p.add_argument("--kind", choices=["archive", "generator"], default=None)
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("pull", help="download a Hub repo (or catalog entry)")
    p.add_argument("repo_id", help="Hub repo id 'namespace/name' or a catalog name")
    p.add_argument("--revision", default=None, help="branch, tag or commit sha")
    p.add_argument("--out", default=None, help="directory to create (default: the Hub cache)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN)")
    p.set_defaults(fn=cmd_pull)

    p = sub.add_parser("push", help="upload an archive directory to the Hub")
    p.add_argument("dir", help="artifact directory (a run directory is fine: checkpoint/ stays)")
    p.add_argument("repo_id", help="Hub repo id 'namespace/name'")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--token", default=None, help="Hub token with write access (default: HF_TOKEN)")
    p.add_argument("--message", default=None, help="commit message")
    p.set_defaults(fn=cmd_push)

    p = sub.add_parser("recipe", help="list or run the recipes of the zoo's artifacts")
    recipe = p.add_subparsers(dest="recipe_command", required=True)
    r = recipe.add_parser("list", help="the recipes")
    r.set_defaults(fn=cmd_recipe_list)
    r = recipe.add_parser("run", help="train a recipe and save its artifact")
    r.add_argument("name")
    r.add_argument("--out", default=None, help="run directory (default: runs/recipes/NAME)")
    r.add_argument(
        "--bundle", action="store_true", help="copy into zoo/data and update the catalog"
    )
    g = r.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace --out")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(fn=cmd_recipe_run)

    p = sub.add_parser(
        "distill", help="distil an archive into a policy generator (VAE + latent diffusion)"
    )
    p.add_argument("archive", help="archive directory, catalog name or Hub repo id")
    p.add_argument("--out", required=True, help="run directory (generator, log, checkpoint)")
    p.add_argument("--init", default=None, metavar="GEN", help="warm start from this generator")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE optimiser steps")
    p.add_argument("--diffusion-steps", type=int, default=None, help="denoiser optimiser steps")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chunk", type=int, default=None, help="steps per compiled chunk")
    p.add_argument(
        "--set", action="append", metavar="NAME=VALUE",
        help='DistillConfig field, JSON value (e.g. vae_lr=3e-4, vae=\'{"node_size": 32}\')',
    )  # fmt: skip
    p.add_argument("--revision", default=None, help="revision of a Hub ARCHIVE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue the run in --out")
    g.add_argument("--overwrite", action="store_true", help="replace --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=cmd_distill)

    def sampling_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--sampler", choices=["ddim", "ddpm", "ode"], default="ddim")
        p.add_argument("--steps", type=int, default=None, help="denoising steps (sampler default)")
        p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
        p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("evaluate", help="evaluate a generator against its source archive")
    p.add_argument("generator", help="generator directory, catalog name or Hub repo id")
    p.add_argument(
        "--archive", default=None, help="the archive it was distilled from (default: as recorded)"
    )
    p.add_argument("--out", default=None, help="directory for the PNG plots")
    sampling_arguments(p)
    p.add_argument("--rollouts", type=int, default=None, help="episodes per policy")
    p.add_argument("--test-regions", type=int, default=50, help="CVT regions of the test set")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--record", action="store_true", help="store the metrics in the generator dir and card"
    )
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("sample", help="sample policies for measures and roll them out")
    p.add_argument("generator", help="generator directory, catalog name or Hub repo id")
    p.add_argument(
        "--measures", type=float, nargs="+", required=True, help="k numbers per condition"
    )
    p.add_argument("--n", type=int, default=1, help="policies per condition")
    sampling_arguments(p)
    p.add_argument("--clip", action="store_true", help="clip measures to the bounds")
    p.add_argument("--render", default=None, metavar="HTML", help="write the first rollout")
    p.set_defaults(fn=cmd_sample)
    return parser


def use_all_cpu_cores() -> None:
    """One host device per core, so that populations split over them (before JAX starts)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count or 1}"


def main(argv: Sequence[str] | None = None) -> int:
    use_all_cpu_cores()
    os.environ.setdefault("HF_HUB_DISABLE_XET", "1")
    warnings.filterwarnings("ignore", message="Brax System, piplines and environments")
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except QDZooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\n{str(err) or interrupted_message(args)}", file=sys.stderr)
        return 130


def interrupted_message(args: argparse.Namespace) -> str:
    """What to say on Ctrl-C when the command itself had nothing to add (it was stopped
    before it began its work, e.g. while loading JAX)."""
    if getattr(args, "out", None) is not None and hasattr(args, "resume"):
        return (
            "interrupted while the run was starting; run the same command with --resume: it "
            f"continues from the last checkpoint in {args.out}, or starts from the beginning "
            "when there is none"
        )
    return "interrupted before the command finished"


if __name__ == "__main__":
    sys.exit(main())
