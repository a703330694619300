"""Root filesystems built with mmdebstrap, cached by a hash of their inputs.

A cached rootfs is shared and must never be modified: run commands in it with
`nspawn_run(..., ephemeral=True)` or copy it. Builds go to a temporary directory that is
renamed into place only when complete, so a failed or interrupted build leaves nothing
under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from . import proc
from .errors import PipelineError
from .keyring import Distro, distro, ensure_keyring
from .paths import cache_dir
from .progress import Progress

# Bump when the recipe below changes in a way the cache key would not notice.
ROOTFS_RECIPE = 1
DEFAULT_VARIANT = "important"  # required + important: a normal systemd system with apt


def rootfs_root() -> Path:
    return cache_dir() / "rootfs"


def sources(dist: Distro, mirror: str | None, security_mirror: str | None) -> list[str]:
    """mmdebstrap mirror arguments; [] lets mmdebstrap use its own per-suite defaults."""
    if mirror is None:
        if security_mirror is not None:
            raise PipelineError("security_mirror was given without mirror; set both or neither")
        return []  # mmdebstrap adds <suite>-updates and <suite>-security itself
    comps = " ".join(dist.components)
    if security_mirror is None:
        if dist.vendor == "debian":
            # Debian security updates live in a separate archive (debian-security).
            raise PipelineError(f"{dist.name}: a custom mirror also needs security_mirror "
                                "(Debian's security archive is separate from the main one)")
        security_mirror = mirror  # Ubuntu mirrors carry the -security pocket
    return [
        f"deb {mirror} {dist.suite} {comps}",
        f"deb {mirror} {dist.suite}-updates {comps}",
        f"deb {security_mirror} {dist.suite}-security {comps}",
    ]


def rootfs_key(dist: Distro, packages: Iterable[str], variant: str, source_lines: Sequence[str],
               keyring: Path) -> str:
    inputs = {
        "recipe": ROOTFS_RECIPE,
        "os": dist.name,
        "variant": variant,
        "components": list(dist.components),
        "packages": sorted(set(packages)),
        "sources": list(source_lines),
        "keyring_sha256": hashlib.sha256(keyring.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def ensure_rootfs(
    os_name: str,
    packages: Sequence[str],
    *,
    mirror: str | None,
    keyring_fingerprint: str | None,
    progress: Progress,
    security_mirror: str | None = None,
    variant: str = DEFAULT_VARIANT,
) -> Path:
    """Return a cached rootfs directory for os_name with `packages` installed (build if needed).

    The directory is shared: treat it as read-only.
    """
    dist = distro(os_name)
    keyring = ensure_keyring(dist.name, mirror=mirror, fingerprint=keyring_fingerprint)
    source_lines = sources(dist, mirror, security_mirror)
    wanted = sorted({*packages, dist.keyring_package})  # apt in the result must verify the archive
    key = rootfs_key(dist, wanted, variant, source_lines, keyring)
    final = rootfs_root() / key
    if (final / "etc" / "os-release").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(final.parent)
    tmp = final.parent / f".tmp-{key[:16]}-{os.getpid()}"
    with progress.step(f"mmdebstrap {dist.name} ({len(wanted)} packages, variant {variant})"):
        try:
            _mmdebstrap(dist, wanted, variant, keyring, source_lines, tmp)
            _make_host_neutral(tmp)
            (tmp / ".odoo-image-rootfs.json").write_text(json.dumps(
                {"os": dist.name, "variant": variant, "packages": wanted, "sources": source_lines}, indent=2))
            _publish(tmp, final)
        finally:
            if tmp.exists():
                safe_rmtree(tmp)
    return final


def _mmdebstrap(dist: Distro, packages: Sequence[str], variant: str, keyring: Path,
                source_lines: Sequence[str], target: Path) -> None:
    argv: list[str | Path] = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={variant}",
        "--architectures=amd64",
        f"--components={','.join(dist.components)}",
        # Only visible to mmdebstrap's apt; the rootfs trusts its own keyring package.
        f"--keyring={keyring}",
        # mmdebstrap installs no Recommends (without persisting that choice): list what you need.
    ]
    if packages:
        argv.append(f"--include={','.join(packages)}")
    argv += [dist.suite, target, *source_lines]
    try:
        proc.run(argv, capture=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    except proc.CommandError as exc:
        raise PipelineError(f"mmdebstrap {dist.name} failed (exit {exc.code}): {_root_error(exc.output)}") from exc


def _root_error(output: str) -> str:
    """mmdebstrap's most telling line: the first E: line is the cause (apt's), the later
    ones only say that setup failed; without any, the last line."""
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E:")]
    return errors[0] if errors else (lines or ["no output"])[-1]


def _make_host_neutral(root: Path) -> None:
    """mmdebstrap copies the host's hostname and resolv.conf; neither belongs in a cached rootfs."""
    (root / "etc" / "hostname").write_text("localhost\n")
    resolv = root / "etc" / "resolv.conf"
    if resolv.is_file() and not resolv.is_symlink():
        resolv.unlink()


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)  # atomic within one filesystem
    except OSError:
        if not (final / "etc" / "os-release").exists():
            raise
        # Another process published the same key first; its result is equivalent.


