"""User-data for launching the image: README examples and `invoke userdata` are valid cloud-config."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from odoo_image.paths import REPO_ROOT
from odoo_image.userdata import SETTINGS_PATH, cloud_config, settings

README_BLOCKS = re.findall(r"```yaml\n(#cloud-config\n.*?)```", (REPO_ROOT / "README.md").read_text(), re.S)


def schema_errors(text: str, tmp_path: Path) -> str:
    path = tmp_path / "user-data"
    path.write_text(text)
    proc = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True,
                          check=False)
    return "" if proc.returncode == 0 else (proc.stdout + proc.stderr)


def test_readme_has_user_data_examples() -> None:
    assert len(README_BLOCKS) >= 2


@pytest.mark.parametrize("block", README_BLOCKS)
def test_readme_examples_pass_cloud_init_schema(block: str, tmp_path: Path) -> None:
    assert schema_errors(block, tmp_path) == ""


def test_invoke_userdata_output_is_valid_and_carries_the_settings(tmp_path: Path) -> None:
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey test@example.com\n")
    out = tmp_path / "user-data"
    subprocess.run(["invoke", "userdata", "--domain", "erp.example.com", "--email", "ops@example.com",
                    "--database", "erp", "--modules", "sale,crm", "--ssh-key", str(key), "--output", str(out)],
                   cwd=REPO_ROOT, check=True)
    text = out.read_text()
    assert schema_errors(text, tmp_path) == ""
    config = yaml.safe_load(text)
    assert config["ssh_authorized_keys"] == [key.read_text().strip()]
    (entry,) = config["write_files"]
    assert entry["path"] == SETTINGS_PATH and entry["permissions"] == "0600"
    assert yaml.safe_load(entry["content"]) == {
        "domain": "erp.example.com", "letsencrypt_email": "ops@example.com", "database": "erp",
        "modules": ["sale", "crm"], "admin_password": "generate"}


def test_no_settings_means_no_settings_file() -> None:
    assert "write_files" not in yaml.safe_load(cloud_config(settings(), ["ssh-ed25519 AAAA x"]))


def test_a_setting_first_boot_would_reject_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(["invoke", "userdata", "--domain", "exa mple"], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: settings.domain: 'exa mple' is not a valid DNS name"
