"""`build_qemu`'s promise about dist/: a release appears whole or not at all, and is never
overwritten. Everything around Packer is real (catalogue, render, fixture source, payload);
Packer itself is replaced by a stand-in that writes what Packer writes (or fails half-way),
because what is tested here is the publishing, not the bake (tests/vm/ bakes for real).
"""

from __future__ import annotations

import json
from dataclasses import replace
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from odoo_image import build as build_mod
from odoo_image.errors import PipelineError
from odoo_image.odoo_source import fetch_source
from odoo_image.payload import BuildInputs
from odoo_image.progress import Progress
from odoo_image.spec import ArchiveSource, ImageSpec, load_catalogue
from odoo_image.wheelhouse import Wheelhouse
from tests.fixtures.catalogue import write_fixture_catalogue

FakePacker = Callable[..., None]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ImageSpec, Path, Path]:
    monkeypatch.setenv("ODOO_IMAGE_DIST", str(tmp_path / "dist"))
    monkeypatch.setenv("ODOO_IMAGE_BUILD", str(tmp_path / "build"))
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(tmp_path / "cache"))
    catalogue = write_fixture_catalogue(tmp_path / "cat", ("jammy",))
    spec = load_catalogue(catalogue).images[0]
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"base disk")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "requirements.lock").write_text("babel==2.10.3\n")

    def gather(spec: ImageSpec, catalogue_dir: Path, progress: Progress, *, with_base_disk: bool) -> BuildInputs:
        assert isinstance(spec.odoo.source, ArchiveSource)
        source = fetch_source(replace(spec.odoo.source, location=str(catalogue_dir / spec.odoo.source.location)),
                              progress)
        return BuildInputs(base_disk=base, base_disk_sha256="0" * 64, source=source,
                           wheelhouse=Wheelhouse(wheels, wheels / "requirements.lock", "test"))

    monkeypatch.setattr(build_mod, "gather", gather)
    monkeypatch.setattr(build_mod, "choose_accelerator", lambda requested, disk: "tcg")
    return spec, catalogue.parent, tmp_path / "dist"


def _packer(spec: ImageSpec, *, finish: bool) -> FakePacker:
    def run(packer_dir: Path, *, only: str, variables: Mapping[str, str], version: tuple[int, int, int],
            log_path: Path, env: Mapping[str, str] | None = None) -> None:
        assert Path(variables["payload"]).is_file() and (packer_dir / "sources.pkr.hcl").is_file()
        output = Path(variables["output_directory"])
        output.mkdir()
        (output / f"{spec.release_name}.qcow2").write_bytes(b"QFI\xfb half a disk")
        if not finish:
            raise PipelineError("`packer build -color=false` failed (exit 1): provisioner 50-odoo-venv failed")
        scratch = Path(variables["manifest_path"]).parent
        (scratch / "output-release.json").write_text(json.dumps({"image": spec.name, "version": spec.version}))
        (scratch / "packer-manifest.json").write_text(json.dumps({"builds": [{"name": "odoo"}]}))
    return run


def _build(spec: ImageSpec, catalogue_dir: Path) -> tuple[Path, Path]:
    return build_mod.build_qemu(spec, catalogue_dir, Progress("test"), (1, 6, 6))


def test_failed_bake_leaves_nothing_in_dist(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, catalogue_dir, dist = setup
    monkeypatch.setattr(build_mod.packer, "build", _packer(spec, finish=False))
    with pytest.raises(PipelineError, match="50-odoo-venv failed"):
        _build(spec, catalogue_dir)
    assert list(dist.iterdir()) == [], "a failed build left files (scratch or a half-written release) in dist/"


def test_interrupted_bake_leaves_nothing_in_dist(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, catalogue_dir, dist = setup

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(build_mod.packer, "build", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(spec, catalogue_dir)
    assert list(dist.iterdir()) == []


def test_successful_bake_publishes_qcow2_and_manifest_then_refuses_to_overwrite(
        setup, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, catalogue_dir, dist = setup
    monkeypatch.setattr(build_mod.packer, "build", _packer(spec, finish=True))
    qcow2, manifest = _build(spec, catalogue_dir)
    assert sorted(p.name for p in dist.iterdir()) == [f"{spec.release_name}.manifest.json",
                                                      f"{spec.release_name}.qcow2"]
    facts = json.loads(manifest.read_text())
    assert facts["artifact"] == qcow2.name and facts["size_bytes"] == qcow2.stat().st_size
    assert facts["accelerator"] == "tcg" and len(facts["sha256"]) == 64
    before = qcow2.read_bytes()
    with pytest.raises(PipelineError, match=rf"{spec.release_name}\.qcow2 already exists: bump the image's version"):
        _build(spec, catalogue_dir)
    assert qcow2.read_bytes() == before and json.loads(manifest.read_text()) == facts
