"""odoo_source: pinned git commits (a local repo over file://) and checksummed archives."""

from __future__ import annotations

import hashlib
import http.server
import importlib.util
import io
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from odoo_image import odoo_source
from odoo_image.errors import PipelineError
from odoo_image.odoo_source import ArchiveSource, GitSource, fetch_source
from odoo_image.progress import Progress

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _make_fixture():
    spec = importlib.util.spec_from_file_location("make_fixture", FIXTURES / "make_fixture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("ODOO_IMAGE_CACHE", str(path))
    return path


@pytest.fixture
def progress() -> Progress:
    return Progress(out=io.StringIO())


def _git(repo: Path, *args: str) -> str:
    env_args = ["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", "-C", str(repo), *env_args, *args], check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A repo with two commits on 18.0; returns (path, first commit, second commit)."""
    path = tmp_path / "odoo-repo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "18.0")
    (path / "odoo-bin").write_text("#!/usr/bin/env python3\n")
    (path / "odoo-bin").chmod(0o755)
    (path / "requirements.txt").write_text("passlib==1.7.4\n")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "first")
    first = _git(path, "rev-parse", "HEAD")
    (path / "later.txt").write_text("later\n")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "second")
    return path, first, _git(path, "rev-parse", "HEAD")


def _names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


# ------------------------------------------------------------------------ git


def test_git_fetches_the_pinned_commit_not_the_branch_tip(repo, progress) -> None:
    path, first, _second = repo
    art = fetch_source(GitSource(f"file://{path}", "18.0", first), progress)
    assert art.path.name == f"odoo-{first}.tar.gz"
    assert art.pin == first
    assert art.sha256 == hashlib.sha256(art.path.read_bytes()).hexdigest()
    names = _names(art.path)
    assert "odoo/odoo-bin" in names and "odoo/requirements.txt" in names
    assert "odoo/later.txt" not in names  # the branch moved on; the pin did not


def test_git_archive_is_reproducible_and_cached(repo, progress, cache) -> None:
    path, first, _ = repo
    one = fetch_source(GitSource(f"file://{path}", "18.0", first), progress)
    digest = one.sha256
    one.path.unlink()  # force a second archive from the cached checkout
    two = fetch_source(GitSource(f"file://{path}", "18.0", first), progress)
    assert two.sha256 == digest
    three = fetch_source(GitSource(f"file://{path}", "18.0", first), progress)
    assert three.path == two.path


def test_git_unknown_commit_is_a_clear_error(repo, progress) -> None:
    path, _, _ = repo
    with pytest.raises(PipelineError, match=r"odoo\.source\.git\.commit: 0{40} not found"):
        fetch_source(GitSource(f"file://{path}", "18.0", "0" * 40), progress)


def test_git_unreachable_url_names_the_field(tmp_path, progress, cache) -> None:
    missing = tmp_path / "no-such-repo"
    with pytest.raises(PipelineError, match=r"^odoo\.source\.git\.url: cannot fetch file://.*no-such-repo \(branch 18\.0\)"):
        fetch_source(GitSource(f"file://{missing}", "18.0", "a" * 40), progress)
    assert not list((odoo_source.cache_dir() / "odoo-source").glob("*.tar.gz"))


def test_git_tree_without_odoo_bin_is_refused(tmp_path, progress) -> None:
    path = tmp_path / "not-odoo"
    path.mkdir()
    _git(path, "init", "-q", "-b", "main")
    (path / "README").write_text("x\n")
    _git(path, "add", ".")
    _git(path, "commit", "-qm", "x")
    commit = _git(path, "rev-parse", "HEAD")
    with pytest.raises(PipelineError, match="has no odoo-bin or requirements.txt"):
        fetch_source(GitSource(f"file://{path}", "main", commit), progress)
    assert not list((odoo_source.cache_dir() / "odoo-source").glob("*.tar.gz"))


# -------------------------------------------------------------------- archive


@pytest.fixture
def fixture_archive(tmp_path: Path) -> tuple[Path, str]:
    return _make_fixture().build_fixture_archive(tmp_path / "fixture")


def test_archive_from_local_path_keeps_its_bytes(fixture_archive, progress) -> None:
    path, sha = fixture_archive
    art = fetch_source(ArchiveSource(str(path), sha), progress)
    assert art.sha256 == sha and art.pin == sha
    assert art.path.read_bytes() == path.read_bytes()
    assert "odoo-18.0/odoo-bin" in _names(art.path)


def test_archive_sha256_mismatch_leaves_nothing(fixture_archive, progress, cache) -> None:
    path, sha = fixture_archive
    wrong = "0" * 64
    with pytest.raises(PipelineError, match=rf"^odoo\.source\.archive\.sha256: .* has sha256 {sha}, expected {wrong}$"):
        fetch_source(ArchiveSource(str(path), wrong), progress)
    leftovers = [p for p in (cache / "odoo-source").rglob("*") if p.is_file()]
    assert leftovers == []


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_archive_over_http(fixture_archive, http_server, progress) -> None:
    path, sha = fixture_archive
    base, root = http_server
    (root / path.name).write_bytes(path.read_bytes())
    art = fetch_source(ArchiveSource(f"{base}/{path.name}", sha), progress)
    assert art.sha256 == sha
    with pytest.raises(PipelineError, match=r"odoo\.source\.archive: cannot read .*missing\.tar\.gz"):
        fetch_source(ArchiveSource(f"{base}/missing.tar.gz", "1" * 64), progress)


def _tar(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_flat_archive_is_rewrapped_for_strip_components(tmp_path, progress) -> None:
    flat = tmp_path / "flat.tar.gz"
    sha = _tar(flat, {"odoo-bin": b"#!/usr/bin/env python3\n", "requirements.txt": b"x==1\n", "odoo/__init__.py": b""})
    art = fetch_source(ArchiveSource(str(flat), sha), progress)
    assert art.pin == sha
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-xzf", str(art.path), "-C", str(out), "--strip-components=1"], check=True)
    assert (out / "odoo-bin").is_file() and (out / "requirements.txt").is_file()


def test_archive_without_odoo_bin_is_refused(tmp_path, progress) -> None:
    sdist = tmp_path / "sdist.tar.gz"
    sha = _tar(sdist, {"odoo-18.0/setup/odoo": b"", "odoo-18.0/requirements.txt": b""})
    with pytest.raises(PipelineError, match=r"has no odoo-bin at 'odoo-18.0/'"):
        fetch_source(ArchiveSource(str(sdist), sha), progress)


def test_archive_with_escaping_paths_is_refused(tmp_path, progress) -> None:
    evil = tmp_path / "evil.tar.gz"
    sha = _tar(evil, {"odoo/odoo-bin": b"", "odoo/requirements.txt": b"", "odoo/../../etc/x": b""})
    with pytest.raises(PipelineError, match="unsafe path"):
        fetch_source(ArchiveSource(str(evil), sha), progress)


def test_catalogue_spec_objects_are_accepted(repo, fixture_archive, progress) -> None:
    from odoo_image import spec

    path, first, _ = repo
    art = fetch_source(spec.GitSource(url=f"file://{path}", branch="18.0", commit=first), progress)
    assert art.pin == first
    archive, sha = fixture_archive
    assert fetch_source(spec.ArchiveSource(location=str(archive), sha256=sha), progress).sha256 == sha
