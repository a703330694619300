"""ufw and fail2ban on the instance, and the instance as seen from the runner."""

from __future__ import annotations

import datetime
import json

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

TEST_NET_IP = "203.0.113.77"  # RFC 5737 TEST-NET-3: never a real client
BAN_TIMEOUT_S = 30


def _ufw_status(host) -> str:
    return h.root_check(host, "ufw status")


def test_ufw_is_active(host):
    assert "Status: active" in _ufw_status(host)


def test_ufw_allows_only_ssh_http_https(host):
    allowed = h.ufw_allowed_ports(_ufw_status(host))
    assert allowed, "ufw has no ALLOW rules"
    ports = {rule.split("/")[0] for rule in allowed}
    assert ports == {"22", "80", "443"}, f"ufw allows {sorted(allowed)}"


def test_ufw_denies_incoming_by_default(host):
    verbose = h.root_check(host, "ufw status verbose")
    assert "deny (incoming)" in verbose, verbose


def test_fail2ban_odoo_jail_is_running(host):
    status = h.root_check(host, "fail2ban-client status odoo")
    assert "Status for the jail: odoo" in status, status
    assert h.ODOO_LOG in status, f"the odoo jail does not watch {h.ODOO_LOG}: {status}"


def _banned(host) -> list[str]:
    return h.fail2ban_banned(h.root_check(host, "fail2ban-client status odoo"))


def _failed_login_lines(count: int, address: str, now: datetime.datetime) -> list[str]:
    # Odoo's exact format (UTC; the trailing space is Odoo's empty perf_info).
    lines = []
    for i in range(count):
        stamp = now.strftime("%Y-%m-%d %H:%M:%S") + f",{(now.microsecond // 1000 + i) % 1000:03d}"
        lines.append(f"{stamp} 4242 INFO imagetest odoo.addons.base.models.res_users: "
                     f"Login failed for db:imagetest login:admin from {address} ")
    return lines


def test_fail2ban_bans_repeated_odoo_login_failures(host):
    if TEST_NET_IP in _banned(host):  # left over from an interrupted run
        h.root_run(host, "fail2ban-client set odoo unbanip %s", TEST_NET_IP)
    now_utc = datetime.datetime.fromtimestamp(int(host.run("date -u +%s").stdout.strip()), datetime.UTC)
    text = "\n".join(_failed_login_lines(6, TEST_NET_IP, now_utc)) + "\n"
    h.root_check(host, "printf %s %s >> %s", "%s", text, h.ODOO_LOG)
    try:
        banned = h.wait_for(lambda: _banned(host), lambda ips: TEST_NET_IP in ips, BAN_TIMEOUT_S, 2)
        assert TEST_NET_IP in banned, (
            f"6 'Login failed' lines for {TEST_NET_IP} did not get it banned within {BAN_TIMEOUT_S} s: "
            f"{h.root_run(host, 'fail2ban-client status odoo').stdout}")
        rules = h.wait_for(lambda: h.ufw_rules_for(_ufw_status(host), TEST_NET_IP), bool, 15, 1)
        assert any("DENY" in r or "REJECT" in r for r in rules), (
            f"fail2ban lists {TEST_NET_IP} as banned but ufw has no rule for it")
    finally:
        h.root_run(host, "fail2ban-client set odoo unbanip %s", TEST_NET_IP)
    assert TEST_NET_IP not in _banned(host), f"{TEST_NET_IP} is still banned after unbanip"


# --------------------------------------------------------------------------- from outside


@pytest.fixture(scope="module")
def outside(external_addr) -> str:
    if not external_addr:
        pytest.skip("ODOO_IMAGE_EXTERNAL_ADDR not set: the runner reaches the instance only through a port forward")
    return external_addr


@pytest.mark.parametrize("port", [22, 80, 443])
def test_port_reachable_from_outside(outside, port):
    reachable, why = h.tcp_open_from_runner(outside, port)
    assert reachable, f"{outside}:{port} does not accept TCP from the runner: {why}"


@pytest.mark.parametrize("port", [8069, 8072, 5432])
def test_port_closed_from_outside(outside, port):
    reachable, _ = h.tcp_open_from_runner(outside, port, timeout=3)
    assert not reachable, f"{outside}:{port} accepts TCP from the runner"


def test_odoo_logs_the_client_address_nginx_saw(host, outside, odoo_database, unique_token):
    """A failed login sent from the runner through NGINX (no X-Forwarded-For of our own):
    Odoo's log line must carry the address NGINX saw, never 127.0.0.1 (fail2ban needs it)."""
    body = json.dumps({"jsonrpc": "2.0", "method": "call", "id": 1,
                       "params": {"db": odoo_database, "login": unique_token, "password": "wrong-" + unique_token}})
    response = h.probe_from_runner(
        f"https://{h.url_host(outside)}/web/session/authenticate?probe={unique_token}",
        method="POST", body=body, headers={"Content-Type": "application/json"})
    assert response.status == 200, response

    def grep(path: str) -> list[str]:
        return h.root_run(host, "grep -F -- %s %s", unique_token, path).stdout.splitlines()

    odoo_lines = h.wait_for(lambda: [line for line in grep(h.ODOO_LOG) if "Login failed" in line], bool, 15, 1)
    assert odoo_lines, f"Odoo logged no failed login for {unique_token}: {response!r}"
    nginx_lines = h.wait_for(lambda: grep("/var/log/nginx/access.log"), bool, 15, 1)
    assert nginx_lines, "NGINX's access log has no line for the request"
    nginx_saw = nginx_lines[-1].split()[0]
    # One failure never bans, but repeated suite runs within findtime could: forget ours.
    h.root_run(host, "fail2ban-client set odoo unbanip %s", nginx_saw)
    odoo_logged = odoo_lines[-1].rstrip().rsplit(" from ", 1)[-1].strip()
    assert odoo_logged not in h.LOOPBACK, f"Odoo logged the proxy ({odoo_logged}), not the client: {odoo_lines[-1]}"
    assert odoo_logged == nginx_saw, f"Odoo logged {odoo_logged}, NGINX saw {nginx_saw}"
