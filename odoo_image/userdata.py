"""Launch-time #cloud-config for an instance of the image.

The rendering and the validation are the instance's own code (cloud_init/odoo_firstboot):
what `invoke userdata` accepts is exactly what first boot will accept.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .errors import PipelineError
from .paths import REPO_ROOT

SETTINGS_PATH = "/etc/odoo-image/settings.yaml"


def _firstboot_userdata() -> ModuleType:
    path = str(REPO_ROOT / "cloud_init")
    if path not in sys.path:
        sys.path.insert(0, path)
    return importlib.import_module("odoo_firstboot.userdata")


def settings(*, domain: str = "", email: str = "", database: str = "", modules: list[str] | None = None,
             admin_login: str = "", admin_password: str = "") -> dict[str, Any]:
    """Only what the operator set: the first boot picks safe defaults for the rest."""
    values: dict[str, Any] = {"domain": domain, "letsencrypt_email": email, "database": database,
                              "modules": modules or [], "admin_login": admin_login,
                              "admin_password": admin_password}
    return {key: value for key, value in values.items() if value}


def cloud_config(settings_values: dict[str, Any], ssh_keys: Sequence[str] = ()) -> str:
    """The #cloud-config text; a setting first boot would reject is an error here."""
    text, problems = _firstboot_userdata().render(settings_values, ssh_authorized_keys=list(ssh_keys))
    if problems:
        raise PipelineError("; ".join(problems))
    return str(text)
