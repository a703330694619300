"""Wheelhouse: every wheel Odoo's requirements need, built natively for the target OS.

Compiling gevent, psycopg2 and python-ldap inside a TCG guest is ~12x slower than on the
host, so the wheels are built here, inside a systemd-nspawn container of the *target*
OS's root filesystem (same glibc, same python3.X, same -dev libraries as the image), then
uploaded and installed in the guest with ``pip install --no-index --find-links``.

The recipe follows the build traps in docs/odoo18-facts.md:

* a venv with ``wheel`` and ``setuptools==80.9.0`` (legacy setup.py builds use them);
* build constraints ``Cython<3.1`` (gevent 21.8) and ``setuptools<82`` (cbor2 imports
  pkg_resources) handed to pip's isolated build environments through PIP_CONSTRAINT;
* wheels for pip, setuptools and wheel themselves so the guest never needs an index;
* a verification install into a fresh venv with ``--no-index --only-binary :all:``,
  whose ``pip freeze --all`` becomes ``requirements.lock``: Odoo leaves transitive
  dependencies unpinned, so the lock is the image's truth.

Cache layout (published atomically by renaming a finished temp directory)::

    cache_dir()/wheelhouse/<key>/wheels/*.whl
    cache_dir()/wheelhouse/<key>/requirements.lock
    cache_dir()/wheelhouse/<key>/wheelhouse.json     inputs, timings, runtime packages
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import proc
from .errors import PipelineError
from .paths import cache_dir
from .progress import Progress
from .rootfs import ensure_rootfs, nspawn_run, remove_stale_builds, safe_rmtree

# Bump when the recipe changes in a way the cache key would not notice.
WHEELHOUSE_RECIPE = 2

# Headers and tools for every sdist among Odoo 18's pins, on jammy and bookworm alike.
BUILD_PACKAGES: tuple[str, ...] = (
    "build-essential", "python3-dev", "python3-venv", "python3-pip", "ca-certificates",
    "libpq-dev",                      # psycopg2
    "libldap2-dev", "libsasl2-dev",   # python-ldap
    "libxml2-dev", "libxslt1-dev",    # lxml (if no wheel fits)
    "libjpeg-dev", "zlib1g-dev", "libfreetype6-dev",  # Pillow / reportlab (if no wheel fits)
    "libffi-dev", "libssl-dev",       # cffi / cryptography (if no wheel fits)
)

# docs/odoo18-facts.md "Build traps": without these, gevent 21.8.0 and cbor2 5.4.2 fail.
DEFAULT_BUILD_CONSTRAINTS: tuple[str, ...] = ("Cython<3.1", "setuptools<82")

DEFAULT_SETUPTOOLS = "80.9.0"  # 76-81.x keeps gevent 21.8's pkg_resources plugins loading
PIP_VERSION = "25.1.1"  # shipped for the guest venv; supports python 3.9-3.13
WHEEL_VERSION = "0.45.1"  # last release without a dependency on `packaging`

# Where things appear inside the container.
_W = "/wh"  # the build's scratch + output directory (bind, read-write)
_CA = "/run/odoo-image-build-ca.crt"
_PIP_CACHE = "/root/.cache/pip"

# Imported after the verification install: a venv that cannot run Odoo fails here, on the
# build host, and not in the guest. patch_all() is where gevent 21.8 walks its plugins
# through pkg_resources, the step that crash-loops Odoo's websocket process when the
# venv's setuptools is wrong.
_SMOKE = """\
import importlib, sys
for name in ("psycopg2", "lxml.etree", "PIL.Image", "werkzeug", "gevent", "greenlet",
             "passlib.context", "reportlab", "ldap", "cryptography", "babel", "zeep"):
    importlib.import_module(name)
