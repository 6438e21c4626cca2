"""The ``qdzoo`` command line explains itself and is quiet: every option has help text, every
command has examples, ``qdzoo tasks`` builds no environment, tables are aligned, library
noise is hidden; ``--resume`` needs only ``--out`` and may extend the budget."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_map_elites import archive_digest

from training import cli
from training.cli import build_parser, main
from training.qd.run import TrainConfig, stored_config, train
from training.rundir import CHECKPOINT_DIR, METRICS_LOG, RUN_RECORD, RunDir
from zoo import tasks
from zoo.archive_artifact import load_archive

ROOT = Path(__file__).resolve().parents[1]


def subparsers(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    """Every (sub)command's parser by its command line, e.g. ``"recipe run"``."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                found[f"{prefix}{name}"] = child
                found.update(subparsers(child, f"{prefix}{name} "))
    return found


# ------------------------------------------------------------------------------ help
def test_every_option_of_every_command_has_help_and_every_command_examples() -> None:
    commands = subparsers(build_parser())
    assert {"train", "tasks", "demo", "sample", "tour", "recipe run", "recipe list"} <= set(
        commands
    )
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), f"qdzoo {name}: {action.dest} has no help"
        text = parser.format_help()
        assert "Example" in text, f"qdzoo {name} --help has no example"
    train = " ".join(commands["train"].format_help().split()).replace("- ", "-")
    assert "(default: 10000)" in train and "(default: 0)" in train  # defaults shown
    for name in [*tasks.names(), "map-elites", "pga-me"]:  # the choices are listed
        assert name in train, name


def test_top_level_help_lists_the_commands_with_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    section = text.split("  COMMAND\n")[1].split("\n\n")[0].splitlines()
    names = [name for name in subparsers(build_parser()) if " " not in name]
    assert [line.split()[0] for line in section] == names  # one line each
    assert all(len(line.split()) > 2 for line in section)  # with its summary
    assert "Examples:" in text and "qdzoo demo" in text


