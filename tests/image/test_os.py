"""The operating system and the image's own release facts."""

from __future__ import annotations

import json
import re

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

SUPPORTED = {("jammy", "22.04"), ("bookworm", "12")}
MANIFEST_KEYS = ("image", "version", "odoo_source_pin", "os", "postgresql")


def _os_tokens(value) -> set[str]:
    """The words the release's `os` uses for the OS: "jammy-22.04" → {jammy, 22.04};
    a mapping contributes its name/suite/codename/release/version values."""
    if isinstance(value, dict):
        value = " ".join(str(value[k]) for k in ("name", "suite", "codename", "release", "version_id", "version")
                         if value.get(k) is not None)
    return {t for t in re.split(r"[\s_/-]+", str(value).lower()) if t}


def test_os_is_jammy_or_bookworm(os_release):
    found = (os_release.get("VERSION_CODENAME"), os_release.get("VERSION_ID"))
    assert found in SUPPORTED, f"/etc/os-release says {found}, expected one of {sorted(SUPPORTED)}"


def test_os_matches_release_file(os_release, release):
    assert "os" in release, f"{h.RELEASE} has no 'os' key: {sorted(release)}"
    tokens = _os_tokens(release["os"])
    running = f"/etc/os-release is {os_release.get('PRETTY_NAME')}"
    assert os_release.get("VERSION_CODENAME", "").lower() in tokens, f"{h.RELEASE} os={release['os']!r}, {running}"
    versions = {t for t in tokens if re.fullmatch(r"\d+(\.\d+)*", t)}
    if versions:
        assert os_release.get("VERSION_ID") in versions, f"{h.RELEASE} os={release['os']!r}, {running}"


def test_release_file_is_valid_json_with_core_facts(host):
    release_file = host.file(h.RELEASE)
    assert release_file.is_file, f"{h.RELEASE} missing"
    data = json.loads(release_file.content_string)
    assert isinstance(data, dict)
    for key in ("image", "version", "odoo_source_pin"):
        assert data.get(key), f"{h.RELEASE} lacks a non-empty {key!r}: {sorted(data)}"


def test_release_file_matches_manifest(release, image_manifest):
    if image_manifest is None:
        pytest.skip("ODOO_IMAGE_MANIFEST not set")
    shared = sorted(set(release) & set(image_manifest))
    assert shared, f"manifest and {h.RELEASE} share no key (manifest: {sorted(image_manifest)})"
    assert any(k in shared for k in MANIFEST_KEYS), f"no identifying key ({MANIFEST_KEYS}) in both: {shared}"
    mismatched = {k: (release[k], image_manifest[k]) for k in shared if release[k] != image_manifest[k]}
    assert not mismatched, f"{h.RELEASE} vs manifest differ (image, manifest): {mismatched}"


def test_release_postgresql_matches_expected_major(release, expected_pg_major):
    value = release.get("postgresql")
    if value is None:
        pytest.skip(f"{h.RELEASE} records no postgresql")
    if isinstance(value, dict):
        value = value.get("version", value.get("major"))
    assert str(value).split(".")[0] == str(expected_pg_major), (
        f"{h.RELEASE} postgresql={release['postgresql']!r}, expected major {expected_pg_major}")


@pytest.mark.parametrize("tool", ["gcc", "cc", "c++", "g++", "make"])
def test_no_compiler_or_make(host, tool):
    result = host.run("command -v %s", tool)
    assert result.rc != 0, f"{tool} is installed in the image: {result.stdout.strip()}"


def _installed_packages(host) -> list[str]:
    out = host.run("dpkg-query -W -f '${Package} ${db:Status-Abbrev}\\n'")
    assert out.rc == 0, h.describe(out)
    return [line.split()[0] for line in out.stdout.splitlines()
            if len(line.split()) >= 2 and line.split()[1].startswith("ii")]


def test_no_dev_packages(host):
    dev = [p for p in _installed_packages(host) if p.split(":")[0].endswith("-dev")]
    assert not dev, f"-dev packages in the image: {dev}"


def test_no_compiler_packages(host):
    pattern = re.compile(r"^(gcc(-\d+)?|g\+\+(-\d+)?|build-essential|make|clang(-\d+)?)$")
    found = [p for p in _installed_packages(host) if pattern.match(p.split(":")[0])]
    assert not found, f"compiler/build packages in the image: {found}"


def test_apt_retries_on_a_mirror_hiccup(host):
    result = host.run("apt-config dump Acquire::Retries")
    assert result.rc == 0, h.describe(result)
    assert 'Acquire::Retries "5";' in result.stdout, result.stdout
