"""The real thing: bake a qcow2 with Packer under QEMU, then boot it like a user and run the
image suite over SSH (`invoke build` + `invoke test`). Tens of minutes under TCG: slow.

The catalogue is the default one with two test-only overrides, both said here: the Odoo
source is the test fixture archive (GitHub is unreachable), and on jammy PostgreSQL comes
from the distribution (14) because PGDG is unreachable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from odoo_image import cli
from odoo_image.build import artifact_paths
from odoo_image.paths import REPO_ROOT
from odoo_image.spec import load_catalogue
from tests.fixtures.make_fixture import build_fixture_archive

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="building disks needs root (loop devices)")]

PG = {"jammy": {"version": 14, "source": "distro"}, "bookworm": {"version": 15, "source": "distro"}}


@pytest.mark.parametrize("os_name", ["jammy", "bookworm"])
def test_bake_and_boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, os_name: str) -> None:
    archive, sha256 = build_fixture_archive(tmp_path)
    data = yaml.safe_load((REPO_ROOT / "images.yaml").read_text())
    data["images"] = [{"name": f"odoo18-{os_name}-fixture", "version": "0.1.0", "os": os_name,
                       "targets": {"qemu": {}}, "postgresql": PG[os_name],
                       "odoo": {"source": {"archive": {"path": archive.name, "sha256": sha256}}}}]
    catalogue = tmp_path / "images.yaml"
    catalogue.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("ODOO_IMAGE_DIST", str(tmp_path / "dist"))
    monkeypatch.setenv("ODOO_IMAGE_BUILD", str(tmp_path / "build"))

    cli.build(catalogue, None, "qemu")
    spec = load_catalogue(catalogue).images[0]
    qcow2, manifest = artifact_paths(spec)
    facts = json.loads(manifest.read_text())
    assert facts["sha256"] and facts["artifact"] == qcow2.name and qcow2.stat().st_size == facts["size_bytes"]
    assert facts["odoo_source_pin"] == spec.odoo.source.pin
    assert not list(qcow2.parent.glob(".build-*")), "scratch directory left behind"

    cli.boot_test(catalogue, None, keep=False)  # raises when the image suite fails
