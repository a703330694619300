"""Launch-time #cloud-config for an instance of the image (structured, never string-built)."""

from __future__ import annotations

from typing import Any

import yaml

SETTINGS_PATH = "/etc/odoo-image/settings.yaml"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded settings file) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def settings(*, domain: str = "", email: str = "", database: str = "", modules: list[str] | None = None,
             admin_login: str = "", admin_password: str = "") -> dict[str, Any]:
    """Only what the operator set: the first boot picks safe defaults for the rest."""
    values: dict[str, Any] = {"domain": domain, "letsencrypt_email": email, "database": database,
                              "modules": modules or [], "admin_login": admin_login,
                              "admin_password": admin_password}
    return {key: value for key, value in values.items() if value}


def cloud_config(settings_values: dict[str, Any], ssh_keys: list[str] | None = None) -> str:
    config: dict[str, Any] = {}
    if ssh_keys:
        config["ssh_authorized_keys"] = ssh_keys
    if settings_values:
        config["write_files"] = [{
            "path": SETTINGS_PATH,
            "owner": "root:root",
            "permissions": "0600",
            "content": yaml.safe_dump(settings_values, sort_keys=False),
        }]
    return "#cloud-config\n" + yaml.dump(config, Dumper=_Dumper, sort_keys=False)
