"""Tuning table: RAM 1–64 GiB × 1–32 CPUs, invariants rather than magic numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cloud_init"))

from odoo_firstboot.settings import GiB, MiB, TuningOverrides
from odoo_firstboot.tuning import (
    CONNECTION_MARGIN,
    PER_WORKER_BYTES,
    compute,
    read_machine,
    render_odoo,
    render_postgresql,
)

RAMS_GIB = (1, 2, 4, 8, 16, 64)
CPUS = (1, 2, 3, 4, 8, 16, 32)
TABLE = [(ram * GiB, cpus) for ram in RAMS_GIB for cpus in CPUS]


def _id(case: tuple[int, int]) -> str:
    return f"{case[0] // GiB}GiB-{case[1]}cpu"


@pytest.mark.parametrize("machine", TABLE, ids=_id)
def test_postgresql_memory_fractions(machine: tuple[int, int]) -> None:
    ram, cpus = machine
    t = compute(ram, cpus)
    assert abs(t.shared_buffers - ram / 4) < MiB
    assert abs(t.effective_cache_size - ram / 2) < MiB
    assert 4 * MiB <= t.work_mem <= 64 * MiB
    assert 64 * MiB <= t.maintenance_work_mem <= 2 * GiB
    assert t.checkpoint_completion_target == 0.9
    assert t.random_page_cost == 1.1


@pytest.mark.parametrize("machine", TABLE, ids=_id)
def test_workers_follow_cpus_and_never_exceed_ram_budget(machine: tuple[int, int]) -> None:
    ram, cpus = machine
    t = compute(ram, cpus)
    assert 1 <= t.workers <= 2 * cpus + 1
    assert t.max_cron_threads >= 1
    # Odoo's guidance: each worker (HTTP and cron) needs ~0.8×150 MB + 0.2×1 GB.
    # The only exception is the floor of one HTTP worker on machines too small for any.
    if t.workers > 1:
        assert (t.workers + t.max_cron_threads) * PER_WORKER_BYTES <= t.odoo_budget_bytes
    # Everything budgeted fits in RAM next to PostgreSQL's shared_buffers.
    assert t.odoo_budget_bytes + t.shared_buffers < ram


@pytest.mark.parametrize("machine", TABLE, ids=_id)
def test_memory_limits_below_ram_and_odoo_defaults(machine: tuple[int, int]) -> None:
    ram, cpus = machine
    t = compute(ram, cpus)
    assert t.limit_memory_soft < t.limit_memory_hard < ram
    assert t.limit_memory_hard <= 2560 * MiB  # never above Odoo's own default
    assert t.limit_time_cpu > 0 and t.limit_time_real >= t.limit_time_cpu


@pytest.mark.parametrize("machine", TABLE, ids=_id)
def test_max_connections_covers_every_pool(machine: tuple[int, int]) -> None:
    ram, cpus = machine
    t = compute(ram, cpus)
    # Brief's rule: (workers + 2 (cron/gevent)) × db_maxconn + margin; we count every
    # cron worker, the gevent process and the master/CLI, which is stricter.
    assert t.odoo_processes >= t.workers + 2
    assert t.max_connections >= t.odoo_processes * t.db_maxconn + CONNECTION_MARGIN
    assert t.db_maxconn >= 4
    assert not t.notes


@pytest.mark.parametrize("cpus", CPUS)
def test_one_gib_is_not_oom_killed(cpus: int) -> None:
    t = compute(1 * GiB, cpus)
    assert t.workers <= 2
    assert t.max_cron_threads == 1
    assert t.limit_memory_hard < 1 * GiB
    assert t.limit_memory_soft < t.limit_memory_hard
    assert t.shared_buffers == 256 * MiB


def test_real_memtotal_of_a_1gib_vm() -> None:
    # A "1 GiB" VM reports less than 1 GiB in MemTotal (kernel reservations).
    t = compute(990 * MiB, 2)
    assert t.workers == 1 and t.limit_memory_hard < 990 * MiB


def test_more_cpus_and_ram_never_mean_fewer_workers() -> None:
    for cpus in CPUS:
        workers = [compute(ram * GiB, cpus).workers for ram in RAMS_GIB]
        assert workers == sorted(workers)
    for ram in RAMS_GIB:
        workers = [compute(ram * GiB, cpus).workers for cpus in CPUS]
        assert workers == sorted(workers)


def test_two_gib_and_six_gib_differ() -> None:
    small, large = compute(2 * GiB, 2), compute(6 * GiB, 2)
    assert small.shared_buffers == 512 * MiB and large.shared_buffers == 1536 * MiB
    assert small.workers < large.workers
    assert small.limit_memory_hard < large.limit_memory_hard
    assert render_postgresql(small) != render_postgresql(large)
    assert render_odoo(small) != render_odoo(large)


def test_large_machine_shrinks_db_maxconn_instead_of_huge_max_connections() -> None:
    t = compute(64 * GiB, 32)
    assert t.workers == 65
    assert t.max_connections <= 1000
    assert t.max_connections >= t.pool_connections + CONNECTION_MARGIN


def test_overrides_win() -> None:
    o = TuningOverrides(
        workers=7,
        max_cron_threads=3,
        shared_buffers=300 * MiB,
        effective_cache_size=700 * MiB,
        work_mem=8 * MiB,
        maintenance_work_mem=128 * MiB,
        db_maxconn=10,
        limit_memory_soft=900 * MiB,
        limit_memory_hard=1200 * MiB,
        limit_time_cpu=90,
        limit_time_real=180,
    )
    t = compute(8 * GiB, 4, o)
    assert (t.workers, t.max_cron_threads, t.db_maxconn) == (7, 3, 10)
    assert (t.shared_buffers, t.effective_cache_size) == (300 * MiB, 700 * MiB)
    assert (t.work_mem, t.maintenance_work_mem) == (8 * MiB, 128 * MiB)
    assert (t.limit_memory_soft, t.limit_memory_hard) == (900 * MiB, 1200 * MiB)
    assert (t.limit_time_cpu, t.limit_time_real) == (90, 180)
    # max_connections still follows the operator's pools.
    assert t.max_connections >= (7 + 3 + 2) * 10 + CONNECTION_MARGIN
    assert "shared_buffers = 300MB" in render_postgresql(t)
    assert "workers = 7\n" in render_odoo(t)


def test_max_connections_override_shrinks_db_maxconn() -> None:
    t = compute(16 * GiB, 8, TuningOverrides(max_connections=150))
    assert t.max_connections == 150
    assert t.pool_connections + CONNECTION_MARGIN <= 150
    assert not t.notes


def test_contradicting_overrides_are_kept_but_noted() -> None:
    t = compute(1 * GiB, 1, TuningOverrides(workers=9, max_connections=20, db_maxconn=64))
    assert t.workers == 9 and t.max_connections == 20 and t.db_maxconn == 64
    assert any(n.startswith("settings.workers:") for n in t.notes)
    assert any(n.startswith("settings.max_connections:") for n in t.notes)


def test_render_files() -> None:
    t = compute(4 * GiB, 2)
    pg = render_postgresql(t)
    expected = (
        "shared_buffers = 1024MB",
        "effective_cache_size = 2048MB",
        "checkpoint_completion_target = 0.9",
        "random_page_cost = 1.1",
        f"max_connections = {t.max_connections}",
        "\nwork_mem = ",
        "maintenance_work_mem = ",
    )
    for line in expected:
        assert line in pg
    odoo = render_odoo(t)
    assert odoo.splitlines()[2] == "[options]"
    keys = (
        "workers",
        "max_cron_threads",
        "limit_memory_soft",
        "limit_memory_hard",
        "limit_time_cpu",
        "limit_time_real",
        "db_maxconn",
    )
    for key in keys:
        assert f"\n{key} = " in odoo


def test_read_machine(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        2014256 kB\nMemFree:  1 kB\n")
    machine = read_machine(meminfo)
    assert machine.ram_bytes == 2014256 * 1024
    assert machine.cpus >= 1


def test_compute_is_pure() -> None:
    assert compute(8 * GiB, 4) == compute(8 * GiB, 4)
    with pytest.raises(ValueError):
        compute(0, 1)