from gevent import monkey
monkey.patch_all()
print("smoke ok", sys.version.split()[0])
"""

# Which OS packages the compiled wheels link against: ldd every extension module in the
# venv and ask dpkg who owns the libraries outside it. Provisioning installs these.
_RUNTIME_LIBS = """\
import json, os, subprocess, sys
venv = sys.argv[1]
libs, missing = set(), set()
# manylinux wheels vendor libraries in <pkg>.libs/ and find them through the RPATH of the
# module that loads them; ldd on a vendored library alone reports its siblings missing.
bundled = {name for _root, _dirs, files in os.walk(venv) for name in files if ".so" in name}
for root, _dirs, files in os.walk(venv):
    for name in files:
        if ".so" not in name:
            continue
        out = subprocess.run(["ldd", os.path.join(root, name)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if "not found" in line:
                missing.add(line.split()[0])
            elif "=>" in line:
                target = line.split("=>", 1)[1].split("(")[0].strip()
                if target.startswith("/") and not target.startswith(venv):
                    libs.add(target)
owners = {}
for lib in sorted(libs):
    real = os.path.realpath(lib)
    candidates = [lib, real] + [p.replace("/usr/lib/", "/lib/", 1) for p in (lib, real)]
    candidates += [p.replace("/lib/", "/usr/lib/", 1) for p in (lib, real) if p.startswith("/lib/")]
    for path in candidates:
        res = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        if res.returncode == 0:
            owners[lib] = res.stdout.split(":", 1)[0].strip()
            break
    else:
        owners[lib] = "?"
missing -= bundled
print(json.dumps({"libraries": owners, "missing": sorted(missing),
                  "packages": sorted(set(owners.values()) - {"?"})}))
"""


@dataclass(frozen=True)
class Wheelhouse:
    dir: Path  # the wheels (*.whl); pass as --find-links
    lock_file: Path  # pip freeze --all of the verification venv
    key: str
    meta: Mapping[str, object] = field(default_factory=dict, compare=False)

    @property
    def runtime_packages(self) -> list[str]:
        """OS packages the compiled wheels link against (from ldd + dpkg -S at build time)."""
        return list(self.meta.get("runtime", {}).get("packages", []))  # type: ignore[union-attr]


def wheelhouse_root() -> Path:
    return cache_dir() / "wheelhouse"


def ensure_wheelhouse(
    os_name: str,
    requirements: Path,
    *,
    constraints: Sequence[str],
    extra: Sequence[str],
    progress: Progress,
    ca_bundle: Path | None,
    setuptools: str = DEFAULT_SETUPTOOLS,
    mirror: str | None = None,
    keyring_fingerprint: str | None = None,
    index_url: str | None = None,
) -> Wheelhouse:
    """Return the cached wheelhouse for these inputs, building it natively if needed.

    constraints: build constraints (added to DEFAULT_BUILD_CONSTRAINTS) applied via
    PIP_CONSTRAINT. extra: additional requirement specifiers to include and lock.
    ca_bundle: an extra CA bundle trusted by pip during this build only (bound read-only
    into the container; never copied into any output). index_url: an operator's PyPI mirror.
    """
    requirements = Path(requirements)
    if not requirements.is_file():
        raise PipelineError(f"odoo.requirements: {requirements} does not exist")
    if ca_bundle is not None and not Path(ca_bundle).is_file():
        raise PipelineError(f"build.ca_bundle: {ca_bundle} does not exist")
    rootfs = ensure_rootfs(os_name, BUILD_PACKAGES, mirror=mirror,
                           keyring_fingerprint=keyring_fingerprint, progress=progress)
    inputs = _key_inputs(os_name, requirements, constraints, extra, setuptools, index_url, rootfs)
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    final = wheelhouse_root() / key
    if (final / "wheelhouse.json").is_file():
        return _load(final, key)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_builds(final.parent)
    tmp = final.parent / f".tmp-{key[:16]}-{os.getpid()}"
    if tmp.exists():
        safe_rmtree(tmp)
    try:
        meta = _build(rootfs, tmp, requirements, inputs, ca_bundle, progress)
        meta["key"] = key
        (tmp / "wheelhouse.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _remove_scratch(tmp)
        _publish(tmp, final)
    finally:
        if tmp.exists():
            safe_rmtree(tmp)
    return _load(final, key)


def _remove_scratch(work: Path) -> None:
    """Keep only the outputs: wheels/, requirements.lock, wheelhouse.json."""
    for name in ("build-venv", "verify-venv", "tmp"):
        if (work / name).exists():
            safe_rmtree(work / name)
    for name in ("requirements.txt", "constraints.txt"):
        (work / name).unlink(missing_ok=True)


def _key_inputs(os_name: str, requirements: Path, constraints: Sequence[str], extra: Sequence[str],
                setuptools: str, index_url: str | None, rootfs: Path) -> dict[str, object]:
    return {
        "recipe": WHEELHOUSE_RECIPE,
        "os": os_name,
        "python": target_python(rootfs),
        "requirements_sha256": hashlib.sha256(requirements.read_bytes()).hexdigest(),
        "constraints": effective_constraints(constraints),
        "extra": sorted(set(extra)),
        "tools": tool_pins(setuptools),
        "index_url": index_url or "",
    }


def effective_constraints(constraints: Sequence[str]) -> list[str]:
    return sorted({*DEFAULT_BUILD_CONSTRAINTS, *(c.strip() for c in constraints if c.strip())})


def tool_pins(setuptools: str) -> list[str]:
    return [f"pip=={PIP_VERSION}", f"setuptools=={setuptools}", f"wheel=={WHEEL_VERSION}"]


def target_python(rootfs: Path) -> str:
    """'3.10 (3.10.12-1~22.04.9)': the minor the wheels are tagged for + the exact build."""
    link = rootfs / "usr" / "bin" / "python3"
    if not link.exists():
        raise PipelineError(f"{rootfs}: no usr/bin/python3 (is python3-venv in the rootfs?)")
    name = os.readlink(link) if link.is_symlink() else "python3"
    match = re.fullmatch(r"(?:.*/)?python(3\.\d+)", name)
    minor = match.group(1) if match else "3"
    status = (rootfs / "var" / "lib" / "dpkg" / "status").read_text(errors="replace")
    version = _dpkg_version(status, f"python{minor}-minimal") or "?"
    return f"{minor} ({version})"


def _dpkg_version(status: str, package: str) -> str | None:
    for stanza in status.split("\n\n"):
        if re.search(rf"^Package: {re.escape(package)}$", stanza, re.M):
            found = re.search(r"^Version: (\S+)$", stanza, re.M)
            return found.group(1) if found else None
    return None


# ------------------------------------------------------------------------- build


def _build(rootfs: Path, work: Path, requirements: Path, inputs: Mapping[str, object],
           ca_bundle: Path | None, progress: Progress) -> dict[str, object]:
    os_name = str(inputs["os"])
    (work / "wheels").mkdir(parents=True)
    (work / "tmp").mkdir()
    shutil.copyfile(requirements, work / "requirements.txt")
    constraints = list(inputs["constraints"])  # type: ignore[call-overload]
    (work / "constraints.txt").write_text("".join(f"{c}\n" for c in constraints))
    pip_cache = cache_dir() / "pip-cache" / os_name
    pip_cache.mkdir(parents=True, exist_ok=True)
    run = _Runner(rootfs, work, pip_cache, ca_bundle, str(inputs["index_url"]) or None)
    tools = list(inputs["tools"])  # type: ignore[call-overload]
    extra = list(inputs["extra"])  # type: ignore[call-overload]
    timings: dict[str, float] = {}

    with _timed(progress, f"wheelhouse {os_name}: build wheels natively", timings, "build"):
        venv = f"{_W}/build-venv"
        run(["python3", "-m", "venv", venv])
        # Legacy setup.py builds (no pyproject.toml) run against the venv's own setuptools.
        run([f"{venv}/bin/pip", "install", "wheel", f"setuptools=={_pin(tools, 'setuptools')}"])
        # PIP_CONSTRAINT reaches pip's isolated build environments too: that is how the
        # Cython/setuptools caps apply to gevent's and cbor2's build requirements.
        run([f"{venv}/bin/pip", "wheel", "--wheel-dir", f"{_W}/wheels",
             "-r", f"{_W}/requirements.txt", *extra],
            env={"PIP_CONSTRAINT": f"{_W}/constraints.txt"})
        run([f"{venv}/bin/pip", "wheel", "--no-deps", "--wheel-dir", f"{_W}/wheels", *tools])

    with _timed(progress, f"wheelhouse {os_name}: verify offline install + lock", timings, "verify"):
        venv = f"{_W}/verify-venv"
        offline = ["install", "--no-index", "--find-links", f"{_W}/wheels", "--only-binary", ":all:"]
        run(["python3", "-m", "venv", venv])
        # The same two steps the guest runs (provision/scripts/50-odoo-venv.sh).
        run([f"{venv}/bin/pip", *offline, "--upgrade", *tools])
        run([f"{venv}/bin/pip", *offline, "-r", f"{_W}/requirements.txt", *extra])
        run([f"{venv}/bin/pip", "check"])
        smoke = _last_line(run([f"{venv}/bin/python3", "-c", _SMOKE], capture=True), "smoke ok")
        freeze = run([f"{venv}/bin/pip", "freeze", "--all"], capture=True)
        found = run([f"{venv}/bin/python3", "-c", _RUNTIME_LIBS, venv], capture=True)
        runtime = json.loads(_last_line(found, "{"))
        if runtime["missing"]:
            raise PipelineError(f"wheelhouse {os_name}: extension modules link missing libraries: "
                                f"{', '.join(runtime['missing'])}")

    python = str(inputs["python"])
    lock_lines = [line.strip() for line in freeze.splitlines() if "==" in line and not line.startswith("#")]
    _prune(work / "wheels", lock_lines)
    header = (f"# requirements.lock for {os_name}, python {python}: pip freeze --all of a venv\n"
              f"# installed --no-index from this wheelhouse. Generated; do not edit.\n")
    (work / "requirements.lock").write_text(header + "".join(f"{line}\n" for line in sorted(lock_lines, key=str.lower)))
    wheels = sorted(p.name for p in (work / "wheels").glob("*.whl"))
    return {
        "inputs": dict(inputs),
        "seconds": timings,
        "smoke": smoke,
        "wheels": wheels,
        "locked_packages": len(lock_lines),
        "size_bytes": sum((work / "wheels" / w).stat().st_size for w in wheels),
        "runtime": runtime,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _prune(wheels: Path, lock_lines: Sequence[str]) -> None:
    """Drop wheels the verified install did not use (e.g. a second setuptools pulled in as a
    dependency), so the wheelhouse holds exactly what requirements.lock names."""
    locked = {(_normalise(n), v) for n, _, v in (line.partition("==") for line in lock_lines)}
    for wheel in wheels.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if (_normalise(name), version) not in locked:
            wheel.unlink()


def _last_line(output: str, prefix: str) -> str:
    """The last line starting with prefix: nspawn mixes its own notices into the output."""
    lines = [line for line in output.splitlines() if line.startswith(prefix)]
    if not lines:
        raise PipelineError(f"wheelhouse: expected a line starting with {prefix!r}, got: {output.strip()[-300:]}")
    return lines[-1]


def _pin(tools: Sequence[str], name: str) -> str:
    return next(t.split("==", 1)[1] for t in tools if t.startswith(f"{name}=="))


class _Runner:
    """Runs one argv in a throw-away overlay of the rootfs with the work dir bound at /wh."""

    def __init__(self, rootfs: Path, work: Path, pip_cache: Path, ca_bundle: Path | None,
                 index_url: str | None) -> None:
        self.rootfs = rootfs
        self.binds = {work: _W, pip_cache: _PIP_CACHE}
        self.ro_binds: dict[str | Path, str] = {}
        self.env = {
            # No host or user pip configuration leaks in: the container sees only this.
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PIP_PROGRESS_BAR": "off",
            "PIP_DEFAULT_TIMEOUT": "120",
            "PIP_CACHE_DIR": _PIP_CACHE,
            "TMPDIR": f"{_W}/tmp",  # big sdist builds on disk, not in the overlay's RAM
            "LC_ALL": "C.UTF-8",
            "HOME": "/root",
        }
        if ca_bundle is not None:
            # Trusted for this build only: a read-only bind, never a file in the rootfs or output.
            self.ro_binds[Path(ca_bundle)] = _CA
            self.env["PIP_CERT"] = _CA
        if index_url:
            self.env["PIP_INDEX_URL"] = index_url

    def __call__(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 capture: bool = False) -> str:
        try:
            res = nspawn_run(self.rootfs, list(argv), binds=self.binds, ro_binds=self.ro_binds,
                             env={**self.env, **(env or {})}, ephemeral=True, capture=True)
        except proc.CommandError as exc:
            raise PipelineError(_explain(argv, exc)) from exc
        return res.stdout or "" if capture else ""


def _explain(argv: Sequence[str], exc: proc.CommandError) -> str:
    """One line: the pip step that failed and pip's most telling error line."""
    lines = [line.strip() for line in (exc.output or "").splitlines() if line.strip()]
    if any("CERTIFICATE_VERIFY_FAILED" in line for line in lines):
        return (f"wheelhouse: TLS verification failed in `{' '.join(argv[:3])}`; "
                "an intercepting proxy needs its CA: set build.ca_bundle")
    telling = [line for line in lines if line.startswith(("ERROR:", "error:"))] or lines or ["no output"]
    return f"wheelhouse: `{' '.join(argv[:4])}` failed (exit {exc.code}): {telling[-1]}"


class _timed:
    def __init__(self, progress: Progress, name: str, timings: dict[str, float], key: str) -> None:
        self.step = progress.step(name)
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.start = time.monotonic()
        self.step.__enter__()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.key] = round(time.monotonic() - self.start, 1)
        self.step.__exit__(*exc)  # type: ignore[arg-type]


def _publish(tmp: Path, final: Path) -> None:
    try:
        os.rename(tmp, final)  # atomic within one filesystem
    except OSError:
        if not (final / "wheelhouse.json").is_file():
            raise
        # Another build published the same key first; equivalent inputs, keep theirs.


def _load(final: Path, key: str) -> Wheelhouse:
    meta = json.loads((final / "wheelhouse.json").read_text())
    return Wheelhouse(dir=final / "wheels", lock_file=final / "requirements.lock", key=key, meta=meta)
