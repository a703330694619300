"""Render a `#cloud-config` that delivers settings.yaml (for `invoke userdata` and tests).

Runs on the operator's machine, not on the instance; it lives in this package so the
rendering and the validation the instance will apply are the same code. The settings go
in through `write_files` (root-only, 0600: they may hold an admin password), written in
cloud-init's network stage — not `defer: true`, which would be after first boot read it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from . import paths
from .settings import parse


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded settings file) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def render(settings: Mapping[str, object], *, ssh_authorized_keys: Sequence[str] = ()) -> tuple[str, list[str]]:
    """Return (user-data text, problems). Problems are the lines first boot would log for
    these settings; callers should refuse to render when there are any."""
    _, problems = parse(dict(settings))
    doc: dict[str, object] = {}
    if ssh_authorized_keys:
        doc["ssh_authorized_keys"] = list(ssh_authorized_keys)
    if settings:
        doc["write_files"] = [
            {
                "path": str(paths.SETTINGS),
                "owner": "root:root",
                "permissions": "0600",
                "content": yaml.safe_dump(dict(settings), sort_keys=False, default_flow_style=False),
            }
        ]
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False) if doc else ""
    return "#cloud-config\n" + body, problems
