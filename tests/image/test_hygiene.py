"""Nothing of the build is left in the image; per-instance identity was made on this instance."""

from __future__ import annotations

import re

import pytest

from . import helpers as h

pytestmark = pytest.mark.image

# Clock skew and the seconds between the reference event and key generation.
MARGIN_S = 300


def _host_keys(host) -> dict[str, int]:
    """{path: mtime} of the SSH host key files (private and public)."""
    out = host.run("stat -c '%Y %n' /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub 2>/dev/null")
    keys = {}
    for line in out.stdout.splitlines():
        mtime, _, path = line.partition(" ")
        if mtime.isdigit():
            keys[path] = int(mtime)
    return keys


def _first_boot_reference(host) -> tuple[int, str]:
    """The earliest sign of this instance's first boot we can see, as (epoch, what).

    Candidates: this boot (PID 1 start: the VM boot, or the container's init), cloud-init's
    per-instance `config_ssh` semaphore (taken right before it generates host keys, kept
    across reboots) and the birth time of the instance directory. The earliest wins, so
    a rebooted instance still compares against its first boot.
    """
    now = int(host.run("date +%s").stdout.strip())
    etimes = host.run("ps -o etimes= -p 1").stdout.strip()
    candidates = [(now - int(etimes), "boot (PID 1 start)")] if etimes.isdigit() else []
    sem = host.run("stat -c %Y /var/lib/cloud/instance/sem/config_ssh 2>/dev/null").stdout.strip()
    if sem.isdigit():
        candidates.append((int(sem), "cloud-init config_ssh semaphore"))
    born = host.run("stat -L -c %W /var/lib/cloud/instance 2>/dev/null").stdout.strip()
    if born.isdigit() and int(born) > 0:
        candidates.append((int(born), "cloud-init instance directory creation"))
    assert candidates, "cannot tell when this instance booted"
    return min(candidates)


def test_ssh_host_keys_exist(host):
    keys = _host_keys(host)
    private = [p for p in keys if p.endswith("_key")]
    assert private, "no SSH host keys in /etc/ssh"
    for path in private:
        assert path + ".pub" in keys, f"{path} has no public half"


def test_ssh_host_keys_made_after_the_image_was_built(host):
    keys = _host_keys(host)
    assert keys, "no SSH host keys in /etc/ssh"
    built = h.root_stat(host, h.RELEASE, follow=True).mtime
    old = {p: m for p, m in keys.items() if m <= built}
    assert not old, f"SSH host keys older than {h.RELEASE} (written at build time): baked keys {old}"


def test_ssh_host_keys_made_at_first_boot(host):
    keys = _host_keys(host)
    assert keys, "no SSH host keys in /etc/ssh"
    reference, what = _first_boot_reference(host)
    early = {p: m for p, m in keys.items() if m < reference - MARGIN_S}
    assert not early, f"SSH host keys older than the first boot ({what} at {reference}): {early}"


def test_machine_id_is_set(host):
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", machine_id), f"/etc/machine-id is {machine_id!r}"


def test_machine_id_differs_from_the_build(host, build_machine_id):
    if build_machine_id is None:
        pytest.skip("ODOO_IMAGE_BUILD_MACHINE_ID not set")
    machine_id = host.file("/etc/machine-id").content_string.strip()
    assert machine_id != build_machine_id.strip().lower(), "the instance kept the build's machine-id"


@pytest.mark.parametrize("path", [h.PAYLOAD, h.PAYLOAD + ".tar"])
def test_no_build_payload_left(host, path):
    assert not h.root_file_exists(host, path), f"{path} (the build payload) is still in the image"


def test_no_build_ca_apt_config(host):
    assert not h.root_file_exists(host, h.BUILD_CA_APT_CONF), f"{h.BUILD_CA_APT_CONF} (build-only CA) is in the image"


def test_no_extra_ca_certificates_from_the_build(host):
    out = host.run("grep -rls 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates/ 2>/dev/null")
    assert not out.stdout.strip(), f"extra CA certificates left in the image: {out.stdout.split()}"


def test_no_packer_build_user(host):
    assert not host.user("packer").exists, "the build user 'packer' exists"
    assert not host.file("/home/packer").exists, "/home/packer exists"
    assert not h.root_file_exists(host, "/etc/sudoers.d/packer"), "/etc/sudoers.d/packer exists"
