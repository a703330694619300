"""The front door: NGINX in front of Odoo, over TLS, as seen from the instance itself."""

from __future__ import annotations

import base64
import os
import re

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

BASE = "https://127.0.0.1"


def test_nginx_config_test_passes(host):
    result = h.root_run(host, "nginx -t 2>&1")
    assert result.rc == 0, h.describe(result)
    assert "test is successful" in result.stdout, result.stdout


def test_health_through_nginx(host, odoo_ready):
    response = h.http(host, f"{BASE}/web/health")
    assert response.status == 200, response
    assert response.json() == {"status": "pass"}, response


def test_health_with_db_server_status_through_nginx(host, odoo_ready):
    response = h.http(host, f"{BASE}/web/health?db_server_status=1")
    assert response.status == 200, response
    data = response.json()
    assert data.get("status") == "pass", response
    assert data.get("db_server_status") is True, response


@pytest.mark.parametrize("path", ["/web/database/manager", "/web/database/selector"])
def test_database_manager_refused_through_nginx(host, odoo_ready, path):
    response = h.http(host, f"{BASE}{path}")
    assert response.status == 403, response


def test_http_redirects_to_https(host, odoo_ready):
    response = h.http(host, "http://127.0.0.1/web/login?x=1")
    assert response.status in (301, 302, 307, 308), response
    location = response.header("location") or ""
    assert location.startswith("https://"), f"redirect to {location!r}"
    assert location.endswith("/web/login?x=1"), f"redirect drops the path: {location!r}"


def test_nginx_sends_the_proxy_headers_odoo_needs(nginx_dump):
    # proxy_mode only trusts X-Forwarded-* when X-Forwarded-Host is present; without the
    # full set Odoo logs every client as 127.0.0.1 and fail2ban is blind.
    headers = {}
    for value in h.nginx_directives(nginx_dump, "proxy_set_header"):
        name, _, rest = value.partition(" ")
        headers.setdefault(name.lower(), set()).add(rest.strip())
    assert "$host" in headers.get("x-forwarded-host", set()) or "$http_host" in headers.get("x-forwarded-host", set()), headers
    assert headers.get("x-forwarded-for", set()) & {"$proxy_add_x_forwarded_for", "$remote_addr"}, headers
    assert headers.get("x-forwarded-proto", set()) & {"$scheme", "https"}, headers
    assert "$remote_addr" in headers.get("x-real-ip", set()), headers


def test_nginx_routes_websocket_to_the_gevent_port(nginx_dump):
    block = re.search(r"location\s+(?:[=^~]+\s*)?/websocket\s*\{(?P<body>[^}]*)\}", nginx_dump)
    assert block, "no `location /websocket` in nginx -T"
    body = block.group("body")
    upstream = re.search(r"proxy_pass\s+http://([^;/\s]+)", body)
    assert upstream, f"/websocket is not proxied: {body}"
    target = upstream.group(1)
    if not target.endswith(":8072"):
        servers = re.search(rf"upstream\s+{re.escape(target)}\s*\{{(?P<body>[^}}]*)\}}", nginx_dump)
        assert servers and "127.0.0.1:8072" in servers.group("body"), f"upstream {target} is not 127.0.0.1:8072"
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", body), body
    assert re.search(r"proxy_set_header\s+Connection\s+\$connection_upgrade", body), body
    assert re.search(r"proxy_http_version\s+1\.1", body), body


def test_websocket_handshake_through_nginx_gets_101(host, odoo_ready, odoo_database):
    # A session bound to the database, as a browser has after /web/login?db=... (Odoo
    # serves /websocket only with a database; with a single one it picks it anyway).
    login = h.http(host, f"{BASE}/web/login?db={odoo_database}")
    cookies = [c.split(";", 1)[0] for c in login.headers("set-cookie") if c.startswith("session_id=")]
    key = base64.b64encode(os.urandom(16)).decode()
    headers = {
        "Host": "127.0.0.1",
        "Origin": "https://127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
    }
    if cookies:
        headers["Cookie"] = cookies[-1]
    response = h.http(host, f"{BASE}/websocket", headers=headers, timeout=15)
    assert response.status == 101, response
    assert response.header("sec-websocket-accept") == h.websocket_accept(key), response.data.get("headers")


def _served_certificate(nginx_dump: str) -> str:
    paths = h.nginx_directives(nginx_dump, "ssl_certificate")
    assert paths, "no ssl_certificate in nginx -T"
    return paths[0]


def _cert_facts(host, path: str) -> dict[str, str]:
    out = h.root_check(host, "openssl x509 -in %s -noout -subject -issuer -fingerprint -sha256 -nameopt RFC2253",
                       path)
    facts = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        facts[key.strip().lower()] = value.strip()
    return facts


def test_https_presents_the_configured_certificate(host, odoo_ready, nginx_dump):
    response = h.http(host, f"{BASE}/web/health")
    assert response.peer_cert_sha256, f"no certificate on 443: {response!r}"
    facts = _cert_facts(host, _served_certificate(nginx_dump))
    fingerprint = facts.get("sha256 fingerprint", "").replace(":", "").lower()
    assert fingerprint == response.peer_cert_sha256, "443 serves a certificate other than nginx's ssl_certificate"


def test_certificate_is_self_signed_without_a_domain(host, nginx_dump, domain):
    if domain:
        pytest.skip(f"domain {domain} configured: the certificate may come from Let's Encrypt")
    facts = _cert_facts(host, _served_certificate(nginx_dump))
    assert facts.get("subject") == facts.get("issuer"), f"not self-signed: {facts}"


def test_tls_private_key_is_not_world_readable(host, nginx_dump):
    keys = h.nginx_directives(nginx_dump, "ssl_certificate_key")
    assert keys, "no ssl_certificate_key in nginx -T"
    for path in set(keys):
        stat = h.root_stat(host, path, follow=True)
        assert stat is not None and stat.is_file, f"{path} missing"
        assert stat.mode & 0o007 == 0, f"{path} is world-accessible ({oct(stat.mode)})"
        assert stat.user == "root", f"{path} is owned by {stat.user}"


def _is_self_signed(host, nginx_dump) -> bool:
    facts = _cert_facts(host, _served_certificate(nginx_dump))
    return facts.get("subject") == facts.get("issuer")


def test_hsts_absent_with_a_self_signed_certificate(host, odoo_ready, nginx_dump):
    if not _is_self_signed(host, nginx_dump):
        pytest.skip("the instance serves a CA-issued certificate")
    hsts = h.http(host, f"{BASE}/web/health").header("strict-transport-security")
    assert hsts is None, f"HSTS ({hsts}) is sent with a self-signed certificate"


def test_hsts_present_with_a_real_certificate(host, odoo_ready, nginx_dump):
    if _is_self_signed(host, nginx_dump):
        pytest.skip("the instance serves its self-signed certificate")
    hsts = h.http(host, f"{BASE}/web/health").header("strict-transport-security")
    assert hsts and "max-age=" in hsts, "a CA-issued certificate is in place but HSTS is off"
