"""The ``qdzoo launch`` subcommand: its options and what it runs (see :mod:`training.launch`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["add_launch_command", "cmd_launch"]


def cmd_launch(args: argparse.Namespace) -> int:
    """Start ``--processes`` local processes of the qdzoo command after ``--``."""
    from training.launch import Launch, cli_command, launch

    settings = Launch(
        command=cli_command(args.qdzoo_command),
        processes=args.processes,
        devices_per_process=args.devices_per_process,
        gpus_per_process=args.gpus_per_process,
        heartbeat_timeout_s=args.heartbeat_timeout,
        port=args.port,
    )
    return launch(settings)


def add_launch_command(command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``qdzoo launch`` through the CLI's ``command(name, summary, fn, *examples,
    details=...)`` helper."""
    p = command(
        "launch",
        "start N local processes of one distributed run",
        cmd_launch,
        "qdzoo launch --processes 2 --devices-per-process 2 -- \\\n"
        "      train --task arm --evaluations 20000 --out runs/arm",
        "qdzoo launch --processes 2 -- train --out runs/arm --resume   # after a failure",
        details="Starts N processes of `qdzoo COMMAND ... --distributed` on this machine (a "
        "free port for process 0's coordinator, QDZOO_PROCESS_ID 0..N-1, D host devices each), "
        "prefixes their output with [i], stops them all when one fails and exits with its "
        "status; Ctrl-C is passed on. Process 0 writes the run directory. Several machines: "
        "see README, Scaling out.",
    )
    p.add_argument("--processes", type=int, required=True, metavar="N", help="processes")
    p.add_argument(
        "--devices-per-process",
        type=int,
        default=1,
        metavar="D",
        help="CPU (host) devices per process (XLA_FLAGS host device count)",
    )
    p.add_argument(
        "--gpus-per-process",
        type=int,
        default=None,
        metavar="G",
        help="accelerators per process (JAX_LOCAL_DEVICE_IDS; default: JAX decides)",
    )
    p.add_argument(
        "--heartbeat-timeout",
        type=int,
        default=None,
        metavar="S",
        help="seconds of silence after which a process counts as dead and the others stop "
        "(QDZOO_HEARTBEAT_TIMEOUT; default: 60)",
    )
    p.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
    p.add_argument(
        "qdzoo_command",
        nargs=argparse.REMAINDER,
        metavar="-- COMMAND ...",
        help="the qdzoo command every process runs (train ... or distill ...)",
    )
