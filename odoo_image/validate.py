"""Check a rendered build directory with the real tools before anything is built.

Each check returns the problems it found (one line each); `validate` runs them all so the
operator sees every problem at once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import hcl2

from .errors import PipelineError
from .progress import Progress

# Sample lines straight from the Odoo 18 facts: (line, address fail2ban must ban or None).
FAIL2BAN_SAMPLES: tuple[tuple[str, str | None], ...] = (
    ("2026-12-04 19:49:08,750 9860 INFO t1 odoo.addons.base.models.res_users: "
     "Login failed for db:t1 login:admin from 203.0.113.7 ", "203.0.113.7"),
    # A login with spaces and a fake address in it: the real client is the last address.
    ("2026-12-04 19:49:09,100 9860 INFO t1 odoo.addons.base.models.res_users: "
     "Login failed for db:t1 login:bob from 198.51.100.66 x from 203.0.113.8 ", "203.0.113.8"),
    ("2026-12-04 19:49:10,200 9860 INFO t1 odoo.addons.base.models.res_users: "
     "Login successful for db:t1 login:boss@example.com from 198.51.100.9 ", None),
    ("2026-12-04 19:49:11,300 9860 WARNING t1 odoo.addons.base.models.res_users: "
     "Login attempt ignored for 203.0.113.7 on t1: too many failures", None),
)


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[Path], list[str]]


def _rel(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


def check_hcl(release: Path) -> list[str]:
    problems = []
    files = sorted((release / "packer").rglob("*.pkr.hcl")) + sorted((release / "packer").rglob("*.pkrvars.hcl"))
    if not files:
        return [f"{release}: no Packer files rendered"]
    for path in files:
        try:
            with path.open() as handle:
                hcl2.load(handle)
        except Exception as exc:  # python-hcl2 raises lark errors of several types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problems.append(f"{_rel(path, release)}: HCL does not parse: {first}")
    return problems


def check_packer(release: Path) -> list[str]:
    if shutil.which("packer") is None:
        return ["packer is not installed (apt-get install packer)"]
    with tempfile.TemporaryDirectory(prefix="odoo-image-validate-") as tmp:
        work = Path(tmp)
        key = work / "build_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        payload = work / "payload.tar"
        with tarfile.open(payload, "w"):
            pass  # `packer validate` stats every file it is given; the content is irrelevant
        http = work / "http"
        http.mkdir()
        argv = ["packer", "validate",
                "-var", f"ssh_private_key_file={key}", "-var", f"payload={payload}",
                "-var", f"http_directory={http}", "-var", f"base_disk={work / 'base.qcow2'}", "."]
        proc = subprocess.run(argv, cwd=release / "packer", capture_output=True, text=True)
    if proc.returncode != 0:
        errors = [line.strip() for line in (proc.stdout + proc.stderr).splitlines()
                  if line.strip() and not line.startswith(" ")]
        detail = "; ".join(e for e in errors if not e.startswith("Warning"))[:400]
        return [f"packer/: packer validate failed: {detail}"]
    return []


def _scripts(release: Path) -> list[Path]:
    return sorted(p for p in release.rglob("*.sh")) + sorted(
        p for p in release.rglob("*") if p.is_file() and p.suffix == "" and _has_bash_shebang(p))


def _has_bash_shebang(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.readline().startswith(b"#!/usr/bin/env bash")
    except OSError:
        return False


def check_shell(release: Path) -> list[str]:
    problems = []
    scripts = _scripts(release)
    for path in scripts:
        proc = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            problems.append(f"{_rel(path, release)}: bash -n: {proc.stderr.strip().splitlines()[0]}")
        text = path.read_text()
        # Sourced libraries (marked for shellcheck) inherit strict mode from their callers.
        sourced = "# shellcheck shell=bash" in text
        if not sourced and "set -euo pipefail" not in text:
            problems.append(f"{_rel(path, release)}: missing `set -euo pipefail`")
    if shutil.which("shellcheck") is None:
        return problems + ["shellcheck is not installed (apt-get install shellcheck)"]
    proc = subprocess.run(["shellcheck", "-x", "--source-path=SCRIPTDIR", "--format=gcc",
                           *[str(p) for p in scripts]], capture_output=True, text=True, cwd=release)
    for line in proc.stdout.splitlines():
        problems.append(f"shellcheck: {line.replace(str(release) + '/', '')}")
    return problems


def check_nginx(release: Path) -> list[str]:
    """`nginx -t` on the rendered site inside a throwaway copy of the host's /etc/nginx."""
    if shutil.which("nginx") is None or not Path("/etc/nginx/nginx.conf").exists():
        return ["nginx is not installed (apt-get install nginx)"]
    files = release / "provision" / "files"
    with tempfile.TemporaryDirectory(prefix="odoo-image-nginx-") as tmp:
        prefix = Path(tmp)
        etc = prefix / "etc" / "nginx"
        shutil.copytree("/etc/nginx", etc, symlinks=True)
        shutil.rmtree(etc / "sites-enabled")
        (etc / "sites-enabled").mkdir()
        for sub in ("conf.d", "snippets", "sites-available"):
            for src in sorted((files / "etc" / "nginx" / sub).glob("*")):
                shutil.copy(src, etc / sub / src.name)
        shutil.copytree(files / "etc" / "odoo-image", prefix / "etc" / "odoo-image")
        tls = prefix / "etc" / "odoo-image" / "tls"
        tls.mkdir()
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=validate.invalid", "-keyout", str(tls / "privkey.pem"),
                        "-out", str(tls / "fullchain.pem")], check=True, capture_output=True)
        problems = []
        for site in sorted((etc / "sites-available").glob("odoo*.conf")):
            for enabled in (etc / "sites-enabled").glob("*"):
                enabled.unlink()
            (etc / "sites-enabled" / site.name).symlink_to(site)
            _relocate(etc, prefix)
            proc = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(etc / "nginx.conf"),
                                   "-g", f"pid {prefix}/nginx.pid; error_log stderr;"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                detail = [line for line in proc.stderr.splitlines() if "emerg" in line or "failed" in line]
                problems.append(f"provision/files/etc/nginx/sites-available/{site.name}: nginx -t: "
                                f"{(detail or [proc.stderr.strip()])[0]}")
        return problems


