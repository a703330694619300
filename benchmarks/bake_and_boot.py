#!/usr/bin/env python3
"""Benchmark: bake the fixture image and boot it; print one table (speed and size targets
live here, not in timed tests).

    python3 benchmarks/bake_and_boot.py [--os jammy|bookworm] [--memory 4096]

Measures: build wall time, compressed qcow2 size, boot to SSH, boot to first-boot done, and
the time until /web/health answers through NGINX. Uses the TEST FIXTURE catalogue (no GitHub
or PGDG needed); results land in a temporary dist/ directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from odoo_image import cli  # noqa: E402
from odoo_image.build import artifact_paths  # noqa: E402
from odoo_image.spec import load_catalogue  # noqa: E402
from odoo_image.vm import boot, choose_accelerator, generate_ssh_keypair, nocloud_config, seed_iso  # noqa: E402
from tests.fixtures.catalogue import write_fixture_catalogue  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--os", default="jammy", choices=["jammy", "bookworm"])
    parser.add_argument("--memory", type=int, default=4096, help="MiB for the boot")
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="odoo-image-bench-") as tmp:
        work = Path(tmp)
        os.environ["ODOO_IMAGE_DIST"] = str(work / "dist")
        catalogue = write_fixture_catalogue(work, (args.os,))
        spec = load_catalogue(catalogue).images[0]
        start = time.monotonic()
        cli.build(catalogue, None, "qemu")
        rows.append(("build (wall)", f"{time.monotonic() - start:.0f} s"))
        qcow2, manifest = artifact_paths(spec)
        rows.append(("compressed qcow2", f"{qcow2.stat().st_size / 2**20:.0f} MiB"))
        rows.append(("accelerator", json.loads(manifest.read_text())["accelerator"]))
        key = generate_ssh_keypair(work / "key")
        seed = seed_iso(work / "seed.iso", *nocloud_config(key.public))
        accel = choose_accelerator(spec.packer.accelerator, qcow2)
        start = time.monotonic()
        with boot(qcow2, seed=seed, memory_mib=args.memory, cpus=2, accelerator=accel) as vm:
            vm.wait_ssh(spec.os.ssh_user, key.private, timeout=1200)
            rows.append(("boot to SSH", f"{time.monotonic() - start:.0f} s"))
            vm.ssh(["sudo", "cloud-init", "status", "--wait"], check=False, timeout=1800)
            vm.ssh(["sudo", "sh", "-c", "until [ -e /var/lib/odoo-image/firstboot.done ]; do sleep 2; done"],
                   timeout=1800)
            rows.append(("boot to first boot done", f"{time.monotonic() - start:.0f} s"))
            vm.ssh(["sh", "-c", "until curl -skf https://127.0.0.1/web/health >/dev/null; do sleep 2; done"],
                   timeout=900)
            rows.append(("boot to /web/health 200", f"{time.monotonic() - start:.0f} s"))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'metric':<{width}}  value\n{'-' * width}  -----")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
