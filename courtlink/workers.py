"""``courtlink media-node --workers N``: N media nodes on one machine, one per core, under one supervisor.

One Python process forwards on one core (the GIL), so a machine with several cores runs several media nodes. The
supervisor starts N worker processes; each is a full ``courtlink media-node`` (its own
:class:`media.node.InProcessNode`, frame pipe and :class:`media.service.NodeService`) registered on its own in the
node registry, so the existing node pool (:mod:`signaling.node_pool`) places each hearing on one worker and moves
it when its worker is lost. What each worker gets (:func:`plan_workers`, the same computation in the supervisor
and in the worker):

- node id ``<node_id>-w<k>`` (k = 0..N-1), the same region;
- its own slice of ``[media] udp_port_min..udp_port_max`` (the range split evenly, the last slice takes the
  remainder); a range smaller than N ports is refused;
- frame pipe port ``frame_port + k`` when ``frame_port`` is set (0: any free port each), and ``frame_advertise``
  ``host:port`` becomes ``host:port+k``;
- ``capacity_peers // N`` (at least 1): the machine's capacity shared, as its UDP range is;
- ``[cluster] process_id`` ``<process_id>-w<k>`` when set (each process its own reply channel on the bus);
- pinned to one CPU (``os.sched_setaffinity``): the k-th (mod their count) of the CPUs the supervisor may use,
  where the platform allows; a worker that cannot be pinned runs unpinned and says so (``media_worker_not_pinned``).

The supervisor (:class:`Supervisor`):

- restarts a worker that dies (any exit but 0) after a back-off that doubles from ``FIRST_BACKOFF_SECONDS`` up
  to ``MAX_BACKOFF_SECONDS`` while it keeps dying young (a worker that ran ``STABLE_SECONDS`` starts the count
  again): a worker that cannot start (its frame port taken, Redis away) is retried, never in a tight loop;
- takes a dead worker out of the node registry at once (releases its node-id lease and deletes its heartbeat
  record, by the lease owner it gave that worker's life), so signaling moves its hearings within a second rather
  than after the record's 6 s time to live, and the new life of the worker takes the id without waiting;
- forwards SIGTERM and SIGINT to every worker and exits once all have stopped (0 when all stopped cleanly);
  a worker that exits 0 by itself was stopped on purpose and is not restarted;
- workers get SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG`` on Linux), so a killed supervisor leaves no
  orphaned node behind.

Log facts: ``media_worker_started``, ``media_worker_exited``, ``media_worker_deregistered``, ``media_worker_stopped``,
``media_workers_stopping``. ``--workers 1`` (the default) runs one node in the process itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from courtlink.logs import configure_logging
from courtlink.node_process import READY as NODE_READY
from courtlink.settings import ConfigError, Settings
from protocol.cluster import node_lease_key, node_record_key
from rooms.backends import open_bus
from rooms.bus import BusError
from rooms.tasks import cancel_and_wait

log = structlog.get_logger("courtlink.workers")

MAX_WORKERS = 64
"""The most workers one supervisor runs (one per core is the intent)."""

FIRST_BACKOFF_SECONDS = 0.5
"""Delay before restarting a worker that died after running a while."""

MAX_BACKOFF_SECONDS = 30.0
"""The longest delay between two starts of a worker that keeps dying."""

STABLE_SECONDS = 60.0
"""A worker that ran this long before it died is restarted after ``FIRST_BACKOFF_SECONDS`` again."""

STOP_GRACE_SECONDS = 25.0
"""How long the supervisor waits for its workers after forwarding a stop signal before it kills them."""

DEREGISTER_SECONDS = 3.0
"""Bound on taking a dead worker out of the registry (Redis may be away: its record then lapses by itself)."""

SUPERVISOR_READY = "courtlink: media node supervisor {node_id} ready: {count} workers ({workers})"
"""Printed once every worker printed its own ready line (tests wait for it)."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerPlan:
    """What worker ``index`` of a supervisor runs as."""

    index: int
    node_id: str
    udp_ports: tuple[int, int]
    """(min, max) of its slice; (0, 0): any port."""
    frame_port: int
    frame_advertise: str | None
    capacity_peers: int
    process_id: str | None


def worker_node_id(node_id: str, index: int) -> str:
    """The node id of worker ``index``."""
    return f"{node_id}-w{index}"


