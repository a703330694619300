"""What each invoke task does, as plain functions (tasks.py only parses flags)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import render as render_mod
from .errors import PipelineError
from .progress import Progress
from .spec import Catalogue, ImageSpec, load_catalogue
from .validate import validate as validate_release


def installed_packer_version() -> tuple[int, int, int] | None:
    if shutil.which("packer") is None:
        return None
    out = subprocess.run(["packer", "version"], capture_output=True, text=True, check=False).stdout
    return render_mod.parse_packer_version(out)


def render(catalogue_path: Path, image: str | None) -> list[Path]:
    catalogue = load_catalogue(catalogue_path)  # every problem is reported before anything is written
    version = installed_packer_version()
    out = []
    for spec in catalogue.get(image):
        release = render_mod.render(spec, packer_version=version)
        print(f"rendered {spec.release_name} -> {release}")
        out.append(release)
    return out


def validate(catalogue_path: Path, image: str | None) -> None:
    progress = Progress("validate")
    releases = render(catalogue_path, image)
    try:
        for release in releases:
            validate_release(release, progress)
    finally:
        progress.print_summary()
    print(f"valid: {', '.join(str(r) for r in releases)}")


def _one(catalogue_path: Path, image: str | None) -> tuple[Catalogue, ImageSpec]:
    catalogue = load_catalogue(catalogue_path)
    return catalogue, catalogue.get(image)[0]


def base(catalogue_path: Path, image: str | None) -> Path:
    from .basedisk import ensure_base_disk

    _, spec = _one(catalogue_path, image)
    progress = Progress("base")
    try:
        disk = ensure_base_disk(spec.os.name, mirror=spec.build.apt_mirror,
                                keyring_fingerprint=spec.os.archive_key_fingerprint,
                                disk_gib=spec.packer.disk_gib, progress=progress,
                                default_user=spec.os.ssh_user)
    finally:
        progress.print_summary()
    print(f"base disk: {disk}")
    return disk


def build(catalogue_path: Path, image: str | None, only: str) -> None:
    from .build import build_qemu

    catalogue, spec = _one(catalogue_path, image)
    if only != "qemu":
        raise PipelineError(f"--only {only}: this machine cannot reach AWS; only `qemu` builds run here "
                            f"(the amazon-ebs source is rendered and validated)")
    if only not in spec.targets:
        raise PipelineError(f"--only {only}: image {spec.name} has no `{only}` target")
    version = installed_packer_version()
    if version is None:
        raise PipelineError("packer is not installed (./bootstrap.sh installs it)")
    progress = Progress(f"build {spec.release_name}")
    try:
        qcow2, manifest = build_qemu(spec, catalogue.path.parent, progress, version)
    finally:
        progress.print_summary()
    print(f"image: {qcow2} ({qcow2.stat().st_size / 2**20:.0f} MiB)\nmanifest: {manifest}")


def boot_test(catalogue_path: Path, image: str | None, keep: bool) -> None:
    import json
    import tempfile

    from .build import artifact_paths
    from .imagetest import run_suite
    from .tap import probe_link
    from .vm import boot, choose_accelerator, generate_ssh_keypair, network_config, nocloud_config, seed_iso

    _, spec = _one(catalogue_path, image)
    qcow2, manifest = artifact_paths(spec)
    if not qcow2.exists() or not manifest.exists():
        raise PipelineError(f"{qcow2.name} is not built yet: run `invoke build --image {spec.name}`")
    progress = Progress(f"test {spec.release_name}")
    facts = json.loads(manifest.read_text())
    env = {"ODOO_IMAGE_MANIFEST": str(manifest), "ODOO_IMAGE_EXPECT_PG": str(facts["postgresql"]["version"]),
           "ODOO_IMAGE_BUILD_MACHINE_ID": facts.get("build_machine_id", "")}
    with tempfile.TemporaryDirectory(prefix="odoo-image-test-") as tmp, probe_link() as tap:
        work = Path(tmp)
        key = generate_ssh_keypair(work)
        # The seed carries the SSH key (user-data) and, with a probe link, the NIC layout
        # (network-config, what a cloud's metadata service would give).
        seed = seed_iso(work / "seed.iso", *nocloud_config(key.public),
                        network_config=network_config(tap) if tap else None)
        accelerator = choose_accelerator(spec.packer.accelerator, qcow2)
        try:
            with boot(qcow2, seed=seed, memory_mib=spec.packer.memory_mib, cpus=spec.packer.cpus,
                      accelerator=accelerator, forwards={80: None, 443: None}, tap=tap) as vm:
                with progress.step("boot to SSH"):
                    vm.wait_ssh(spec.os.ssh_user, key.private, timeout=900)
                with progress.step("cloud-init and first boot"):
                    vm.ssh(["sudo", "cloud-init", "status", "--wait"], check=False, timeout=1800)
                with progress.step("testinfra suite"):
                    code = run_suite(host="127.0.0.1", port=vm.ssh_port, user=spec.os.ssh_user, key=key.private,
                                     env={**env, "ODOO_IMAGE_EXTERNAL_ADDR": vm.address or ""})
                if keep:
                    print(f"VM kept: ssh -p {vm.ssh_port} -i {key.private} {spec.os.ssh_user}@127.0.0.1 "
                          f"(address on the probe link: {vm.address}; Ctrl-C to stop)")
                    vm.process.wait()
        finally:
            progress.print_summary()
    if code != 0:
        raise PipelineError(f"image tests failed against {qcow2.name} (pytest exit {code})")


def userdata(*, domain: str, email: str, database: str, modules: str, admin_login: str, ssh_key: str,
             output: str) -> None:
    from .userdata import cloud_config, settings

    keys = [Path(ssh_key).read_text().strip()] if ssh_key else []
    module_list = [m.strip() for m in modules.split(",") if m.strip()]
    text = cloud_config(settings(domain=domain, email=email, database=database, modules=module_list,
                                 admin_login=admin_login, admin_password="generate" if database else ""), keys)
    if output:
        Path(output).write_text(text)
    else:
        print(text, end="")
