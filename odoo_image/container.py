"""A booted systemd-nspawn container of the target OS, as a fast stand-in for the VM.

It runs the same provisioning scripts and the same seal as the Packer build, then boots
again as a first boot with a NoCloud seed, exactly like a launched instance. It lives in
its own network namespace (a veth pair, NAT for package downloads), so its services,
firewall and ports never touch the host's, and the test runner reaches it like a remote
machine (SSH on the container's address).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .errors import PipelineError

SUBNET_BASE = ipaddress.ip_network("10.213.0.0/16")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Network:
    """A network namespace with a veth pair to the host and NAT to the outside."""

    name: str
    host_addr: str
    guest_addr: str
    host_if: str
    guest_if: str
    uplink: str
    _forwarding_was: str = "0"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.name}"

    @classmethod
    def create(cls) -> Network:
        remove_stale_namespaces()
        token = secrets.token_hex(3)
        index = int(token, 16) % 250 + 1
        subnet = list(SUBNET_BASE.subnets(new_prefix=30))[index]
        host_addr, guest_addr = (str(a) for a in list(subnet.hosts())[:2])
        uplink = _default_uplink()
        net = cls(name=f"odimg-{token}", host_addr=host_addr, guest_addr=guest_addr,
                  host_if=f"odh{token}", guest_if=f"odg{token}", uplink=uplink)
        try:
            net._up(subnet)
        except BaseException:
            net.destroy()
            raise
        return net

    def _up(self, subnet: ipaddress.IPv4Network) -> None:
        ip = ["ip"]
        proc.run([*ip, "netns", "add", self.name])
        proc.run([*ip, "link", "add", self.host_if, "type", "veth", "peer", "name", self.guest_if])
        proc.run([*ip, "link", "set", self.guest_if, "netns", self.name])
        proc.run([*ip, "addr", "add", f"{self.host_addr}/30", "dev", self.host_if])
        proc.run([*ip, "link", "set", self.host_if, "up"])
        inside = [*ip, "netns", "exec", self.name, "ip"]
        # The ifb module puts ifb0/ifb1 into every new namespace; no VM has them, and
        # cloud-init's link setup fails on them inside a container.
        for link in json.loads(proc.run([*inside, "-j", "link", "show"], capture=True).stdout):
            if link["ifname"].startswith("ifb"):
                proc.run([*inside, "link", "delete", link["ifname"]])
        proc.run([*inside, "link", "set", "lo", "up"])
        proc.run([*inside, "link", "set", self.guest_if, "name", "eth0"])
        proc.run([*inside, "addr", "add", f"{self.guest_addr}/30", "dev", "eth0"])
        proc.run([*inside, "link", "set", "eth0", "up"])
        proc.run([*inside, "route", "add", "default", "via", self.host_addr])
        # NAT: the container downloads packages through the host, like a VM behind slirp.
        self._forwarding_was = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
        Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        proc.run(["nft", "add", "table", "ip", self.name])
        proc.run(["nft", "add", "chain", "ip", self.name, "post",
                  "{ type nat hook postrouting priority 100 ; }"])
        proc.run(["nft", "add", "rule", "ip", self.name, "post", "ip", "saddr", str(subnet),
                  "oifname", self.uplink, "masquerade"])

    def cloud_network_config(self) -> str:
        """NoCloud network-config (v2) for this address, as a cloud's metadata would give it."""
        config = {"version": 2, "ethernets": {"eth0": {
            "addresses": [f"{self.guest_addr}/30"],
            "routes": [{"to": "0.0.0.0/0", "via": self.host_addr}],
            "nameservers": {"addresses": host_nameservers()},
        }}}
        return json.dumps(config, indent=2) + "\n"

    def destroy(self) -> None:
        subprocess.run(["nft", "delete", "table", "ip", self.name], capture_output=True)
        subprocess.run(["ip", "link", "delete", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
        if not list(Path("/run/netns").glob("odimg-*")):
            Path("/proc/sys/net/ipv4/ip_forward").write_text(f"{self._forwarding_was}\n")


def remove_stale_namespaces() -> None:
    """Namespaces (and their NAT tables) left by a harness that was killed: no process inside."""
    netns = Path("/run/netns")
    for path in sorted(netns.glob("odimg-*")) if netns.is_dir() else []:
        pids = subprocess.run(["ip", "netns", "pids", path.name], capture_output=True, text=True).stdout
        if not pids.strip():
            subprocess.run(["nft", "delete", "table", "ip", path.name], capture_output=True)
            subprocess.run(["ip", "link", "delete", f"odh{path.name.removeprefix('odimg-')}"], capture_output=True)
            subprocess.run(["ip", "netns", "delete", path.name], capture_output=True)


def _default_uplink() -> str:
    out = proc.run(["ip", "-o", "route", "show", "default"], capture=True).stdout.split()
    if "dev" not in out:
        raise PipelineError("no default route on the host: the container cannot download packages")
    return out[out.index("dev") + 1]


@dataclass
class Container:
    """One booted container; `exec` runs commands inside it as root."""

    root: Path
    network: Network
    log_path: Path
    name: str = field(default_factory=lambda: f"odoo-image-{secrets.token_hex(3)}")
    _nspawn: subprocess.Popen[bytes] | None = None
    _leader: int | None = None

    def boot(self, timeout: float = 300) -> None:
        log = self.log_path.open("ab")
        dns = self.log_path.with_name(f"{self.name}-resolved.conf")
        dns.write_text(resolved_dropin())
        # If the pipeline dies, nspawn gets SIGTERM and halts the container (no orphans).
        argv = [*proc.DIE_WITH_PARENT, "systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--quiet",
                f"--directory={self.root}", f"--machine={self.name}", f"--hostname={self.name}",
                f"--network-namespace-path={self.network.netns_path}", "--resolv-conf=off",
                # What DHCP tells a VM: the upstream resolvers (runtime config, never in the image).
                f"--bind-ro={dns}:/run/systemd/resolved.conf.d/50-odoo-image-harness.conf",
                "--capability=CAP_NET_ADMIN,CAP_NET_RAW,CAP_SYS_ADMIN",
                # The console goes to our log file: a passive console is a pty nobody reads,
                # and journald blocks once its buffer is full.
                "--console=pipe",
                # Passed to the container's init as its command line. The container's /sys
                # lists the host's links too; this keeps cloud-init from running udev's
                # link setup on them (it fails on links it cannot open).
                "net.ifnames=0"]
        self._nspawn = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
        self._leader = self._wait_leader(timeout=60)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.exec(["systemctl", "is-system-running"], check=False, capture=True).stdout.strip()
            if state in ("running", "degraded"):
                return
            if self._nspawn.poll() is not None:
                break
            time.sleep(1)
        raise PipelineError(f"container {self.name} did not finish booting (see {self.log_path})")

    def _wait_leader(self, timeout: float) -> int:
        """The container's init: the child of systemd-nspawn that runs systemd."""
        assert self._nspawn is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
            if children.exists():
                for pid in children.read_text().split():
                    try:
                        comm = Path(f"/proc/{pid}/comm").read_text().strip()
                    except OSError:
                        continue
                    if comm == "systemd":
                        return int(pid)
            if self._nspawn.poll() is not None:
                raise PipelineError(f"systemd-nspawn exited with {self._nspawn.returncode} (see {self.log_path})")
            time.sleep(0.2)
        raise PipelineError(f"container {self.name}: systemd did not start (see {self.log_path})")

    def exec(self, argv: Sequence[str], *, check: bool = True, capture: bool = False,
             timeout: float | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        if self._leader is None:
            raise PipelineError(f"container {self.name} is not running")
        environment = ["env", "-i", f"PATH={PATH}", "LANG=C.UTF-8", "HOME=/root",
                       *[f"{k}={v}" for k, v in (env or {}).items()]]
        cmd = ["nsenter", f"--target={self._leader}", "--mount", "--uts", "--ipc", "--net", "--pid",
               "--root", "--wd", "--", *environment, *argv]
        return proc.run(cmd, check=check, capture=capture, timeout=timeout)

    def wait_stopped(self, timeout: float = 180) -> None:
        if self._nspawn is None:
            return
        self._nspawn.wait(timeout=timeout)  # on timeout the handle stays, so kill() still works
        self._nspawn = None
        self._leader = None

    def poweroff(self, timeout: float = 180) -> None:
        if self._nspawn is None:
            return
        if self._nspawn.poll() is None:
            self.exec(["systemctl", "poweroff"], check=False)
        try:
            self.wait_stopped(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self._nspawn is not None and self._nspawn.poll() is None:
            os.killpg(self._nspawn.pid, signal.SIGKILL)
            self._nspawn.wait(timeout=30)
        self._nspawn = None
        self._leader = None


def host_nameservers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[str]:
    servers = [line.split()[1] for line in resolv_conf.read_text().splitlines()
               if line.startswith("nameserver") and len(line.split()) > 1]
    usable = [s for s in servers if not ipaddress.ip_address(s).is_loopback]
    if not usable:
        raise PipelineError(f"{resolv_conf} names no non-loopback nameserver the container could use")
    return usable


def resolved_dropin() -> str:
    return "[Resolve]\nDNS=" + " ".join(host_nameservers()) + "\n"


def copy_rootfs(source: Path, dest: Path) -> Path:
    """A private, writable copy of a cached rootfs (reflinks where the filesystem has them)."""
    if dest.exists():
        shutil.rmtree(dest)
    proc.run(["cp", "-a", "--reflink=auto", f"{source}/.", str(dest)], capture=True)
    return dest


@contextmanager
def booted(root: Path, log_path: Path, network: Network | None = None) -> Iterator[Container]:
    """Boot root in its own network namespace; always tears everything down."""
    network = network or Network.create()
    container = Container(root=root, network=network, log_path=log_path)
    try:
        container.boot()
        yield container
    finally:
        try:
            container.poweroff(timeout=60)
        finally:
            container.kill()
            network.destroy()
