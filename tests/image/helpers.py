"""Helpers for the booted-image suite: root commands, psql, config parsing, listeners, HTTP.

Everything here talks to the instance only through a testinfra `host` (so the same code
works over SSH to a QEMU VM, an nspawn container or an AWS instance, and with
`local://`), except `probe_from_runner`/`tcp_open_from_runner`, which deliberately run on
the test runner to see the instance from the outside.

The SSH user has passwordless sudo; when it already is root, commands run without sudo.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import hmac
import json
import re
import shlex
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# Paths of the image layout contract (docs/image-layout.md).
ODOO_CONF = "/etc/odoo/odoo.conf"
ODOO_CONF_D = "/etc/odoo/conf.d"
ODOO_TUNING_CONF = "/etc/odoo/conf.d/20-tuning.conf"
ODOO_LOCAL_CONF = "/etc/odoo/conf.d/90-local.conf"
ODOO_PYTHON = "/opt/odoo/venv/bin/python3"
ODOO_BIN = "/opt/odoo/src/odoo-bin"
ODOO_DATA_DIR = "/var/lib/odoo"
ODOO_LOG = "/var/log/odoo/odoo.log"
RELEASE = "/etc/odoo-image-release"
STATE_DIR = "/var/lib/odoo-image"
FIRSTBOOT_STATUS = "/var/lib/odoo-image/firstboot.json"
FIRSTBOOT_DONE = "/var/lib/odoo-image/firstboot.done"
CREDENTIALS = "/var/lib/odoo-image/credentials"
SECRETS = "/var/lib/odoo-image/secrets.json"
SETTINGS = "/etc/odoo-image/settings.yaml"
PAYLOAD = "/var/tmp/odoo-image"
BUILD_CA_APT_CONF = "/etc/apt/apt.conf.d/99odoo-image-build-ca"
PG_TUNING_NAME = "50-odoo-image-tuning.conf"

LOOPBACK = frozenset({"127.0.0.1", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", "*"})

PBKDF2_PREFIX = "$pbkdf2-sha512$600000$"


# --------------------------------------------------------------------------- commands


def quote(command: str, *args: Any) -> str:
    """`command` with each %s replaced by a shell-quoted argument."""
    if not args:
        return command
    return command % tuple(shlex.quote(str(a)) for a in args)


_ROOT_CACHE: dict[int, bool] = {}


def is_root(host: Any) -> bool:
    key = id(host)
    if key not in _ROOT_CACHE:
        _ROOT_CACHE[key] = host.run("id -u").stdout.strip() == "0"
    return _ROOT_CACHE[key]


def root_run(host: Any, command: str, *args: Any) -> Any:
    """Run a shell command as root (sudo -n unless the SSH user is root); never raises."""
    cmd = quote(command, *args)
    if is_root(host):
        return host.run(cmd)
    return host.run(quote("sudo -n /bin/sh -c %s", cmd))


def describe(result: Any) -> str:
    out = (result.stdout or "").strip()
    err = (result.stderr or "").strip()
    return f"rc={result.rc}\n--- stdout ---\n{out[-3000:]}\n--- stderr ---\n{err[-3000:]}"


def root_check(host: Any, command: str, *args: Any) -> str:
    """Run as root, assert success, return stdout."""
    result = root_run(host, command, *args)
    assert result.rc == 0, f"`{quote(command, *args)}` failed as root: {describe(result)}"
    return result.stdout


def as_user(host: Any, user: str, command: str, *args: Any) -> Any:
    """Run a shell command as `user` (through root + runuser, so a nologin shell is fine)."""
    return root_run(host, "cd / && runuser -u %s -- /bin/sh -c %s", user, quote(command, *args))


def read_root_file(host: Any, path: str) -> str:
    return root_check(host, "cat -- %s", path)


def root_file_exists(host: Any, path: str) -> bool:
    return root_run(host, "test -e %s", path).rc == 0


class Stat:
    """`stat` of a path, taken as root (so 0700/0750 parents do not hide it)."""

    def __init__(self, line: str):
        user, group, mode, size, mtime, kind = line.split(" ", 5)
        self.user, self.group = user, group
        self.mode = int(mode, 8)
        self.size, self.mtime = int(size), int(mtime)
        self.kind = kind.strip()

    @property
    def is_file(self) -> bool:
        return self.kind.startswith("regular")

    @property
    def is_directory(self) -> bool:
        return self.kind == "directory"

    def __repr__(self) -> str:
        return f"<{self.kind} {self.user}:{self.group} {oct(self.mode)} {self.size} bytes>"


def root_stat(host: Any, path: str, *, follow: bool = False) -> Stat | None:
    """Owner, group, permission bits, size, mtime and type of `path`; None when absent."""
    result = root_run(host, ("stat -L" if follow else "stat") + " -c %s -- %s", "%U %G %a %s %Y %F", path)
    if result.rc != 0:
        return None
    return Stat(result.stdout.strip().splitlines()[-1])


def run_python(host: Any, script: str, *args: Any, root: bool = False) -> Any:
    """Run a Python 3 script with the OS python3 on the host (stdlib only), args on argv."""
    encoded = base64.b64encode(script.encode()).decode()
    launcher = f"import base64; exec(compile(base64.b64decode('{encoded}'), '<image-test>', 'exec'))"
    command = quote("python3 -c %s" + " %s" * len(args), launcher, *args)
    return root_run(host, command) if root else host.run(command)


def wait_for(fn: Callable[[], T], ok: Callable[[T], bool], timeout: float, interval: float = 2.0) -> T:
    """Call `fn` until `ok(value)` or `timeout` seconds; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if ok(value) or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# --------------------------------------------------------------------------- PostgreSQL