def plan_workers(settings: Settings, node_id: str, count: int) -> list[WorkerPlan]:
    """Each worker's share of the node's settings; :class:`ConfigError` (one line) when they cannot be shared."""
    if not 1 <= count <= MAX_WORKERS:
        raise ConfigError(f"--workers must be between 1 and {MAX_WORKERS} (one per core), not {count}")
    media, process_id = settings.media, settings.cluster.process_id
    low, high = media.udp_port_min, media.udp_port_max
    size = high - low + 1 if low else 0
    if low and size < count:
        raise ConfigError(
            f"media.udp_port_min..udp_port_max ({low}-{high}, {size} ports) cannot be shared by {count} workers: "
            "each needs ports of its own (size the range to capacity_peers plus a margin)"
        )
    if media.frame_port and media.frame_port + count - 1 > 65535:
        raise ConfigError(f"media.frame_port {media.frame_port} + {count} workers goes beyond port 65535")
    advertised: tuple[str, int] | None = None
    if media.frame_advertise is not None:
        host, _, port = media.frame_advertise.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) + count - 1 <= 65535:
            raise ConfigError(
                f"media.frame_advertise {media.frame_advertise!r} must be host:port (a port free for {count} "
                "workers: worker k advertises port + k)"
            )
        advertised = (host, int(port))
    plans: list[WorkerPlan] = []
    for k in range(count):
        wid = worker_node_id(node_id, k)
        if len(wid) > 128:
            raise ConfigError(f"node id {node_id!r} is too long for worker ids ({wid!r}: at most 128 characters)")
        share = size // count
        ports = (low + k * share, high if k == count - 1 else low + (k + 1) * share - 1) if low else (0, 0)
        plans.append(
            WorkerPlan(
                index=k,
                node_id=wid,
                udp_ports=ports,
                frame_port=media.frame_port + k if media.frame_port else 0,
                frame_advertise=f"{advertised[0]}:{advertised[1] + k}" if advertised else None,
                capacity_peers=max(1, media.capacity_peers // count),
                process_id=f"{process_id}-w{k}"[:128] if process_id else None,
            )
        )
    return plans


def worker_settings(settings: Settings, plan: WorkerPlan) -> Settings:
    """The settings worker ``plan.index`` runs with (its node id, ports, capacity and bus process id)."""
    media = settings.media.model_copy(
        update={
            "node_id": plan.node_id,
            "udp_port_min": plan.udp_ports[0],
            "udp_port_max": plan.udp_ports[1],
            "frame_port": plan.frame_port,
            "frame_advertise": plan.frame_advertise,
            "capacity_peers": plan.capacity_peers,
        }
    )
    cluster = settings.cluster.model_copy(update={"process_id": plan.process_id})
    return settings.model_copy(update={"media": media, "cluster": cluster})


def worker_cpu(index: int) -> int | None:
    """The CPU worker ``index`` is pinned to: the index-th (mod their count) of those this process may use."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None
    return allowed[index % len(allowed)] if allowed else None


def prepare_worker(index: int, supervisor_pid: int) -> int | None:
    """In a worker, before anything else: stop when the supervisor dies, and pin to the worker's CPU.

    Returns the CPU pinned to, None when the platform did not allow it (logged ``media_worker_not_pinned``).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: a killed supervisor leaves its workers running
        pass
    if os.getppid() != supervisor_pid:  # the supervisor died before the line above: nobody would stop this worker
        raise SystemExit(0)
    cpu = worker_cpu(index)
    if cpu is None:
        log.warning("media_worker_not_pinned", worker=index, reason="no CPU affinity on this platform")
        return None
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as exc:
        log.warning("media_worker_not_pinned", worker=index, cpu=cpu, reason=str(exc))
        return None
    return cpu


def backoff_seconds(failures: int) -> float:
    """The delay before the next start of a worker that died ``failures`` times in a row (young each time)."""
    return float(min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** max(0, failures - 1)))


@dataclass
class _Worker:
    plan: WorkerPlan
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    code: int | None = None
    """The exit code of its last life (a negative number: killed by that signal)."""


