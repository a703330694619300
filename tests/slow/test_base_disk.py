"""The base disks (jammy, the default, and bookworm), built for real from the archive and booted under QEMU like a cloud
instance: NoCloud seed with a throwaway SSH key, key login as the default user, cloud-init
finishing cleanly, and the image hygiene the base promises."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from odoo_image.progress import Progress

TOOLS = ("mmdebstrap", "qemu-system-x86_64", "qemu-img", "cloud-localds", "losetup", "sfdisk", "ssh")


needs_root_tools = [
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mount and chroot need root"),
    pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason="image tools not installed"),
]


@pytest.mark.slow
@needs_root_tools[0]
@needs_root_tools[1]
@pytest.mark.parametrize(("os_name", "user"), [("jammy", "ubuntu"), ("bookworm", "debian")])
def test_base_disk_boots_with_cloud_init(os_name: str, user: str, tmp_path: Path) -> None:
    from odoo_image.basedisk import ensure_base_disk
    from odoo_image.vm import boot, choose_accelerator, generate_ssh_keypair, nocloud_config, seed_iso

    progress = Progress(f"{os_name} base disk")
    try:
        # Built once (mmdebstrap + disk steps are timed inside), then cached by content hash.
        disk = ensure_base_disk(os_name, mirror=None, keyring_fingerprint=None, disk_gib=4, progress=progress)
        key = generate_ssh_keypair(tmp_path / "keys")
        user_data, meta_data = nocloud_config(key.public, hostname="base-test")
        seed = seed_iso(tmp_path / "seed.iso", user_data, meta_data)
        accelerator = choose_accelerator("auto", disk)
        # A 6 GiB virtual disk over the 4 GiB base: growpart must extend the root filesystem.
        with boot(disk, seed=seed, memory_mib=2048, cpus=2, accelerator=accelerator, disk_gib=6,
                  serial_log=tmp_path / "serial.log") as machine:
            start = time.monotonic()
            with progress.step(f"boot to SSH ({accelerator})"):
                machine.wait_ssh(user, key.private, timeout=600)
            with progress.step("sudo cloud-init status --wait"):
                status = machine.ssh(["sudo", "cloud-init", "status", "--wait", "--long"], check=False, timeout=900)
            print(f"boot to cloud-init done: {time.monotonic() - start:.1f} s")
            assert status.returncode == 0, status.stdout
            assert "status: done" in status.stdout and "DataSourceNoCloud" in status.stdout

            def sh(*argv: str) -> str:
                return machine.ssh(list(argv)).stdout.strip()

            assert sh("hostname") == "base-test"
            assert sh("systemctl", "is-system-running", "--wait") == "running"
            assert sh("findmnt", "-no", "SOURCE,FSTYPE", "/").split() == ["/dev/vda2", "ext4"]
            assert int(sh("findmnt", "-bno", "SIZE", "/")) > 5 * 2**30  # grown by cloud-init
            assert "console=ttyS0" in sh("cat", "/proc/cmdline")
            assert re.fullmatch(r"[0-9a-f]{32}", sh("cat", "/etc/machine-id"))
            assert sh("sudo", "awk", "-F:", "$2 !~ /^[*!]/ {print $1}", "/etc/shadow") == ""
            assert sh("sudo", "-n", "true") == ""  # passwordless sudo, and the hostname resolves
            assert "LANG=en_US.UTF-8" in sh("locale")
            assert "ssh_host_ed25519_key" in sh("sudo", "ls", "/etc/ssh")
            assert "ssh_host_dsa_key" not in sh("sudo", "ls", "/etc/ssh")
    finally:
        progress.print_summary()


@needs_root_tools[0]
@needs_root_tools[1]
def test_a_failed_disk_build_leaves_no_loop_device_mount_or_file(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Not slow (a few seconds): a stub rootfs fails inside the chroot step, while the loop
    device, the root mount and the chroot's /dev, /proc and /sys are all in place."""
    from odoo_image import basedisk
    from odoo_image.errors import PipelineError

    stub = tmp_path / "rootfs"
    for sub in ("etc/ssh", "dev", "proc", "sys", "tmp"):
        (stub / sub).mkdir(parents=True)
    (stub / "etc" / "os-release").write_text("ID=stub\n")
    (stub / "etc" / "shadow").write_text("root:*:1::::::\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(cache))
    monkeypatch.setattr(basedisk, "ensure_rootfs", lambda *args, **kwargs: stub)
    loops_before = _loop_devices()

    with pytest.raises(PipelineError, match="chroot"):  # no dpkg in the stub: the purge step fails
        basedisk.ensure_base_disk("jammy", mirror=None, keyring_fingerprint=None, disk_gib=2,
                                  progress=Progress())

    assert list((cache / "base").iterdir()) == []
    assert _loop_devices() == loops_before
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()


def _loop_devices() -> str:
    import subprocess

    return subprocess.run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
                          capture_output=True, text=True, check=True).stdout
