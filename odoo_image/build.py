"""Bake one image: inputs → payload → Packer → sealed, compressed qcow2 + manifest in dist/.

Nothing appears under the release name unless the whole build succeeded: Packer writes into a
scratch directory under dist/, and the qcow2 and manifest are renamed into place last.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import packer
from .errors import PipelineError
from .inputs import ca_bundle, gather, sha256_file
from .paths import dist_root
from .payload import build_info, write_payload
from .progress import Progress
from .render import render
from .spec import ImageSpec
from .vm import choose_accelerator

BUILD_USER = "packer"


def artifact_paths(spec: ImageSpec, dist: Path | None = None) -> tuple[Path, Path]:
    root = dist or dist_root()
    return root / f"{spec.release_name}.qcow2", root / f"{spec.release_name}.manifest.json"


def remove_stale_scratch(dist: Path) -> None:
    """Scratch directories of builds that were killed outright (their pid is gone)."""
    for path in dist.glob(".build-*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(path, ignore_errors=True)


def build_userdata(public_key: str) -> str:
    """Build-time NoCloud user-data: a throwaway user for Packer's SSH (removed by the seal)."""
    config = {
        "users": [{"name": BUILD_USER, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL",
                   "lock_passwd": True, "ssh_authorized_keys": [public_key]}],
        "ssh_pwauth": False,
        "package_update": False,
    }
    return "#cloud-config\n" + yaml.safe_dump(config, sort_keys=True)


def build_qemu(spec: ImageSpec, catalogue_dir: Path, progress: Progress,
               packer_version: tuple[int, int, int]) -> tuple[Path, Path]:
    qcow2, manifest = artifact_paths(spec)
    for existing in (qcow2, manifest):
        if existing.exists():
            # A release is immutable: instances and upgrades refer to it by version.
            raise PipelineError(f"{existing} already exists: bump the image's version in the catalogue "
                                f"or remove the old artifact first")
    qcow2.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(qcow2.parent)
    published: list[Path] = []
    scratch = qcow2.parent / f".build-{spec.release_name}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    try:
        with progress.step(f"render {spec.release_name}"):
            release = render(spec, packer_version=packer_version)
        inputs = gather(spec, catalogue_dir, progress, with_base_disk=True)
        assert inputs.base_disk is not None
        with progress.step("choose accelerator"):
            accelerator = choose_accelerator(spec.packer.accelerator, inputs.base_disk)
        info = build_info(spec, inputs, datetime.now(timezone.utc))
        with progress.step("assemble payload"):
            payload = write_payload(release, inputs, info, scratch / "payload.tar",
                                    ca_bundle=ca_bundle(spec, catalogue_dir))
        key = scratch / "build_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "odoo-image-build",
                        "-f", str(key)], check=True)
        http = scratch / "http"
        http.mkdir()
        (http / "user-data").write_text(build_userdata((scratch / "build_key.pub").read_text().strip()))
        (http / "meta-data").write_text(f"instance-id: build-{spec.release_name}\nlocal-hostname: odoo-build\n")
        output = scratch / "output"
        variables = {
            "accelerator": accelerator,
            "base_disk": str(inputs.base_disk),
            "base_disk_checksum": f"sha256:{inputs.base_disk_sha256}",
            "http_directory": str(http),
            "ssh_private_key_file": str(key),
            "payload": str(payload),
            "output_directory": str(output),
            "manifest_path": str(scratch / "packer-manifest.json"),
        }
        with progress.step(f"packer build ({accelerator})"):
            packer.build(release / "packer", only="qemu", variables=variables, version=packer_version,
                         log_path=scratch / "packer.log", env={"PACKER_CACHE_DIR": str(scratch / "packer_cache")})
        built = output / f"{spec.release_name}.qcow2"
        if not built.is_file():
            raise PipelineError(f"Packer finished but {built.name} is missing")
        with progress.step("manifest"):
            release_facts = json.loads((scratch / "output-release.json").read_text())
            facts = {**release_facts, "artifact": qcow2.name, "format": "qcow2",
                     "size_bytes": built.stat().st_size, "sha256": sha256_file(built),
                     "accelerator": accelerator, "base_disk": inputs.base_disk.name,
                     "packer": json.loads((scratch / "packer-manifest.json").read_text())}
            (scratch / "manifest.json").write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n")
        # Publish: the qcow2 first, the manifest (which vouches for it) last.
        os.replace(built, qcow2)
        published.append(qcow2)
        os.replace(scratch / "manifest.json", manifest)
        published.append(manifest)
    except BaseException:
        for path in published:
            path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return qcow2, manifest
