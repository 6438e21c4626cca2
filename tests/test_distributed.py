"""Multi-process training on ``jax.distributed``, with local processes (``qdzoo launch``).

The default suite runs one real two-process run (2 processes x 2 host devices, ~20 s) and
checks its archive and metrics log are bit-identical to today's single-process run over 4
host devices; the launcher's failure handling and signal forwarding are checked with
plain Python children. 1 process x 4 devices and 4 x 1, a kill and ``--resume``, and a kill
without the launcher (the runtime's heartbeat) are ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from golden_map_elites import archive_digest

from training.distributed import Settings, settings_from_environment
from training.launch import Launch, free_port, launch, qdzoo_command
from training.qd.run import STATE_FILE, TrainConfig, train
from training.rundir import CHECKPOINT_DIR, METRICS_LOG, RunDir
from zoo.archive_artifact import ArchiveArtifact, load_archive
from zoo.errors import ConfigError, DistributedConfigError, LaunchError

ROOT = Path(__file__).resolve().parents[1]

# lp-sphere in 4 dimensions, batches of 16 (4 per device), chunks of 2 iterations.
BASE = {
    "task": "lp-sphere",
    "task_kwargs": {"dimension": 4},
    "batch_size": 16,
    "seed": 5,
    "chunk": 2,
    "grid": (8, 8),
}
SHORT = TrainConfig(**BASE, evaluations=16 * 6)
LONG = TrainConfig(**BASE, evaluations=16 * 300)


def train_args(config: TrainConfig) -> list[str]:
    return [
        "train", "--task", config.task, "--task-arg", "dimension=4", "--evaluations",
        str(config.evaluations), "--batch-size", "16", "--seed", "5", "--chunk", "2",
        "--grid", "8", "8", "--quiet",
    ]  # fmt: skip


def clean_environment() -> dict[str, str]:
    """This environment without any multi-process or cluster variable."""
    prefixes = ("QDZOO_COORDINATOR", "QDZOO_NUM_", "QDZOO_PROCESS", "JAX_", "SLURM_", "OMPI_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def run_launch(
    args: list[str], timeout: float = 300, heartbeat: int = 10
) -> subprocess.CompletedProcess[str]:
    """``qdzoo launch ARGS`` in a subprocess (output captured)."""
    return subprocess.run(
        [sys.executable, "-m", "training.cli", "launch", "--heartbeat-timeout", str(heartbeat)]
        + args,
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def log_of(out: Path) -> str:
    return (out / METRICS_LOG).read_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ArchiveArtifact]:
    """Today's single-process run of ``SHORT`` over 4 host devices (conftest's XLA_FLAGS)."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return out, train(SHORT, out, progress=False)


# ------------------------------------------------------------------- settings and errors
def test_settings_come_from_qdzoo_or_jax_variables() -> None:
    given = {"QDZOO_COORDINATOR": "10.0.0.1:1234", "QDZOO_NUM_PROCESSES": "4"}
    settings = settings_from_environment({**given, "QDZOO_PROCESS_ID": "3"})
    assert (settings.coordinator, settings.num_processes, settings.process_id) == (
        "10.0.0.1:1234",
        4,
        3,
    )
    jax_names = {
        "JAX_COORDINATOR_ADDRESS": "h:9",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": "0",
        "QDZOO_HEARTBEAT_TIMEOUT": "7",
    }
    settings = settings_from_environment(jax_names)
    assert settings == Settings("h:9", 2, 0, heartbeat_timeout_s=7)
    assert settings_from_environment({}) == Settings()  # left to JAX's cluster detection


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"QDZOO_COORDINATOR": "h:1", "QDZOO_NUM_PROCESSES": "two", "QDZOO_PROCESS_ID": "0"},
         r"QDZOO_NUM_PROCESSES must be an integer, given QDZOO_NUM_PROCESSES='two'"),
        ({"QDZOO_COORDINATOR": "h:1", "QDZOO_NUM_PROCESSES": "2"},
         r"missing QDZOO_PROCESS_ID; set QDZOO_COORDINATOR=HOST:PORT"),
        ({"QDZOO_COORDINATOR": "h", "QDZOO_NUM_PROCESSES": "2", "QDZOO_PROCESS_ID": "0"},
         r"must be HOST:PORT .* given 'h'"),
        ({"QDZOO_COORDINATOR": "h:1", "QDZOO_NUM_PROCESSES": "2", "QDZOO_PROCESS_ID": "2"},
         r"process id must be in 0..1 .* given 2"),
        ({"QDZOO_HEARTBEAT_TIMEOUT": "0"}, r"heartbeat_timeout_s must be >= 1 second, given 0"),
    ],
)  # fmt: skip
def test_bad_environment_says_what_to_set(environ: dict[str, str], message: str) -> None:
    with pytest.raises(DistributedConfigError, match=message):
        settings_from_environment(environ)


