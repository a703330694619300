"""This host's addresses and name resolution: what the certificate and the URL are made for."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .runner import Runner


def is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _usable(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified)


def interface_addresses(runner: Runner) -> list[str]:
    """Global addresses on this host's interfaces (`ip -j addr`), IPv4 first."""
    result = runner.run(["ip", "-j", "addr", "show"], check=False, timeout=10)
    found: list[str] = []
    if result.ok:
        try:
            links = json.loads(result.stdout or "[]")
        except ValueError:
            links = []
        for link in links if isinstance(links, list) else []:
            for info in link.get("addr_info", []) if isinstance(link, dict) else []:
                local = info.get("local") if isinstance(info, dict) else None
                if isinstance(local, str) and _usable(local) and local not in found:
                    found.append(local)
    if not found:
        primary = _primary_ipv4()
        if primary:
            found.append(primary)
    return [a for a in found if ":" not in a] + [a for a in found if ":" in a]


def _primary_ipv4() -> str | None:
    """Source address of the default route (connect() on UDP sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, no packet leaves
            address = s.getsockname()[0]
    except OSError:
        return None
    return address if _usable(address) else None


def _walk(data: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield str(key), value
            yield from _walk(value)
    elif isinstance(data, list):
        for item in data:
            yield from _walk(item)


def public_addresses(instance_data: Path) -> list[str]:
    """Public IPs the cloud's metadata reports (EC2 NATs them: not on any interface).

    cloud-init mirrors the datasource metadata in /run/cloud-init/instance-data.json; key
    names differ per cloud, so look for the usual spellings anywhere in it.
    """
    try:
        data = json.loads(instance_data.read_text())
    except (OSError, ValueError):
        return []
    found: list[str] = []
    for key, value in _walk(data):
        if key.replace("-", "_").lower() in ("public_ipv4", "public_ipv4s", "public_ipv6s", "public_ip"):
            values = value if isinstance(value, list) else str(value).split()
            for item in values:
                if isinstance(item, str) and _usable(item) and item not in found:
                    found.append(item)
    return found


def resolve(name: str) -> list[str]:
    """Addresses `name` resolves to (A and AAAA), empty when it does not resolve."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return []
    out: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%")[0]
        if address not in out:
            out.append(address)
    return out
