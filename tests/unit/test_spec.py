"""The catalogue: defaults merge, every field is checked, bad input is one clear line."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from odoo_image.errors import SpecError
from odoo_image.paths import REPO_ROOT
from odoo_image.spec import ArchiveSource, GitSource, load_catalogue, parse_catalogue

CATALOGUE = REPO_ROOT / "images.yaml"


def default_data() -> dict[str, Any]:
    return yaml.safe_load(CATALOGUE.read_text())


def test_default_catalogue_loads_both_images() -> None:
    catalogue = load_catalogue(CATALOGUE)
    jammy, bookworm = catalogue.images
    assert (jammy.name, jammy.os.name, jammy.os.python) == ("odoo18", "jammy", "3.10")
    assert (bookworm.name, bookworm.os.name, bookworm.os.python) == ("odoo18-bookworm", "bookworm", "3.11")
    # `auto` resolves per OS: PGDG on jammy, the distribution on bookworm.
    assert (jammy.postgresql.version, jammy.postgresql.source) == (15, "pgdg")
    assert (bookworm.postgresql.version, bookworm.postgresql.source) == (15, "distro")
    assert jammy.targets == ("qemu", "amazon-ebs") and jammy.aws is not None
    assert isinstance(jammy.odoo.source, GitSource) and len(jammy.odoo.source.commit) == 40


def test_image_overrides_only_what_differs() -> None:
    data = default_data()
    data["images"][1]["packer"] = {"memory_mib": 8192}
    data["images"][1]["targets"] = {"qemu": {}}
    data["images"][1]["odoo"] = {"source": {"archive": {"path": "odoo.tar.gz", "sha256": "a" * 64}}}
    jammy, bookworm = parse_catalogue(data, CATALOGUE).images
    assert bookworm.packer.memory_mib == 8192 and bookworm.packer.cpus == jammy.packer.cpus
    # targets and odoo.source are replaced whole, not merged with the defaults.
    assert bookworm.targets == ("qemu",) and bookworm.aws is None
    assert bookworm.odoo.source == ArchiveSource(location="odoo.tar.gz", sha256="a" * 64)
    assert bookworm.odoo.requirements == "requirements.txt"


def test_jammy_distro_postgresql_must_be_14() -> None:
    data = default_data()
    data["images"][0]["postgresql"] = {"source": "distro"}
    with pytest.raises(SpecError) as err:
        parse_catalogue(data, CATALOGUE)
    assert err.value.problems == [
        "images[0].postgresql.source: jammy's own archive ships PostgreSQL 14, not 15: "
        "use source: pgdg for 15, or version: 14"]


def test_every_problem_is_reported_with_its_path() -> None:
    data = default_data()
    data["defaults"]["packer"]["cpus"] = 0
    data["images"][1]["version"] = "one"
    with pytest.raises(SpecError) as err:
        parse_catalogue(data, CATALOGUE)
    assert err.value.problems == [
        "defaults.packer.cpus: must be an integer ≥ 1 and ≤ 64, got 0",
        "images[1].version: 'one' is not a semantic version like 1.2.3",
    ]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return mutate


def _delete(path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        node = data
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return mutate


def _duplicate_name(data: dict[str, Any]) -> None:
    data["images"][1]["name"] = "odoo18"


BAD_INPUTS: list[tuple[str, Callable[[dict[str, Any]], None] | str, str]] = [
    ("missing field", _delete(["images", 0, "version"]), "images[0].version: required field is missing"),
    ("wrong type", _set(["images", 0, "packer"], {"cpus": "two"}),
     "images[0].packer.cpus: must be an integer ≥ 1 and ≤ 64, got 'two'"),
    ("unknown key", _set(["images", 0, "postgres"], {"version": 15}),
     "images[0].postgres: unknown key (allowed: name, version, os, targets, postgresql, odoo, python, packer, build)"),
    ("bad version string", _set(["images", 1, "version"], "1.0"),
     "images[1].version: '1.0' is not a semantic version like 1.2.3"),
    ("unknown OS", _set(["images", 1, "os"], "centos"), "images[1].os: 'centos' is not one of: bookworm, jammy"),
    ("PG major out of range", _set(["images", 1, "postgresql"], {"version": 9}),
     "images[1].postgresql.version: must be an integer ≥ 12 and ≤ 17, got 9"),
    ("archive without sha256", _set(["images", 0, "odoo"], {"source": {"archive": {"path": "odoo.tar.gz"}}}),
     "images[0].odoo.source.archive.sha256: required field is missing"),
    ("short git commit", _set(["images", 0, "odoo"], {"source": {"git": {
        "url": "https://example.org/odoo.git", "branch": "18.0", "commit": "abc"}}}),
     "images[0].odoo.source.git.commit: 'abc' is not a full 40-hex-digit commit id"),
    ("git and archive", _set(["images", 0, "odoo"], {"source": {
        "git": {"url": "https://example.org/odoo.git", "branch": "18.0", "commit": "a" * 40},
        "archive": {"path": "odoo.tar.gz", "sha256": "a" * 64}}}),
     "images[0].odoo.source: needs exactly one of `git` or `archive`"),
    ("pip index not a URL", _set(["defaults", "build", "pip_index_url"], "pypi.internal"),
     "defaults.build.pip_index_url: 'pypi.internal' is not an http(s) URL"),
    ("bad region", _set(["defaults", "targets", "amazon-ebs", "regions"], ["eu-west-1", "mars-north-1"]),
     "defaults.targets.amazon-ebs.regions[1]: 'mars-north-1' is not an AWS region name like eu-west-1"),
    ("duplicate image name", _duplicate_name, "images[1].name: duplicate image name 'odoo18' (also images[0])"),
    ("malformed YAML", "images:\n  - name: odoo18\n    version: [1.0.0\n",
     "images.yaml: line 4, column 1: malformed YAML (expected ',' or ']', but got '<stream end>')"),
]


@pytest.mark.parametrize("mutate,expected", [pytest.param(m, e, id=i) for i, m, e in BAD_INPUTS])
def test_bad_input_is_one_clear_line_exit_2_and_nothing_written(
        tmp_path: Path, mutate: Callable[[dict[str, Any]], None] | str, expected: str) -> None:
    catalogue = tmp_path / "images.yaml"
    if isinstance(mutate, str):
        catalogue.write_text(mutate)
    else:
        data = copy.deepcopy(default_data())
        mutate(data)
        catalogue.write_text(yaml.safe_dump(data, sort_keys=False))
    build = tmp_path / "build"
    env = {**os.environ, "ODOO_IMAGE_BUILD": str(build)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "render", "--catalogue", str(catalogue)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [f"error: {expected}"]
    assert not build.exists()
