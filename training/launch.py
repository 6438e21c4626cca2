"""``qdzoo launch``: the processes of a multi-process run, started on one machine.

``qdzoo launch --processes N -- train ...`` starts N copies of ``qdzoo train ...
--distributed``, each with the environment :mod:`training.distributed` reads (a free port on
this machine for process 0's coordinator, the number of processes, each one's id) and its own
host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=D``). Their output is
streamed line by line, prefixed with ``[i]``. When one process fails, the launcher says which
and how, stops the others and exits with its status; Ctrl-C (SIGINT) and SIGTERM are passed
on to every process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from zoo.errors import LaunchError

__all__ = ["DISTRIBUTED_COMMANDS", "Launch", "cli_command", "free_port", "launch", "qdzoo_command"]

DISTRIBUTED_COMMANDS = frozenset({"distill", "train"})
"""The qdzoo commands that run over several processes (they take ``--distributed``)."""

STOP_GRACE_S = 10.0
"""Seconds the other processes get to stop after SIGINT/SIGTERM before SIGKILL."""

USAGE_ERROR = 2
"""The exit status of a qdzoo command stopped by a user error (``error: ...``)."""

_HOST_DEVICES = re.compile(r"--xla_force_host_platform_device_count=\S*")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for the coordinator of process 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def qdzoo_command(args: Sequence[str]) -> list[str]:
    """The qdzoo arguments after ``--`` (``train ...`` or ``qdzoo train ...``), with
    ``--distributed`` added.

    Raises:
        LaunchError: no command, or one that is not a qdzoo command that runs distributed.
    """
    args = list(args)
    if args and args[0] == "--":
        args = args[1:]
    if args and os.path.basename(args[0]) in ("qdzoo", "qdzoo.exe"):
        args = args[1:]
    if not args or args[0] not in DISTRIBUTED_COMMANDS:
        given = " ".join(args) if args else "nothing"
        raise LaunchError(
            "qdzoo launch starts a qdzoo command that runs over several processes "
            f"({', '.join(sorted(DISTRIBUTED_COMMANDS))}) after `--`; given {given!r}; e.g. "
            "`qdzoo launch --processes 2 -- train --task arm --out runs/arm`"
        )
    if "--distributed" not in args:
        args.append("--distributed")
    return args


@dataclasses.dataclass
class Launch:
    """The settings of one launch.

    Attributes:
        command: the full command line each process runs (``python -m training.cli train
            ... --distributed``, or any program that joins through the ``QDZOO_*`` variables).
        processes: number of processes.
        devices_per_process: host (CPU) devices each process makes
            (``XLA_FLAGS=--xla_force_host_platform_device_count``).
        gpus_per_process: accelerators each process sees (``JAX_LOCAL_DEVICE_IDS``,
            consecutive ids); ``None``: leave the accelerators alone.
        heartbeat_timeout_s: seconds without a heartbeat after which the runtime stops the
            processes that are left (``None``: the default of :mod:`training.distributed`).
        port: the coordinator's port (``None``: a free one).
        environ: extra environment variables for every process.
    """

    command: list[str]
    processes: int
    devices_per_process: int = 1
    gpus_per_process: int | None = None
    heartbeat_timeout_s: int | None = None
    port: int | None = None
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise LaunchError(
                f"--processes must be >= 1, given {self.processes} (e.g. --processes 2)"
            )
        if self.devices_per_process < 1:
            raise LaunchError(
                f"--devices-per-process must be >= 1, given {self.devices_per_process}"
            )
        if self.gpus_per_process is not None and self.gpus_per_process < 1:
            raise LaunchError(f"--gpus-per-process must be >= 1, given {self.gpus_per_process}")
        if self.heartbeat_timeout_s is not None and self.heartbeat_timeout_s < 1:
            raise LaunchError(
                f"--heartbeat-timeout must be >= 1 second, given {self.heartbeat_timeout_s}"
            )

    def environment(self, process_id: int, port: int) -> dict[str, str]:
        """The environment of process ``process_id``."""
        env = dict(os.environ)
        env.update(self.environ)
        flags = _HOST_DEVICES.sub("", env.get("XLA_FLAGS", "")).strip()
        env["XLA_FLAGS"] = (
            f"{flags} --xla_force_host_platform_device_count={self.devices_per_process}"
        ).strip()
        env["QDZOO_COORDINATOR"] = f"127.0.0.1:{port}"
        env["QDZOO_NUM_PROCESSES"] = str(self.processes)
        env["QDZOO_PROCESS_ID"] = str(process_id)
        env["PYTHONUNBUFFERED"] = "1"
        env["QDZOO_LAUNCHER_PID"] = str(os.getpid())  # they stop if the launcher is killed
        if self.heartbeat_timeout_s is not None:
            env["QDZOO_HEARTBEAT_TIMEOUT"] = str(self.heartbeat_timeout_s)
        if self.gpus_per_process is not None:
            first = process_id * self.gpus_per_process
            ids = range(first, first + self.gpus_per_process)
            env["JAX_LOCAL_DEVICE_IDS"] = ",".join(map(str, ids))
        return env


def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _exit_status(returncode: int) -> int:
    """A process's status as a shell reports it (``128 + signal`` for a signal)."""
    return 128 - returncode if returncode < 0 else returncode


