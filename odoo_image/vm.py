"""Local QEMU virtual machines for building and testing images.

- choose_accelerator: KVM only when a stock kernel demonstrably boots with it (here
  /dev/kvm is a PVM device that hangs stock kernels), else TCG; the probe is cached.
- seed_iso: a NoCloud seed (cloud-localds).
- boot: a context manager that runs a disk through a throwaway qcow2 overlay with
  user-mode networking forwarded to 127.0.0.1 and the serial console in a log file,
  and always kills QEMU and removes the overlay, also on exceptions; optionally a second
  NIC on a host tap link (see tap.py) so the guest has a real address to probe.
"""

from __future__ import annotations

import json
import os
import platform
import re
import secrets
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from . import proc
from .proc import DIE_WITH_PARENT
from .errors import PipelineError
from .paths import cache_dir
from .tap import Tap

QEMU = "qemu-system-x86_64"
ACCELERATORS = ("auto", "kvm", "tcg")
PROBE_TIMEOUT = 30.0
# Printed once the kernel has left the real-mode setup code and is running normally;
# a PVM-only /dev/kvm never gets here with a stock kernel.
PROBE_MARKERS = ("Run /init as init process", "Freeing unused kernel image")
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "IdentitiesOnly=yes")
# Fixed MACs, so a NoCloud network-config can match the NICs (locally administered range).
UPLINK_MAC = "52:54:00:0d:00:01"
PROBE_MAC = "52:54:00:0d:00:02"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


# ---------------------------------------------------------------- accelerator choice

def choose_accelerator(requested: str, probe_disk: Path, *, out: TextIO | None = None,
                       timeout: float = PROBE_TIMEOUT) -> str:
    """Resolve 'auto' | 'kvm' | 'tcg' to 'kvm' or 'tcg', printing the choice and why.

    auto boots probe_disk (a disk whose kernel logs to ttyS0, e.g. a base disk) with
    KVM and keeps KVM only if the kernel gets past early boot within `timeout`.
    The result is cached per host kernel (uname -r) and QEMU version.
    """
    out = out or sys.stderr
    if requested not in ACCELERATORS:
        raise PipelineError(f"unknown accelerator {requested!r} (choose one of {', '.join(ACCELERATORS)})")
    if requested == "tcg":
        return _say(out, "tcg", "requested")
    usable, why = kvm_device_usable()
    if requested == "kvm":
        if not usable:
            raise PipelineError(f"accelerator kvm was requested but {why}")
        return _say(out, "kvm", "requested (not probed)")
    if not usable:
        return _say(out, "tcg", why)
    key = probe_key()
    cache = _load_probe_cache()
    if key in cache:
        entry = cache[key]
        how = f"cached probe for {key}"
    else:
        ok, reason = probe_kvm(probe_disk, timeout=timeout)
        entry = {"kvm_ok": ok, "reason": reason, "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        cache[key] = entry
        _save_probe_cache(cache)
        how = "probe"
    return _say(out, "kvm" if entry["kvm_ok"] else "tcg", f"{how}: {entry['reason']}")


def _say(out: TextIO, accel: str, why: str) -> str:
    print(f"accelerator: {accel} ({why})", file=out, flush=True)
    return accel


def kvm_device_usable() -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    return True, "/dev/kvm is accessible"


def probe_key() -> str:
    version = proc.run([QEMU, "--version"], capture=True).stdout.splitlines()[0].strip()
    return f"{platform.release()}|{version}"


def _probe_cache_path() -> Path:
    return cache_dir() / "accel-probe.json"


def _load_probe_cache() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_probe_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_probe_cache(cache: Mapping[str, object]) -> None:
    path = _probe_cache_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(cache, indent=2, sort_keys=True))
    os.replace(tmp, path)


