"""Size PostgreSQL and Odoo to the machine. `compute` is pure; reading the machine is separate.

Recomputed at every boot (odoo-tune.service, before PostgreSQL and Odoo start), so an
instance resized to more or less RAM/CPUs adapts on its next boot. Operator overrides
(settings.yaml tuning keys) always win; when one contradicts the sizing rules we keep it
and say so in `notes` instead of silently "fixing" it.

The model, in order:
1. PostgreSQL: shared_buffers 25% of RAM, effective_cache_size 50% (a planner hint, not
   an allocation), maintenance_work_mem RAM/16 within 64 MB..2 GB.
2. RAM left for Odoo = RAM - OS reserve - PostgreSQL (shared_buffers + backend overhead)
   - the prefork master and the gevent process. Odoo's deployment guidance says one
   worker needs on average 0.8×150 MB + 0.2×1 GB (80% light requests, 20% heavy ones),
   so that budget buys `slots` worker processes; cron workers are processes too.
3. workers ≈ 2×CPU+1 (Odoo's guidance) but never more than the RAM slots allow, and at
   least 1: the NGINX site sends /websocket to the gevent process, which only exists in
   prefork mode (workers >= 1).
4. limit_memory_soft/hard are *virtual* memory limits in Odoo (soft: recycle after the
   request, hard: RLIMIT_AS). They stay below RAM on small machines so one runaway
   request is killed by Odoo long before the kernel OOM-killer picks PostgreSQL.
5. Every Odoo process (HTTP workers, cron workers, gevent, plus the master/CLI runs)
   keeps its own pool of up to db_maxconn connections, so
   max_connections >= processes × db_maxconn + margin (superuser_reserved_connections
   and admin tools). When that would exceed what the RAM sensibly supports, db_maxconn
   shrinks rather than PostgreSQL refusing connections under load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .settings import GiB, MiB, TuningOverrides

# Odoo's sizing guidance: RAM ≈ workers × (0.8 × 150 MB + 0.2 × 1 GB).
PER_WORKER_BYTES = int((0.8 * 150 + 0.2 * 1024) * MiB)
OS_RESERVE_MIN = 256 * MiB  # kernel, sshd, NGINX, fail2ban, journald, cloud-init agents
OS_RESERVE_MAX = 2 * GiB
PG_OVERHEAD_MIN = 64 * MiB  # backends, autovacuum, WAL buffers on top of shared_buffers
ODOO_FIXED_BYTES = 160 * MiB  # prefork master + gevent (websocket) process when idle
# Odoo's own defaults are soft 2048 MiB / hard 2560 MiB: never go above them.
ODOO_SOFT_MAX = 2048 * MiB
ODOO_HARD_MAX = 2560 * MiB
# Below ~640/768 MiB of *virtual* size a freshly forked Odoo 18 worker would be recycled
# after nearly every request; these floors follow Odoo's sample production config.
ODOO_SOFT_FLOOR = 640 * MiB
ODOO_HARD_FLOOR = 768 * MiB
# Odoo's defaults (60/120 s) abort ordinary imports and large reports; 600/1200 s is the
# value in Odoo's deployment documentation example. Not size-dependent on purpose.
LIMIT_TIME_CPU = 600
LIMIT_TIME_REAL = 1200
DEFAULT_DB_MAXCONN = 16  # a prefork worker serves one request at a time: 64 is waste
MIN_DB_MAXCONN = 4
CONNECTION_MARGIN = 10  # 3 superuser_reserved_connections + psql/pg_dump/monitoring
MIN_MAX_CONNECTIONS = 100  # PostgreSQL's default; idle backends are cheap
MAX_MAX_CONNECTIONS = 1000


@dataclass(frozen=True)
class Machine:
    ram_bytes: int
    cpus: int


@dataclass(frozen=True)
class Tuning:
    ram_bytes: int
    cpus: int
    # PostgreSQL
    shared_buffers: int
    effective_cache_size: int
    work_mem: int
    maintenance_work_mem: int
    max_connections: int
    checkpoint_completion_target: float
    random_page_cost: float
    # Odoo
    workers: int
    max_cron_threads: int
    limit_memory_soft: int
    limit_memory_hard: int
    limit_time_cpu: int
    limit_time_real: int
    db_maxconn: int
    # Accounting, so tests and logs can check the reasoning.
    odoo_budget_bytes: int
    worker_slots: int
    odoo_processes: int
    notes: tuple[str, ...] = ()

    @property
    def pool_connections(self) -> int:
        """Connections Odoo may open if every process fills its pool."""
        return self.odoo_processes * self.db_maxconn


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _floor_mib(value: int) -> int:
    return max(0, value) // MiB * MiB


def compute(ram_bytes: int, cpus: int, overrides: TuningOverrides | None = None) -> Tuning:
    """Tuning for a machine with `ram_bytes` of RAM and `cpus` usable CPUs. Pure."""
    if ram_bytes <= 0 or cpus <= 0:
        raise ValueError(f"need positive RAM and CPU count, got ram={ram_bytes} cpus={cpus}")
    o = overrides or TuningOverrides()
    notes: list[str] = []

    # 1. PostgreSQL memory.
    shared_buffers = o.shared_buffers or _floor_mib(ram_bytes // 4)
    effective_cache_size = o.effective_cache_size or _floor_mib(ram_bytes // 2)
    maintenance_work_mem = o.maintenance_work_mem or _clamp(_floor_mib(ram_bytes // 16), 64 * MiB, 2 * GiB)
    if o.shared_buffers and o.shared_buffers > ram_bytes // 2:
        notes.append(
            f"settings.shared_buffers: {_human(o.shared_buffers)} is more than half of the "
            f"{_human(ram_bytes)} RAM; kept because operator overrides win"
        )

    # 2. What is left for Odoo.
    os_reserve = _clamp(ram_bytes * 5 // 100, OS_RESERVE_MIN, OS_RESERVE_MAX)
    pg_reserve = shared_buffers + max(PG_OVERHEAD_MIN, ram_bytes * 5 // 100)
    budget = max(0, ram_bytes - os_reserve - pg_reserve - ODOO_FIXED_BYTES)
    slots = budget // PER_WORKER_BYTES

    # 3. Processes.
    if o.max_cron_threads is not None:
        cron = o.max_cron_threads
    else:
        # Two cron workers only when RAM has room for them next to real HTTP workers.
        cron = 1 if slots < 4 else 2
    workers_fit = max(1, min(2 * cpus + 1, slots - cron))
    workers = o.workers or workers_fit
    if o.workers and o.workers > max(1, slots - cron):
        notes.append(
            f"settings.workers: {o.workers} exceeds the RAM budget of {max(1, slots - cron)} "
            f"worker(s) (Odoo's guidance: about {PER_WORKER_BYTES // MiB} MB per worker); "
            "kept because operator overrides win"
        )

    # 4. Per-process memory limits (virtual size), below RAM on small machines.
    hard = min(ODOO_HARD_MAX, max(ODOO_HARD_FLOOR, ram_bytes * 3 // 4), ram_bytes * 9 // 10)
    soft = min(ODOO_SOFT_MAX, max(ODOO_SOFT_FLOOR, ram_bytes * 6 // 10), hard * 85 // 100)
    hard = _floor_mib(o.limit_memory_hard or hard)
    soft = _floor_mib(o.limit_memory_soft or soft)
    if soft >= hard:
        notes.append(
            f"settings.limit_memory_soft: {_human(soft)} is not below limit_memory_hard "
            f"{_human(hard)}, so workers are killed instead of recycled; kept because operator overrides win"
        )

    # 5. Connection pools vs max_connections.
    processes = workers + cron + 2  # + gevent process + master / odoo-bin CLI runs
    cap = _clamp(ram_bytes // (8 * MiB), MIN_MAX_CONNECTIONS, MAX_MAX_CONNECTIONS)
    if o.db_maxconn and o.max_connections:
        db_maxconn, max_connections = o.db_maxconn, o.max_connections
    elif o.db_maxconn:
        db_maxconn = o.db_maxconn
        max_connections = max(MIN_MAX_CONNECTIONS, processes * db_maxconn + CONNECTION_MARGIN)
    elif o.max_connections:
        max_connections = o.max_connections
        db_maxconn = _clamp((max_connections - CONNECTION_MARGIN) // processes, 2, DEFAULT_DB_MAXCONN)
    else:
        db_maxconn = DEFAULT_DB_MAXCONN
        if processes * db_maxconn + CONNECTION_MARGIN > cap:
            db_maxconn = max(MIN_DB_MAXCONN, (cap - CONNECTION_MARGIN) // processes)
        max_connections = max(MIN_MAX_CONNECTIONS, processes * db_maxconn + CONNECTION_MARGIN)
    if max_connections < processes * db_maxconn + CONNECTION_MARGIN:
        notes.append(
            f"settings.max_connections: {max_connections} is below Odoo's pools "
            f"({processes} processes × db_maxconn {db_maxconn} + {CONNECTION_MARGIN}); "
            "expect 'connection pool is full' or 'too many clients' errors under load"
        )

    # work_mem is per sort/hash node per backend: size it for a busy, not idle, server.
    work_mem = o.work_mem or _clamp(
        _floor_mib((ram_bytes - shared_buffers) // (max_connections * 3)), 4 * MiB, 64 * MiB
    )

    return Tuning(
        ram_bytes=ram_bytes,
        cpus=cpus,
        shared_buffers=shared_buffers,
        effective_cache_size=effective_cache_size,
        work_mem=work_mem,
        maintenance_work_mem=maintenance_work_mem,
        max_connections=max_connections,
        checkpoint_completion_target=0.9,
        random_page_cost=1.1,  # cloud disks are SSD-backed: random reads are cheap
        workers=workers,
        max_cron_threads=cron,
        limit_memory_soft=soft,
        limit_memory_hard=hard,
        limit_time_cpu=o.limit_time_cpu or LIMIT_TIME_CPU,
        limit_time_real=o.limit_time_real or LIMIT_TIME_REAL,
        db_maxconn=db_maxconn,
        odoo_budget_bytes=budget,
        worker_slots=slots,
        odoo_processes=processes,
        notes=tuple(notes),
    )


def read_machine(meminfo: Path = Path("/proc/meminfo")) -> Machine:
    """RAM from MemTotal and the CPUs this process may run on (respects cpusets/affinity)."""
    ram = 0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            ram = int(parts[1]) * (1024 if len(parts) > 2 and parts[2].lower() == "kb" else 1)
            break
    if ram <= 0:
        raise ValueError(f"no MemTotal in {meminfo}")
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return Machine(ram_bytes=ram, cpus=max(1, cpus))


def pg_size(value: int) -> str:
    """PostgreSQL literal: MB when whole mebibytes (PostgreSQL's MB is 1024 kB), else kB."""
    if value % MiB == 0:
        return f"{value // MiB}MB"
    return f"{max(1, value // 1024)}kB"


def _human(value: int) -> str:
    if value >= GiB:
        return f"{value / GiB:.1f} GiB"
    return f"{value // MiB} MiB"


def summary(t: Tuning) -> str:
    return (
        f"RAM {_human(t.ram_bytes)}, {t.cpus} CPU(s) → workers {t.workers}, cron {t.max_cron_threads}, "
        f"limit_memory {_human(t.limit_memory_soft)}/{_human(t.limit_memory_hard)}, "
        f"db_maxconn {t.db_maxconn}; PostgreSQL shared_buffers {pg_size(t.shared_buffers)}, "
        f"max_connections {t.max_connections}, work_mem {pg_size(t.work_mem)}"
    )


def render_postgresql(t: Tuning) -> str:
    """Body of /etc/postgresql/<major>/main/conf.d/50-odoo-image-tuning.conf."""
    return (
        "# Written by odoo-tune at every boot from this machine's size; edits are overwritten.\n"
        "# Override with tuning keys in /etc/odoo-image/settings.yaml, or in conf.d/90-local.conf\n"
        "# (read after this file, so it wins).\n"
        f"# {summary(t)}\n"
        f"shared_buffers = {pg_size(t.shared_buffers)}\n"
        f"effective_cache_size = {pg_size(t.effective_cache_size)}\n"
        f"work_mem = {pg_size(t.work_mem)}\n"
        f"maintenance_work_mem = {pg_size(t.maintenance_work_mem)}\n"
        f"max_connections = {t.max_connections}\n"
        f"checkpoint_completion_target = {t.checkpoint_completion_target}\n"
        f"random_page_cost = {t.random_page_cost}\n"
    )


def render_odoo(t: Tuning) -> str:
    """Body of /etc/odoo/conf.d/20-tuning.conf."""
    return (
        "; Written by odoo-tune at every boot from this machine's size; edits are overwritten.\n"
        "; Override with tuning keys in /etc/odoo-image/settings.yaml, or in 90-local.conf.\n"
        "[options]\n"
        f"workers = {t.workers}\n"
        f"max_cron_threads = {t.max_cron_threads}\n"
        f"limit_memory_soft = {t.limit_memory_soft}\n"
        f"limit_memory_hard = {t.limit_memory_hard}\n"
        f"limit_time_cpu = {t.limit_time_cpu}\n"
        f"limit_time_real = {t.limit_time_real}\n"
        f"db_maxconn = {t.db_maxconn}\n"
    )
