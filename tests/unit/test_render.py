"""Rendering: both default images render and validate; output is deterministic and atomic."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import hcl2
import pytest

from odoo_image import render as render_mod
from odoo_image.errors import PipelineError
from odoo_image.paths import REPO_ROOT
from odoo_image.progress import Progress
from odoo_image.spec import load_catalogue
from odoo_image.validate import validate

CATALOGUE = load_catalogue(REPO_ROOT / "images.yaml")


def load_hcl(path: Path) -> dict:
    with path.open() as handle:
        return hcl2.load(handle, serialization_options=hcl2.SerializationOptions(strip_string_quotes=True))


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() + oct(p.stat().st_mode)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("spec", CATALOGUE.images, ids=lambda s: s.name)
def test_default_images_render_and_validate(tmp_path: Path, spec) -> None:
    release = render_mod.render(spec, packer_version=(1, 6, 6), root=tmp_path)
    assert release == tmp_path / spec.name / spec.version
    validate(release, Progress())  # raises with every problem if any check fails

    sources = load_hcl(release / "packer" / "sources.pkr.hcl")["source"]
    kinds = {kind: list(body) for block in sources for kind, body in block.items()}
    assert kinds == {"qemu": ["odoo"], "amazon-ebs": ["odoo"]}
    build = load_hcl(release / "packer" / "build.pkr.hcl")["build"][0]
    assert build["sources"] == ["source.qemu.odoo", "source.amazon-ebs.odoo"]
    assert "manifest" in build["post-processor"][0]

    pkrvars = load_hcl(release / "packer" / "image.auto.pkrvars.hcl")
    assert pkrvars["image_version"] == spec.version
    assert pkrvars["ami_owner"] == spec.os.ami.owner
    assert pkrvars["tags"]["odoo-image:odoo-source"] == spec.odoo.source.pin
    # Packer 1.6.6 rejects required_plugins: the block is kept out of the loaded directory.
    assert not (release / "packer" / "plugins.pkr.hcl").exists()
    assert (release / "packer" / "optional" / "plugins.pkr.hcl").exists()


def test_plugins_block_is_loaded_for_packer_1_7_and_newer(tmp_path: Path) -> None:
    release = render_mod.render(CATALOGUE.images[0], packer_version=(1, 11, 2), root=tmp_path)
    plugins = load_hcl(release / "packer" / "plugins.pkr.hcl")
    assert "required_plugins" in plugins["packer"][0]


def test_rendering_is_byte_identical(tmp_path: Path) -> None:
    spec = CATALOGUE.images[0]
    first = tree_digest(render_mod.render(spec, packer_version=(1, 6, 6), root=tmp_path / "a"))
    second = tree_digest(render_mod.render(spec, packer_version=(1, 6, 6), root=tmp_path / "b"))
    again = tree_digest(render_mod.render(spec, packer_version=(1, 6, 6), root=tmp_path / "a"))
    assert first == second == again
    assert any(name.startswith("provision/scripts/") for name in first)


def test_failed_render_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CATALOGUE.images[0]
    templates = tmp_path / "provision"
    shutil.copytree(REPO_ROOT / "provision", templates)
    (templates / "scripts" / "99-broken.sh.j2").write_text("#!/usr/bin/env bash\necho {{ no_such_value }}\n")
    monkeypatch.setattr(render_mod, "PROVISION_TEMPLATES", templates)
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=r"99-broken.sh.j2: template error: 'no_such_value' is undefined"):
        render_mod.render(spec, root=out)
    assert list((out / spec.name).iterdir()) == []

    # A previous good render under the release name survives a failed one untouched.
    monkeypatch.setattr(render_mod, "PROVISION_TEMPLATES", REPO_ROOT / "provision")
    good = tree_digest(render_mod.render(spec, root=out))
    monkeypatch.setattr(render_mod, "PROVISION_TEMPLATES", templates)
    with pytest.raises(PipelineError):
        render_mod.render(spec, root=out)
    assert tree_digest(out / spec.name / spec.version) == good
    assert [p.name for p in (out / spec.name).iterdir()] == [spec.version]


def test_hcl_strings_escape_interpolation() -> None:
    assert render_mod.hcl_string("a${b}%{c}\"") == '"a$${b}%%{c}\\""'
    assert render_mod.hcl_string({"k": [1, "x"]}) == '{"k": [1, "x"]}'


def test_shell_values_are_quoted() -> None:
    assert render_mod.sh_quote("a b; rm -rf /") == "'a b; rm -rf /'"
    assert render_mod.sh_quote(["libpq5", "x y"]) == "libpq5 'x y'"
    assert render_mod.sh_quote(None) == "''"
