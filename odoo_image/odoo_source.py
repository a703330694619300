"""Odoo source input: fetch a pinned git commit or a checksummed archive into the cache.

Whatever the origin, the result is one ``.tar.gz`` with a single top-level directory
that holds ``odoo-bin`` and ``requirements.txt``, so provisioning can always run
``tar -xzf SRC --strip-components=1 -C /opt/odoo/src``. The ``pin`` recorded in the
manifest is the git commit or the sha256 of the archive the operator named: Odoo's own
``latest_version`` rarely changes between 18.0 updates, so the pin is how an upgrade
knows that the code changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from . import proc
from .errors import PipelineError
from .paths import cache_dir
from .progress import Progress
from .spec import ArchiveSource, GitSource

REQUIRED_MEMBERS = ("odoo-bin", "requirements.txt")
_CHUNK = 1 << 20


SourceSpec = GitSource | ArchiveSource


@dataclass(frozen=True)
class SourceArtifact:
    path: Path  # .tar.gz, one top-level directory with odoo-bin at its top
    sha256: str  # of the file at `path`
    pin: str  # git commit, or sha256 of the operator's archive


def fetch_source(spec: SourceSpec, progress: Progress) -> SourceArtifact:
    """Fetch (or reuse from the cache) the pinned Odoo source as a normalised tarball.

    The spec comes from the catalogue loader, which has already checked every field."""
    root = cache_dir() / "odoo-source"
    root.mkdir(parents=True, exist_ok=True)
    if isinstance(spec, GitSource):
        return _fetch_git(spec, root, progress)
    return _fetch_archive(spec, root, progress)


# --------------------------------------------------------------------------- git


def _fetch_git(spec: GitSource, root: Path, progress: Progress) -> SourceArtifact:
    final = root / f"odoo-{spec.commit}.tar.gz"
    if final.is_file():
        check_layout(final)
        return SourceArtifact(final, sha256_file(final), spec.commit)
    with progress.step(f"odoo source: git {spec.commit[:12]} ({spec.branch})"):
        repo = root / "git" / hashlib.sha256(spec.url.encode()).hexdigest()[:16]
        _shallow_checkout(repo, spec)
        with _temp_beside(final) as tmp:
            # git's own gzip is deterministic (no name, mtime = commit time), so the same
            # commit always gives the same bytes and the same sha256.
            proc.run(["git", "-C", repo, "archive", "--format=tar.gz", "--prefix=odoo/", "-o", tmp, "HEAD"])
            check_layout(tmp)
            os.replace(tmp, final)
    return SourceArtifact(final, sha256_file(final), spec.commit)


def _git(repo: Path, *args: str, capture: bool = False) -> str:
    # No prompt for credentials: a private URL must fail now, not hang the build.
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    return proc.run(["git", "-C", repo, *args], env=env, capture=capture).stdout or ""


def _shallow_checkout(repo: Path, spec: GitSource) -> None:
    if not (repo / ".git").is_dir():
        repo.mkdir(parents=True, exist_ok=True)
        _git(repo, "init", "-q")
    try:
        # Fetch the pinned commit itself: the branch may have moved on since it was pinned.
        _git(repo, "fetch", "-q", "--depth", "1", spec.url, spec.commit, capture=True)
    except proc.CommandError:
        # Servers that refuse a bare commit id in `want`: fetch the branch history instead.
        try:
            _git(repo, "fetch", "-q", spec.url, f"+refs/heads/{spec.branch}:refs/remotes/pin/{spec.branch}",
                 capture=True)
        except proc.CommandError as exc:
            reason = exc.output.strip().splitlines()[-1] if exc.output.strip() else f"git exited {exc.code}"
            raise PipelineError(f"odoo.source.git.url: cannot fetch {spec.url} (branch {spec.branch}): {reason} "
                                f"(no network to it? see README: baking the real Odoo 18 without GitHub)") from exc
    try:
        _git(repo, "-c", "advice.detachedHead=false", "checkout", "-q", "--force", "--detach", spec.commit,
             capture=True)
    except proc.CommandError as exc:
        raise PipelineError(
            f"odoo.source.git.commit: {spec.commit} not found at {spec.url} (branch {spec.branch})"
        ) from exc
    head = _git(repo, "rev-parse", "HEAD", capture=True).strip()
    if head != spec.commit:
        raise PipelineError(f"odoo.source.git.commit: checked out {head}, expected {spec.commit}")


# ----------------------------------------------------------------------- archive


def _fetch_archive(spec: ArchiveSource, root: Path, progress: Progress) -> SourceArtifact:
    downloaded = root / "archives" / f"{spec.sha256}.tar.gz"
    normalised = root / f"odoo-{spec.sha256}.tar.gz"
    if normalised.is_file():
        return SourceArtifact(normalised, sha256_file(normalised), spec.sha256)
    with progress.step(f"odoo source: archive {_display(spec.location)}"):
        if not downloaded.is_file():
            downloaded.parent.mkdir(parents=True, exist_ok=True)
            _download_verified(spec, downloaded)
        _normalise(downloaded, normalised)
    return SourceArtifact(normalised, sha256_file(normalised), spec.sha256)


def _display(location: str) -> str:
    # Never echo credentials that an operator put in a URL.
    parsed = urlparse(location)
    if parsed.password or parsed.username:
        return parsed._replace(netloc=parsed.hostname or "").geturl()
    return location


def _download_verified(spec: ArchiveSource, final: Path) -> None:
    """Copy/download to a temp name beside `final`; rename only once the sha256 matches."""
    with _temp_beside(final) as tmp:
        digest = hashlib.sha256()
        with _open_location(spec.location) as src, open(tmp, "wb") as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != spec.sha256:
            raise PipelineError(
                f"odoo.source.archive.sha256: {_display(spec.location)} has sha256 {got}, expected {spec.sha256}"
            )
        os.replace(tmp, final)


def _open_location(location: str) -> Any:
    parsed = urlparse(location)
    try:
        if parsed.scheme in ("http", "https"):
            return urllib.request.urlopen(location, timeout=120)  # noqa: S310 - scheme checked
        path = Path(parsed.path) if parsed.scheme == "file" else Path(location)
        return open(path, "rb")
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise PipelineError(f"odoo.source.archive: cannot read {_display(location)}: {reason}") from exc


def _normalise(archive: Path, final: Path) -> None:
    """Keep an archive that already has one top directory; re-wrap one that does not."""
    top = check_layout(archive, allow_flat=True)
    if top is not None:
        _link_or_copy(archive, final)
        return
    with _temp_beside(final) as tmp, tempfile.TemporaryDirectory(dir=final.parent) as work:
        # A flat archive (files at its root): repack under odoo/ so --strip-components=1 works.
        proc.run(["tar", "-xzf", archive, "-C", work])
        proc.run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                  "--mtime=@0", "-czf", tmp, "-C", work, "--transform", "s,^\\.,odoo,", "."])
        check_layout(tmp)
        os.replace(tmp, final)


def _link_or_copy(src: Path, dst: Path) -> None:
    with _temp_beside(dst) as tmp:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


# ------------------------------------------------------------------------ shared


def check_layout(archive: Path, *, allow_flat: bool = False) -> str | None:
    """Check the tarball is safe to unpack and has odoo-bin + requirements.txt at its top.

    Returns the single top-level directory name, or None for a flat archive (only
    when allow_flat). Raises PipelineError naming what is missing.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            names = [_member_name(m) for m in tar]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise PipelineError(f"odoo source: {archive.name} is not a readable tar archive: {exc}") from exc
    names = [n for n in names if n and n != "."]
    tops = {n.split("/", 1)[0] for n in names}
    flat = not (len(tops) == 1 and any("/" in n for n in names))
    prefix = "" if flat else f"{next(iter(tops))}/"
    missing = [req for req in REQUIRED_MEMBERS if f"{prefix}{req}" not in names]
    if missing:
        where = "the archive root" if flat else f"{prefix!r}"
        raise PipelineError(
            f"odoo source: {archive.name} has no {' or '.join(missing)} at {where}; "
            "expected an Odoo source tree (odoo-bin at its top)"
        )
    if flat and not allow_flat:
        raise PipelineError(f"odoo source: {archive.name} must have a single top-level directory")
    return None if flat else prefix.rstrip("/")


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise PipelineError(f"odoo source: unsafe path in archive: {member.name!r}")
    # Symlinks resolve from their own directory, hard links from the archive root.
    base = str(Path(name).parent) if member.issym() else "."
    if (member.issym() or member.islnk()) and (member.linkname.startswith("/") or _escapes(base, member.linkname)):
        raise PipelineError(f"odoo source: link escapes the tree: {member.name!r} -> {member.linkname!r}")
    return name.rstrip("/")


def _escapes(base: str, target: str) -> bool:
    depth = 0
    for part in (Path(base) / target).parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _temp_beside:
    """A temp path in the destination's directory, removed unless it was renamed away."""

    def __init__(self, final: Path) -> None:
        self.final = final

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{self.final.name}.", suffix=".part", dir=self.final.parent)
        os.close(fd)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
