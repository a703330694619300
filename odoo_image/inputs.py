"""Gather every input of a build (base disk, Odoo source, wheelhouse), each cached by content."""

from __future__ import annotations

import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

from .errors import PipelineError
from .odoo_source import fetch_source, sha256_file
from .payload import BuildInputs
from .progress import Progress
from .spec import ArchiveSource, ImageSpec
from .wheelhouse import ensure_wheelhouse


def ca_bundle(spec: ImageSpec, catalogue_dir: Path) -> Path | None:
    if spec.build.ca_bundle is None:
        return None
    path = (catalogue_dir / spec.build.ca_bundle).resolve()
    if not path.is_file():
        raise PipelineError(f"build.ca_bundle: {path} does not exist")
    return path


def requirements_from_source(archive: Path, member: str, dest_dir: Path) -> Path:
    """Odoo's own requirements file, read from the pinned source (one top-level directory)."""
    with tarfile.open(archive) as tar:
        for info in tar.getmembers():
            parts = info.name.split("/", 1)
            if len(parts) == 2 and parts[1] == member and info.isfile():
                handle = tar.extractfile(info)
                assert handle is not None
                dest = dest_dir / "requirements.txt"
                dest.write_bytes(handle.read())
                return dest
    raise PipelineError(f"odoo.requirements: {member!r} is not in the Odoo source {archive.name}")


def gather(spec: ImageSpec, catalogue_dir: Path, progress: Progress, *, with_base_disk: bool) -> BuildInputs:
    source_spec = spec.odoo.source
    if isinstance(source_spec, ArchiveSource) and "://" not in source_spec.location:
        # Relative archive paths are relative to the catalogue, not to the working directory.
        source_spec = replace(source_spec, location=str((catalogue_dir / source_spec.location).resolve()))
    with progress.step(f"input: Odoo source ({spec.odoo.source.pin})"):
        source = fetch_source(source_spec, progress)
    with tempfile.TemporaryDirectory(prefix="odoo-image-req-") as tmp:
        requirements = requirements_from_source(source.path, spec.odoo.requirements, Path(tmp))
        wheelhouse = ensure_wheelhouse(
            spec.os.name, requirements, constraints=list(spec.python.build_constraints), extra=[],
            progress=progress, ca_bundle=ca_bundle(spec, catalogue_dir), setuptools=spec.python.setuptools,
            mirror=spec.build.apt_mirror, keyring_fingerprint=spec.os.archive_key_fingerprint,
            index_url=spec.build.pip_index_url)
    base_disk = base_sha = None
    if with_base_disk:
        from .basedisk import ensure_base_disk  # loop devices and grub: only when a disk is built
        base_disk = ensure_base_disk(spec.os.name, mirror=spec.build.apt_mirror,
                                     keyring_fingerprint=spec.os.archive_key_fingerprint,
                                     disk_gib=spec.packer.disk_gib, progress=progress,
                                     default_user=spec.os.ssh_user)
        base_sha = sha256_file(base_disk)
    return BuildInputs(base_disk=base_disk, base_disk_sha256=base_sha, source=source, wheelhouse=wheelhouse)
