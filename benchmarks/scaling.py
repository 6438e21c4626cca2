"""Evaluations per second of one QD run over 1, 2 and 4 processes (``jax.distributed``).

Each run is started by :func:`training.launch.launch`, as ``qdzoo launch`` does: N local
processes, one device each (one CPU host device, or one GPU each when the machine has as
many), one population mesh over all of them. Every process builds the run, compiles and runs
one warm-up chunk, then times ``--chunks`` chunks; process 0 reports. Printed side by side:
evaluations per second, the speed-up over one process and the parallel efficiency
(speed-up / devices). Rows ``1 x N`` run the same N devices inside one process (the
single-machine split, no gloo), to tell the cost of the collectives from that of the cores.

On CPU the processes share the machine's cores: with fewer cores than processes the speed-up
is bounded by the cores (the output says how many there are), and the collectives go through
gloo over loopback TCP.

Usage::

    python benchmarks/scaling.py                                   # point-maze, 100 steps
    python benchmarks/scaling.py --processes 1 2 --batch-size 128 --episode-length 50
    python benchmarks/scaling.py --task arm --task-arg dimension=100 --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args: argparse.Namespace) -> None:
    """One process of a timed run (started by the launcher)."""
    from training import distributed

    distributed.initialize()
    import jax

    from training.qd.run import Run, TrainConfig

    task_kwargs = json.loads(args.task_kwargs)
    config = TrainConfig(
        task=args.task,
        task_kwargs=task_kwargs,
        batch_size=args.batch_size,
        evaluations=args.batch_size * args.chunk * (args.chunks + 1),
        chunk=args.chunk,
        seed=0,
    )
    run = Run(config)
    state = run.initial_state()
    state, metrics = run.chunk(state, args.chunk)  # compile and warm up
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(args.chunks):
        state, metrics = run.chunk(state, args.chunk)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    evaluations = args.chunks * args.chunk * run.evaluations_per_iteration
    if distributed.is_writer():
        devices = jax.devices()
        print(
            f"RESULT {evaluations / seconds:.6g} {len(devices)} {devices[0].platform}",
            flush=True,
        )


class Capture:
    """The launcher's output, kept (and echoed when ``verbose``)."""

    def __init__(self, verbose: bool) -> None:
        self.text, self.verbose = "", verbose

    def write(self, text: str) -> None:
        self.text += text
        if self.verbose:
            sys.stdout.write(text)

    def flush(self) -> None:
        pass


def gpu_count() -> int:
    """Accelerators JAX sees on this machine (asked in a subprocess, which then frees them)."""
    probe = "import jax; print(sum(d.platform != 'cpu' for d in jax.devices()))"
    try:
        result = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300
        )
        return int(result.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="point-maze")
    parser.add_argument("--episode-length", type=int, default=100)
    parser.add_argument(
        "--task-arg", action="append", default=[], metavar="NAME=VALUE", help="JSON value"
    )
    parser.add_argument("--task-kwargs", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=5, help="iterations per chunk")
    parser.add_argument("--chunks", type=int, default=4, help="chunks timed (after one warm-up)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--cpu", action="store_true", help="CPU devices even with GPUs")
    parser.add_argument("--verbose", action="store_true", help="show the processes' output")
    parser.add_argument(
        "--no-local", action="store_true", help="skip the one-process rows (1 x N devices)"
    )
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from training.launch import Launch, launch

    task_kwargs = {}
    for item in args.task_arg:
        name, value = item.split("=", 1)
        try:
            task_kwargs[name] = json.loads(value)
        except json.JSONDecodeError:
            task_kwargs[name] = value
    if args.task in ("point-maze",) or args.episode_length != 100:
        task_kwargs.setdefault("episode_length", args.episode_length)
    gpus = 0 if args.cpu else gpu_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"task {args.task} {json.dumps(task_kwargs)}, batch {args.batch_size}, "
        f"{args.chunks} chunks x {args.chunk} iterations timed after one warm-up chunk"
    )
    print(f"machine: {cores} CPU cores, {gpus} GPUs")
    layouts = [(p, 1) for p in args.processes]
    if not args.no_local:  # the same devices in one process: no gloo, same cores
        layouts += [(1, p) for p in args.processes if p > 1]
    rows = []
    base = None
    for processes, per_process in layouts:
        use_gpus = gpus >= processes * per_process
        command = [
            sys.executable, __file__, "--worker", "--task", args.task,
            "--task-kwargs", json.dumps(task_kwargs), "--batch-size", str(args.batch_size),
            "--chunk", str(args.chunk), "--chunks", str(args.chunks),
        ]  # fmt: skip
        settings = Launch(
            command=command,
            processes=processes,
            devices_per_process=per_process,
            gpus_per_process=per_process if use_gpus else None,
            environ={} if use_gpus else {"JAX_PLATFORMS": "cpu"},
            heartbeat_timeout_s=60,
        )
        capture = Capture(args.verbose)
        status = launch(settings, out=capture)  # type: ignore[arg-type]
        found = re.search(r"\[0\] RESULT (\S+) (\d+) (\w+)", capture.text)
        if status != 0 or found is None:
            print(capture.text[-3000:])
            print(f"{processes} x {per_process}: failed (status {status})")
            continue
        rate, devices, platform = float(found[1]), int(found[2]), found[3]
        base = base if base is not None else (rate, devices)
        speedup = rate / base[0]
        efficiency = speedup / (devices / base[1])
        rows.append((f"{processes} x {per_process}", devices, platform, rate, speedup, efficiency))
    print(f"\n{'processes x devices':>19}  {'devices':>7}  {'platform':>8}  {'evals/s':>10}  "
          f"{'speed-up':>8}  {'efficiency':>10}")  # fmt: skip
    for layout, devices, platform, rate, speedup, efficiency in rows:
        print(
            f"{layout:>19}  {devices:>7}  {platform:>8}  {rate:>10.1f}  {speedup:>7.2f}x  "
            f"{100 * efficiency:>9.0f}%"
        )
    print(
        "\nefficiency = speed-up / devices, against the first row; rows '1 x N' split the "
        "batch over N devices of one process (no gloo) on the same cores"
    )
    if gpus < max(args.processes) and cores is not None and cores < max(args.processes):
        print(
            f"\nnote: {cores} CPU cores for up to {max(args.processes)} processes; beyond "
            f"{cores} processes they share cores, so efficiency there measures contention, "
            "not the method"
        )


if __name__ == "__main__":
    main()
