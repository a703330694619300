"""keyring: default mirrors from debootstrap scripts, Packages/InRelease parsing, and
fingerprint + signature verification with throwaway OpenPGP keys (no network)."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_image import keyring
from odoo_image.errors import PipelineError

# Reserved .invalid names: these tests must never name a real mirror.
UBUNTU_STYLE = """\
case $ARCH in
  amd64|i386)
\tcase $SUITE in
\t  oldsuite) default_mirror http://old.mirror.invalid/ubuntu ;;
\t  *) default_mirror http://mirror.invalid/ubuntu ;;
\tesac
\t;;
  *) default_mirror http://ports.mirror.invalid/ubuntu-ports ;;
esac
mirror_style release
download_style apt
variants - buildd fakechroot minbase
keyring /usr/share/keyrings/nothing.gpg
echo "noise on stdout"
echo "noise on stderr" >&2
if doing_variant fakechroot; then
\ttest "$FAKECHROOT" = "true" || error 1 FAKECHROOTREQ "needs fakechroot"
fi
work_out_debs () { :; }
"""

DEBIAN_STYLE = """\
mirror_style release
download_style apt
keyring /usr/share/keyrings/nothing.gpg
if [ -e "$DEBOOTSTRAP_DIR/scripts/debian-common" ]; then
 . "$DEBOOTSTRAP_DIR/scripts/debian-common"
else
 error 1 NOCOMMON "File not found: debian-common"
fi
"""


@pytest.fixture()
def scripts(tmp_path: Path) -> Path:
    scripts = tmp_path / "share" / "scripts"
    scripts.mkdir(parents=True)
    (scripts / "mysuite").write_text(UBUNTU_STYLE)
    (scripts / "oldsuite").symlink_to("mysuite")
    (scripts / "debsuite").write_text(DEBIAN_STYLE)
    (scripts / "debian-common").write_text("work_out_debs () { :; }\n")
    return scripts


def test_default_mirror_from_ubuntu_style_script(scripts: Path) -> None:
    assert keyring.default_mirror("mysuite", scripts_dir=scripts) == "http://mirror.invalid/ubuntu"


def test_default_mirror_depends_on_suite_and_arch(scripts: Path) -> None:
    assert keyring.default_mirror("oldsuite", scripts_dir=scripts) == "http://old.mirror.invalid/ubuntu"
    assert keyring.default_mirror("mysuite", arch="arm64", scripts_dir=scripts) == \
        "http://ports.mirror.invalid/ubuntu-ports"


def test_default_mirror_falls_back_to_debootstrap_def_mirror(scripts: Path, tmp_path: Path) -> None:
    fake = tmp_path / "debootstrap"
    fake.write_text('#!/bin/sh\nVERSION=1\nDEF_MIRROR="http://deb.mirror.invalid/debian"\n'
                    'DEF_HTTPS_MIRROR="https://deb.mirror.invalid/debian"\n')
    assert keyring.default_mirror("debsuite", scripts_dir=scripts, debootstrap=fake) == \
        "http://deb.mirror.invalid/debian"


def test_default_mirror_without_any_default_is_an_error(scripts: Path, tmp_path: Path) -> None:
    fake = tmp_path / "debootstrap"
    fake.write_text("#!/bin/sh\n")
    with pytest.raises(PipelineError, match="no default mirror for debsuite"):
        keyring.default_mirror("debsuite", scripts_dir=scripts, debootstrap=fake)


def test_default_mirror_unknown_suite(scripts: Path) -> None:
    with pytest.raises(PipelineError, match="no script for suite 'nosuch'"):
        keyring.default_mirror("nosuch", scripts_dir=scripts)


@pytest.mark.skipif(not (keyring.DEBOOTSTRAP_SCRIPTS / "jammy").exists(), reason="debootstrap not installed")
@pytest.mark.parametrize("suite", ["jammy", "bookworm"])
def test_default_mirror_from_the_installed_debootstrap(suite: str) -> None:
    mirror = keyring.default_mirror(suite)
    assert mirror.startswith(("http://", "https://")) and " " not in mirror


def test_distro_names_and_aliases() -> None:
    assert keyring.distro("jammy") is keyring.distro("ubuntu-22.04")
    assert keyring.distro("Debian-12").suite == "bookworm"
    assert keyring.distro("jammy").components == ("main", "universe")
    with pytest.raises(PipelineError, match="unsupported OS 'focal'"):
        keyring.distro("focal")


def test_normalize_fingerprint() -> None:
    spaced = "F6EC B376 2474 EDA9 D21B  7022 8719 20D1 991B C93C"
    assert keyring.normalize_fingerprint(spaced.lower()) == keyring.UBUNTU_2018_FINGERPRINT
    with pytest.raises(PipelineError, match="not a 40-hex-digit"):
        keyring.normalize_fingerprint("1234")


PACKAGES = """\
Package: aaa
Version: 1
Filename: pool/main/a/aaa/aaa_1_all.deb

Package: ubuntu-keyring
Architecture: all
Version: 2021.03.26
Filename: pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb
SHA256: 0d0e
Description: GnuPG keys of the Ubuntu archive
 multi-line description: with a colon