def psql(host: Any, sql: str, database: str = "postgres") -> str:
    """Run SQL as the postgres superuser (peer auth over the socket); unaligned tuples."""
    out = root_check(host, "cd / && runuser -u postgres -- psql -X -q -A -t -v ON_ERROR_STOP=1 -d %s -c %s",
                     database, sql)
    return out.strip()


def odoo_databases(host: Any) -> list[str]:
    """Databases owned by the odoo role (templates excluded), sorted."""
    out = psql(host, "SELECT d.datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                     "WHERE r.rolname = 'odoo' AND NOT d.datistemplate ORDER BY 1")
    return [line for line in out.splitlines() if line]


_SIZE = re.compile(r"^\s*'?\s*(\d+)\s*([a-zA-Z]*)\s*'?\s*$")
_UNITS = {"": None, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def pg_size_bytes(text: str, *, bare_unit: int = 8192) -> int:
    """A PostgreSQL memory size (`128MB`, `'1GB'`, `8kB`, `16384`) in bytes.

    A bare number is in the setting's own unit: 8 kB pages for shared_buffers (the default).
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a PostgreSQL size: {text!r}")
    number, unit = int(match.group(1)), match.group(2).lower()
    if unit not in _UNITS:
        raise ValueError(f"unknown PostgreSQL size unit in {text!r}")
    factor = _UNITS[unit]
    return number * (bare_unit if factor is None else factor)


def pg_conf_value(text: str, key: str) -> str | None:
    """The last value assigned to `key` in a postgresql.conf-style text (comments removed)."""
    value = None
    pattern = re.compile(rf"^\s*{re.escape(key)}\s*(?:=\s*|\s+)(.*?)\s*$")
    for raw in text.splitlines():
        line = _strip_pg_comment(raw)
        match = pattern.match(line)
        if match and match.group(1):
            value = match.group(1).strip()
            if len(value) >= 2 and value[0] == value[-1] == "'":
                value = value[1:-1]
    return value


def _strip_pg_comment(line: str) -> str:
    out, quoted = [], False
    for ch in line:
        if ch == "'":
            quoted = not quoted
        if ch == "#" and not quoted:
            break
        out.append(ch)
    return "".join(out)


# --------------------------------------------------------------------------- config files


def parse_ini(text: str) -> dict[str, dict[str, str]]:
    """An Odoo-style INI file as {section: {key: value}} (raw values, keys case kept)."""
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.MissingSectionHeaderError:
        parser.read_string("[options]\n" + text)
    return {section: dict(parser.items(section, raw=True)) for section in parser.sections()}


def parse_key_values(text: str) -> dict[str, str]:
    """`key = value` lines (comments with #/; skipped), e.g. /var/lib/odoo-image/credentials."""
    data: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        data[key.strip()] = value.strip()
    return data


def ini_bool(value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    return None


# --------------------------------------------------------------------------- secrets


def _ab64_decode(text: str) -> bytes:
    raw = text.replace(".", "+")
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def pbkdf2_sha512_verify(password: str, hashed: str) -> bool:
    """passlib's `$pbkdf2-sha512$<rounds>$<salt>$<checksum>` (adapted base64), as Odoo uses."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "pbkdf2-sha512":
        return False
    try:
        rounds = int(parts[2])
        salt, expected = _ab64_decode(parts[3]), _ab64_decode(parts[4])
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds)
    return hmac.compare_digest(digest, expected)


# --------------------------------------------------------------------------- sockets


def split_address(local: str) -> tuple[str, int]:
    """`127.0.0.1:80`, `[::1]:5432`, `*:22`, `0.0.0.0%lo:53` → (address, port)."""
    address, _, port = local.rpartition(":")
    address = address.strip("[]")
    if "%" in address:
        address = address.split("%", 1)[0]
    return address, int(port)


def parse_ss_listeners(output: str) -> list[tuple[str, int]]:
    """Listening TCP sockets from `ss -Htln` (State Recv-Q Send-Q Local Peer)."""
    found = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[0] != "LISTEN":
            continue
        try:
            found.append(split_address(fields[3]))
        except ValueError:
            continue
    return found


def listeners(host: Any) -> list[tuple[str, int]]:
    result = host.run("ss -Htln")
    assert result.rc == 0, f"ss -Htln failed: {describe(result)}"
    return parse_ss_listeners(result.stdout)


def addresses_on_port(host: Any, port: int) -> set[str]:
    return {addr for addr, p in listeners(host) if p == port}


# --------------------------------------------------------------------------- HTTP

# Runs with the instance's OS python3 (3.10/3.11) *and* on the test runner: stdlib only.
# One request over HTTP/1.1 (never HTTP/2: NGINX cannot upgrade h2 to a websocket),
# TLS without verification (the instance may serve its self-signed certificate).
PROBE_SOURCE = r'''
import base64, hashlib, http.client, json, socket, ssl, sys
from urllib.parse import urlsplit


def probe(spec):
    url = urlsplit(spec["url"])
    timeout = float(spec.get("timeout", 30))
    port = url.port or (443 if url.scheme == "https" else 80)
    if url.scheme == "https":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        conn = http.client.HTTPSConnection(url.hostname, port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection(url.hostname, port, timeout=timeout)
    target = (url.path or "/") + ("?" + url.query if url.query else "")
    headers = dict(spec.get("headers") or {})
    body = spec.get("body")
    data = body.encode() if isinstance(body, str) else None
    out = {"url": spec["url"]}
    try:
        conn.request(spec.get("method", "GET"), target, body=data, headers=headers)
        resp = conn.getresponse()
        out["status"] = resp.status
        out["reason"] = resp.reason
        out["headers"] = [[k.lower(), v] for k, v in resp.getheaders()]
        if resp.status == 101:
            out["body"] = ""  # the socket now speaks the websocket protocol
        else:
            out["body"] = resp.read(1 << 20).decode("utf-8", "replace")
        if url.scheme == "https" and conn.sock is not None:
            der = conn.sock.getpeercert(binary_form=True)
            out["peer_cert_sha256"] = hashlib.sha256(der).hexdigest() if der else None
    except (OSError, http.client.HTTPException) as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
    finally:
        conn.close()
    return out


if __name__ == "__main__":
    print(json.dumps(probe(json.loads(sys.argv[1]))))
'''


class Response:
    """What `http` returns: status, headers (lower-case names), body, TLS certificate hash."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.status: int | None = data.get("status")
        self.body: str = data.get("body") or ""
        self.error: str | None = data.get("error")
        self.peer_cert_sha256: str | None = data.get("peer_cert_sha256")
        self._headers: list[tuple[str, str]] = [(k, v) for k, v in data.get("headers") or []]

    def header(self, name: str) -> str | None:
        values = self.headers(name)
        return values[0] if values else None

    def headers(self, name: str) -> list[str]:
        return [v for k, v in self._headers if k == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        if self.error:
            return f"<{self.data.get('url')}: {self.error}>"
        return f"<{self.data.get('url')}: {self.status} {self.data.get('reason')}, body {self.body[:300]!r}>"


def http(host: Any, url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
         body: str | None = None, timeout: float = 30) -> Response:
    """One HTTP(S) request made *on the instance* (e.g. to https://127.0.0.1/ = through NGINX)."""
    spec = {"url": url, "method": method, "headers": headers or {}, "body": body, "timeout": timeout}
    result = run_python(host, PROBE_SOURCE, json.dumps(spec))
    assert result.rc == 0, f"HTTP probe on the host failed: {describe(result)}"
    return Response(json.loads(result.stdout.strip().splitlines()[-1]))


def probe_from_runner(url: str, *, method: str = "GET", headers: dict[str, str] | None = None,
                      body: str | None = None, timeout: float = 30) -> Response:
    """The same request made from the test runner (to see the instance from outside)."""
    namespace: dict[str, Any] = {"__name__": "image_probe"}
    exec(compile(PROBE_SOURCE, "<image-probe>", "exec"), namespace)  # noqa: S102 - our own constant source
    spec = {"url": url, "method": method, "headers": headers or {}, "body": body, "timeout": timeout}
    return Response(namespace["probe"](spec))


def tcp_open_from_runner(address: str, port: int, timeout: float = 5.0) -> tuple[bool, str]:
    """(True, '') when a TCP connection from the runner succeeds, else (False, why)."""
    import socket

    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True, ""
    except OSError as exc:  # refused, timed out (ufw drops), unreachable
        return False, f"{type(exc).__name__}: {exc}"


def url_host(address: str) -> str:
    """An address as it goes into a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def websocket_accept(key: str) -> str:
    """The Sec-WebSocket-Accept a real websocket server answers for `key` (RFC 6455)."""
    magic = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
    return base64.b64encode(hashlib.sha1((key + magic).encode()).digest()).decode()


# --------------------------------------------------------------------------- misc


def systemctl(host: Any, verb: str, unit: str) -> str:
    """`systemctl <verb> <unit>` output (is-active/is-enabled print a state word)."""
    return host.run("systemctl %s %s", verb, unit).stdout.strip()


def wait_active(host: Any, unit: str, timeout: float = 30) -> str:
    """is-active, waiting briefly through activating/reloading states; returns the last state."""
    return wait_for(lambda: systemctl(host, "is-active", unit),
                    lambda s: s not in ("activating", "reloading", "deactivating"), timeout, 2)


def nginx_directives(dump: str, name: str) -> list[str]:
    """Arguments of every `name ...;` directive in `nginx -T` output (comments removed)."""
    found = []
    pattern = re.compile(rf"(?:^|[;{{}}\s]){re.escape(name)}\s+([^;{{}}]+);")
    for raw in dump.splitlines():
        line = raw.split("#", 1)[0]
        for match in pattern.finditer(line):
            found.append(" ".join(match.group(1).split()))
    return found


def fail2ban_banned(status_output: str) -> list[str]:
    """IPs from the `Banned IP list:` line of `fail2ban-client status <jail>`."""
    for line in status_output.splitlines():
        if "Banned IP list:" in line:
            return line.split("Banned IP list:", 1)[1].split()
    return []


def ufw_allowed_ports(status_output: str) -> set[str]:
    """The `To` column of every ALLOW rule in `ufw status` (e.g. {'22/tcp', '80/tcp'})."""
    allowed = set()
    for line in status_output.splitlines():
        match = re.match(r"^(?P<to>.+?)\s{2,}(?P<action>ALLOW(?: IN| FWD| OUT)?)\s{2,}(?P<from>.+)$", line.strip())
        if match and match.group("action") in ("ALLOW", "ALLOW IN"):
            allowed.add(match.group("to").replace(" (v6)", "").strip())
    return allowed


def ufw_rules_for(status_output: str, address: str) -> list[str]:
    return [line.strip() for line in status_output.splitlines() if address in line.split()]


def identity(host: Any) -> dict[str, str]:
    """What must differ between two instances of one image (issue 4, acceptance 3).

    Secrets are returned as SHA-256 digests only, so a harness can compare two instances
    without copying secrets around: machine-id, SSH host keys, master password hash,
    DB password and database.secret.
    """
    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    keys = root_check(host, "cat /etc/ssh/ssh_host_*_key.pub | sort")
    secrets = json.loads(read_root_file(host, SECRETS)) if root_file_exists(host, SECRETS) else {}
    options = parse_ini(read_root_file(host, ODOO_CONF)).get("options", {})
    return {
        "machine_id": host.file("/etc/machine-id").content_string.strip(),
        "ssh_host_keys": digest(keys),
        "admin_passwd_hash": digest(options.get("admin_passwd", "")),
        "db_password": digest(options.get("db_password", "")),
        "database_secret": digest(str(secrets.get("database_secret", ""))),
    }