def _relocate(etc: Path, prefix: Path) -> None:
    """Point absolute paths of the copied config into the throwaway prefix."""
    mapping = {"/etc/nginx/": f"{etc}/", "/etc/odoo-image/": f"{prefix}/etc/odoo-image/"}
    for conf in etc.rglob("*"):
        if conf.is_file() and not conf.is_symlink():
            text = conf.read_text(errors="replace")
            new = text
            for old, replacement in mapping.items():
                new = re.sub(rf"(?<![\w/]){re.escape(old)}", replacement, new)
            new = re.sub(r"^\s*(user|pid)\s+[^;]+;", "", new, flags=re.M)
            if new != text:
                conf.write_text(new)


def check_fail2ban(release: Path) -> list[str]:
    if shutil.which("fail2ban-regex") is None:
        return ["fail2ban is not installed (apt-get install fail2ban)"]
    filt = release / "provision" / "files" / "etc" / "fail2ban" / "filter.d" / "odoo-login.conf"
    problems = []
    with tempfile.TemporaryDirectory(prefix="odoo-image-f2b-") as tmp:
        # fail2ban resolves [INCLUDES] next to the filter: use a copy inside the host's filter.d tree.
        conf = Path(tmp) / "fail2ban"
        shutil.copytree("/etc/fail2ban", conf)
        shutil.copy(filt, conf / "filter.d" / filt.name)
        for line, expected in FAIL2BAN_SAMPLES:
            log = Path(tmp) / "sample.log"
            log.write_text(line + "\n")
            proc = subprocess.run(["fail2ban-regex", "--config", str(conf), "-v", str(log),
                                   str(conf / "filter.d" / filt.name)], capture_output=True, text=True)
            if proc.returncode != 0:
                problems.append(f"{_rel(filt, release)}: fail2ban-regex failed: {proc.stderr.strip()[:200]}")
                continue
            matched = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", proc.stdout, re.M)
            hits = int(matched.group(1)) if matched else -1
            banned = re.findall(r"^\|\s+(\S+)\s+\w{3} \w{3} ", proc.stdout, re.M)
            if expected is None and hits != 0:
                problems.append(f"{_rel(filt, release)}: matches a line it must not: {line.strip()!r}")
            elif expected is not None and (hits != 1 or banned != [expected]):
                problems.append(f"{_rel(filt, release)}: should ban {expected} for {line.strip()!r}, "
                                f"got {banned or 'no match'}")
    return problems


def cloud_configs(release: Path) -> list[Path]:
    found = []
    for path in sorted(release.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", "") and path.name != "meta-data":
            try:
                head = path.read_text(errors="replace")[:64]
            except OSError:
                continue
            if head.startswith("#cloud-config"):
                found.append(path)
    return found


def check_cloud_config(release: Path) -> list[str]:
    if shutil.which("cloud-init") is None:
        return ["cloud-init is not installed (apt-get install cloud-init)"]
    problems = []
    for path in cloud_configs(release):
        proc = subprocess.run(["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            problems.append(f"{_rel(path, release)}: cloud-init schema: {detail[-1] if detail else 'invalid'}")
    return problems


CHECKS: tuple[Check, ...] = (
    Check("HCL parses (python-hcl2)", check_hcl),
    Check("packer validate", check_packer),
    Check("shell: bash -n + shellcheck", check_shell),
    Check("nginx -t", check_nginx),
    Check("fail2ban filter", check_fail2ban),
    Check("cloud-init schema", check_cloud_config),
)


def validate(release: Path, progress: Progress, checks: Iterable[Check] = CHECKS) -> None:
    problems: list[str] = []
    for check in checks:
        with progress.step(f"validate {release.parent.name}: {check.name}"):
            problems.extend(check.run(release))
    if problems:
        raise PipelineError(f"{release}: {len(problems)} problem(s):\n  " + "\n  ".join(problems))