def probe_kvm(disk: Path, *, timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot disk (snapshot mode: never written) with KVM; (True, why) if the kernel got going."""
    with tempfile.TemporaryDirectory(prefix="odoo-image-kvm-probe-") as tmp:
        log = Path(tmp) / "serial.log"
        argv = [QEMU, "-accel", "kvm", "-cpu", "max", "-m", "1024", "-smp", "1",
                "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-drive", f"file={disk},if=virtio,format={image_format(disk)},snapshot=on",
                "-serial", f"file:{log}"]
        qemu = subprocess.Popen([*DIE_WITH_PARENT, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        start = time.monotonic()
        try:
            while time.monotonic() - start < timeout:
                text = log.read_text(errors="replace") if log.exists() else ""
                if any(marker in text for marker in PROBE_MARKERS):
                    return True, f"stock kernel booted past early boot in {time.monotonic() - start:.0f} s"
                if qemu.poll() is not None:
                    err = (qemu.stderr.read() if qemu.stderr else "").strip().splitlines()
                    return False, f"qemu -accel kvm exited {qemu.returncode}: {err[-1] if err else 'no output'}"
                time.sleep(0.5)
            last = _last_line(log.read_text(errors="replace") if log.exists() else "")
            return False, f"stock kernel did not get past early boot within {timeout:.0f} s (serial: {last!r})"
        finally:
            _terminate(qemu)


# ---------------------------------------------------------------- disks, seeds, keys

def image_format(path: Path) -> str:
    if not path.exists():
        raise PipelineError(f"disk image {path} does not exist")
    info = proc.run(["qemu-img", "info", "--output=json", "-U", path], capture=True).stdout
    return str(json.loads(info)["format"])


def make_overlay(base: Path, overlay: Path, *, size_gib: int | None = None) -> Path:
    """A qcow2 overlay on base: the VM writes there and base stays untouched.

    size_gib grows the virtual disk (cloud-init's growpart then extends the root fs)."""
    argv: list[str | Path] = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base.resolve(),
                              "-F", image_format(base), overlay]
    if size_gib is not None:
        argv.append(f"{size_gib}G")
    proc.run(argv, capture=True)
    return overlay


def seed_iso(path: Path, user_data: str, meta_data: str, *, network_config: str | None = None) -> Path:
    """Write a NoCloud seed image (volume label cidata) with cloud-localds."""
    with tempfile.TemporaryDirectory(prefix="odoo-image-seed-") as tmp:
        work = Path(tmp)
        (work / "user-data").write_text(user_data)
        (work / "meta-data").write_text(meta_data)
        argv: list[str | Path] = ["cloud-localds"]
        if network_config is not None:
            (work / "network-config").write_text(network_config)
            argv.append(f"--network-config={work / 'network-config'}")
        argv += [path, work / "user-data", work / "meta-data"]
        proc.run(argv, capture=True)
    return path


def nocloud_config(public_key: str, *, hostname: str = "odoo-image-test") -> tuple[str, str]:
    """(user-data, meta-data) that authorize public_key for the image's default user.

    JSON is valid YAML, so no YAML library is needed to write them.
    """
    user_data = "#cloud-config\n" + json.dumps({"ssh_authorized_keys": [public_key.strip()]}, indent=2) + "\n"
    meta_data = json.dumps({"instance-id": f"iid-{secrets.token_hex(6)}", "local-hostname": hostname}) + "\n"
    return user_data, meta_data


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: str


def generate_ssh_keypair(directory: Path, name: str = "id_ed25519") -> SshKey:
    """A throwaway ed25519 key pair without passphrase in directory."""
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / name
    proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "odoo-image-throwaway", "-f", private],
             capture=True)
    return SshKey(private, private.with_name(f"{name}.pub").read_text().strip())


# ---------------------------------------------------------------- running VMs

