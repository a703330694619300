"""The certificate NGINX serves: a per-instance self-signed one, or Let's Encrypt's.

NGINX only ever reads /etc/odoo-image/tls/{fullchain,privkey}.pem. Those are symlinks,
switched atomically, to either self-signed/ (made here with the openssl CLI, a fresh key
per instance — never baked) or /etc/letsencrypt/live/<domain>/. Certbot renewals update
the live/ links in place, so ours never need to follow them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .fsutil import ensure_dir, replace_symlink
from .network import is_ip
from .paths import Layout
from .runner import Runner

SELF_SIGNED_DAYS = 3650  # a fallback that expires would take the site down: make it long
CERT_NAME = "fullchain.pem"
KEY_NAME = "privkey.pem"
NAMES_NAME = "names.txt"  # which names the current self-signed cert covers


@dataclass(frozen=True)
class CertNames:
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()

    def san(self) -> str:
        return ", ".join([f"DNS:{n}" for n in self.dns] + [f"IP:{a}" for a in self.ips])

    def common_name(self) -> str:
        first = (self.dns + self.ips)[0]
        return first if len(first) <= 64 else "Odoo"  # CN is limited to 64 characters

    def fingerprint(self) -> str:
        return "\n".join(sorted(self.dns) + sorted(self.ips)) + "\n"


def names_for(domain: str | None, addresses: list[str]) -> CertNames:
    """The domain (when set) plus this host's addresses, so https://<ip>/ matches too."""
    ips = tuple(a for a in addresses if is_ip(a))
    dns = (domain,) if domain else ()
    if not dns and not ips:
        dns = ("localhost",)
    return CertNames(dns=dns, ips=ips)


def _openssl_config(names: CertNames) -> str:
    # Our own config so the result does not depend on the distribution's openssl.cnf
    # (which would add CA:TRUE from its v3_ca section to a `req -x509` certificate).
    return (
        "[req]\n"
        "prompt = no\n"
        "distinguished_name = dn\n"
        "x509_extensions = leaf\n"
        "[dn]\n"
        f"CN = {names.common_name()}\n"
        "O = Odoo image (self-signed)\n"
        "[leaf]\n"
        f"subjectAltName = {names.san()}\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
    )


def ensure_self_signed(layout: Layout, names: CertNames, runner: Runner) -> bool:
    """Make the self-signed certificate unless one for exactly these names exists.

    Returns True when a new certificate was made. ECDSA P-256: key generation is instant
    even under emulation, and every current client supports it.
    """
    out_dir = layout.at(paths.SELF_SIGNED_DIR)
    cert, key, names_file = out_dir / CERT_NAME, out_dir / KEY_NAME, out_dir / NAMES_NAME
    complete = cert.is_file() and key.is_file() and names_file.is_file()
    if complete and names_file.read_text() == names.fingerprint():
        return False
    ensure_dir(layout.at(paths.TLS_DIR), 0o755, uid=0, gid=0)
    ensure_dir(out_dir, 0o755, uid=0, gid=0)
    work = Path(tempfile.mkdtemp(prefix=".new-", dir=out_dir))  # 0700, same filesystem
    try:
        (work / "openssl.cnf").write_text(_openssl_config(names))
        runner.run(
            [
                "openssl",
                "req",
                "-x509",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-sha256",
                "-days",
                str(SELF_SIGNED_DAYS),
                "-config",
                str(work / "openssl.cnf"),
                "-keyout",
                str(work / KEY_NAME),
                "-out",
                str(work / CERT_NAME),
            ],
            timeout=120,
        )
        os.chmod(work / KEY_NAME, 0o600)  # NGINX's master process reads it as root
        os.chmod(work / CERT_NAME, 0o644)
        os.replace(work / KEY_NAME, key)
        os.replace(work / CERT_NAME, cert)
        # Written last: it marks the pair complete for the next run's "already made" check.
        (work / NAMES_NAME).write_text(names.fingerprint())
        os.chmod(work / NAMES_NAME, 0o644)
        os.replace(work / NAMES_NAME, names_file)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return True


def link_self_signed(layout: Layout) -> bool:
    src = layout.at(paths.SELF_SIGNED_DIR)
    return _link(layout, src / CERT_NAME, src / KEY_NAME)


def letsencrypt_ready(layout: Layout, domain: str) -> bool:
    live = layout.letsencrypt_live(domain)
    return (live / "fullchain.pem").exists() and (live / "privkey.pem").exists()


def link_letsencrypt(layout: Layout, domain: str) -> bool:
    live = layout.letsencrypt_live(domain)
    return _link(layout, live / "fullchain.pem", live / "privkey.pem")


def _link(layout: Layout, cert: Path, key: Path) -> bool:
    # Key first: for a moment NGINX may see new key + old cert only if it reloads right
    # now, which we never do before both are switched.
    moved = replace_symlink(layout.at(paths.TLS_PRIVKEY), key)
    return replace_symlink(layout.at(paths.TLS_FULLCHAIN), cert) or moved


def current_kind(layout: Layout) -> str:
    """'letsencrypt', 'self-signed' or 'missing' — what the links point at now."""
    link = layout.at(paths.TLS_FULLCHAIN)
    if not link.is_symlink() or not link.exists():
        return "missing"
    target = os.readlink(link)
    if "letsencrypt" in target.split(os.sep):
        return "letsencrypt"
    return "self-signed"