"""


def test_find_package() -> None:
    stanza = keyring.find_package(PACKAGES, "ubuntu-keyring")
    assert stanza["Filename"].endswith("ubuntu-keyring_2021.03.26_all.deb")
    assert stanza["SHA256"] == "0d0e"
    with pytest.raises(PipelineError, match="package nope not found"):
        keyring.find_package(PACKAGES, "nope")


def test_inrelease_sha256() -> None:
    digest = "ab" * 32
    text = (f"Origin: X\nMD5Sum:\n {'cd' * 16}  12 main/binary-amd64/Packages.xz\nSHA256:\n"
            f" {'ef' * 32}  99 main/binary-amd64/Packages\n {digest}  12 main/binary-amd64/Packages.xz\n")
    assert keyring._inrelease_sha256(text, "main/binary-amd64/Packages.xz") == digest
    with pytest.raises(PipelineError, match="does not list a SHA256"):
        keyring._inrelease_sha256(text, "universe/binary-amd64/Packages.xz")


# ---------------------------------------------------------------- with real gpg

def _gen_key(home: Path, uid: str) -> str:
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--quiet", "--pinentry-mode", "loopback",
                    "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True)
    listing = subprocess.run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", uid],
                             capture_output=True, text=True, check=True).stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def gpg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str]]:
    home = tmp_path_factory.mktemp("gnupg")
    good = _gen_key(home, "Archive Key <good@example.invalid>")
    other = _gen_key(home, "Other Key <other@example.invalid>")
    yield home, good, other
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)


def _export(home: Path, *fprs: str) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--export", *fprs], capture_output=True,
                          check=True).stdout


def _clearsign(home: Path, fpr: str, text: str) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback",
                           "--passphrase", "", "--local-user", fpr, "--clearsign"],
                          input=text.encode(), capture_output=True, check=True).stdout


def test_require_fingerprint_keeps_only_the_expected_key(gpg_home: tuple[Path, str, str]) -> None:
    home, good, other = gpg_home
    both = _export(home, good, other)
    assert sorted(keyring.keyring_fingerprints(both)) == sorted([good, other])
    only = keyring._require_fingerprint(both, good, "test keyring")
    assert keyring.keyring_fingerprints(only) == [good]


def test_require_fingerprint_rejects_a_keyring_without_it(gpg_home: tuple[Path, str, str]) -> None:
    home, good, other = gpg_home
    with pytest.raises(PipelineError, match=f"does not contain the expected key {good}"):
        keyring._require_fingerprint(_export(home, other), good, "test keyring")


def test_inrelease_signature_must_come_from_the_trusted_key(gpg_home: tuple[Path, str, str],
                                                            tmp_path: Path) -> None:
    home, good, other = gpg_home
    trusted = _export(home, good)
    keyring._verify_inrelease(_clearsign(home, good, "Suite: x\n"), trusted, good, tmp_path)
    with pytest.raises(PipelineError, match="not validly signed"):
        keyring._verify_inrelease(_clearsign(home, other, "Suite: x\n"), trusted, good, tmp_path)


def test_sha256_mismatch_is_named() -> None:
    keyring._require_sha256(b"x", hashlib.sha256(b"x").hexdigest(), "thing")
    with pytest.raises(PipelineError, match="SHA256 mismatch for thing"):
        keyring._require_sha256(b"x", "00", "thing")


# ---------------------------------------------------------------- ensure_keyring

def test_ensure_keyring_bookworm_uses_the_host_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyring, "fetch_ubuntu_keyring", _no_network)
    assert keyring.ensure_keyring("bookworm") == keyring.DEBIAN_HOST_KEYRING


@pytest.mark.skipif(not keyring.DEBIAN_HOST_KEYRING.exists(), reason="debian-archive-keyring not installed")
def test_ensure_keyring_bookworm_checks_a_given_fingerprint() -> None:
    with pytest.raises(PipelineError, match="does not contain the expected key"):
        keyring.ensure_keyring("bookworm", fingerprint=keyring.UBUNTU_2018_FINGERPRINT)


def test_ensure_keyring_jammy_uses_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(tmp_path))
    cached = tmp_path / "keyrings" / f"jammy-{keyring.UBUNTU_2018_FINGERPRINT}.gpg"
    cached.parent.mkdir()
    cached.write_bytes(b"verified earlier")
    monkeypatch.setattr(keyring, "fetch_ubuntu_keyring", _no_network)
    assert keyring.ensure_keyring("jammy") == cached


def test_ensure_keyring_jammy_fetches_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(tmp_path))
    seen: list[tuple[str, str]] = []

    def fake_fetch(dist: keyring.Distro, mirror: str, fingerprint: str) -> bytes:
        seen.append((mirror, fingerprint))
        return b"key"

    monkeypatch.setattr(keyring, "fetch_ubuntu_keyring", fake_fetch)
    path = keyring.ensure_keyring("jammy", mirror="http://mirror.invalid/ubuntu", fingerprint="aa" * 20)
    assert path.read_bytes() == b"key" and path.name == f"jammy-{'AA' * 20}.gpg"
    assert seen == [("http://mirror.invalid/ubuntu", "AA" * 20)]


def _no_network(*_args: object) -> bytes:
    raise AssertionError("must not download")