class Supervisor:
    """Runs the workers of one ``courtlink media-node --workers N`` (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        node_id: str,
        count: int,
        *,
        region: str | None = None,
        config: str | None = None,
    ) -> None:
        self._settings = settings
        self._node_id = node_id
        self._count = count
        self._region = region
        self._config = config
        self._workers = [_Worker(plan) for plan in plan_workers(settings, node_id, count)]
        self._stop = asyncio.Event()

    def _command(self, worker: _Worker, owner: str) -> list[str]:
        argv = [sys.executable, "-m", "courtlink.cli", "media-node", "--node-id", self._node_id]
        argv += ["--workers", str(self._count), "--worker", str(worker.plan.index)]
        argv += ["--worker-owner", owner, "--supervisor-pid", str(os.getpid())]
        if self._region is not None:
            argv += ["--region", self._region]
        if self._config is not None:
            argv += ["--config", self._config]
        return argv

    async def run(self) -> int:
        """Run the workers until a stop signal (or until all stopped by themselves); the exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if self._count > cores:
            log.warning("media_workers_share_cores", node_id=self._node_id, workers=self._count, cores=cores)
        announce = loop.create_task(self._announce())
        try:
            await asyncio.gather(*(self._keep(w) for w in self._workers))
        finally:
            await cancel_and_wait(announce)
        failed = {w.plan.node_id: w.code for w in self._workers if w.code != 0}
        log.info("media_workers_stopped", node_id=self._node_id, failed=failed or None)
        return 0 if not failed else 1

    async def _announce(self) -> None:
        await asyncio.gather(*(w.ready.wait() for w in self._workers))
        ids = ", ".join(w.plan.node_id for w in self._workers)
        log.info("media_workers_started", node_id=self._node_id, workers=self._count)  # before the ready line
        print(SUPERVISOR_READY.format(node_id=self._node_id, count=self._count, workers=ids), flush=True)

    def _on_signal(self, sig: int) -> None:
        """Forward the stop signal to every worker (again on a second signal); kill what still runs after a grace."""
        first = not self._stop.is_set()
        self._stop.set()
        if first:
            log.info("media_workers_stopping", node_id=self._node_id, signal=signal.Signals(sig).name)
            asyncio.get_running_loop().call_later(STOP_GRACE_SECONDS, self._kill_all)
        for worker in self._workers:
            self._send(worker, sig)

    @staticmethod
    def _send(worker: _Worker, sig: int) -> None:
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(sig)

    def _kill_all(self) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.returncode is None:
                log.warning("media_worker_killed", node_id=worker.plan.node_id, pid=worker.proc.pid)
                self._send(worker, signal.SIGKILL)

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker, again and again after it dies, until it stops cleanly or the supervisor stops."""
        plan, failures, life = worker.plan, 0, 0
        while not self._stop.is_set():
            life += 1
            owner = f"{plan.node_id}-{uuid.uuid4().hex[:12]}"
            started = time.monotonic()
            try:
                argv = self._command(worker, owner)
                proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
            except OSError as exc:  # no such interpreter, out of processes: the same back-off as a dying worker
                log.error("media_worker_not_started", node_id=plan.node_id, error=str(exc))
                code = worker.code = None
            else:
                worker.proc = proc
                if self._stop.is_set():  # the stop signal came while it was being started
                    self._send(worker, signal.SIGTERM)
                log.info(
                    "media_worker_started", worker=plan.index, node_id=plan.node_id, pid=proc.pid,
                    cpu=worker_cpu(plan.index), udp_ports=list(plan.udp_ports), life=life,
                )  # fmt: skip
                assert proc.stdout is not None
                await self._relay(proc.stdout, worker)
                code = await proc.wait()
                worker.code = code
            uptime = round(time.monotonic() - started, 3)
            if code == 0:
                log.info("media_worker_stopped", worker=plan.index, node_id=plan.node_id, uptime_seconds=uptime)
                return
            if code is not None:
                await self._deregister(plan.node_id, owner)
            if self._stop.is_set():
                log.warning("media_worker_exited", worker=plan.index, node_id=plan.node_id, code=code, stopping=True)
                return
            failures = 1 if uptime >= STABLE_SECONDS else failures + 1
            delay = backoff_seconds(failures)
            log.warning(
                "media_worker_exited", worker=plan.index, node_id=plan.node_id, code=code,
                signal=signal.Signals(-code).name if code is not None and code < 0 else None,
                uptime_seconds=uptime, failures_in_row=failures, restart_in_seconds=delay,
            )  # fmt: skip
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _relay(self, stream: asyncio.StreamReader, worker: _Worker) -> None:
        """Pass the worker's standard output on (it prints its ready line there) and notice its ready line."""
        ready = NODE_READY.split("{", 1)[0] + worker.plan.node_id + " ready"
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line beyond the stream's limit: pass on what there is
                line = await stream.read(65536)
            if not line:
                return
            with contextlib.suppress(OSError):  # nobody reads our output any more: the workers run on regardless
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            if line.decode(errors="replace").startswith(ready):
                worker.ready.set()

    async def _deregister(self, node_id: str, owner: str) -> None:
        """Take a dead worker's record out of the registry now (its lease first: only if this life held it)."""
        url = self._settings.redis_url
        if not url:
            return
        try:
            async with asyncio.timeout(DEREGISTER_SECONDS):
                bus, records = await open_bus(url, process_id=f"supervisor-{node_id}-{os.getpid()}")
                try:
                    if await records.release(node_lease_key(node_id), owner):
                        await records.delete(node_record_key(node_id))
                        log.info("media_worker_deregistered", node_id=node_id)
                finally:
                    await records.close()
                    await bus.close()
        except (BusError, OSError, TimeoutError) as exc:
            log.warning("media_worker_not_deregistered", node_id=node_id, error=str(exc) or type(exc).__name__)


async def run_supervisor(
    settings: Settings, node_id: str, count: int, *, region: str | None = None, config: str | None = None
) -> int:
    """Run ``count`` workers of node ``node_id`` until SIGTERM/SIGINT; the exit code (0: all stopped cleanly)."""
    configure_logging(settings.log_level, settings.log_format)
    return await Supervisor(settings, node_id, count, region=region, config=config).run()


__all__: Sequence[str] = [
    "MAX_WORKERS",
    "SUPERVISOR_READY",
    "Supervisor",
    "WorkerPlan",
    "backoff_seconds",
    "plan_workers",
    "prepare_worker",
    "run_supervisor",
    "worker_cpu",
    "worker_node_id",
    "worker_settings",
]