def test_launch_takes_only_distributed_qdzoo_commands() -> None:
    assert qdzoo_command(["--", "qdzoo", "train", "--task", "arm"]) == [
        "train", "--task", "arm", "--distributed",
    ]  # fmt: skip
    assert qdzoo_command(["train", "--distributed"]) == ["train", "--distributed"]
    for command in ([], ["tasks"], ["python", "train.py"], ["qdzoo"]):
        with pytest.raises(
            LaunchError, match=r"runs over several processes \(distill, train\) after"
        ):
            qdzoo_command(command)
    with pytest.raises(LaunchError, match="--processes must be >= 1, given 0"):
        Launch(command=["x"], processes=0)


def test_distributed_without_a_coordinator_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", *train_args(SHORT), "--out", str(tmp_path / "r")]
        + ["--distributed"],
        cwd=ROOT,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "error: --distributed needs to know where process 0 is" in result.stderr
    assert "QDZOO_COORDINATOR=HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_a_process_that_cannot_reach_process_0_says_what_to_check(tmp_path: Path) -> None:
    env = clean_environment()
    env.update(
        QDZOO_COORDINATOR=f"127.0.0.1:{free_port()}",  # nobody serves it
        QDZOO_NUM_PROCESSES="2",
        QDZOO_PROCESS_ID="1",
        QDZOO_INITIALIZATION_TIMEOUT="2",
    )
    result = subprocess.run(
        [sys.executable, "-m", "training.cli", *train_args(SHORT), "--out", str(tmp_path / "r")]
        + ["--distributed"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "error: --distributed: process 1 of 2 could not join the run at 127.0.0.1:" in (
        result.stderr
    )
    assert "start process 0" in result.stderr and "QDZOO_INITIALIZATION_TIMEOUT" in result.stderr


# ----------------------------------------------------------------- the launcher itself
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    index = int(os.environ["QDZOO_PROCESS_ID"])
    print("env", os.environ["QDZOO_NUM_PROCESSES"], os.environ["QDZOO_COORDINATOR"],
          os.environ["XLA_FLAGS"], flush=True)
    signal.signal(signal.SIGINT, lambda *a: (print("got SIGINT", flush=True), sys.exit(130)))
    if index == int(sys.argv[1]):
        time.sleep(0.5)
        sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 3)
    time.sleep(120)
    """
)


class Lines:
    """A thread-safe enough sink for the launcher's output."""

    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass


def test_launcher_stops_the_others_when_one_fails() -> None:
    sink = Lines()
    settings = Launch(
        [sys.executable, "-c", CHILD, "1"],
        processes=3,
        devices_per_process=2,
        environ={"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --other"},
    )
    start = time.time()
    assert launch(settings, out=sink) == 3  # type: ignore[arg-type]
    assert time.time() - start < 20
    text = sink.text
    for i in range(3):
        assert re.search(rf"\[{i}\] env 3 127\.0\.0\.1:\d+ --other ", text), text
        assert f"[{i}] env 3" in text and "device_count=8" not in text
    assert "--xla_force_host_platform_device_count=2" in text
    assert "qdzoo launch: process 1 exited with status 3; stopping the other 2 process(es)" in text
    assert "got SIGINT" not in text  # stopped by SIGTERM: at once, even inside a collective


def test_launcher_tells_a_usage_error_from_a_crash() -> None:
    sink = Lines()
    assert launch(Launch([sys.executable, "-c", CHILD, "0", "2"], processes=2), out=sink) == 2  # type: ignore[arg-type]
    assert "process 0 exited with status 2; stopping the other 1 process(es) (1) (a usage " in (
        sink.text
    )
    assert "--resume" not in sink.text


def test_launcher_passes_ctrl_c_on_and_exits_130() -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from training.launch import Launch, launch
        sys.exit(launch(Launch([sys.executable, "-c", {CHILD!r}, "-1"], processes=2)))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = ""
    while seen.count("] env ") < 2:
        line = proc.stdout.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, seen + rest
    assert "received SIGINT; passing it on" in rest
    assert "[0] got SIGINT" in rest and "[1] got SIGINT" in rest


# ------------------------------------------------------------ real multi-process runs
def test_two_processes_give_the_single_process_archive(
    reference: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    """2 processes x 2 devices == 1 process x 4 host devices, bit for bit (log included)."""
    ref_out, ref = reference
    out = tmp_path / "run"
    result = run_launch(
        ["--processes", "2", "--devices-per-process", "2", "--", *train_args(SHORT)]
        + ["--out", str(out)]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert f"[0] saved to {out}" in result.stdout
    assert "[1] saved to" not in result.stdout  # process 0 reports and writes
    assert archive_digest(load_archive(out).archive) == archive_digest(ref.archive)
    assert log_of(out) == log_of(ref_out)


@pytest.mark.slow
@pytest.mark.parametrize(("processes", "devices"), [(1, 4), (4, 1)])
def test_other_splits_of_four_devices_give_the_same_archive(
    processes: int, devices: int, reference: tuple[Path, ArchiveArtifact], tmp_path: Path
) -> None:
    ref_out, ref = reference
    out = tmp_path / "run"
    result = run_launch(
        ["--processes", str(processes), "--devices-per-process", str(devices), "--"]
        + [*train_args(SHORT), "--out", str(out)]
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert archive_digest(load_archive(out).archive) == archive_digest(ref.archive)
    assert log_of(out) == log_of(ref_out)


def _log_rows(out: Path) -> int:
    path = out / METRICS_LOG
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.mark.slow
def test_killed_process_stops_the_launch_and_resume_finishes_the_run(tmp_path: Path) -> None:
    reference = train(LONG, tmp_path / "reference", progress=False)
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "training.cli", "launch", "--processes", "2",
        "--devices-per-process", "2", "--heartbeat-timeout", "5", "--", *train_args(LONG),
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        env=clean_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    pids = dict(re.findall(r"(\d+):(\d+)", first.split("pids", 1)[1]))
    deadline = time.time() + 240
    while _log_rows(out) < 10 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # a few chunks checkpointed
    assert proc.poll() is None, "the run ended before it could be killed"
    assert (out / CHECKPOINT_DIR / STATE_FILE).is_file()
    os.kill(int(pids["1"]), signal.SIGKILL)
    killed = time.time()
    rest, _ = proc.communicate(timeout=60)
    assert time.time() - killed < 20  # the other process stopped too
    assert proc.returncode == 128 + signal.SIGKILL
    assert "qdzoo launch: process 1 was killed by SIGKILL; stopping the other 1" in rest
    assert "--resume" in rest
    assert _log_rows(out) < LONG.evaluations // 16, "the run finished before the kill"

    resumed = run_launch(
        ["--processes", "2", "--devices-per-process", "2", "--", "train", "--out", str(out)]
        + ["--resume", "--quiet"]
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert archive_digest(load_archive(out).archive) == archive_digest(reference.archive)
    assert log_of(out) == log_of(tmp_path / "reference")


@pytest.mark.slow
def test_a_failure_of_process_0_after_the_loop_ends_the_launch_without_a_hang(
    tmp_path: Path,
) -> None:
    """Process 0 fails alone (its artifact cannot be written): it must not wait for the
    others in jax.distributed's shutdown, and the launch stops with its status."""
    script = textwrap.dedent(
        """
        import sys
        from training.cli import main
        from zoo.archive_artifact import ArchiveArtifact

        def broken(self, path):
            raise OSError("disk full (simulated)")

        ArchiveArtifact.save_pretrained = broken
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = tmp_path / "run"
    command = [sys.executable, "-c", script, *train_args(SHORT), "--out", str(out)]
    sink = Lines()
    start = time.time()
    environ = {"PYTHONPATH": clean_environment()["PYTHONPATH"]}
    settings = Launch(command + ["--distributed"], 2, devices_per_process=2, environ=environ)
    status = launch(settings, out=sink)  # type: ignore[arg-type]
    assert status == 1, sink.text[-3000:]
    assert time.time() - start < 120
    assert "[0] OSError: disk full (simulated)" in sink.text
    assert "qdzoo launch: process 0 exited with status 1; stopping the other 1" in sink.text


@pytest.mark.slow
def test_without_the_launcher_the_runtime_stops_the_survivor(tmp_path: Path) -> None:
    """Processes started by hand (as on several machines): the heartbeat timeout stops the
    process left when the other dies."""
    env = clean_environment()
    env.update(
        XLA_FLAGS="--xla_force_host_platform_device_count=2",
        QDZOO_COORDINATOR=f"127.0.0.1:{free_port()}",
        QDZOO_NUM_PROCESSES="2",
        QDZOO_HEARTBEAT_TIMEOUT="4",
    )
    out = tmp_path / "run"
    args = [sys.executable, "-m", "training.cli", *train_args(LONG), "--out", str(out)]
    procs = [
        subprocess.Popen(
            [*args, "--distributed"],
            cwd=ROOT,
            env={**env, "QDZOO_PROCESS_ID": str(i)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.time() + 240
    while _log_rows(out) < 6 and time.time() < deadline:
        time.sleep(0.05)
    procs[1].kill()
    killed = time.time()
    _, err = procs[0].communicate(timeout=60)
    procs[1].communicate()
    assert time.time() - killed < 4 + 15
    assert procs[0].returncode != 0
    assert "another task died" in err or "another process has most likely died" in err


# ------------------------------------------------------- data-parallel distillation
def distill_args(archive: Path) -> list[str]:
    """A tiny distillation (test_generator's tiny modules), 4 + 4 steps in chunks of 2."""
    from test_generator import TINY_SETTINGS

    given = {"vae_steps", "diffusion_steps", "seed", "chunk", "eval_every"}
    args = ["distill", str(archive), "--vae-steps", "4", "--diffusion-steps", "4"]
    args += ["--seed", "3", "--chunk", "2", "--quiet", "--set", "eval_every=2"]
    for name, value in {**TINY_SETTINGS, "batch_size": 8}.items():
        if name not in given:
            args += ["--set", f"{name}={json.dumps(value)}"]
    return args


def generator_leaves(out: Path) -> list[Any]:
    import equinox as eqx
    import jax

    from zoo.generator import load_generator

    g = load_generator(out)
    modules = (g.vae, g.denoiser, g.measure_encoder)
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(eqx.filter(modules, eqx.is_array))]


def test_distributed_distill_needs_a_batch_that_splits_over_the_devices(tmp_path: Path) -> None:
    import jax
    from jax.sharding import Mesh
    from test_generator import TINY_SETTINGS, make_archive

    from training.distill import DistillConfig, distill

    mesh = Mesh(np.array(jax.devices()[:4]), ("data",))  # conftest: 4 host devices
    config = DistillConfig(**{**TINY_SETTINGS, "batch_size": 6})
    with pytest.raises(ConfigError, match="batch_size must be a multiple of 4; given 6"):
        distill(make_archive(size=8), config, tmp_path / "run", progress=False, mesh=mesh)


@pytest.mark.slow
def test_two_process_distillation_equals_one_process_on_two_devices_and_resumes(
    tmp_path: Path,
) -> None:
    """2 processes x 1 device == 1 process x 2 devices (same data-parallel program; weights
    allclose at rtol 1e-6, atol 1e-7; in practice bit for bit), also after process 0 is
    interrupted at its second checkpoint (VAE step 4) and the run is resumed."""
    from test_generator import make_archive

    archive = tmp_path / "archive"
    make_archive().save_pretrained(archive, plot=False)
    reference = tmp_path / "reference"
    result = run_launch(
        ["--processes", "1", "--devices-per-process", "2", "--", *distill_args(archive)]
        + ["--out", str(reference)]
    )
    assert result.returncode == 0, result.stdout[-3000:]

    script = textwrap.dedent(
        """
        import sys
        from training.cli import main
        from training.rundir import RunDir

        save, calls = RunDir.save, []

        def interrupted(self, *args):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            save(self, *args)

        RunDir.save = interrupted
        sys.exit(main(sys.argv[1:]))
        """
    )
    out = tmp_path / "run"
    command = [sys.executable, "-c", script, *distill_args(archive), "--out", str(out)]
    sink = Lines()
    environ = {"PYTHONPATH": clean_environment()["PYTHONPATH"]}
    status = launch(Launch(command + ["--distributed"], 2, environ=environ), out=sink)  # type: ignore[arg-type]
    # 130: process 0's Ctrl-C; 2: process 1 saw its collective fail first (DistributedError)
    assert status in (130, 2), sink.text[-3000:]
    assert "[0] interrupted; the last checkpoint" in sink.text, sink.text[-3000:]
    assert "--resume" in sink.text and not (out / "config.json").exists()
    assert RunDir(out).counter("vae.safetensors", "step") == 2  # the first chunk's

    resumed = run_launch(
        ["--processes", "2", "--devices-per-process", "1", "--", "distill", str(archive)]
        + ["--out", str(out), "--resume", "--quiet"]
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"[0] saved to {out}" in resumed.stdout and "[1] saved to" not in resumed.stdout
    for a, b in zip(generator_leaves(out), generator_leaves(reference), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    rows = [json.loads(row) for row in log_of(out).splitlines()]
    expected = [json.loads(row) for row in log_of(reference).splitlines()]
    assert [(r["phase"], r["step"]) for r in rows] == [(r["phase"], r["step"]) for r in expected]
    for row, want in zip(rows, expected, strict=True):
        numbers = {k: v for k, v in want.items() if k != "phase"}
        assert {k: v for k, v in row.items() if k != "phase"} == pytest.approx(numbers, rel=1e-5)
