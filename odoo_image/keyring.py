"""Archive keyrings and default mirrors for the operating systems images are built from.

Debian's keyring comes from the host (a Debian package apt already verified). Ubuntu's is
not packaged for Debian, so it is fetched from the Ubuntu archive's pool and trusted only
after its fingerprint matches the expected one; the verified key is cached.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import PipelineError
from .paths import cache_dir

DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")
DEBOOTSTRAP = Path("/usr/sbin/debootstrap")
DEBIAN_HOST_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")

# Ubuntu Archive Automatic Signing Key (2018) <ftpmaster@ubuntu.com>; signs jammy's InRelease.
UBUNTU_2018_FINGERPRINT = "F6ECB3762474EDA9D21B7022871920D1991BC93C"

ARCH = "amd64"
HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Distro:
    """What the pipeline needs to know about one supported OS release."""

    name: str  # canonical short name used in cache keys: the suite codename
    vendor: str  # "ubuntu" or "debian"
    suite: str
    components: tuple[str, ...]
    keyring_package: str
    default_fingerprint: str | None  # None: trust the host's Debian-packaged keyring as is


DISTROS: dict[str, Distro] = {
    "jammy": Distro("jammy", "ubuntu", "jammy", ("main", "universe"), "ubuntu-keyring",
                    UBUNTU_2018_FINGERPRINT),
    "bookworm": Distro("bookworm", "debian", "bookworm", ("main",), "debian-archive-keyring",
                       None),
}
ALIASES = {"ubuntu-22.04": "jammy", "ubuntu22.04": "jammy", "debian-12": "bookworm", "debian12": "bookworm"}


def distro(os_name: str) -> Distro:
    """Look up an OS by codename (jammy, bookworm) or alias (ubuntu-22.04, debian-12)."""
    key = ALIASES.get(os_name.lower(), os_name.lower())
    try:
        return DISTROS[key]
    except KeyError:
        known = ", ".join(sorted([*DISTROS, *ALIASES]))
        raise PipelineError(f"unsupported OS {os_name!r} (known: {known})") from None


# Sourced by bash: every debootstrap helper the suite script calls becomes a no-op except
# default_mirror, which reports its argument on fd 3 (stdout/stderr of the script are dropped).
_MIRROR_PROBE = r"""
command_not_found_handle() { return 0; }
default_mirror() { printf '%s\n' "$1" >&3; }
doing_variant() { return 1; }
{ . "$1" >/dev/null 2>&1; } 3>&1
"""


def default_mirror(suite: str, *, arch: str = ARCH, scripts_dir: Path = DEBOOTSTRAP_SCRIPTS,
                   debootstrap: Path = DEBOOTSTRAP) -> str:
    """The mirror debootstrap itself would use for suite (never hard-coded here).

    Ubuntu suite scripts call `default_mirror URL`; Debian ones don't, and debootstrap
    falls back to its DEF_MIRROR, which we read from the debootstrap program.
    """
    script = scripts_dir / suite
    if not script.exists():
        raise PipelineError(f"debootstrap has no script for suite {suite!r} ({script} missing)")
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "ARCH": arch,
           "SUITE": suite, "DEBOOTSTRAP_DIR": str(scripts_dir.parent)}
    done = proc.run(["bash", "-c", _MIRROR_PROBE, "bash", script], env=env, capture=True, check=False)
    mirrors = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if mirrors:
        return mirrors[-1]
    return _debootstrap_def_mirror(debootstrap, suite)


def _debootstrap_def_mirror(debootstrap: Path, suite: str) -> str:
    try:
        text = debootstrap.read_text(errors="replace")
    except OSError as exc:
        raise PipelineError(f"cannot read {debootstrap} to find the default mirror for {suite}: {exc}") from exc
    match = re.search(r'^DEF_MIRROR="([^"]+)"', text, re.MULTILINE)
    if not match:
        raise PipelineError(f"no default mirror for {suite}: neither its debootstrap script nor DEF_MIRROR in {debootstrap}")
    return match.group(1)


def normalize_fingerprint(fingerprint: str) -> str:
    fpr = re.sub(r"\s+", "", fingerprint).upper()
    if not re.fullmatch(r"[0-9A-F]{40}", fpr):
        raise PipelineError(f"keyring fingerprint {fingerprint!r} is not a 40-hex-digit OpenPGP v4 fingerprint")
    return fpr


def ensure_keyring(os_name: str, *, mirror: str | None = None, fingerprint: str | None = None) -> Path:
    """A keyring file apt/mmdebstrap can use for os_name's archive, verified by fingerprint."""
    dist = distro(os_name)
    expected = normalize_fingerprint(fingerprint) if fingerprint else dist.default_fingerprint
    if dist.vendor == "debian":
        if expected:
            _require_fingerprint(DEBIAN_HOST_KEYRING.read_bytes(), expected, str(DEBIAN_HOST_KEYRING))
        return DEBIAN_HOST_KEYRING
    assert expected is not None  # Ubuntu always has a default fingerprint
    cached = cache_dir() / "keyrings" / f"{dist.suite}-{expected}.gpg"
    if cached.exists():
        return cached
    keyring = fetch_ubuntu_keyring(dist, mirror or default_mirror(dist.suite), expected)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_bytes(keyring)
    os.replace(tmp, cached)  # atomic: readers see the old state or the verified key
    return cached


