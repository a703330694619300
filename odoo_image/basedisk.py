"""A cloud-init-enabled, BIOS-bootable base qcow2 built from the distribution archive.

Ubuntu's cloud-image server is unreachable here, so the base image every build starts
from is made locally: an mmdebstrap rootfs (kernel, GRUB, cloud-init, OpenSSH) copied
onto a GPT disk (BIOS-boot + ext4 root), GRUB installed through a loop device, then
converted to a compressed qcow2. The result is cached by a hash of its inputs and the
recipe (this file), and published atomically.

Image facts other stages rely on: datasources NoCloud, Ec2, None; serial console on
ttyS0; no SSH host keys, empty machine-id, no password on any account; the default
user (ubuntu / debian) is created by cloud-init from metadata with key-only login and
passwordless sudo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from . import proc
from .errors import PipelineError
from .keyring import Distro, distro
from .paths import cache_dir
from .progress import Progress
from .rootfs import ensure_rootfs, remove_stale_builds, safe_rmtree

_COMMON = ["grub-pc", "cloud-init", "cloud-guest-utils", "openssh-server", "sudo", "python3",
           "ca-certificates", "qemu-guest-agent", "isc-dhcp-client", "dbus", "locales",
           "initramfs-tools", "e2fsprogs", "systemd-sysv", "udev", "iproute2", "netbase"]
BASE_PACKAGES: dict[str, list[str]] = {
    # netplan renders cloud-init's network config for systemd-networkd (+ resolved).
    "jammy": ["linux-image-virtual", "netplan.io", *_COMMON],
    # bookworm's cloud-init renders ifupdown (ENI) config; dhclient writes resolv.conf.
    "bookworm": ["linux-image-cloud-amd64", "ifupdown", *_COMMON],
}
# Installed by the "important" priority set but not wanted: ua-auto-attach only works on
# Ubuntu Pro cloud images; elsewhere it fails at every boot (system "degraded") and costs
# ~20 s of CPU under TCG.
BASE_PURGE: dict[str, list[str]] = {"jammy": ["ubuntu-pro-auto-attach"]}
DATASOURCES = ("NoCloud", "Ec2", "None")
DEFAULT_LOCALE = "en_US.UTF-8"
ROOT_LABEL = "cloudimg-rootfs"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
LINUX_FS_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
DEFAULT_DISK_GIB = 4

GRUB_DEFAULTS = """\
# Written by odoo-image: serial console first so QEMU logs and EC2 console output work.
GRUB_TIMEOUT=1
GRUB_TIMEOUT_STYLE=menu
GRUB_RECORDFAIL_TIMEOUT=1
GRUB_DISABLE_OS_PROBER=true
GRUB_CMDLINE_LINUX_DEFAULT="console=tty1 console=ttyS0,115200n8"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --speed=115200 --unit=0 --word=8 --parity=no --stop=1"
"""


def base_root() -> Path:
    return cache_dir() / "base"


def base_key(dist: Distro, rootfs: Path, disk_gib: int, default_user: str = "") -> str:
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    inputs = {"os": dist.name, "rootfs": rootfs.name, "disk_gib": disk_gib, "default_user": default_user, "recipe": recipe}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def ensure_base_disk(
    os_name: str,
    *,
    mirror: str | None,
    keyring_fingerprint: str | None,
    disk_gib: int = DEFAULT_DISK_GIB,
    progress: Progress,
    security_mirror: str | None = None,
    default_user: str | None = None,
) -> Path:
    """Return the cached base qcow2 for os_name, building it if needed (treat it as read-only).

    default_user: the account cloud-init gives the launcher's SSH key (the catalogue's
    ssh_user, so that a local image and the cloud image of the same OS agree).
    """
    if disk_gib < 2:
        raise PipelineError(f"base disk size {disk_gib} GiB is too small (need at least 2)")
    dist = distro(os_name)
    rootfs = ensure_rootfs(dist.name, BASE_PACKAGES[dist.name], mirror=mirror,
                           keyring_fingerprint=keyring_fingerprint, progress=progress,
                           security_mirror=security_mirror)
    key = base_key(dist, rootfs, disk_gib, default_user or "")[:24]
    final = base_root() / f"{dist.name}-{key}.qcow2"
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(final.parent)
    work = final.parent / f".tmp-{key[:12]}-{os.getpid()}"  # pid suffix: stale-build cleanup
    if work.exists():
        safe_rmtree(work)
    work.mkdir()
    try:
        raw = work / "disk.raw"
        with progress.step(f"base disk {dist.name}: partition, copy rootfs, install GRUB"):
            build_raw_disk(dist, rootfs, raw, disk_gib, custom_mirror=mirror is not None,
                           default_user=default_user)
        with progress.step(f"base disk {dist.name}: convert to compressed qcow2"):
            qcow = work / "disk.qcow2"
            proc.run(["qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow], capture=True)
            os.rename(qcow, final)  # atomic publish; same filesystem as work
    finally:
        safe_rmtree(work)
    return final


def build_raw_disk(dist: Distro, rootfs: Path, raw: Path, disk_gib: int, *, custom_mirror: bool,
                   default_user: str | None = None) -> None:
    """Partition raw, copy rootfs in, configure it and install GRUB. Cleans up on failure."""
    with open(raw, "wb") as handle:
        handle.truncate(disk_gib * 1024**3)  # sparse
    _partition(raw)
    root_uuid = str(uuid.uuid4())
    with ExitStack() as stack:
        disk, root_part = stack.enter_context(_loop_device(raw))
        proc.run(["mkfs.ext4", "-q", "-L", ROOT_LABEL, "-U", root_uuid, root_part], capture=True)
        # Next to raw, never a TemporaryDirectory: its cleanup could delete through a
        # mount left behind; callers remove raw.parent with safe_rmtree.
        mnt = raw.parent / "mnt"
        mnt.mkdir()
        stack.enter_context(_mounted(root_part, mnt))
        _copy_tree(rootfs, mnt)
        configure_guest(mnt, dist, root_uuid, custom_mirror=custom_mirror, default_user=default_user)
        with _chroot_mounts(mnt, [disk, f"{disk}p1", root_part], root_uuid):
            for argv in guest_setup_commands(dist):
                _chroot(mnt, *argv)
            _install_grub(mnt, disk, root_uuid)
        scrub_guest(mnt)
    # Unmounted and detached: a read-only fsck proves the filesystem we ship is clean.
    _fsck_partition(raw)


def _partition(raw: Path) -> None:
    # p1: 1 MiB BIOS boot (GRUB core.img on GPT); p2: ext4 root to the end, so growpart
    # can extend it when the instance disk is larger.
    layout = (
        "label: gpt\n"
        f"start=2048, size=2048, type={BIOS_BOOT_GUID}, name=bios\n"
        f"start=4096, type={LINUX_FS_GUID}, name=root\n"
    )
    proc.run(["sfdisk", "--quiet", raw], input_text=layout, capture=True)


@contextmanager
def _loop_device(raw: Path) -> Iterator[tuple[str, str]]:
    """Attach raw with partitions; yields (disk, root partition). Always detaches."""
    disk = proc.run(["losetup", "--find", "--show", "--partscan", raw], capture=True).stdout.strip()
    try:
        # -P alone does not always create the partition nodes here; partx -a does
        # (it fails harmlessly with "busy" when they already exist).
        proc.run(["partx", "-a", disk], capture=True, check=False)
        root_part = f"{disk}p2"
        _wait_for(Path(root_part), 10.0)
        yield disk, root_part
    finally:
        proc.run(["partx", "-d", disk], capture=True, check=False)
        proc.run(["losetup", "-d", disk], capture=True, check=False)


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise PipelineError(f"partition node {path} did not appear after losetup -P / partx -a")
        time.sleep(0.2)


@contextmanager
def _mounted(source: str | Path, target: Path, *options: str) -> Iterator[Path]:
    proc.run(["mount", *options, source, target], capture=True)
    try:
        yield target
    finally:
        _umount(target)


def _umount(target: Path) -> None:
    done = proc.run(["umount", target], capture=True, check=False)
    if done.returncode != 0:
        # Something still holds it (e.g. a stray process); detach it so the loop device goes.
        proc.run(["umount", "--lazy", target], capture=True, check=False)


@contextmanager
def _chroot_mounts(root: Path, block_devices: list[str], root_uuid: str) -> Iterator[None]:
    """A private /dev (tmpfs) plus /proc and /sys, as grub-install and update-grub need.

    Not a bind of the host's /dev: nothing in the chroot can touch host devices, and we
    can add the /dev/disk/by-uuid link udev would make (update-grub writes root=UUID=
    only when that link exists; there is no udev here).
    """
    with ExitStack() as stack:
        dev = stack.enter_context(_mounted("tmpfs", root / "dev", "-t", "tmpfs", "-o", "mode=0755,nosuid"))
        for name in ("null", "zero", "full", "random", "urandom", "tty"):
            _copy_device_node(Path("/dev") / name, dev / name)
        for node in block_devices:
            _copy_device_node(Path(node), dev / Path(node).name)
        by_uuid = dev / "disk" / "by-uuid"
        by_uuid.mkdir(parents=True)
        (by_uuid / root_uuid).symlink_to(f"../../{Path(block_devices[-1]).name}")
        stack.enter_context(_mounted("proc", root / "proc", "-t", "proc"))
        stack.enter_context(_mounted("sysfs", root / "sys", "-t", "sysfs"))
        yield


def _copy_device_node(source: Path, target: Path) -> None:
    info = source.stat()
    os.mknod(target, info.st_mode, info.st_rdev)


def _copy_tree(source: Path, target: Path) -> None:
    proc.run(["cp", "--archive", "--sparse=always", f"{source}/.", f"{target}/"], capture=True)
    # Cache bookkeeping, not part of the OS.
    (target / ".odoo-image-rootfs.json").unlink(missing_ok=True)


def _chroot(root: Path, *argv: str) -> str:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
    return proc.run(["chroot", root, *argv], env=env, capture=True).stdout


def configure_guest(root: Path, dist: Distro, root_uuid: str, *, custom_mirror: bool,
                    default_user: str | None = None) -> None:
    """Boot, console, network and cloud-init configuration of the guest tree at root."""
    etc = root / "etc"
    (etc / "fstab").write_text(f"UUID={root_uuid}\t/\text4\tdefaults,discard,errors=remount-ro\t0\t1\n")
    (etc / "hostname").write_text("localhost\n")
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                               "ff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n")
    grub_d = etc / "default" / "grub.d"
    grub_d.mkdir(parents=True, exist_ok=True)
    (grub_d / "50-odoo-image.cfg").write_text(GRUB_DEFAULTS)
    configure_cloud_init(root, dist, custom_mirror=custom_mirror, default_user=default_user)


def configure_cloud_init(root: Path, dist: Distro, *, custom_mirror: bool, default_user: str | None = None) -> None:
    """cloud-init, SSH host keys and networking: shared by the base disk and the container."""
    etc = root / "etc"
    cloud_d = etc / "cloud" / "cloud.cfg.d"
    cloud_d.mkdir(parents=True, exist_ok=True)
    # 90_dpkg.cfg is where the packaging's own datasource choice lives; replace it.
    (cloud_d / "90_dpkg.cfg").write_text(f"datasource_list: [ {', '.join(DATASOURCES)} ]\n")
    (cloud_d / "91-odoo-image.cfg").write_text(cloud_settings(dist, custom_mirror=custom_mirror,
                                                              default_user=default_user))
    _sshd_hostkey_fallback(etc)
    if dist.vendor == "debian":
        _configure_ifupdown(etc)


HOSTKEYS_UNIT = """\
[Unit]
Description=Generate SSH host keys when none exist (odoo-image)
# cloud-init normally makes them first; this covers boots where it stays disabled.
After=cloud-init.service
Before=ssh.service
ConditionPathExistsGlob=!/etc/ssh/ssh_host_*_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key
ExecStart=/usr/bin/ssh-keygen -q -t rsa -b 3072 -N "" -f /etc/ssh/ssh_host_rsa_key
"""


def _sshd_hostkey_fallback(etc: Path) -> None:
    """The image ships without host keys. With no datasource found, ds-identify disables
    cloud-init and sshd would fail, so ssh.service pulls in a unit making the missing ones."""
    system = etc / "systemd" / "system"
    (system / "ssh.service.d").mkdir(parents=True, exist_ok=True)
    (system / "odoo-image-ssh-hostkeys.service").write_text(HOSTKEYS_UNIT)
    (system / "ssh.service.d" / "10-odoo-image-hostkeys.conf").write_text(
        "[Unit]\nWants=odoo-image-ssh-hostkeys.service\nAfter=odoo-image-ssh-hostkeys.service\n")


def cloud_settings(dist: Distro, *, custom_mirror: bool, default_user: str | None = None) -> str:
    """cloud.cfg.d drop-in (JSON is valid YAML)."""
    settings: dict[str, object] = {
        # bookworm's cloud-init still generates a DSA host key by default.
        "ssh_genkeytypes": ["rsa", "ecdsa", "ed25519"],
        "locale": DEFAULT_LOCALE,  # pre-generated below: no locale-gen on first boot
    }
    if dist.vendor == "debian":
        # No nss-myhostname (jammy gets it through systemd-resolved): without this,
        # the instance's hostname does not resolve and sudo complains. Debian's own
        # cloud images do the same.
        settings["manage_etc_hosts"] = True
    if default_user:
        settings["system_info"] = {"default_user": {
            "name": default_user, "lock_passwd": True, "gecos": default_user, "shell": "/bin/bash",
            "groups": ["adm", "sudo"], "sudo": ["ALL=(ALL) NOPASSWD:ALL"]}}
    if custom_mirror:
        # cloud-init rewrites sources.list from its template at first boot (the distro's
        # default or EC2's regional mirror); an operator-chosen build mirror must survive.
        settings["apt"] = {"preserve_sources_list": True}
    return "# Written by odoo-image (basedisk.py)\n" + json.dumps(settings, indent=2) + "\n"


def _configure_ifupdown(etc: Path) -> None:
    # The Debian installer, not the ifupdown package, writes this file; cloud-init adds
    # interfaces.d/50-cloud-init.
    interfaces = etc / "network" / "interfaces"
    interfaces.parent.mkdir(parents=True, exist_ok=True)
    (etc / "network" / "interfaces.d").mkdir(exist_ok=True)
    interfaces.write_text("auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n")



def guest_setup_commands(dist: Distro) -> list[list[str]]:
    """Commands run inside the guest tree, for the base disk and the container alike."""
    commands = []
    if BASE_PURGE.get(dist.name):
        commands.append(["dpkg", "--purge", *BASE_PURGE[dist.name]])
    # Build DEFAULT_LOCALE into the image (bookworm's cloud-init 22.4 only runs
    # update-locale, which fails for a locale that was never generated).
    language, charset = DEFAULT_LOCALE.split(".")
    commands.append(["localedef", "-i", language, "-f", charset, DEFAULT_LOCALE])
    commands.append(["update-locale", f"LANG={DEFAULT_LOCALE}"])
    return commands


def _install_grub(root: Path, disk: str, root_uuid: str) -> None:
    _chroot(root, "grub-install", "--target=i386-pc", disk)
    _chroot(root, "update-grub")
    cfg = (root / "boot" / "grub" / "grub.cfg").read_text()
    # A grub.cfg pointing at the build host's loop device instead of the UUID would not boot.
    if f"root=UUID={root_uuid}" not in cfg or "console=ttyS0" not in cfg:
        raise PipelineError("update-grub wrote a grub.cfg without root=UUID=<root fs> and console=ttyS0")
    if "menuentry" not in cfg:
        raise PipelineError("update-grub found no kernel: grub.cfg has no menuentry")
    # The boot sector must now hold GRUB's boot.img (it carries the string "GRUB").
    with open(disk, "rb") as device:
        if b"GRUB" not in device.read(512):
            raise PipelineError(f"grub-install left no GRUB boot code in the MBR of {disk}")


def scrub_guest(root: Path) -> None:
    """Remove per-machine identity and build leftovers; lock every account's password."""
    etc = root / "etc"
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()  # cloud-init generates fresh ones on first boot
    (etc / "machine-id").write_text("")  # empty: systemd makes one at first boot
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.exists() and not dbus_id.is_symlink():
        dbus_id.unlink()
        dbus_id.symlink_to("/etc/machine-id")
    for path in ("var/lib/cloud", "tmp", "var/tmp", "var/cache/apt/archives/partial"):
        _empty_dir(root / path)
    for pattern in ("var/log/cloud-init*", "var/cache/apt/*.bin", "root/.bash_history"):
        for leftover in root.glob(pattern):
            leftover.unlink()
    _lock_passwords(etc / "shadow")


def _empty_dir(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()


LOCKED = ("*", "!", "!*", "!!")


def _lock_passwords(shadow: Path) -> None:
    """No account may have a password (not even a locked hash that `passwd -u` could revive,
    nor an empty one): anything else becomes '*'. Logins are key-only."""
    lines = []
    for line in shadow.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 1 and fields[1] not in LOCKED:
            fields[1] = "*"
        lines.append(":".join(fields))
    shadow.write_text("\n".join(lines) + "\n")


def _fsck_partition(raw: Path) -> None:
    with _loop_device(raw) as (_disk, root_part):
        proc.run(["e2fsck", "-f", "-n", root_part], capture=True)
