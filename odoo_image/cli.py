"""What each invoke task does, as plain functions (tasks.py only parses flags)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import render as render_mod
from .progress import Progress
from .spec import Catalogue, ImageSpec, load_catalogue
from .validate import validate as validate_release


def installed_packer_version() -> tuple[int, int, int] | None:
    if shutil.which("packer") is None:
        return None
    out = subprocess.run(["packer", "version"], capture_output=True, text=True, check=False).stdout
    return render_mod.parse_packer_version(out)


def _images(catalogue: Catalogue, image: str | None) -> list[ImageSpec]:
    return catalogue.get(image)


def render(catalogue_path: Path, image: str | None) -> list[Path]:
    catalogue = load_catalogue(catalogue_path)  # every problem is reported before anything is written
    version = installed_packer_version()
    out = []
    for spec in _images(catalogue, image):
        release = render_mod.render(spec, packer_version=version)
        print(f"rendered {spec.release_name} -> {release}")
        out.append(release)
    return out


def validate(catalogue_path: Path, image: str | None) -> None:
    progress = Progress("validate")
    releases = render(catalogue_path, image)
    try:
        for release in releases:
            validate_release(release, progress)
    finally:
        progress.print_summary()
    print(f"valid: {', '.join(str(r) for r in releases)}")
