"""The validator catches what it exists to catch, with the real tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from odoo_image import render as render_mod
from odoo_image import validate as v
from odoo_image.paths import REPO_ROOT
from odoo_image.spec import load_catalogue


@pytest.fixture()
def release(tmp_path: Path) -> Path:
    spec = load_catalogue(REPO_ROOT / "images.yaml").images[0]
    return render_mod.render(spec, packer_version=(1, 6, 6), root=tmp_path)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_broken_nginx_site_is_reported(release: Path) -> None:
    site = release / "provision/files/etc/nginx/sites-available/odoo.conf"
    edit(site, "proxy_pass http://odoochat;", "proxy_pass http://odoochat")
    problems = v.check_nginx(release)
    assert len(problems) == 1 and "odoo.conf: nginx -t" in problems[0] and "proxy_pass" in problems[0]


def test_shellcheck_finding_is_reported(release: Path) -> None:
    script = release / "provision/scripts/30-odoo-user.sh"
    script.write_text(script.read_text() + 'echo $undefined_thing\n')
    problems = v.check_shell(release)
    assert any("30-odoo-user.sh" in p and "SC2154" in p for p in problems)


def test_script_without_strict_mode_is_reported(release: Path) -> None:
    edit(release / "provision/scripts/75-certbot.sh", "set -euo pipefail", "set -e")
    assert "provision/scripts/75-certbot.sh: missing `set -euo pipefail`" in v.check_shell(release)


def test_fail2ban_filter_must_ban_the_real_client(release: Path) -> None:
    filt = release / "provision/files/etc/fail2ban/filter.d/odoo-login.conf"
    edit(filt, r"login:.* from <ADDR>\s*$", r"login:\S+ from <ADDR>")
    problems = v.check_fail2ban(release)
    assert any("should ban 203.0.113.8" in p for p in problems)


def test_unparsable_hcl_is_reported(release: Path) -> None:
    edit(release / "packer/build.pkr.hcl", "build {", "build {{")
    problems = v.check_hcl(release)
    assert len(problems) == 1 and problems[0].startswith("packer/build.pkr.hcl: HCL does not parse")


def test_packer_validate_failure_is_reported(release: Path) -> None:
    edit(release / "packer/sources.pkr.hcl", 'format               = "qcow2"', 'format               = "vhdx"')
    problems = v.check_packer(release)
    assert len(problems) == 1 and "packer validate failed" in problems[0]


def test_invalid_cloud_config_is_reported(release: Path) -> None:
    bad = release / "cloud_init" / "bad.yaml"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text("#cloud-config\nwrite_files: 12\n")
    problems = v.check_cloud_config(release)
    assert len(problems) == 1 and problems[0].startswith("cloud_init/bad.yaml: cloud-init schema")
