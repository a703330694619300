"""Well-known locations: repository, cache, build and dist directories."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Content-addressed cache for inputs (keyrings, rootfs, wheelhouses, sources)."""
    path = Path(os.environ.get("ODOO_IMAGE_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_root() -> Path:
    return Path(os.environ.get("ODOO_IMAGE_BUILD", REPO_ROOT / "build"))


def dist_root() -> Path:
    return Path(os.environ.get("ODOO_IMAGE_DIST", REPO_ROOT / "dist"))
