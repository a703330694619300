"""Render an ImageSpec into build/<image>/<version>/: Packer HCL, provisioning scripts, files.

The only module that touches templates. Output is deterministic (sorted walks, no timestamps)
and written atomically: everything goes to a temporary sibling directory that replaces the
release directory only once the whole render succeeded.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jinja2

from .errors import PipelineError
from .paths import REPO_ROOT, build_root
from .spec import ArchiveSource, GitSource, ImageSpec

PACKER_TEMPLATES = REPO_ROOT / "packer"
PROVISION_TEMPLATES = REPO_ROOT / "provision"
CLOUD_INIT_DIR = REPO_ROOT / "cloud_init"
PLUGINS_FILE = "plugins.pkr.hcl"
# Packer learnt `required_plugins` (and `packer init`) in 1.7.
PLUGINS_MIN_PACKER = (1, 7, 0)


def hcl_string(value: Any) -> str:
    """Encode a value as an HCL2 expression literal (JSON syntax is valid HCL for values).

    `${` and `%{` would start HCL interpolation/directives inside strings: escape them.
    """
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text.replace("${", "$${").replace("%{", "%%{")


def sh_quote(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(shlex.quote(str(v)) for v in value)
    return shlex.quote("" if value is None else str(value))


def _environment(search: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(search)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        # Bash's ${#array[@]} would open a default Jinja comment.
        comment_start_string="{##",
        comment_end_string="##}",
    )
    env.filters["hcl"] = hcl_string
    env.filters["sh"] = sh_quote
    env.filters["json"] = lambda v: json.dumps(v, sort_keys=True)
    return env


def template_context(spec: ImageSpec) -> dict[str, Any]:
    """Everything templates may use; plain data so templates stay logic-light."""
    source = spec.odoo.source
    odoo_source: dict[str, Any]
    if isinstance(source, GitSource):
        odoo_source = {"kind": "git", "url": source.url, "branch": source.branch, "commit": source.commit}
    else:
        assert isinstance(source, ArchiveSource)
        odoo_source = {"kind": "archive", "location": source.location, "sha256": source.sha256}
    return {
        "image": {"name": spec.name, "version": spec.version, "release": spec.release_name},
        "os": asdict(spec.os),
        "targets": list(spec.targets),
        "aws": asdict(spec.aws) if spec.aws else None,
        "postgresql": asdict(spec.postgresql),
        "odoo": {"source": odoo_source, "pin": source.pin, "requirements": spec.odoo.requirements},
        "python": asdict(spec.python),
        "packer": asdict(spec.packer),
        "build": asdict(spec.build),
        "ports": {"http": 8069, "gevent": 8072},
        "paths": {
            "prefix": "/usr/local/lib/odoo-image",
            "payload": "/var/tmp/odoo-image",
            "odoo_home": "/opt/odoo",
            "odoo_src": "/opt/odoo/src",
            "venv": "/opt/odoo/venv",
            "data_dir": "/var/lib/odoo",
            "state": "/var/lib/odoo-image",
            "log": "/var/log/odoo/odoo.log",
            "conf_dir": "/etc/odoo/conf.d",
            "conf": "/etc/odoo/odoo.conf",
        },
    }


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _render_tree(src: Path, dest: Path, context: dict[str, Any]) -> list[Path]:
    """Render `*.j2` through Jinja (dropping the suffix); copy everything else verbatim."""
    env = _environment(src)
    written: list[Path] = []
    for path in _walk(src):
        rel = path.relative_to(src)
        if "{{" in rel.as_posix():
            # Path components may depend on the spec (e.g. the PostgreSQL major).
            rendered = Path(env.from_string(rel.as_posix()).render(**context))
        else:
            rendered = rel
        if path.suffix == ".j2":
            target = dest / rendered.with_suffix("")
            try:
                text = env.get_template(rel.as_posix()).render(**context)
            except jinja2.TemplateError as exc:
                shown = path.relative_to(src.parent) if path.is_relative_to(src.parent) else path
                raise PipelineError(f"{shown}: template error: {exc}") from exc
        else:
            target = dest / rendered
            text = None
        target.parent.mkdir(parents=True, exist_ok=True)
        if text is None:
            shutil.copyfile(path, target)
        else:
            target.write_text(text)
        mode = 0o755 if os.access(path, os.X_OK) or target.suffix == ".sh" else 0o644
        target.chmod(mode)
        written.append(target)
    return written


def release_dir(spec: ImageSpec, root: Path | None = None) -> Path:
    return (root or build_root()) / spec.name / spec.version


def render(spec: ImageSpec, *, packer_version: tuple[int, int, int] | None = None,
           root: Path | None = None) -> Path:
    """Render one image; returns build/<image>/<version>/. Atomic: all or nothing."""
    final = release_dir(spec, root)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.version}.", dir=final.parent))
    try:
        context = template_context(spec)
        _render_tree(PACKER_TEMPLATES, work / "packer", context)
        _place_plugins_file(work / "packer", packer_version)
        _render_tree(PROVISION_TEMPLATES, work / "provision", context)
        _render_tree(CLOUD_INIT_DIR, work / "cloud_init", context)
        (work / "spec.json").write_text(json.dumps(context, indent=2, sort_keys=True) + "\n")
        work.chmod(0o755)
        if final.exists():
            old = final.with_name(f".{spec.version}.old")
            shutil.rmtree(old, ignore_errors=True)
            final.rename(old)
            work.rename(final)
            shutil.rmtree(old)
        else:
            work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


def _place_plugins_file(packer_dir: Path, packer_version: tuple[int, int, int] | None) -> None:
    """Keep `required_plugins` out of the directory Packer < 1.7 loads (it rejects the block)."""
    plugins = packer_dir / PLUGINS_FILE
    if packer_version is not None and packer_version >= PLUGINS_MIN_PACKER:
        return
    optional = packer_dir / "optional"
    optional.mkdir(exist_ok=True)
    plugins.rename(optional / PLUGINS_FILE)


def parse_packer_version(text: str) -> tuple[int, int, int]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise PipelineError(f"cannot read Packer's version from {text.strip()!r}")
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch
