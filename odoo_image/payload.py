"""Assemble the provisioning payload: what the build uploads into the guest (or container).

Layout (unpacked at /var/tmp/odoo-image inside the target):
  provision/   rendered run.sh, seal.sh, lib/, scripts/, files/ (mirrors the target filesystem)
  cloud_init/  the first-boot finaliser, its launchers and units
  inputs/      odoo-src.tar.gz, wheelhouse/, requirements.lock, build-info.json[, build-ca.pem]
"""

from __future__ import annotations

import json
import shutil
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .odoo_source import SourceArtifact
from .spec import ImageSpec
from .wheelhouse import Wheelhouse


@dataclass(frozen=True)
class BuildInputs:
    base_disk: Path | None
    base_disk_sha256: str | None
    source: SourceArtifact
    wheelhouse: Wheelhouse


def build_info(spec: ImageSpec, inputs: BuildInputs, build_time: datetime | None = None) -> dict[str, object]:
    """The facts recorded in /etc/odoo-image-release and in the build manifest."""
    when = (build_time or datetime.now(timezone.utc)).replace(microsecond=0)
    return {
        "image": spec.name,
        "version": spec.version,
        "release": spec.release_name,
        "build_time": when.isoformat().replace("+00:00", "Z"),
        "os": f"{spec.os.name}-{spec.os.release}",
        "base_disk_sha256": inputs.base_disk_sha256,
        "postgresql": {"version": spec.postgresql.version, "source": spec.postgresql.source},
        "odoo_source_pin": spec.odoo.source.pin,
        "odoo_source_sha256": inputs.source.sha256,
        "wheelhouse": inputs.wheelhouse.key,
    }


def write_payload(release: Path, inputs: BuildInputs, info: dict[str, object], dest: Path,
                  ca_bundle: Path | None = None) -> Path:
    """Write payload.tar (uncompressed: the big members are compressed already)."""
    staging = dest.with_suffix(".d")
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "inputs").mkdir(parents=True)
    try:
        shutil.copy(inputs.source.path, staging / "inputs" / "odoo-src.tar.gz")
        shutil.copytree(inputs.wheelhouse.dir, staging / "inputs" / "wheelhouse")
        shutil.copy(inputs.wheelhouse.lock_file, staging / "inputs" / "requirements.lock")
        (staging / "inputs" / "build-info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if ca_bundle is not None:
            shutil.copy(ca_bundle, staging / "inputs" / "build-ca.pem")
        tmp = dest.with_suffix(".tar.partial")
        with tarfile.open(tmp, "w") as tar:
            for name in ("provision", "cloud_init"):
                tar.add(release / name, arcname=name, filter=_owned_by_root)
            tar.add(staging / "inputs", arcname="inputs", filter=_owned_by_root)
        tmp.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if "__pycache__" in info.name:
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info