def remove_stale_builds(parent: Path) -> None:
    """Remove .tmp-* build directories whose builder process no longer exists."""
    for entry in parent.glob(".tmp-*-*"):
        pid = entry.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            safe_rmtree(entry)


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below path, deepest first."""
    prefix = str(path.resolve())
    found: list[Path] = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def safe_rmtree(path: Path) -> None:
    """rmtree that first unmounts anything below path, and refuses if that fails.

    A build killed mid-way can leave /proc or /dev mounted inside its tree; deleting
    through such a mount would delete host files.
    """
    for point in mounts_under(path):
        subprocess.run(["umount", "--lazy", str(point)], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise PipelineError(f"refusing to delete {path}: still mounted below it: {left[0]}")
    shutil.rmtree(path, ignore_errors=False)


def _bind_args(option: str, binds: Mapping[str | Path, str] | None) -> list[str]:
    args = []
    for host, inside in (binds or {}).items():
        if ":" in str(host) or ":" in inside:
            raise PipelineError(f"cannot bind {host} -> {inside}: systemd-nspawn paths may not contain ':'")
        args.append(f"{option}={Path(host).resolve()}:{inside}")
    return args


def _resolv_conf_args(rootfs: Path, ephemeral: bool) -> list[str]:
    """Give the container the host's DNS without writing host files into the rootfs."""
    resolv = rootfs / "etc" / "resolv.conf"
    if resolv.is_symlink():
        # e.g. jammy's -> ../run/systemd/resolve/stub-resolv.conf: nothing serves it unless
        # the container boots, so bind the host's file at the link target (on nspawn's /run tmpfs).
        target = os.path.normpath(os.path.join("/etc", os.readlink(resolv)))
        return ["--resolv-conf=off", f"--bind-ro=/etc/resolv.conf:{target}"]
    # In an ephemeral run the replacement is discarded with the overlay.
    return ["--resolv-conf=replace-host" if ephemeral else "--resolv-conf=bind-host"]


def nspawn_run(
    rootfs: Path,
    argv: Sequence[str],
    *,
    binds: Mapping[str | Path, str] | None = None,
    ro_binds: Mapping[str | Path, str] | None = None,
    env: Mapping[str, str] | None = None,
    ephemeral: bool = True,
    capture: bool = False,
    check: bool = True,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside rootfs with systemd-nspawn (host network shared).

    ephemeral=True discards every change: the tree is mounted read-only under a tmpfs
    overlay (--volatile=overlay). That is nspawn's --ephemeral without the full copy it
    makes on non-btrfs filesystems (0.1 s instead of ~5 s per 300 MB); writes live in RAM.
    binds/ro_binds map host paths to container paths. The host has no systemd as PID 1,
    hence --register=no --keep-unit.
    """
    if not (rootfs / "etc" / "os-release").exists():
        raise PipelineError(f"{rootfs} is not a root filesystem (no etc/os-release)")
    cmd: list[str] = [
        "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--as-pid2", "--pipe",
        f"--directory={rootfs}",
        # The default machine name is the directory name (a 64-char hash): too long a hostname.
        f"--machine=odoo-image-{secrets.token_hex(4)}",
    ]
    if ephemeral:
        cmd.append("--volatile=overlay")
    cmd += _resolv_conf_args(rootfs, ephemeral)
    cmd += _bind_args("--bind", binds) + _bind_args("--bind-ro", ro_binds)
    cmd += [f"--setenv={k}={v}" for k, v in (env or {}).items()]
    cmd += ["--", *argv]
    return proc.run(cmd, capture=capture, check=check, timeout=timeout)