# ----------------------------------------------------------------------------- tasks
def test_tasks_lists_every_name_in_full_without_building_a_task(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("qdzoo tasks built a task")

    monkeypatch.setattr(tasks, "make", refuse)
    assert main(["tasks"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0] for line in lines[1:] if line.strip()}
    assert set(tasks.names()) <= listed
    ant = next(line for line in lines if line.startswith("ant-uni "))
    assert ant.endswith(", ".join(tasks.info("ant-uni").descriptor_names))  # not truncated


@pytest.mark.parametrize("name", ["point-maze", "arm", "lp-sphere"])
def test_static_task_facts_match_the_built_task(name: str) -> None:
    assert sorted(tasks._INFO) == tasks.names()
    spec, info = tasks.make(name).spec, tasks.info(name)
    assert (spec.genome, spec.descriptor_names, spec.episode_length, spec.reset) == (
        info.genome,
        info.descriptor_names,
        info.episode_length,
        info.reset,
    )


@pytest.mark.slow
def test_static_brax_task_facts_match_the_built_tasks() -> None:
    for name in tasks.names():
        spec, info = tasks.make(name).spec, tasks.info(name)
        assert (spec.genome, spec.descriptor_names, spec.episode_length, spec.reset) == (
            info.genome,
            info.descriptor_names,
            info.episode_length,
            info.reset,
        ), name


# ----------------------------------------------------------------------------- noise
NOISE = ("warn", "Failed to import", "deprecated", "not actively", "Traceback")


def noise(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(n.lower() in line.lower() for n in NOISE)]


def test_cli_commands_print_no_library_noise(capfd: pytest.CaptureFixture[str]) -> None:
    """``qdzoo tasks`` and ``qdzoo info`` in a fresh interpreter (import-time prints
    included) print nothing but their own output; after the CLI's set-up, compiling a MuJoCo
    model with a deprecated attribute (settotalmass, as Brax's half cheetah) prints nothing."""
    script = (
        "from training.cli import main; assert main(['tasks']) == 0; "
        "assert main(['info', 'walker2d-uni-map-elites']) == 0"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "walker2d-uni" in done.stdout and "qd_score" in done.stdout
    assert not noise(done.stdout + done.stderr)
    import mujoco

    cli.quieten_libraries()
    cli.import_simulator_quietly()
    capfd.readouterr()
    mujoco.MjModel.from_xml_string(DEPRECATED_MODEL)  # as Brax's half_cheetah.xml
    captured = capfd.readouterr()
    assert not noise(captured.out + captured.err)


DEPRECATED_MODEL = """<mujoco><compiler settotalmass="2"/>
<worldbody><body><freejoint/><geom size=".1"/></body></worldbody></mujoco>"""
"""A MuJoCo model with an attribute MuJoCo warns about on compilation (settotalmass)."""


# ------------------------------------------------------------------------------ tables
def assert_aligned(text: str) -> None:
    """The lines of ``text`` form a table: the positions blank (two spaces wide) in every line
    cut it into as many columns as the header has, and every line fills each of them."""
    lines = [line for line in text.splitlines() if line.strip()]
    width = max(map(len, lines))
    padded = [line.ljust(width) for line in lines]
    mask = "".join(" " if all(line[i] == " " for line in padded) else "#" for i in range(width))
    columns = len(re.split(r" {2,}", lines[0].strip()))
    assert len(re.split(r" {2,}", mask.strip())) == columns, (mask, text)
    for line in lines:
        assert len(re.split(r" {2,}", line.strip())) == columns, line


def test_recipe_list_and_tasks_are_aligned_tables(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "list"]) == 0
    text = capsys.readouterr().out
    assert_aligned(text)
    assert "grid 16x16" in text and "CVT cells" not in text
    assert main(["tasks"]) == 0
    assert_aligned(capsys.readouterr().out.split("\n\n")[0])
    assert main(["list"]) == 0
    assert_aligned(capsys.readouterr().out)


def test_readme_zoo_table_is_the_catalog_markdown(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's Zoo table is `qdzoo list --markdown`: one row per catalog entry, with the
    protocol and, for generators, the distillation figures."""
    from zoo import catalog

    assert main(["list", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert table in readme, "README's Zoo table is stale: paste the output of qdzoo list --markdown"
    rows = table.splitlines()[2:]
    assert len(rows) == len(catalog.list_models())
    generators = [r for r in rows if "| generator |" in r]
    assert generators and all(r.split(" | ")[8] != "-" for r in generators)  # reward ratio
    assert all(" reset, " in r or "robust:" in r for r in rows)


def test_zoo_table_shows_the_archive_ceiling_in_brackets() -> None:
    from zoo import catalog

    figures = {"reward_ratio": 0.9512, "coverage_ratio": 0.8, "js_divergence": 0.04}
    entry = catalog.CatalogEntry.from_dict(
        {
            "name": "g", "kind": "generator", "task": "hopper-uni", "algorithm": "policy-ldm",
            "repo_id": "a/g", "recipe": None, "size": 2**20, "bundled": None, "description": "",
            "metrics": {**figures, "ceiling_reward_ratio": 1.0, "ceiling_coverage_ratio": 0.9},
        }
    )  # fmt: skip
    row = catalog.markdown_table([entry]).splitlines()[2].split(" | ")
    assert row[8:11] == ["0.951 (1.000)", "0.800 (0.900)", "0.040"]  # no JS ceiling measured


def test_a_generator_evaluated_with_its_robust_archives_protocol_says_so() -> None:
    from zoo.catalog import protocol_of

    source = {"evaluation": {"protocol": "robust", "episodes": 8, "seed": 0}}
    config = {"evaluation": {"reset": "stochastic", "rollouts": 8}, "source_archive": source}
    assert protocol_of(config) == "robust: 8 stochastic episodes"
    config["evaluation"]["rollouts"] = 5
    assert protocol_of(config) == "stochastic reset, 5 episodes"


# ---------------------------------------------------------------------------- resume
BATCH = 16
CONFIG = TrainConfig(
    task="lp-sphere",
    task_kwargs={"dimension": 4},
    evaluations=BATCH * 8,
    batch_size=BATCH,
    grid=(8, 8),
    seed=3,
    chunk=2,
)
FULL_ARGS = [
    "train", "--task", "lp-sphere", "--task-arg", "dimension=4", "--batch-size", str(BATCH),
    "--grid", "8", "8", "--seed", "3", "--chunk", "2", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run started with the full budget."""
    out = tmp_path_factory.mktemp("reference") / "run"
    train(CONFIG, out, progress=False)
    return out


def error_line(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / METRICS_LOG).read_text().splitlines()]


def test_resume_with_only_out_extends_the_budget_to_the_result_of_a_longer_run(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    half = [*FULL_ARGS, "--evaluations", str(BATCH * 4), "--out", str(out)]
    assert main(half) == 0
    assert main(["train", "--out", str(out), "--resume", "--quiet"]) == 0  # finished: as is
    assert stored_config(out).evaluations == BATCH * 4
    resume = ["train", "--out", str(out), "--resume", "--quiet"]
    assert main([*resume, "--evaluations", str(CONFIG.evaluations)]) == 0
    assert "budget changed from 64 to 128 evaluations" in capsys.readouterr().out
    assert archive_digest(load_archive(out).archive) == archive_digest(
        load_archive(reference).archive
    )
    assert log(out) == log(reference)
    assert stored_config(out) == CONFIG  # a later --resume keeps the new budget
    # a smaller budget than what was spent is refused; the same budget finishes at once
    line = error_line([*resume, "--evaluations", str(BATCH * 6)], capsys)
    assert "already spent 128 evaluations" in line and "--evaluations 96" in line
    assert "--evaluations 128 or more" in line
    assert main([*resume, "--evaluations", str(CONFIG.evaluations)]) == 0


def test_resume_refuses_a_given_option_that_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    RunDir(out).start(CONFIG.to_dict())  # a run stopped before its first checkpoint
    resume = ["train", "--out", str(out), "--resume", "--quiet"]
    line = error_line([*resume, "--batch-size", "32"], capsys)
    assert "--batch-size 16" in line and "--batch-size 32" in line
    assert "leave --batch-size out" in line and "another --out" in line
    line = error_line([*resume, "--task-arg", "dimension=6"], capsys)
    assert "--task-arg dimension=4" in line and "dimension=6" in line
    line = error_line([*resume, "--task", "arm"], capsys)
    assert "--task lp-sphere" in line and "--task arm" in line
    line = error_line([*resume, "--cvt", "32"], capsys)
    assert "--cvt (not set" in line and "--cvt 32" in line
    line = error_line([*resume, "--set", "iso_sigma=0.5"], capsys)
    assert "--set iso_sigma=" in line and "0.5" in line
    assert json.loads((out / CHECKPOINT_DIR / RUN_RECORD).read_text()) == CONFIG.to_dict()


def test_resume_with_the_same_arguments_and_from_before_the_first_checkpoint(
    reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    RunDir(out).start(CONFIG.to_dict())  # stopped before its first checkpoint
    args = [*FULL_ARGS, "--evaluations", str(CONFIG.evaluations), "--out", str(out), "--resume"]
    assert main(args) == 0  # every option given, all equal to the stored ones
    assert archive_digest(load_archive(out).archive) == archive_digest(
        load_archive(reference).archive
    )


def test_task_is_required_without_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = error_line(["train", "--out", str(tmp_path / "a")], capsys)
    assert "needs --task TASK" in line and "point-maze" in line
    line = error_line(["train", "--out", str(tmp_path / "a"), "--resume"], capsys)
    assert "holds no run to resume" in line and "needs --task" in line
    assert not (tmp_path / "a").exists()


def test_distill_resume_takes_the_settings_not_given_from_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.distill
    from training.distill import DistillConfig

    out = tmp_path / "generator"
    RunDir(out).start({"config": DistillConfig.from_dict({"vae_steps": 7, "seed": 3}).to_dict()})
    seen: dict[str, Any] = {}

    class Started(Exception):
        pass

    def distill(archive: Any, config: DistillConfig, out: Path, **kwargs: Any) -> None:
        seen["config"], seen["resume"] = config, kwargs["resume"]
        raise Started

    monkeypatch.setattr(training.distill, "distill", distill)
    monkeypatch.setattr(cli, "_load", lambda name, revision=None: None)
    with pytest.raises(Started):
        main(["distill", "archive", "--out", str(out), "--resume", "--chunk", "5"])
    assert seen["resume"] and (seen["config"].vae_steps, seen["config"].seed) == (7, 3)
    assert seen["config"].chunk == 5  # a given setting is passed on (distill compares it)


# ----------------------------------------------------------------------------- video
class FakeGenerator:
    """The generator API ``qdzoo sample`` uses: random point-maze policies."""

    def __init__(self) -> None:
        self.task = tasks.make("point-maze", episode_length=8, policy_hidden_sizes=[4])
        spec = self.task.spec
        self.descriptor_low, self.descriptor_high = spec.descriptor_low, spec.descriptor_high
        self.descriptor_names = spec.descriptor_names

    def make_task(self) -> Any:
        return self.task

    def sample(self, key: Any, measures: Any, num_samples: int = 1, **kwargs: Any) -> Any:
        count = len(np.atleast_2d(measures)) * num_samples
        return self.task.default_policy().init_population(key, count)


@pytest.fixture(scope="module")
def maze_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small point-maze archive of the fake generator's policies."""
    out = tmp_path_factory.mktemp("maze") / "archive"
    config = TrainConfig(
        task="point-maze",
        task_kwargs={"episode_length": 8, "policy_hidden_sizes": [4]},
        evaluations=32,
        batch_size=16,
        grid=(4, 4),
    )
    train(config, out, progress=False)
    return out


def test_sample_and_tour_write_videos(
    maze_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "_load_generator", lambda name: FakeGenerator())
    video = tmp_path / "sample.png"
    assert main(["sample", "gen", "--measures", "0", "0", "0.5", "0.5", "--video", str(video)]) == 0
    out = capsys.readouterr().out
    assert video.is_file() and f"wrote {video}" in out and "renderer: " in out
    tour = tmp_path / "tour.gif"
    assert main(["tour", str(maze_archive), "--out", str(tour), "--cells", "2"]) == 0
    out = capsys.readouterr().out
    assert tour.is_file() and "2 rollout(s) side by side" in out and "cell " in out
    line = error_line(["tour", str(maze_archive), "--out", str(tmp_path / "t.avi")], capsys)
    assert "--out takes a file name ending in .gif" in line and "t.avi" in line
    line = error_line(["sample", "gen", "--measures", "0", "0", "--video", "v.webm"], capsys)
    assert "--video takes a file name ending in" in line and "--video v.gif" in line


def test_demo_requests_measures_of_occupied_cells(
    maze_archive: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The demo's table, with a fake generator and a small archive in place of the bundled
    ones: each requested measure is the centre of an occupied cell, next to the nearest
    elite's measures and return."""
    archive = load_archive(maze_archive)
    monkeypatch.setattr(cli, "_load_generator", lambda name: FakeGenerator())
    monkeypatch.setattr(cli, "_load", lambda name, revision=None: archive)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--measures", "3"]) == 0
    out = capsys.readouterr().out
    assert "centres of the cells of 3 of its elites" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#  requested"))
    assert_aligned("\n".join(lines[start : start + 4]))
    a = archive.archive
    centres = np.asarray(a.centroids)[np.asarray(a.occupied)]
    for line in lines[start + 1 : start + 4]:
        requested = [float(x) for x in line.split("[")[1].split("]")[0].split(",")]
        assert np.min(np.abs(centres - requested).max(axis=1)) < 0.01  # an occupied cell
        elite = [float(x) for x in line.split("[")[3].split("]")[0].split(",")]
        assert np.min(np.abs(archive.descriptors - elite).max(axis=1)) < 0.01  # an elite
    assert (tmp_path / "demo" / "demo.gif").is_file() and "renderer: " in out
