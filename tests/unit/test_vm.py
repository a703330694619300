"""vm: accelerator choice (probe mocked or faked), overlay and seed creation with the real
qemu-img / cloud-localds, and guaranteed teardown of a real (diskless) QEMU process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from odoo_image import vm
from odoo_image.errors import PipelineError
from odoo_image.tap import Tap, remove_stale_taps

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None or shutil.which(vm.QEMU) is None,
                                reason="qemu not installed")


@pytest.fixture(autouse=True)
def private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(cache))
    return cache


@dataclass
class FakeProbe:
    result: tuple[bool, str] = (True, "booted")
    calls: list[Path] = field(default_factory=list)


@pytest.fixture()
def probe(monkeypatch: pytest.MonkeyPatch) -> FakeProbe:
    """Mock the KVM probe (and the facts it is keyed by); records calls."""
    fake = FakeProbe()

    def fake_probe(disk: Path, *, timeout: float = vm.PROBE_TIMEOUT) -> tuple[bool, str]:
        fake.calls.append(disk)
        return fake.result

    monkeypatch.setattr(vm, "probe_kvm", fake_probe)
    monkeypatch.setattr(vm, "probe_key", lambda: "6.1.0-test|QEMU emulator version 7.2.0")
    monkeypatch.setattr(vm, "kvm_device_usable", lambda: (True, "/dev/kvm is accessible"))
    return fake


def _choose(requested: str) -> tuple[str, str]:
    out = io.StringIO()
    accel = vm.choose_accelerator(requested, Path("/nonexistent/probe.qcow2"), out=out)
    return accel, out.getvalue()


def test_tcg_requested_never_probes(probe: FakeProbe) -> None:
    assert _choose("tcg") == ("tcg", "accelerator: tcg (requested)\n")
    assert probe.calls == []


def test_auto_uses_kvm_when_the_probe_boots(probe: FakeProbe) -> None:
    probe.result = (True, "stock kernel booted past early boot in 3 s")
    accel, said = _choose("auto")
    assert accel == "kvm" and "probe: stock kernel booted" in said
    assert len(probe.calls) == 1


def test_auto_falls_back_to_tcg_when_the_probe_hangs(probe: FakeProbe) -> None:
    probe.result = (False, "stock kernel did not get past early boot within 30 s")
    accel, said = _choose("auto")
    assert accel == "tcg" and "did not get past early boot" in said


def test_probe_result_is_cached_per_kernel_and_qemu(probe: FakeProbe, private_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    probe.result = (False, "hangs")
    assert _choose("auto")[0] == "tcg"
    accel, said = _choose("auto")
    assert accel == "tcg" and "cached probe for 6.1.0-test|QEMU emulator version 7.2.0" in said
    assert len(probe.calls) == 1
    stored = json.loads((private_cache / "accel-probe.json").read_text())
    assert stored["6.1.0-test|QEMU emulator version 7.2.0"]["kvm_ok"] is False
    # A new host kernel means a new probe.
    monkeypatch.setattr(vm, "probe_key", lambda: "6.2.0-test|QEMU emulator version 7.2.0")
    probe.result = (True, "booted")
    assert _choose("auto")[0] == "kvm"
    assert len(probe.calls) == 2


def test_auto_without_kvm_device_is_tcg_without_probe(probe: FakeProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "kvm_device_usable", lambda: (False, "/dev/kvm does not exist"))
    assert _choose("auto") == ("tcg", "accelerator: tcg (/dev/kvm does not exist)\n")
    assert probe.calls == []


def test_kvm_requested(probe: FakeProbe, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _choose("kvm")[0] == "kvm"
    assert probe.calls == []
    monkeypatch.setattr(vm, "kvm_device_usable", lambda: (False, "/dev/kvm does not exist"))
    with pytest.raises(PipelineError, match="kvm was requested but /dev/kvm does not exist"):
        _choose("kvm")


def test_unknown_accelerator() -> None:
    with pytest.raises(PipelineError, match="unknown accelerator 'hvf'"):
        _choose("hvf")


# ---------------------------------------------------------------- probe_kvm with a fake QEMU

FAKE_QEMU = """\
import sys, time
serial = next(a[len("file:"):] for a in sys.argv if a.startswith("file:"))
mode = {mode!r}
with open(serial, "w") as log:
    log.write("early console in setup code\\n"); log.flush()
    if mode == "boots":
        log.write("[    1.0] Run /init as init process\\n"); log.flush()
    elif mode == "dies":
        print("qemu: kvm run failed Invalid argument", file=sys.stderr); sys.exit(1)
    time.sleep(60)
