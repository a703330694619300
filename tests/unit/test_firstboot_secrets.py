"""Per-instance secrets: CSPRNG, never empty, never the same twice, stable across re-runs,
master password hash in passlib's exact pbkdf2_sha512 format (verified with passlib)."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "cloud_init"))

from odoo_firstboot import secrets as fb

passlib_hash = pytest.importorskip("passlib.hash")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_values_are_never_empty_nor_repeated() -> None:
    values = [fb.generate_password() for _ in range(200)]
    assert all(len(v) >= 32 for v in values)
    assert len(set(values)) == len(values)
    # Safe in odoo.conf / SQL literals / argv: URL-safe alphabet only.
    assert all(set(v) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for v in values)


def test_two_instances_get_different_secrets(tmp_path: Path) -> None:
    a, _ = fb.ensure(tmp_path / "a" / "secrets.json", want_admin_password=True)
    b, _ = fb.ensure(tmp_path / "b" / "secrets.json", want_admin_password=True)
    for field in ("db_password", "master_password", "master_password_hash", "database_secret", "admin_password"):
        va, vb = getattr(a, field), getattr(b, field)
        assert va and vb and va != vb, field
    # All distinct from each other within one instance, too.
    assert len({a.db_password, a.master_password, a.database_secret, a.admin_password}) == 4


def test_hash_is_passlib_format_and_verifies_with_passlib() -> None:
    password = fb.generate_password()
    hashed = fb.pbkdf2_sha512_hash(password)
    prefix, scheme, rounds, salt, checksum = hashed.split("$")
    assert (prefix, scheme, rounds) == ("", "pbkdf2-sha512", "600000")
    assert len(fb.ab64_decode(salt)) == 16 and len(fb.ab64_decode(checksum)) == 64
    assert "=" not in hashed and "+" not in hashed
    assert passlib_hash.pbkdf2_sha512.verify(password, hashed)
    assert not passlib_hash.pbkdf2_sha512.verify(password + "x", hashed)
    # Exactly what Odoo 18's CryptContext does with admin_passwd.
    from passlib.context import CryptContext  # type: ignore[import-untyped]

    ctx = CryptContext(["pbkdf2_sha512", "plaintext"], deprecated=["plaintext"], pbkdf2_sha512__rounds=600_000)
    ok, new_hash = ctx.verify_and_update(password, hashed)
    assert ok and new_hash is None  # no rehash needed: same scheme and rounds


def test_hash_matches_passlib_for_a_fixed_salt() -> None:
    salt = bytes(range(16))
    ours = fb.pbkdf2_sha512_hash("s3cret", rounds=1000, salt=salt)
    theirs = passlib_hash.pbkdf2_sha512.using(rounds=1000, salt=salt).hash("s3cret")
    assert ours == theirs


def test_our_verify_accepts_passlib_hashes() -> None:
    hashed = passlib_hash.pbkdf2_sha512.using(rounds=2000).hash("pw")
    assert fb.pbkdf2_sha512_verify("pw", hashed)
    assert not fb.pbkdf2_sha512_verify("nope", hashed)
    assert not fb.pbkdf2_sha512_verify("pw", "admin")


def test_rerun_keeps_secrets_and_files_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "var/lib/odoo-image/secrets.json"
    first, created = fb.ensure(path, want_admin_password=True)
    assert created and _mode(path) == 0o600
    before = path.read_bytes()
    again, created_again = fb.ensure(path, want_admin_password=True)
    assert not created_again and again == first and path.read_bytes() == before
    # Someone loosened the mode: a re-run repairs it without touching the content.
    path.chmod(0o644)
    fb.ensure(path, want_admin_password=True)
    assert _mode(path) == 0o600 and path.read_bytes() == before


def test_missing_values_are_added_existing_kept(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    first, _ = fb.ensure(path, want_admin_password=False)
    assert first.admin_password is None
    second, created = fb.ensure(path, want_admin_password=True)
    assert created and second.admin_password
    assert (second.db_password, second.master_password_hash, second.database_secret) == (
        first.db_password,
        first.master_password_hash,
        first.database_secret,
    )


def test_corrupt_store_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    path.write_text("{ not json")
    with pytest.raises(fb.SecretsError, match="refusing to replace live secrets"):
        fb.ensure(path, want_admin_password=False)
    assert path.read_text() == "{ not json"


def test_store_content(tmp_path: Path) -> None:
    path = tmp_path / "secrets.json"
    s, _ = fb.ensure(path, want_admin_password=False)
    data = json.loads(path.read_text())
    assert data["master_password_hash"] == s.master_password_hash
    assert fb.pbkdf2_sha512_verify(data["master_password"], data["master_password_hash"])


def test_credentials_file(tmp_path: Path) -> None:
    s, _ = fb.ensure(tmp_path / "secrets.json", want_admin_password=True)
    text = fb.render_credentials(
        s, url="https://erp.example.com/", admin_login="boss", database="erp", admin_password_from_settings=False
    )
    assert f"master_password = {s.master_password}\n" in text
    assert f"admin_password = {s.admin_password}\n" in text
    assert "admin_login = boss\n" in text and s.db_password not in text
    path = tmp_path / "var/lib/odoo-image/credentials"
    assert fb.write_credentials(path, text)
    assert _mode(path) == 0o600 and path.read_text() == text
    assert not fb.write_credentials(path, text)  # unchanged → not rewritten
