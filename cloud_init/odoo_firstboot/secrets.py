"""Per-instance secrets: made once on the instance with a CSPRNG, never baked, never rotated by a re-run.

- DB role password (PostgreSQL role `odoo`, `db_password` in conf.d/10-secrets.conf),
- master password (Odoo `admin_passwd`), stored in odoo.conf only as a pbkdf2-sha512 hash,
- `database.secret` (the HMAC key Odoo signs sessions/tokens with, set in a created DB),
- the admin user's password when settings ask for "generate".

/var/lib/odoo-image/secrets.json (0600 root) is the single source of truth; the
human-readable /var/lib/odoo-image/credentials (0600 root) is rendered from it.

Note: this module is named `secrets` inside the `odoo_firstboot` package; the stdlib
`secrets` it imports is unaffected because the package directory itself is never on
sys.path (the launchers add its parent).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from .fsutil import ensure_dir, write_atomic

# passlib's pbkdf2_sha512 defaults that Odoo 18's CryptContext uses.
PBKDF2_ROUNDS = 600_000
PBKDF2_SALT_BYTES = 16
PBKDF2_PREFIX = "$pbkdf2-sha512$"


class SecretsError(Exception):
    """The secrets store exists but is unusable: refuse to overwrite live secrets."""


@dataclass(frozen=True)
class Secrets:
    db_password: str
    master_password: str
    master_password_hash: str
    database_secret: str
    admin_password: str | None = None  # only when generated


def generate_password(nbytes: int = 24) -> str:
    """URL-safe CSPRNG token (32 chars for 24 bytes): no quotes, spaces, '%' or '$', so it
    is safe in odoo.conf (configparser), SQL literals and shell-less argv alike."""
    return secrets.token_urlsafe(nbytes)


def ab64_encode(data: bytes) -> str:
    """passlib's "adapted base64": standard alphabet with '+' → '.', no padding."""
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("+", ".")


def ab64_decode(text: str) -> bytes:
    raw = text.replace(".", "+")
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def pbkdf2_sha512_hash(password: str, *, rounds: int = PBKDF2_ROUNDS, salt: bytes | None = None) -> str:
    """Hash in passlib's exact pbkdf2_sha512 format, which Odoo's `admin_passwd` accepts:
    `$pbkdf2-sha512$<rounds>$<salt ab64>$<checksum ab64>` (64-byte checksum)."""
    salt = secrets.token_bytes(PBKDF2_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, rounds)
    return f"{PBKDF2_PREFIX}{rounds}${ab64_encode(salt)}${ab64_encode(digest)}"


def pbkdf2_sha512_verify(password: str, hashed: str) -> bool:
    if not hashed.startswith(PBKDF2_PREFIX):
        return False
    try:
        rounds_text, salt_text, digest_text = hashed[len(PBKDF2_PREFIX) :].split("$")
        rounds = int(rounds_text)
        salt = ab64_decode(salt_text)
        expected = ab64_decode(digest_text)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, rounds)
    return hmac.compare_digest(digest, expected)


def _load(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SecretsError(
            f"{path} is not valid JSON ({exc}); refusing to replace live secrets — repair or remove it by hand"
        ) from None
    if not isinstance(data, dict):
        raise SecretsError(f"{path} does not hold a JSON object; refusing to replace live secrets")
    return {k: v for k, v in data.items() if isinstance(v, str) and v}


def ensure(path: Path, *, want_admin_password: bool) -> tuple[Secrets, bool]:
    """Load the secrets, creating only the missing ones; returns (secrets, created_any).

    Existing values are never changed: a reboot, a cloud-init re-run or a manual re-run
    of first boot keeps the DB password, master password and database.secret that the
    running services already use.
    """
    data = _load(path)
    before = dict(data)
    data.setdefault("db_password", generate_password())
    data.setdefault("master_password", generate_password())
    data.setdefault("database_secret", secrets.token_hex(32))
    if "master_password_hash" not in data:
        data["master_password_hash"] = pbkdf2_sha512_hash(data["master_password"])
    if want_admin_password:
        data.setdefault("admin_password", generate_password(12))
    changed = data != before
    if changed:
        ensure_dir(path.parent, 0o755)
        write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode=0o600, uid=0, gid=0)
    else:
        write_atomic(path, path.read_bytes(), mode=0o600, uid=0, gid=0)  # repair mode only
    return (
        Secrets(
            db_password=data["db_password"],
            master_password=data["master_password"],
            master_password_hash=data["master_password_hash"],
            database_secret=data["database_secret"],
            admin_password=data.get("admin_password") if want_admin_password else None,
        ),
        changed,
    )


def render_credentials(
    s: Secrets,
    *,
    url: str,
    admin_login: str,
    database: str | None,
    admin_password_from_settings: bool,
) -> str:
    """The root-only note an operator reads with `sudo cat /var/lib/odoo-image/credentials`."""
    lines = [
        "# Odoo image credentials, generated on this instance at first boot (root only, 0600).",
        "# Odoo keeps only a pbkdf2-sha512 hash of the master password (conf.d/10-secrets.conf).",
        "# Values are those set at first boot; later changes made in Odoo are not reflected here.",
        f"url = {url}",
        f"master_password = {s.master_password}",
    ]
    if database:
        lines.append(f"database = {database}")
        lines.append(f"admin_login = {admin_login}")
        if s.admin_password:
            lines.append(f"admin_password = {s.admin_password}")
        elif admin_password_from_settings:
            lines.append("admin_password = (as given in settings.yaml)")
    return "\n".join(lines) + "\n"


def write_credentials(path: Path, text: str) -> bool:
    ensure_dir(path.parent, 0o755)
    return write_atomic(path, text, mode=0o600, uid=0, gid=0)
