"""Services up and enabled; who listens where."""

from __future__ import annotations

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

SERVICES = ["odoo", "nginx", "postgresql", "fail2ban"]


@pytest.mark.parametrize("unit", SERVICES)
def test_service_is_enabled(host, unit):
    state = h.systemctl(host, "is-enabled", unit)
    assert state == "enabled", f"{unit} is-enabled: {state!r}"


@pytest.mark.parametrize("unit", SERVICES)
def test_service_is_active(host, unit):
    state = h.wait_active(host, unit)
    assert state == "active", f"{unit} is {state}: {h.systemctl(host, 'status', unit)}"


@pytest.mark.parametrize("port", [8069, 8072])
def test_odoo_port_listens_on_loopback_only(host, odoo_ready, port):
    addresses = h.addresses_on_port(host, port)
    assert addresses, f"nothing listens on {port}"
    assert addresses <= h.LOOPBACK, f"port {port} listens on {sorted(addresses)} (only loopback allowed)"


@pytest.mark.parametrize("port", [22, 80, 443])
def test_public_port_listens_on_all_addresses(host, port):
    addresses = h.addresses_on_port(host, port)
    assert addresses & h.WILDCARD, f"port {port} listens on {sorted(addresses)}, not on all addresses"


def test_nothing_else_listens_publicly(host):
    public = sorted({(a, p) for a, p in h.listeners(host) if a not in h.LOOPBACK and not a.startswith("127.")
                     and p not in (22, 80, 443)})
    assert not public, f"unexpected TCP listeners outside loopback: {public}"
