"""Provision the image into a systemd-nspawn container and boot it as a launched instance.

The fast path for CI: the same rendered payload, the same `provision/run.sh` and
`provision/seal.sh` as the Packer build, on the same archive-built root filesystem as the
base disk — only the machine around it differs (a container instead of a QEMU guest).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from .basedisk import BASE_PACKAGES, configure_cloud_init, guest_setup_commands
from .build import BUILD_USER
from .container import Container, Network, booted, copy_rootfs
from .errors import PipelineError
from .inputs import ca_bundle, gather
from .keyring import distro
from .payload import build_info, write_payload
from .progress import Progress
from .render import render
from .rootfs import ensure_rootfs
from .spec import ImageSpec

PAYLOAD_DIR = "/var/tmp/odoo-image"


@dataclass(frozen=True)
class ProvisionedRoot:
    root: Path
    info: dict[str, object]
    build_machine_id: str


def provision(spec: ImageSpec, catalogue_dir: Path, workdir: Path, progress: Progress) -> ProvisionedRoot:
    """Provision and seal a container root; returns the sealed root (the 'image')."""
    with progress.step(f"render {spec.release_name}"):
        release = render(spec, root=workdir / "build")
    inputs = gather(spec, catalogue_dir, progress, with_base_disk=False)
    base = ensure_rootfs(spec.os.name, BASE_PACKAGES[spec.os.name], mirror=spec.build.apt_mirror,
                         keyring_fingerprint=spec.os.archive_key_fingerprint, progress=progress)
    info = build_info(spec, inputs, datetime.now(timezone.utc))
    with progress.step("assemble payload"):
        payload = write_payload(release, inputs, info, workdir / "payload.tar", ca_bundle=ca_bundle(spec, catalogue_dir))
    root = workdir / "root"
    with progress.step("copy base root filesystem"):
        copy_rootfs(base, root)
        # The same guest configuration as the base disk (minus disk, kernel and GRUB).
        configure_cloud_init(root, distro(spec.os.name), custom_mirror=spec.build.apt_mirror is not None,
                             default_user=spec.os.ssh_user)
    with booted(root, workdir / "provision-boot.log") as box:
        for argv in guest_setup_commands(distro(spec.os.name)):
            box.exec(argv, capture=True)
        build_machine_id = box.exec(["cat", "/etc/machine-id"], capture=True).stdout.strip()
        _as_build_vm(box, payload)
        with progress.step("provision/run.sh"):
            box.exec(["bash", f"{PAYLOAD_DIR}/provision/run.sh"], env={"PAYLOAD": PAYLOAD_DIR})
        with progress.step("provision/seal.sh"):
            box.exec(["bash", f"{PAYLOAD_DIR}/provision/seal.sh", "--remove-user", BUILD_USER, "--poweroff"])
            box.wait_stopped(timeout=180)
    release_file = root / "etc" / "odoo-image-release"
    if not release_file.exists():
        raise PipelineError("provisioning finished without /etc/odoo-image-release")
    return ProvisionedRoot(root=root, info=json.loads(release_file.read_text()), build_machine_id=build_machine_id)


def _as_build_vm(box: Container, payload: Path) -> None:
    """What cloud-init and Packer do in the VM: a build user, and the payload unpacked."""
    box.exec(["useradd", "--create-home", "--shell", "/bin/bash", BUILD_USER], check=False)
    box.exec(["sh", "-c", f"echo '{BUILD_USER} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users"])
    target = box.root / PAYLOAD_DIR.lstrip("/")
    target.mkdir(parents=True, exist_ok=True)
    shutil.unpack_archive(str(payload), str(target), format="tar")


def default_user(root: Path) -> str:
    """The user cloud-init gives the launcher's SSH key to (system_info.default_user)."""
    names = []
    for cfg in [root / "etc/cloud/cloud.cfg", *sorted((root / "etc/cloud/cloud.cfg.d").glob("*.cfg"))]:
        data = yaml.safe_load(cfg.read_text()) or {}
        name = (data.get("system_info") or {}).get("default_user", {}).get("name")
        if name:
            names.append(name)
    if not names:
        raise PipelineError(f"{root}: cloud-init has no default user")
    return names[-1]


def seed(root: Path, user_data: str, instance_id: str, network_config: str | None = None) -> None:
    """A NoCloud seed, as a launcher's user-data (and the cloud's metadata) would arrive."""
    nocloud = root / "var/lib/cloud/seed/nocloud"
    nocloud.mkdir(parents=True, exist_ok=True)
    (nocloud / "user-data").write_text(user_data)
    (nocloud / "meta-data").write_text(f"instance-id: {instance_id}\nlocal-hostname: {instance_id}\n")
    if network_config is not None:
        (nocloud / "network-config").write_text(network_config)


@contextmanager
def launched(root: Path, log_path: Path, user_data: str, instance_id: str, *,
             wait_timeout: float = 900) -> Iterator[Container]:
    """Boot the sealed root as an instance; returns once cloud-init and first boot are done."""
    network = Network.create()
    try:
        seed(root, user_data, instance_id, network.cloud_network_config())
    except BaseException:
        network.destroy()
        raise
    with booted(root, log_path, network) as box:
        box.exec(["cloud-init", "status", "--wait"], check=False, timeout=wait_timeout)
        yield box