def _stream(index: int, source: IO[str], sink: IO[str], lock: threading.Lock) -> None:
    for line in source:
        with lock:
            sink.write(f"[{index}] {line}" if line.endswith("\n") else f"[{index}] {line}\n")
            sink.flush()


def launch(
    settings: Launch,
    *,
    out: IO[str] | None = None,
    poll_s: float = 0.05,
    on_start: Callable[[list[subprocess.Popen[str]]], Any] | None = None,
) -> int:
    """Run the processes of ``settings`` to the end; return 0 when all succeeded, else the
    status of the first that failed (``128 + signal`` when it was killed; 130 after Ctrl-C).

    Output lines go to ``out`` (default ``sys.stdout``) prefixed with the process index; the
    launcher's own lines start with ``qdzoo launch:``.
    """
    sink = sys.stdout if out is None else out
    lock = threading.Lock()
    port = settings.port or free_port()

    def say(message: str) -> None:
        with lock:
            sink.write(f"qdzoo launch: {message}\n")
            sink.flush()

    procs: list[subprocess.Popen[str]] = []
    threads: list[threading.Thread] = []
    stop_requested: list[int] = []  # the signal received, if any

    def forward(signum: int, _frame: Any) -> None:
        stop_requested.append(signum)

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, forward)
    try:
        for index in range(settings.processes):
            proc = subprocess.Popen(
                settings.command,
                env=settings.environment(index, port),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,  # Ctrl-C reaches the launcher, which passes it on
            )
            procs.append(proc)
            assert proc.stdout is not None
            thread = threading.Thread(
                target=_stream, args=(index, proc.stdout, sink, lock), daemon=True
            )
            thread.start()
            threads.append(thread)
        say(
            f"{settings.processes} processes x {settings.devices_per_process} devices, "
            f"coordinator 127.0.0.1:{port}; pids "
            + " ".join(f"{i}:{p.pid}" for i, p in enumerate(procs))
        )
        if on_start is not None:
            on_start(procs)
        status = _supervise(procs, stop_requested, say, poll_s)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for thread in threads:
            thread.join(timeout=5)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return status


def _supervise(
    procs: list[subprocess.Popen[str]],
    stop_requested: list[int],
    say: Callable[[str], None],
    poll_s: float,
) -> int:
    """Wait for ``procs``; on a failure or a forwarded signal, stop the rest."""
    while True:
        if stop_requested:
            signum = stop_requested[0]
            say(f"received {signal.Signals(signum).name}; passing it on to every process")
            _stop(procs, signum)
            return 130 if signum == signal.SIGINT else 128 + signum
        codes = [proc.poll() for proc in procs]
        failed = [(i, c) for i, c in enumerate(codes) if c is not None and c != 0]
        if failed:
            index, code = failed[0]
            running = [i for i, c in enumerate(codes) if c is None]
            say(
                f"process {index} {_describe(code)}; stopping "
                + (
                    f"the other {len(running)} process(es) ({', '.join(map(str, running))})"
                    if running
                    else "(no other process is running)"
                )
                + (
                    " (a usage error: its message is above)"
                    if code == USAGE_ERROR
                    else ". A run's last checkpoint is intact: the same launch with --resume "
                    "continues it"
                )
            )
            _stop(procs, signal.SIGTERM)
            return _exit_status(code)
        if all(c == 0 for c in codes):
            return 0
        time.sleep(poll_s)


def _stop(procs: list[subprocess.Popen[str]], signum: int) -> None:
    """Send ``signum`` to the running ``procs``; SIGKILL those still running after
    :data:`STOP_GRACE_S`."""
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
    deadline = time.time() + STOP_GRACE_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.0, deadline - time.time()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def cli_command(args: Sequence[str]) -> list[str]:
    """The command line each process of ``qdzoo launch -- ARGS`` runs."""
    return [sys.executable, "-m", "training.cli", *qdzoo_command(args)]
