"""Multi-process runs on ``jax.distributed``: one program, every process, one global mesh.

Each process of a multi-controller run executes the same ``qdzoo train --distributed``.
:func:`initialize` connects it to the others (before JAX touches a device), after which
``jax.devices()`` lists the devices of *all* processes and the population mesh spans them:
every device evaluates its share of the batch, and the archive update is replicated, so
every process holds a full copy of the run's state.

Where the processes find each other, in this order:

1. ``QDZOO_COORDINATOR`` (``host:port`` of process 0), ``QDZOO_NUM_PROCESSES`` and
   ``QDZOO_PROCESS_ID`` (what ``qdzoo launch`` sets);
2. JAX's own ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``;
3. whatever ``jax.distributed.initialize()`` detects by itself (SLURM under ``srun``, Open
   MPI under ``mpirun``, Cloud TPU, Kubernetes).

On CPU the collectives go through gloo (TCP), so a run works on any machine. A process that
dies is noticed by the others within ``QDZOO_HEARTBEAT_TIMEOUT`` seconds (default
:data:`DEFAULT_HEARTBEAT_TIMEOUT_S`): the JAX runtime then stops them (a failed collective
raises :class:`~zoo.errors.DistributedError` first when it can), and the run continues from
its last checkpoint with ``--resume``.

Only process 0 writes (metrics log, checkpoints, the final artifact: :func:`is_writer`);
every process reads the checkpoint to resume. Values for the host are read from each
process's own replica (:func:`to_host_local`), never by a collective that only one process
would run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from zoo.errors import DistributedConfigError, DistributedError, QDZooError

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT_S",
    "DEFAULT_INITIALIZATION_TIMEOUT_S",
    "Settings",
    "barrier",
    "initialize",
    "is_initialized",
    "is_multiprocess",
    "is_writer",
    "leave_on_failure",
    "peer_lost",
    "process_index",
    "replicate_global",
    "settings_from_environment",
    "to_host_local",
]

DEFAULT_HEARTBEAT_TIMEOUT_S = 60
"""Seconds without a heartbeat after which a process counts as dead (JAX's default: 100)."""
DEFAULT_INITIALIZATION_TIMEOUT_S = 300
"""Seconds a process waits for all the others to connect."""

ENVIRONMENT = {
    "coordinator": ("QDZOO_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("QDZOO_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("QDZOO_PROCESS_ID", "JAX_PROCESS_ID"),
}
"""Where each setting is read from, first match wins."""
HEARTBEAT_VARIABLE = "QDZOO_HEARTBEAT_TIMEOUT"
INITIALIZATION_VARIABLE = "QDZOO_INITIALIZATION_TIMEOUT"
FIX = (
    "set QDZOO_COORDINATOR=HOST:PORT (the address of process 0), QDZOO_NUM_PROCESSES=N and "
    "QDZOO_PROCESS_ID=I (0..N-1) in every process, run under `srun` (SLURM), or start the "
    "processes of one machine with `qdzoo launch --processes N -- train ...`"
)


@dataclasses.dataclass(frozen=True)
class Settings:
    """How this process joins a multi-process run.

    Attributes:
        coordinator: ``host:port`` of process 0's coordination service (``None``: let JAX
            detect the cluster).
        num_processes: processes in the run (``None``: detected).
        process_id: this process's index, ``0 <= process_id < num_processes`` (``None``:
            detected).
        heartbeat_timeout_s: seconds without a heartbeat after which a process counts as
            dead and the others stop.
        initialization_timeout_s: seconds to wait for every process to connect.
    """

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    heartbeat_timeout_s: int = DEFAULT_HEARTBEAT_TIMEOUT_S
    initialization_timeout_s: int = DEFAULT_INITIALIZATION_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.coordinator is not None:
            host, _, port = self.coordinator.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise DistributedConfigError(
                    f"the coordinator address must be HOST:PORT (e.g. 10.0.0.1:12345, the "
                    f"machine of process 0 and a free port), given {self.coordinator!r}; {FIX}"
                )
        if self.num_processes is not None and self.num_processes < 1:
            raise DistributedConfigError(
                f"the number of processes must be >= 1, given {self.num_processes}; {FIX}"
            )
        if self.process_id is not None and (
            self.process_id < 0
            or (self.num_processes is not None and self.process_id >= self.num_processes)
        ):
            raise DistributedConfigError(
                f"the process id must be in 0..{(self.num_processes or 1) - 1} (one per "
                f"process, 0 on the coordinator's machine), given {self.process_id}; {FIX}"
            )
        for name in ("heartbeat_timeout_s", "initialization_timeout_s"):
            if getattr(self, name) < 1:
                raise DistributedConfigError(
                    f"{name} must be >= 1 second, given {getattr(self, name)}"
                )


def _integer(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DistributedConfigError(
            f"{name} must be an integer, given {name}={value!r}; {FIX}"
        ) from None


def settings_from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """The :class:`Settings` the environment gives (``os.environ`` by default).

    Raises:
        DistributedConfigError: a variable that is not a number or out of range, or a run
            half described (a coordinator without the number of processes, ...).
    """
    environ = os.environ if environ is None else environ
    found: dict[str, tuple[str, str]] = {}  # setting -> (variable, value)
    for setting, names in ENVIRONMENT.items():
        for name in names:
            value = environ.get(name)
            if value is not None and value.strip():
                found[setting] = (name, value.strip())
                break
    values: dict[str, Any] = {}
    for setting, (name, value) in found.items():
        values[setting] = value if setting == "coordinator" else _integer({name: value}, name)
    if found and len(found) < len(ENVIRONMENT) and "SLURM_JOB_ID" not in environ:
        missing = [ENVIRONMENT[s][0] for s in ENVIRONMENT if s not in found]
        given = ", ".join(f"{name}={value}" for name, value in found.values())
        raise DistributedConfigError(
            f"a multi-process run needs the coordinator, the number of processes and the "
            f"process id; given {given}, missing {', '.join(missing)}; {FIX}"
        )
    heartbeat = _integer(environ, HEARTBEAT_VARIABLE)
    initialization = _integer(environ, INITIALIZATION_VARIABLE)
    return Settings(
        **values,
        heartbeat_timeout_s=DEFAULT_HEARTBEAT_TIMEOUT_S if heartbeat is None else heartbeat,
        initialization_timeout_s=(
            DEFAULT_INITIALIZATION_TIMEOUT_S if initialization is None else initialization
        ),
    )


_settings: Settings | None = None


def initialize(settings: Settings | None = None) -> Settings:
    """Join the multi-process run (once; later calls return the first settings).

    Call before anything uses a JAX device. On CPU the collectives use gloo.

    Raises:
        DistributedConfigError: no coordinator given and none detected, or bad settings.
        DistributedError: JAX was already started in this process, or the processes could
            not connect within the initialization timeout.
    """
    global _settings
    if _settings is not None:
        return _settings
    settings = settings_from_environment() if settings is None else settings
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise DistributedError(
            "--distributed: JAX already started its devices in this process, so it can no "
            "longer join a multi-process run; initialize training.distributed before any JAX "
            "computation (the qdzoo CLI does)"
        )
    _wait_for_coordinator(settings)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service catches SIGTERM (to sync a checkpoint step that qdzoo does
    # not use); without it SIGTERM stops a process, as `qdzoo launch`, SLURM and users expect.
    jax.config.update("jax_enable_preemption_service", False)
    try:
        jax.distributed.initialize(
            coordinator_address=settings.coordinator,
            num_processes=settings.num_processes,
            process_id=settings.process_id,
            initialization_timeout=settings.initialization_timeout_s,
            heartbeat_timeout_seconds=settings.heartbeat_timeout_s,
            shutdown_timeout_seconds=settings.heartbeat_timeout_s,
        )
    except ValueError as err:
        raise DistributedConfigError(
            f"--distributed needs to know where process 0 is, how many processes there are "
            f"and which one this is, and found no cluster to ask ({err}); {FIX}"
        ) from None
    except RuntimeError as err:  # JaxRuntimeError (JAX may also abort the process instead)
        raise _not_joined(settings, str(err)) from None
    _settings = dataclasses.replace(
        settings, num_processes=jax.process_count(), process_id=jax.process_index()
    )
    _follow_launcher()
    return _settings


def _follow_launcher(poll_s: float = 1.0) -> None:
    """Under ``qdzoo launch`` (``QDZOO_LAUNCHER_PID``): end this process when the launcher
    is gone (killed by SIGKILL, say), instead of running on unsupervised."""
    launcher = os.environ.get("QDZOO_LAUNCHER_PID", "")
    if not launcher.isdigit() or os.getppid() != int(launcher):
        return

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(poll_s)
        with contextlib.suppress(OSError):  # the launcher read the other end of stderr
            print(
                f"qdzoo: process {process_index()}: its launcher (pid {launcher}) is gone; "
                "stopping (continue the run with --resume)",
                file=sys.stderr,
                flush=True,
            )
        os._exit(1)

    threading.Thread(target=watch, name="qdzoo-launcher-watch", daemon=True).start()


def _not_joined(settings: Settings, reason: str) -> DistributedError:
    reason = reason.strip().splitlines()[0] if reason.strip() else "no answer"
    return DistributedError(
        f"--distributed: process {settings.process_id} of {settings.num_processes} could not "
        f"join the run at {settings.coordinator or '(detected)'} within "
        f"{settings.initialization_timeout_s} s ({reason}); start process 0 (it serves the "
        f"coordinator) and the others within that time (raise it with "
        f"{INITIALIZATION_VARIABLE}=SECONDS), and check that HOST:PORT is process 0's machine "
        "and reachable from every machine"
    )


def _wait_for_coordinator(settings: Settings) -> None:
    """For a process other than 0: wait until the coordinator's port accepts connections.

    JAX ends a process that cannot reach the coordinator with a fatal log line; this turns
    the common case (process 0 not started, wrong address) into a
    :class:`~zoo.errors.DistributedError` that says what to check.
    """
    if settings.coordinator is None or not settings.process_id:
        return
    host, _, port = settings.coordinator.rpartition(":")
    host = host.strip("[]")
    deadline = time.monotonic() + settings.initialization_timeout_s
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise _not_joined(settings, f"{type(err).__name__}: {err}") from None
            time.sleep(0.2)


def is_initialized() -> bool:
    """Whether :func:`initialize` joined a run in this process."""
    return _settings is not None


def is_multiprocess() -> bool:
    """Whether this process is one of several (False before :func:`initialize`)."""
    return _settings is not None and (_settings.num_processes or 1) > 1


def process_index() -> int:
    """This process's index (0 without a multi-process run)."""
    return 0 if _settings is None else jax.process_index()


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0, or the only process)."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier ``name`` (no-op with one process)."""
    if is_multiprocess():
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _spans_other_processes(mesh: Mesh) -> bool:
    return any(d.process_index != jax.process_index() for d in mesh.devices.flat)


def replicate_global(tree: Any, mesh: Mesh) -> Any:
    """Place ``tree`` (the same values in every process) on every device of ``mesh``, the
    devices of other processes included: each process puts its own copy on its devices.

    With a mesh of this process's devices only it is ``jax.device_put``; under tracing
    (``jax.eval_shape``) leaves are returned as they are.
    """
    sharding = NamedSharding(mesh, P())
    if not _spans_other_processes(mesh):
        return jax.device_put(tree, sharding)
    local_devices = sorted(sharding.addressable_devices, key=lambda d: d.id)

    def put(leaf: Any) -> Any:
        if isinstance(leaf, jax.core.Tracer):
            return leaf
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return leaf  # already global
        array = leaf if isinstance(leaf, jax.Array) else jax.numpy.asarray(leaf)
        shards = [jax.device_put(array, device) for device in local_devices]
        if any(isinstance(shard, jax.core.Tracer) for shard in shards):
            return leaf  # traced (jax.eval_shape of a checkpoint template): shapes only
        return jax.make_array_from_single_device_arrays(array.shape, sharding, shards)

    return jax.tree_util.tree_map(put, tree)


def to_host_local(tree: Any) -> Any:
    """``tree`` with every array this process cannot read whole replaced by its local
    replica (a replicated global array) or by the gathered array (a sharded one).

    Reading a replica is no collective, so one process may do it alone (e.g. to save a
    checkpoint); gathering a sharded array is one, which every process must run.
    """

    def local(leaf: Any) -> Any:
        if not isinstance(leaf, jax.Array) or leaf.is_fully_addressable:
            return leaf
        if leaf.is_fully_replicated:
            return leaf.addressable_data(0)
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))

    return jax.tree_util.tree_map(local, tree)


@contextlib.contextmanager
def leave_on_failure(interrupted: Callable[[], str]) -> Iterator[None]:
    """In a multi-process run, end this process at once when the body raises, after printing
    what the ``qdzoo`` CLI prints (``error: ...`` and status 2 for a user error; the
    ``interrupted()`` message and 130 for Ctrl-C; a traceback and 1 otherwise).

    A normal exit would wait in ``jax.distributed``'s shutdown barrier for the other processes
    while they wait for this one in a collective; ending at once lets them notice (heartbeat)
    or ``qdzoo launch`` stop them. Checkpoints are written atomically, so ``--resume`` works.
    With one process the exception propagates as usual.
    """
    try:
        yield
    except BaseException as err:
        if not is_multiprocess() or isinstance(err, SystemExit):
            raise
        if isinstance(err, QDZooError):
            print(f"error: {err}", file=sys.stderr)
            status = 2
        elif isinstance(err, KeyboardInterrupt):
            print(f"\n{str(err) or interrupted()}", file=sys.stderr)
            status = 130
        else:
            traceback.print_exc()
            status = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def peer_lost(err: BaseException, where: str) -> DistributedError:
    """The error to raise when a collective of a multi-process run failed with ``err``
    (another process has most likely died); ``where`` says what to do next."""
    text = str(err).strip()
    first = text.splitlines()[0][:300] if text else type(err).__name__
    return DistributedError(
        f"process {process_index()} of {jax.process_count()}: a collective with the other "
        f"processes failed ({first}); another process has most likely died or lost its "
        f"network (its own output says why). {where}"
    )
