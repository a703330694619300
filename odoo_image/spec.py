"""Load and validate the image catalogue (images.yaml) into frozen, typed specs.

Every problem is reported with the path of the field that caused it, as the operator wrote
it: a value inherited from `defaults` is blamed on `defaults.…`, an override on `images[i].…`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import SpecError
from .paths import REPO_ROOT

OS_DIR = REPO_ROOT / "os"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?$")
IMAGE_NAME = re.compile(r"^[a-z][a-z0-9-]{1,62}$")
AWS_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-(north|south|east|west|central|northeast|northwest|southeast|southwest)-\d$")
INSTANCE_TYPE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
URL = re.compile(r"^(https?|file|ssh|git)://\S+$")
ACCELERATORS = ("auto", "kvm", "tcg")
PG_SOURCES = ("auto", "pgdg", "distro")
TARGETS = ("qemu", "amazon-ebs")


@dataclass(frozen=True)
class AmiBase:
    owner: str
    name_filter: str
    root_device: str


@dataclass(frozen=True)
class OsBase:
    name: str
    family: str
    suite: str
    release: str
    python: str
    distro_postgresql: int
    default_postgresql_source: str
    ssh_user: str
    kernel_package: str
    archive_key_fingerprint: str | None
    ami: AmiBase
    runtime_libraries: tuple[str, ...]


@dataclass(frozen=True)
class PostgresSpec:
    version: int
    source: str  # resolved: "pgdg" or "distro"


@dataclass(frozen=True)
class GitSource:
    url: str
    branch: str
    commit: str

    @property
    def pin(self) -> str:
        return f"git:{self.url}@{self.commit}"


@dataclass(frozen=True)
class ArchiveSource:
    location: str  # URL or a path (relative paths are relative to the catalogue file)
    sha256: str

    @property
    def pin(self) -> str:
        return f"archive:sha256:{self.sha256}"


@dataclass(frozen=True)
class OdooSpec:
    source: GitSource | ArchiveSource
    requirements: str


@dataclass(frozen=True)
class PythonSpec:
    setuptools: str
    build_constraints: tuple[str, ...]


@dataclass(frozen=True)
class PackerSpec:
    disk_gib: int
    memory_mib: int
    cpus: int
    accelerator: str


@dataclass(frozen=True)
class AwsTarget:
    regions: tuple[str, ...]
    instance_type: str


@dataclass(frozen=True)
class BuildSpec:
    apt_mirror: str | None
    ca_bundle: str | None
    pip_index_url: str | None = None  # operator's PyPI mirror for the wheelhouse; None = pypi.org


@dataclass(frozen=True)
class ImageSpec:
    name: str
    version: str
    os: OsBase
    qemu: bool
    aws: AwsTarget | None
    postgresql: PostgresSpec
    odoo: OdooSpec
    python: PythonSpec
    packer: PackerSpec
    build: BuildSpec

    @property
    def release_name(self) -> str:
        return f"{self.name}-{self.version}"

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t for t, on in (("qemu", self.qemu), ("amazon-ebs", self.aws is not None)) if on)


@dataclass(frozen=True)
class Catalogue:
    path: Path
    images: tuple[ImageSpec, ...]

    def get(self, name: str | None) -> list[ImageSpec]:
        """All images, or the one called `name` (an unknown name is an error)."""
        if name is None:
            return list(self.images)
        for image in self.images:
            if image.name == name:
                return [image]
        known = ", ".join(i.name for i in self.images)
        raise SpecError([f"--image: no image named {name!r} in {self.path.name} (known: {known})"])


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


Origin = Callable[[tuple[str, ...]], str]


class _Node:
    """A mapping being validated; `origin` turns a key path into the operator's field path."""

    def __init__(self, value: Any, rel: tuple[str, ...], origin: Origin, problems: _Problems) -> None:
        self.value = value
        self.rel = rel
        self.origin = origin
        self.problems = problems

    def where(self, key: str | None = None) -> str:
        return self.origin(self.rel + ((key,) if key else ()))

    def fail(self, key: str | None, message: str) -> None:
        self.problems.add(self.where(key), message)

    def keys(self, allowed: tuple[str, ...]) -> bool:
        if not isinstance(self.value, dict):
            self.fail(None, f"must be a mapping, got {_kind(self.value)}")
            return False
        for key in self.value:
            if key not in allowed:
                self.fail(str(key), f"unknown key (allowed: {', '.join(allowed)})")
        return True

    def has(self, key: str) -> bool:
        return isinstance(self.value, dict) and self.value.get(key) is not None

    def child(self, key: str) -> _Node:
        value = self.value.get(key) if isinstance(self.value, dict) else None
        return _Node(value, self.rel + (key,), self.origin, self.problems)

    def string(self, key: str, pattern: re.Pattern[str] | None = None, hint: str = "",
               optional: bool = False) -> str | None:
        value = self.value.get(key) if isinstance(self.value, dict) else None
        if value is None:
            if not optional:
                self.fail(key, "required field is missing")
            return None
        if not isinstance(value, str):
            self.fail(key, f"must be a string, got {_kind(value)}")
            return None
        if pattern is not None and not pattern.match(value):
            self.fail(key, f"{value!r} is not {hint}")
            return None
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self.string(key)
        if value is not None and value not in choices:
            self.fail(key, f"{value!r} is not one of: {', '.join(choices)}")
            return None
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.value.get(key) if isinstance(self.value, dict) else None
        if value is None:
            self.fail(key, "required field is missing")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"must be an integer ≥ {low} and ≤ {high}, got {value!r}")
            return None
        return value

    def string_list(self, key: str, pattern: re.Pattern[str] | None = None, hint: str = "",
                    min_items: int = 0) -> tuple[str, ...] | None:
        value = self.value.get(key) if isinstance(self.value, dict) else None
        if value is None:
            value = []
        if not isinstance(value, list):
            self.fail(key, f"must be a list of strings, got {_kind(value)}")
            return None
        if len(value) < min_items:
            self.fail(key, f"needs at least {min_items} item(s)")
            return None
        good = True
        for index, item in enumerate(value):
            item_key = f"{key}[{index}]"
            if not isinstance(item, str):
                self.fail(item_key, f"must be a string, got {_kind(item)}")
                good = False
            elif pattern is not None and not pattern.match(item):
                self.fail(item_key, f"{item!r} is not {hint}")
                good = False
        return tuple(value) if good else None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(value), type(value).__name__)