@dataclass
class VM:
    """A running QEMU guest; ports maps guest TCP ports to 127.0.0.1 host ports."""

    process: subprocess.Popen[bytes]
    ports: dict[int, int]
    serial_log: Path
    overlay: Path
    user: str | None = None
    key: Path | None = None
    argv: list[str] = field(default_factory=list)
    address: str | None = None  # the guest's address on a tap link, if booted with one

    @property
    def ssh_port(self) -> int:
        return self.ports[22]

    def alive(self) -> bool:
        return self.process.poll() is None

    def serial_tail(self, lines: int = 40) -> str:
        text = self.serial_log.read_text(errors="replace") if self.serial_log.exists() else ""
        return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])

    def _ssh_argv(self, user: str, key: Path) -> list[str]:
        return ["ssh", *SSH_OPTIONS, "-i", str(key), "-p", str(self.ssh_port), f"{user}@127.0.0.1"]

    def wait_ssh(self, user: str, key: Path, timeout: float = 300.0) -> float:
        """Poll until `ssh ... true` succeeds as user; returns the seconds it took."""
        start = time.monotonic()
        while True:
            if not self.alive():
                raise PipelineError(f"VM exited ({self.process.returncode}) before SSH came up; "
                                    f"serial: {_last_line(self.serial_tail())!r}")
            try:
                done = subprocess.run([*self._ssh_argv(user, key), "true"], capture_output=True, timeout=30,
                                      check=False)
                if done.returncode == 0:
                    self.user, self.key = user, key
                    return time.monotonic() - start
            except subprocess.TimeoutExpired:
                pass  # sshd accepted but stalled (guest still booting under TCG): retry
            if time.monotonic() - start > timeout:
                raise PipelineError(f"no SSH login as {user} on 127.0.0.1:{self.ssh_port} within {timeout:.0f} s; "
                                    f"serial: {_last_line(self.serial_tail())!r}")
            time.sleep(2)

    def ssh(self, cmd: Sequence[str] | str, *, check: bool = True, capture: bool = True,
            timeout: float | None = None, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the guest (after wait_ssh). A sequence is quoted argv-safe with
        shlex.join; a str is passed as one remote shell command line."""
        if self.user is None or self.key is None:
            raise PipelineError("VM.ssh called before VM.wait_ssh succeeded")
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return proc.run([*self._ssh_argv(self.user, self.key), remote], check=check, capture=capture,
                        timeout=timeout, input_text=input_text)

    def copy_to(self, local: Path, remote: str) -> None:
        """scp a file or directory into the guest (after wait_ssh)."""
        if self.user is None or self.key is None:
            raise PipelineError("VM.copy_to called before VM.wait_ssh succeeded")
        proc.run(["scp", *SSH_OPTIONS, "-r", "-i", self.key, "-P", str(self.ssh_port), local,
                  f"{self.user}@127.0.0.1:{remote}"], capture=True)

    def kill(self) -> None:
        _terminate(self.process)


@contextmanager
def boot(
    disk: Path,
    *,
    seed: Path | None = None,
    memory_mib: int = 2048,
    cpus: int = 2,
    accelerator: str = "tcg",
    forwards: Mapping[int, int | None] | None = None,
    serial_log: Path | None = None,
    disk_gib: int | None = None,
    tap: Tap | None = None,
) -> Iterator[VM]:
    """Boot disk via a throwaway overlay; yield the VM; always kill QEMU and delete the overlay.

    accelerator must be resolved ('kvm' or 'tcg'; see choose_accelerator). forwards maps
    guest TCP ports to host ports on 127.0.0.1 (None or 0: pick a free one); guest port 22
    is always forwarded. serial_log keeps the console log at that path (otherwise it is
    deleted with the overlay; its tail is printed if the body raises). disk_gib enlarges
    the overlay's virtual size (never smaller than disk). tap adds a second NIC on that host
    link (give the guest `network_config(tap)` in its seed); the VM's `address` is then the
    guest's address on it.
    """
    if accelerator not in ("kvm", "tcg"):
        raise PipelineError(f"boot needs a resolved accelerator (kvm or tcg), got {accelerator!r}")
    workdir = Path(tempfile.mkdtemp(prefix="odoo-image-vm-"))
    vm: VM | None = None
    try:
        overlay = make_overlay(disk, workdir / "overlay.qcow2", size_gib=disk_gib)
        log = serial_log or workdir / "serial.log"
        vm = _start(overlay, seed, memory_mib, cpus, accelerator, dict(forwards or {}), log, workdir,
                    tap.name if tap else None)
        vm.address = tap.guest_addr if tap else None
        yield vm
    except BaseException:
        if vm is not None:
            print(f"--- VM serial console (last lines of {vm.serial_log}) ---\n{vm.serial_tail()}\n---",
                  file=sys.stderr, flush=True)
        raise
    finally:
        if vm is not None:
            vm.kill()
        _remove_workdir(workdir)


def _remove_workdir(workdir: Path) -> None:
    for child in workdir.iterdir():
        child.unlink(missing_ok=True)
    workdir.rmdir()


def qemu_argv(overlay: Path, seed: Path | None, memory_mib: int, cpus: int, accelerator: str,
              ports: Mapping[int, int], serial_log: Path, tap: str | None = None) -> list[str]:
    accel = "tcg,thread=multi" if accelerator == "tcg" else "kvm"
    hostfwd = ",".join(f"hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in sorted(ports.items()))
    argv = [
        QEMU, "-name", "odoo-image-vm", "-machine", "pc", "-accel", accel, "-cpu", "max",
        "-smp", str(cpus), "-m", str(memory_mib),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-serial", f"file:{serial_log}",
        # The overlay is thrown away, so host-side write caching is safe and faster.
        "-drive", f"file={overlay},if=virtio,format=qcow2,cache=unsafe,discard=unmap",
        "-netdev", f"user,id=net0,{hostfwd}", "-device", f"virtio-net-pci,netdev=net0,mac={UPLINK_MAC}",
        # Entropy for early boot (SSH host keys, Python hash seeds) under slow TCG.
        "-device", "virtio-rng-pci",
    ]
    if tap is not None:
        argv += ["-netdev", f"tap,id=net1,ifname={tap},script=no,downscript=no",
                 "-device", f"virtio-net-pci,netdev=net1,mac={PROBE_MAC}"]
    if seed is not None:
        argv += ["-drive", f"file={seed},if=virtio,format=raw,readonly=on"]
    return argv


def network_config(tap: Tap) -> str:
    """NoCloud network-config (v2) for a guest booted with `tap`: the slirp NIC by DHCP (the
    way out, DNS), the tap NIC at its fixed address with no route beyond the host.

    Names are set (and not kernel-style ethN) so the ENI renderer (bookworm) and netplan
    (jammy) both get real interface names, and no rename races the kernel's own."""
    config = {"version": 2, "ethernets": {
        "uplink0": {"match": {"macaddress": UPLINK_MAC}, "set-name": "uplink0", "dhcp4": True},
        "probe0": {"match": {"macaddress": PROBE_MAC}, "set-name": "probe0", "dhcp4": False,
                   "addresses": [f"{tap.guest_addr}/{tap.prefixlen}"]},
    }}
    return json.dumps(config, indent=2) + "\n"


def _start(overlay: Path, seed: Path | None, memory_mib: int, cpus: int, accelerator: str,
           forwards: dict[int, int | None], serial_log: Path, workdir: Path, tap: str | None,
           attempts: int = 3) -> VM:
    forwards.setdefault(22, None)
    for attempt in range(1, attempts + 1):
        ports = {guest: host or free_port() for guest, host in forwards.items()}
        argv = qemu_argv(overlay, seed, memory_mib, cpus, accelerator, ports, serial_log, tap)
        errlog = workdir / "qemu.stderr"
        with open(errlog, "wb") as err:
            process = subprocess.Popen([*DIE_WITH_PARENT, *argv], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=err)
        vm = VM(process, ports, serial_log, overlay, argv=argv)
        # QEMU fails at once on bad arguments or a taken host port; else it keeps running.
        try:
            process.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            return vm
        message = _last_line(errlog.read_text(errors="replace")) or f"exit {process.returncode}"
        picked = any(host is None for host in forwards.values())
        if "forwarding" in message and picked and attempt < attempts:
            continue  # a picked port was taken meanwhile: pick again
        raise PipelineError(f"QEMU failed to start: {message}")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _terminate(process: subprocess.Popen[bytes] | subprocess.Popen[str]) -> None:
    proc.terminate(process, grace=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in _ANSI.sub("", text).splitlines() if line.strip()]
    return lines[-1] if lines else ""
