"""The real thing: bake a qcow2 with Packer under QEMU, then boot it like a user and run the
image suite over SSH (`invoke build` + `invoke test`).

Part of the default run for jammy, the default OS (marker `vm`; about 30 minutes on 2 cores
under TCG; `-m "not vm"` leaves it out of a quick local run). bookworm and the two-size tuning
boot are `slow` (`--run-slow`).

The catalogue is the default one with two test-only overrides, both said here: the Odoo
source is the test fixture archive (GitHub is unreachable), and on jammy PostgreSQL comes
from the distribution (14) because PGDG is unreachable.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from odoo_image import cli
from odoo_image.build import artifact_paths
from odoo_image.spec import ImageSpec, load_catalogue
from odoo_image.vm import boot, generate_ssh_keypair, nocloud_config, seed_iso
from tests.fixtures.catalogue import write_fixture_catalogue

pytestmark = [pytest.mark.vm,
              pytest.mark.skipif(os.geteuid() != 0, reason="building disks needs root (loop devices)")]


@pytest.fixture(scope="module", params=["jammy", pytest.param("bookworm", marks=pytest.mark.slow)])
def baked(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ImageSpec]:
    os_name = request.param
    work = tmp_path_factory.mktemp(f"bake-{os_name}")
    catalogue = write_fixture_catalogue(work, (os_name,))
    patch = pytest.MonkeyPatch()
    patch.setenv("ODOO_IMAGE_DIST", str(work / "dist"))
    patch.setenv("ODOO_IMAGE_BUILD", str(work / "build"))
    request.addfinalizer(patch.undo)
    cli.build(catalogue, None, "qemu")
    return catalogue, load_catalogue(catalogue).images[0]


def test_bake_produces_artifact_and_manifest(baked: tuple[Path, ImageSpec]) -> None:
    _, spec = baked
    qcow2, manifest = artifact_paths(spec)
    facts = json.loads(manifest.read_text())
    assert facts["artifact"] == qcow2.name and qcow2.stat().st_size == facts["size_bytes"]
    assert facts["odoo_source_pin"] == spec.odoo.source.pin and len(facts["sha256"]) == 64
    assert not list(qcow2.parent.glob(".build-*")), "scratch directory left behind"


def test_booted_image_passes_the_image_suite(baked: tuple[Path, ImageSpec]) -> None:
    catalogue, _ = baked
    cli.boot_test(catalogue, None, keep=False)  # raises when the image suite fails


def _tuning_at(spec: ImageSpec, memory_mib: int) -> dict[str, str]:
    qcow2, _ = artifact_paths(spec)
    with tempfile.TemporaryDirectory(prefix="odoo-image-ram-") as tmp:
        key = generate_ssh_keypair(Path(tmp))
        seed = seed_iso(Path(tmp) / "seed.iso", *nocloud_config(key.public))
        with boot(qcow2, seed=seed, memory_mib=memory_mib, cpus=2, accelerator="tcg") as vm:
            vm.wait_ssh(spec.os.ssh_user, key.private, timeout=900)
            vm.ssh(["sudo", "cloud-init", "status", "--wait"], check=False, timeout=1800)
            pg = vm.ssh(["sudo", "-u", "postgres", "psql", "-qtAX", "-c",
                         "SELECT name || '=' || setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                         "('shared_buffers', 'effective_cache_size', 'max_connections')"]).stdout
            odoo = vm.ssh(["sudo", "cat", "/etc/odoo/conf.d/20-tuning.conf"]).stdout
    # Output is merged with stderr (psql may complain about the login's home directory).
    values = dict(word.split("=", 1) for word in pg.split() if "=" in word)
    values.update({k.strip(): v.strip() for k, v in (line.split("=", 1) for line in odoo.splitlines()
                                                      if "=" in line and not line.startswith((";", "#")))})
    return values


@pytest.mark.slow
def test_tuning_follows_the_machine_size(baked: tuple[Path, ImageSpec]) -> None:
    """Issue 4 (e): the same image at 2 GiB and 6 GiB gets different, correct tuning."""
    _, spec = baked
    small, large = _tuning_at(spec, 2048), _tuning_at(spec, 6144)
    # shared_buffers is 25% of RAM (PostgreSQL reports it in 8kB pages).
    mem_small, mem_large = (int(t["shared_buffers"].removesuffix("8kB")) * 8 * 1024 for t in (small, large))
    assert 0.2 * 2 * 2**30 < mem_small < 0.3 * 2 * 2**30
    assert 0.2 * 6 * 2**30 < mem_large < 0.3 * 6 * 2**30
    assert int(large["limit_memory_hard"]) >= int(small["limit_memory_hard"])
    assert small != large