# Choices an image replaces whole: merging `odoo.source.archive` into a default `git` source,
# or adding to the default target set, would make something nobody wrote.
REPLACED_WHOLE = {("targets",), ("odoo", "source")}


def _merge(defaults: Any, override: Any, rel: tuple[str, ...], origins: dict[tuple[str, ...], str],
           label: str) -> Any:
    """Deep-merge override onto defaults, recording which side each key path came from."""
    if isinstance(defaults, dict) and isinstance(override, dict) and rel not in REPLACED_WHOLE:
        merged = dict(defaults)
        for key, value in override.items():
            path = rel + (str(key),)
            if key in defaults:
                merged[key] = _merge(defaults[key], value, path, origins, label)
            else:
                merged[key] = copy.deepcopy(value)
                origins[path] = label
        return merged
    origins[rel] = label
    return copy.deepcopy(override)


def _in_defaults(defaults: Any, path: tuple[str, ...]) -> bool:
    node = defaults
    for key in path:
        key = key.split("[", 1)[0]  # list items (regions[1]) belong to their list
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def _origin_fn(origins: dict[tuple[str, ...], str], defaults: Any, label: str) -> Origin:
    def origin(path: tuple[str, ...]) -> str:
        # The longest recorded prefix says who wrote the value; a value nobody wrote (a missing
        # field) is the image's to add.
        for cut in range(len(path), -1, -1):
            if path[:cut] in origins:
                return ".".join((origins[path[:cut]],) + path)
        return ".".join(("defaults" if _in_defaults(defaults, path) else label,) + path)
    return origin


