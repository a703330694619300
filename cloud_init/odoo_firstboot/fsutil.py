"""Atomic, permission-exact file writes.

Every file first boot writes is either a secret or something a daemon reads while we
write it (NGINX, Odoo, PostgreSQL). So: write a temp file in the same directory with the
final mode already set (a secret is never world-readable, not even for a moment), fsync,
then rename over the target. A crash leaves the old file or the new one, never half.
"""

from __future__ import annotations

import grp
import os
import tempfile
from pathlib import Path


def lookup_gid(group: str) -> int | None:
    """gid of `group`, or None when the group does not exist (e.g. on a developer host)."""
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def ensure_dir(path: Path, mode: int = 0o755, *, uid: int = -1, gid: int = -1) -> None:
    """Create `path` and any missing parents with `mode` (not the umask's idea of it: NGINX
    must traverse the ACME webroot's parents), then enforce mode/owner on `path` itself."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        os.chmod(directory, mode)
    os.chmod(path, mode)
    if uid != -1 or gid != -1:
        _chown(path, uid, gid)


def write_atomic(
    path: Path,
    data: str | bytes,
    *,
    mode: int = 0o644,
    uid: int = -1,
    gid: int = -1,
) -> bool:
    """Replace `path` with `data` atomically; returns True when the content changed.

    Mode and ownership are enforced even when the content is unchanged, so a re-run
    repairs permissions someone loosened.
    """
    raw = data.encode() if isinstance(data, str) else data
    try:
        changed = path.read_bytes() != raw
    except (FileNotFoundError, IsADirectoryError):
        changed = True
    if not changed:
        os.chmod(path, mode)
        if uid != -1 or gid != -1:
            _chown(path, uid, gid)
        return False
    if not path.parent.is_dir():
        ensure_dir(path.parent, 0o755)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        if uid != -1 or gid != -1:
            _fchown(fd, uid, gid)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return True


def replace_symlink(link: Path, target: Path) -> bool:
    """Point `link` at `target` atomically (rename over it); returns True when it moved.

    The link is made relative so it resolves the same on an instance and inside a test
    root (an absolute /etc/... target would escape a temp root).
    """
    rel = os.path.relpath(target, link.parent)
    if link.is_symlink() and os.readlink(link) == rel:
        return False
    if not link.parent.is_dir():
        ensure_dir(link.parent, 0o755)
    tmp = link.parent / f".{link.name}.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(rel, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)
    return True


def _chown(path: Path, uid: int, gid: int) -> None:
    if os.geteuid() == 0:  # only root may give files away; tests as a user just skip it
        os.chown(path, uid, gid, follow_symlinks=False)


def _fchown(fd: int, uid: int, gid: int) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, uid, gid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
