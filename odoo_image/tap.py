"""A tap link between the host and a QEMU guest, so the test runner reaches the guest at a
real address, like a remote machine.

Slirp port forwarding (the guest's first NIC, which also gives it DHCP, DNS and the way out)
cannot show which ports the guest's firewall lets in: the host side of a forward accepts
every connection, whatever the guest does with it. Through the tap, a closed or filtered
port looks closed, exactly as it would from another machine. The link has no route beyond
the host and no NAT: it exists only to be probed.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from . import proc

# Apart from the nspawn harness's 10.213.0.0/16, so both can run at once.
SUBNET_BASE = ipaddress.ip_network("10.214.0.0/16")
PREFIX = "odt"


@dataclass(frozen=True)
class Tap:
    name: str
    host_addr: str
    guest_addr: str
    prefixlen: int

    @classmethod
    def create(cls) -> Tap:
        remove_stale_taps()
        token = secrets.token_hex(3)
        subnet = list(SUBNET_BASE.subnets(new_prefix=30))[int(token, 16) % 16384]
        host_addr, guest_addr = (str(a) for a in list(subnet.hosts())[:2])
        tap = cls(name=f"{PREFIX}{token}", host_addr=host_addr, guest_addr=guest_addr, prefixlen=30)
        try:
            proc.run(["ip", "tuntap", "add", "dev", tap.name, "mode", "tap"], capture=True)
            proc.run(["ip", "addr", "add", f"{host_addr}/30", "dev", tap.name], capture=True)
            # The owner's pid, so that a later run can tell a leftover from a link in use.
            proc.run(["ip", "link", "set", tap.name, "alias", f"odoo-image pid={os.getpid()}"], capture=True)
            proc.run(["ip", "link", "set", tap.name, "up"], capture=True)
        except BaseException:
            tap.destroy()
            raise
        return tap

    def destroy(self) -> None:
        subprocess.run(["ip", "link", "delete", self.name], capture_output=True, check=False)


def remove_stale_taps() -> None:
    """Taps left by a harness that was killed (its pid, kept in the link's alias, is gone)."""
    out = subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True, text=True, check=False).stdout
    for link in json.loads(out or "[]"):
        alias = link.get("ifalias", "")
        if not (link.get("ifname", "").startswith(PREFIX) and alias.startswith("odoo-image pid=")):
            continue
        if not os.path.exists(f"/proc/{alias.removeprefix('odoo-image pid=')}"):
            subprocess.run(["ip", "link", "delete", link["ifname"]], capture_output=True, check=False)


@contextmanager
def probe_link() -> Iterator[Tap | None]:
    """A tap for one boot when we may make one (root), else None (and say what is lost)."""
    if os.geteuid() != 0:
        print("probe link: not root, so no tap: the suite's checks from outside the guest "
              "(open and closed ports, client address) will be skipped", file=sys.stderr, flush=True)
        yield None
        return
    tap = Tap.create()
    print(f"probe link: {tap.name}, runner {tap.host_addr} -> guest {tap.guest_addr}", file=sys.stderr, flush=True)
    try:
        yield tap
    finally:
        tap.destroy()