def load_os_base(name: str) -> OsBase:
    path = OS_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    return OsBase(
        name=name, family=data["family"], suite=data["suite"], release=str(data["release"]),
        python=str(data["python"]), distro_postgresql=int(data["distro_postgresql"]),
        default_postgresql_source=data["default_postgresql_source"], ssh_user=data["ssh_user"],
        kernel_package=data["kernel_package"], archive_key_fingerprint=data["archive_key_fingerprint"],
        ami=AmiBase(**data["ami"]), runtime_libraries=tuple(data["runtime_libraries"]),
    )


def known_os() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in OS_DIR.glob("*.yaml")))


IMAGE_KEYS = ("name", "version", "os", "targets", "postgresql", "odoo", "python", "packer", "build")
DEFAULT_KEYS = tuple(k for k in IMAGE_KEYS if k not in ("name", "version"))


def _image(node: _Node, index: int) -> ImageSpec | None:
    before = len(node.problems.items)
    node.keys(IMAGE_KEYS)
    name = node.string("name", IMAGE_NAME, "a valid image name (lowercase letters, digits, '-')")
    version = node.string("version", SEMVER, "a semantic version like 1.2.3")
    os_name = node.choice("os", known_os())
    os_base = load_os_base(os_name) if os_name else None
    qemu, aws = _targets(node.child("targets"))
    postgresql = _postgresql(node.child("postgresql"), os_base)
    odoo = _odoo(node.child("odoo"))
    python = _python(node.child("python"))
    packer = _packer(node.child("packer"))
    build = _build(node.child("build"))
    if len(node.problems.items) != before:
        return None
    assert name and version and os_base and postgresql and odoo and python and packer and build
    return ImageSpec(name=name, version=version, os=os_base, qemu=qemu, aws=aws,
                     postgresql=postgresql, odoo=odoo, python=python, packer=packer, build=build)


def _targets(node: _Node) -> tuple[bool, AwsTarget | None]:
    if not node.keys(TARGETS):
        return False, None
    if not node.value:
        node.fail(None, f"needs at least one target ({', '.join(TARGETS)})")
    qemu = "qemu" in node.value
    if qemu and node.value["qemu"] not in (None, {}):
        node.child("qemu").keys(())
    aws = None
    if "amazon-ebs" in node.value:
        ebs = node.child("amazon-ebs")
        if ebs.keys(("regions", "instance_type")):
            regions = ebs.string_list("regions", AWS_REGION, "an AWS region name like eu-west-1", min_items=1)
            instance_type = ebs.string("instance_type", INSTANCE_TYPE, "an EC2 instance type like t3.medium")
            if regions and instance_type:
                aws = AwsTarget(regions=regions, instance_type=instance_type)
    return qemu, aws


def _postgresql(node: _Node, os_base: OsBase | None) -> PostgresSpec | None:
    if not node.keys(("version", "source")):
        return None
    version = node.integer("version", 12, 17)
    source = node.choice("source", PG_SOURCES)
    if version is None or source is None or os_base is None:
        return None
    if source == "auto":
        source = os_base.default_postgresql_source
    if source == "distro" and version != os_base.distro_postgresql:
        node.fail("source", f"{os_base.name}'s own archive ships PostgreSQL {os_base.distro_postgresql}, "
                            f"not {version}: use source: pgdg for {version}, or version: {os_base.distro_postgresql}")
        return None
    return PostgresSpec(version=version, source=source)


def _odoo(node: _Node) -> OdooSpec | None:
    if not node.keys(("source", "requirements")):
        return None
    requirements = node.string("requirements")
    src = node.child("source")
    if not src.keys(("git", "archive")):
        return None
    kinds = [k for k in ("git", "archive") if src.has(k)]
    if len(kinds) != 1:
        src.fail(None, "needs exactly one of `git` or `archive`")
        return None
    source: GitSource | ArchiveSource | None = None
    if kinds[0] == "git":
        git = src.child("git")
        if git.keys(("url", "branch", "commit")):
            url = git.string("url", URL, "a git URL (https://, ssh://, git:// or file://)")
            branch = git.string("branch")
            commit = git.string("commit", HEX40, "a full 40-hex-digit commit id")
            if url and branch and commit:
                source = GitSource(url=url, branch=branch, commit=commit)
    else:
        archive = src.child("archive")
        if archive.keys(("url", "path", "sha256")):
            places = [k for k in ("url", "path") if archive.has(k)]
            if len(places) != 1:
                archive.fail(None, "needs exactly one of `url` or `path`")
            location = (archive.string("url", URL, "an http(s) or file URL") if places == ["url"]
                        else archive.string("path") if places == ["path"] else None)
            sha256 = archive.string("sha256", HEX64, "a 64-hex-digit sha256")
            if location and sha256:
                source = ArchiveSource(location=location, sha256=sha256)
    if source is None or requirements is None:
        return None
    return OdooSpec(source=source, requirements=requirements)


def _python(node: _Node) -> PythonSpec | None:
    if not node.keys(("setuptools", "build_constraints")):
        return None
    setuptools = node.string("setuptools", re.compile(r"^\d+(\.\d+){0,2}$"), "a version like 80.9.0")
    constraints = node.string_list("build_constraints")
    if setuptools is None or constraints is None:
        return None
    return PythonSpec(setuptools=setuptools, build_constraints=constraints)


def _packer(node: _Node) -> PackerSpec | None:
    if not node.keys(("disk_gib", "memory_mib", "cpus", "accelerator")):
        return None
    disk = node.integer("disk_gib", 8, 2048)
    memory = node.integer("memory_mib", 1024, 262144)
    cpus = node.integer("cpus", 1, 64)
    accel = node.choice("accelerator", ACCELERATORS)
    if disk is None or memory is None or cpus is None or accel is None:
        return None
    return PackerSpec(disk_gib=disk, memory_mib=memory, cpus=cpus, accelerator=accel)


def _build(node: _Node) -> BuildSpec | None:
    if node.value is None:
        return BuildSpec(apt_mirror=None, ca_bundle=None)
    if not node.keys(("apt_mirror", "ca_bundle", "pip_index_url")):
        return None
    url = re.compile(r"^https?://\S+$")
    mirror = node.string("apt_mirror", url, "an http(s) URL", optional=True)
    ca_bundle = node.string("ca_bundle", optional=True)
    index = node.string("pip_index_url", url, "an http(s) URL", optional=True)
    return BuildSpec(apt_mirror=mirror, ca_bundle=ca_bundle, pip_index_url=index)


def parse_catalogue(data: Any, path: Path) -> Catalogue:
    problems = _Problems()
    top = _Node(data, (), lambda p: ".".join(p) or path.name, problems)
    if not top.keys(("defaults", "images")):
        raise SpecError(problems.items)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise SpecError([f"defaults: must be a mapping, got {_kind(defaults)}"])
    _Node(defaults, (), lambda p: ".".join(("defaults",) + p), problems).keys(DEFAULT_KEYS)
    images = data.get("images")
    if not isinstance(images, list) or not images:
        problems.add("images", "must be a non-empty list of images")
        raise SpecError(problems.items)
    specs: list[ImageSpec] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(images):
        label = f"images[{index}]"
        if not isinstance(raw, dict):
            problems.add(label, f"must be a mapping, got {_kind(raw)}")
            continue
        origins: dict[tuple[str, ...], str] = {}
        merged = _merge(defaults, raw, (), origins, label)
        origins.pop((), None)
        node = _Node(merged, (), _origin_fn(origins, defaults, label), problems)
        name = raw.get("name")
        if isinstance(name, str) and name in seen:
            problems.add(f"{label}.name", f"duplicate image name {name!r} (also images[{seen[name]}])")
        elif isinstance(name, str):
            seen[name] = index
        spec = _image(node, index)
        if spec is not None:
            specs.append(spec)
    if problems.items:
        # The same inherited mistake is reported once, not once per image.
        raise SpecError(list(dict.fromkeys(problems.items)))
    return Catalogue(path=path, images=tuple(specs))


def load_catalogue(path: Path) -> Catalogue:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError([f"{path}: cannot read catalogue ({exc.strerror})"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}: line {mark.line + 1}, column {mark.column + 1}" if mark else path.name
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError([f"{where}: malformed YAML ({reason})"]) from exc
    if not isinstance(data, Mapping):
        raise SpecError([f"{path.name}: must be a mapping with `defaults` and `images`, got {_kind(data)}"])
    return parse_catalogue(dict(data), path)