def fetch_ubuntu_keyring(dist: Distro, mirror: str, fingerprint: str) -> bytes:
    """Download ubuntu-keyring from the pool; return only the key with `fingerprint`.

    The fingerprint is the trust anchor. After it matches, the chain is cross-checked too:
    InRelease must carry a valid signature by that key, list the Packages index's SHA256,
    and the index must list the .deb's SHA256.
    """
    base = mirror.rstrip("/")
    inrelease = _http_get(f"{base}/dists/{dist.suite}/InRelease")
    index_path = f"main/binary-{ARCH}/Packages.xz"
    index_xz = _http_get(f"{base}/dists/{dist.suite}/{index_path}")
    stanza = find_package(lzma.decompress(index_xz).decode("utf-8", "replace"), dist.keyring_package)
    deb = _http_get(f"{base}/{stanza['Filename']}")

    with tempfile.TemporaryDirectory(prefix="odoo-image-keyring-") as tmp:
        work = Path(tmp)
        raw = _extract_from_deb(deb, "usr/share/keyrings/ubuntu-archive-keyring.gpg", work)
        key = _require_fingerprint(raw, fingerprint, f"{dist.keyring_package} {stanza.get('Version', '?')}")
        _verify_inrelease(inrelease, key, fingerprint, work)
    _require_sha256(index_xz, _inrelease_sha256(inrelease.decode("utf-8", "replace"), index_path), index_path)
    _require_sha256(deb, stanza.get("SHA256", ""), stanza["Filename"])
    return key


def _http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            body: bytes = response.read()
            return body
    except (urllib.error.URLError, OSError) as exc:
        raise PipelineError(f"download failed: {url}: {getattr(exc, 'reason', exc)}") from exc


def find_package(packages_index: str, name: str) -> dict[str, str]:
    """The first stanza of `name` in a Debian Packages index, as a field dict."""
    for block in re.split(r"\n\s*\n", packages_index):
        fields = dict(re.findall(r"^([A-Za-z0-9-]+):[ \t]*(.*)$", block, re.MULTILINE))
        if fields.get("Package") == name:
            if "Filename" not in fields:
                raise PipelineError(f"Packages index entry for {name} has no Filename")
            return fields
    raise PipelineError(f"package {name} not found in the Packages index")


def _inrelease_sha256(inrelease: str, path: str) -> str:
    section = inrelease.split("\nSHA256:", 1)[-1]
    match = re.search(rf"^ ([0-9a-f]{{64}})\s+\d+\s+{re.escape(path)}$", section, re.MULTILINE)
    if not match:
        raise PipelineError(f"InRelease does not list a SHA256 for {path}")
    return match.group(1)


def _require_sha256(data: bytes, expected: str, what: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise PipelineError(f"SHA256 mismatch for {what}: got {actual}, index says {expected or 'nothing'}")


def _extract_from_deb(deb: bytes, member: str, work: Path) -> bytes:
    deb_path = work / "pkg.deb"
    deb_path.write_bytes(deb)
    root = work / "pkg"
    proc.run(["dpkg-deb", "-x", deb_path, root], capture=True)
    target = root / member
    if not target.is_file():
        raise PipelineError(f"{member} not found in the downloaded keyring package")
    return target.read_bytes()


def _gpg(home: Path, *args: str, input_bytes: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    # --no-autostart: public-key work needs no gpg-agent (it would outlive the temp homedir).
    argv = ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--quiet", "--no-autostart", *args]
    done = subprocess.run(argv, input=input_bytes, capture_output=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise PipelineError(f"`gpg {' '.join(args[:2])}` failed ({done.returncode}): {tail[0]}")
    return done


def keyring_fingerprints(keyring: bytes) -> list[str]:
    """Primary-key fingerprints in an OpenPGP keyring (binary or armored)."""
    with tempfile.TemporaryDirectory(prefix="odoo-image-gpg-") as home:
        _gpg(Path(home), "--import", input_bytes=keyring)
        listing = _gpg(Path(home), "--with-colons", "--fingerprint", "--list-keys").stdout.decode()
    fprs, primary = [], False
    for line in listing.splitlines():
        kind, *rest = line.split(":")
        if kind == "pub":
            primary = True
        elif kind == "sub":
            primary = False
        elif kind == "fpr" and primary:
            fprs.append(rest[8])
            primary = False
    return fprs


def _require_fingerprint(keyring: bytes, fingerprint: str, what: str) -> bytes:
    """Return a keyring holding only the key with `fingerprint`; fail if `keyring` lacks it."""
    found = keyring_fingerprints(keyring)
    if fingerprint not in found:
        raise PipelineError(
            f"keyring from {what} does not contain the expected key {fingerprint} (found: {', '.join(found) or 'none'})")
    with tempfile.TemporaryDirectory(prefix="odoo-image-gpg-") as home:
        _gpg(Path(home), "--import", input_bytes=keyring)
        exported: bytes = _gpg(Path(home), "--export", fingerprint).stdout
        return exported


def _verify_inrelease(inrelease: bytes, key: bytes, fingerprint: str, work: Path) -> None:
    keyfile = work / "trusted.gpg"
    keyfile.write_bytes(key)
    signed = work / "InRelease"
    signed.write_bytes(inrelease)
    # gpgv exits non-zero when *any* signature's key is missing (InRelease is signed by two
    # Ubuntu keys); the status lines say which signatures were good.
    done = subprocess.run(["gpgv", "--status-fd", "1", "--keyring", str(keyfile), str(signed)],
                          capture_output=True, check=False)
    good = re.findall(r"^\[GNUPG:\] VALIDSIG .* ([0-9A-F]{40})$", done.stdout.decode(), re.MULTILINE)
    if fingerprint not in good:
        raise PipelineError(f"InRelease is not validly signed by key {fingerprint}")