"""


@pytest.fixture()
def fake_qemu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    disk = tmp_path / "probe.raw"
    disk.write_bytes(b"\0" * 4096)
    monkeypatch.setattr(vm, "image_format", lambda _path: "raw")
    return disk


@pytest.mark.parametrize(("mode", "ok", "reason"), [
    ("boots", True, "booted past early boot"),
    ("hangs", False, "did not get past early boot within 2 s (serial: 'early console in setup code')"),
    ("dies", False, "exited 1: qemu: kvm run failed Invalid argument"),
])
def test_probe_kvm_reads_the_serial_log(fake_qemu: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        mode: str, ok: bool, reason: str) -> None:
    script = tmp_path / f"qemu-{mode}.py"
    script.write_text(FAKE_QEMU.format(mode=mode))
    wrapper = tmp_path / f"qemu-{mode}"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {script} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(vm, "QEMU", str(wrapper))
    result = vm.probe_kvm(fake_qemu, timeout=2)
    assert result[0] is ok and reason in result[1]


# ---------------------------------------------------------------- real qemu-img / cloud-localds

@needs_qemu
def test_make_overlay_backs_onto_the_base(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    overlay = vm.make_overlay(base, tmp_path / "overlay.qcow2")
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "qcow2"
    assert info["backing-filename"] == str(base.resolve())
    assert info["backing-filename-format"] == "qcow2"
    assert info["virtual-size"] == 64 * 2**20
    bigger = vm.make_overlay(base, tmp_path / "bigger.qcow2", size_gib=1)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(bigger)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["virtual-size"] == 2**30


def test_make_overlay_of_a_missing_disk(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        vm.make_overlay(tmp_path / "missing.qcow2", tmp_path / "overlay.qcow2")


@pytest.mark.skipif(shutil.which("cloud-localds") is None, reason="cloud-image-utils not installed")
def test_seed_iso_is_a_nocloud_volume(tmp_path: Path) -> None:
    key = vm.generate_ssh_keypair(tmp_path / "keys")
    assert key.public.startswith("ssh-ed25519 ") and key.private.stat().st_mode & 0o077 == 0
    user_data, meta_data = vm.nocloud_config(key.public, hostname="t1")
    assert user_data.startswith("#cloud-config\n")
    assert json.loads(user_data.split("\n", 1)[1]) == {"ssh_authorized_keys": [key.public]}
    assert json.loads(meta_data)["local-hostname"] == "t1"
    seed = vm.seed_iso(tmp_path / "seed.iso", user_data, meta_data)
    label = subprocess.run(["blkid", "-o", "value", "-s", "LABEL", str(seed)], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert label == "cidata"
    assert key.public.encode() in seed.read_bytes()


# ---------------------------------------------------------------- boot and teardown

def test_qemu_argv() -> None:
    argv = vm.qemu_argv(Path("/o.qcow2"), Path("/seed.iso"), 1024, 2, "tcg", {22: 2222, 8069: 18069},
                        Path("/serial.log"))
    joined = " ".join(argv)
    assert "-accel tcg,thread=multi" in joined and "-cpu max" in joined
    assert "hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=tcp:127.0.0.1:18069-:8069" in joined
    assert "-serial file:/serial.log" in joined
    assert "file=/seed.iso,if=virtio,format=raw,readonly=on" in joined
    assert "-accel kvm" in " ".join(vm.qemu_argv(Path("/o"), None, 512, 1, "kvm", {22: 1}, Path("/s")))
    assert "tap," not in joined
    with_tap = " ".join(vm.qemu_argv(Path("/o"), None, 512, 1, "tcg", {22: 1}, Path("/s"), "odt123456"))
    assert "-netdev tap,id=net1,ifname=odt123456,script=no,downscript=no" in with_tap
    assert f"virtio-net-pci,netdev=net1,mac={vm.PROBE_MAC}" in with_tap


def test_network_config_matches_both_nics_by_mac() -> None:
    config = json.loads(vm.network_config(Tap("odt1", "10.214.0.1", "10.214.0.2", 30)))
    nics = config["ethernets"]
    assert config["version"] == 2
    assert nics["uplink0"] == {"match": {"macaddress": vm.UPLINK_MAC}, "set-name": "uplink0", "dhcp4": True}
    assert nics["probe0"]["match"] == {"macaddress": vm.PROBE_MAC} and nics["probe0"]["addresses"] == ["10.214.0.2/30"]
    assert "routes" not in nics["probe0"] and "gateway4" not in nics["probe0"], "the probe link must not route"


def test_boot_needs_a_resolved_accelerator(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="resolved accelerator"), vm.boot(tmp_path / "x", accelerator="auto"):
        pass


@pytest.fixture()
def blank_disk(tmp_path: Path) -> Path:
    disk = tmp_path / "blank.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    return disk


@needs_qemu
def test_boot_tears_down_on_exception(blank_disk: Path) -> None:
    seen: dict[str, object] = {}
    with (pytest.raises(RuntimeError, match="test body failed"),
          vm.boot(blank_disk, memory_mib=64, cpus=1, accelerator="tcg", forwards={8069: None}) as machine):
        seen.update(process=machine.process, overlay=machine.overlay, ports=dict(machine.ports))
        assert machine.alive()
        assert machine.overlay.exists()
        raise RuntimeError("test body failed")
    process = seen["process"]
    assert isinstance(process, subprocess.Popen) and process.poll() is not None
    overlay = seen["overlay"]
    assert isinstance(overlay, Path) and not overlay.exists() and not overlay.parent.exists()
    ports = seen["ports"]
    assert isinstance(ports, dict) and set(ports) == {22, 8069} and all(p > 0 for p in ports.values())
    assert blank_disk.exists()


@needs_qemu
def test_boot_keeps_an_explicit_serial_log_and_reports_qemu_failures(blank_disk: Path, tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    with vm.boot(blank_disk, memory_mib=64, cpus=1, accelerator="tcg", serial_log=log) as machine:
        port = machine.ssh_port
        assert log.exists()
    assert log.exists() and not machine.alive()
    # The same host port twice cannot be forwarded: QEMU exits at once and that is reported.
    with (pytest.raises(PipelineError, match="QEMU failed to start"),
          vm.boot(blank_disk, memory_mib=64, cpus=1, accelerator="tcg", forwards={22: port, 80: port})):
        pass


@needs_qemu
def test_wait_ssh_reports_a_dead_vm(blank_disk: Path, tmp_path: Path) -> None:
    key = vm.generate_ssh_keypair(tmp_path / "keys")
    with (pytest.raises(PipelineError, match="VM exited"),
          vm.boot(blank_disk, memory_mib=64, cpus=1, accelerator="tcg") as machine):
        with pytest.raises(PipelineError, match="before VM.wait_ssh"):
            machine.ssh(["true"])
        machine.kill()
        machine.wait_ssh("ubuntu", key.private, timeout=5)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="tap devices need root")


def _link(name: str) -> dict[str, object] | None:
    out = subprocess.run(["ip", "-j", "link", "show", "dev", name], capture_output=True, text=True, check=False)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


@needs_root
@needs_qemu
def test_boot_with_a_tap_attaches_the_probe_nic(blank_disk: Path) -> None:
    tap = Tap.create()
    try:
        link = _link(tap.name)
        assert link is not None and "NO-CARRIER" in link["flags"]  # nobody holds it yet
        with vm.boot(blank_disk, memory_mib=64, cpus=1, accelerator="tcg", tap=tap) as machine:
            assert machine.address == tap.guest_addr
            assert machine.alive()
            held = _link(tap.name)
            assert held is not None and "NO-CARRIER" not in held["flags"], held
    finally:
        tap.destroy()
    assert _link(tap.name) is None


@needs_root
def test_stale_taps_are_removed_and_live_ones_kept() -> None:
    live = Tap.create()
    stale = Tap.create()
    try:
        # A dead owner: pid 2**22 + 1 is above the kernel's pid_max limit, so never alive.
        subprocess.run(["ip", "link", "set", stale.name, "alias", f"odoo-image pid={2**22 + 1}"], check=True)
        remove_stale_taps()
        assert _link(stale.name) is None
        assert _link(live.name) is not None
    finally:
        live.destroy()
        stale.destroy()
