"""settings.yaml validation: each bad setting → its one line, the key ignored, defaults used."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "cloud_init"))

from odoo_firstboot.settings import KNOWN_KEYS, GiB, MiB, Settings, TuningOverrides, load, parse

BAD = [
    ("domain", "exa mple", "settings.domain: 'exa mple' is not a valid DNS name"),
    ("domain", "localhost", "settings.domain: 'localhost' is not a valid DNS name"),
    ("domain", "203.0.113.7", "settings.domain: '203.0.113.7' is not a valid DNS name"),
    ("domain", "-bad.example.com", "settings.domain: '-bad.example.com' is not a valid DNS name"),
    ("domain", 42, "settings.domain: 42 is not a valid DNS name"),
    ("letsencrypt_email", "not-an-email", "settings.letsencrypt_email: 'not-an-email' is not a valid e-mail address"),
    ("database", "my db", "settings.database: 'my db' is not a valid database name"),
    ("database", "_x", "settings.database: '_x' is not a valid database name"),
    ("modules", "sale stock", "settings.modules[0]: 'sale stock' is not a module name"),
    ("modules", {"sale": 1}, "settings.modules: {'sale': 1} is not a list of module names"),
    ("admin_login", "two words", "settings.admin_login: 'two words' is not a valid login"),
    ("admin_login", "", "settings.admin_login: '' is not a valid login"),
    ("admin_password", "short", 'settings.admin_password: must be "generate" or at least 8 characters (got 5)'),
    ("admin_password", 12345678, 'settings.admin_password: must be "generate" or a quoted string, got a int'),
    ("language", "english", "settings.language: 'english' is not a language code like 'en_US' or 'fr_FR'"),
    ("country", "France", "settings.country: 'France' is not a two-letter ISO 3166 country code"),
    ("demo", "yes please", "settings.demo: 'yes please' is not true or false"),
    ("workers", "four", "settings.workers: 'four' is not an integer"),
    ("workers", 0, "settings.workers: 0 is out of range (1..512); the NGINX site sends /websocket"),
    ("workers", True, "settings.workers: True is not an integer"),
    ("max_cron_threads", -1, "settings.max_cron_threads: -1 is out of range (0..64)"),
    ("shared_buffers", "1 gigabyte", "settings.shared_buffers: '1 gigabyte' is not a size like '512MB' or '2GB'"),
    ("shared_buffers", 512, "settings.shared_buffers: 512 needs a unit, e.g. '512MB'"),
    ("effective_cache_size", "lots", "settings.effective_cache_size: 'lots' is not a size"),
    ("work_mem", "1kB", "settings.work_mem: '1kB' is below the minimum of 64kB"),
    ("maintenance_work_mem", "-5MB", "settings.maintenance_work_mem: '-5MB' is not a size"),
    ("max_connections", 5, "settings.max_connections: 5 is out of range (10..10000)"),
    ("db_maxconn", 1, "settings.db_maxconn: 1 is out of range (2..1000)"),
    ("limit_memory_soft", "64MB", "settings.limit_memory_soft: '64MB' is below the minimum of 128MB"),
    ("limit_memory_hard", "huge", "settings.limit_memory_hard: 'huge' is not a size"),
    ("limit_time_cpu", 0, "settings.limit_time_cpu: 0 is out of range (1..86400)"),
    ("limit_time_real", "2m", "settings.limit_time_real: '2m' is not an integer"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_each_bad_setting_gives_its_own_line(key: str, value: object, message: str) -> None:
    data = {key: value, "database": "prod"} if key in ("modules", "admin_login", "admin_password") else {key: value}
    settings, problems = parse(data)
    own = [p for p in problems if p.startswith(f"settings.{key}")]
    assert len(own) == 1, problems
    assert own[0].startswith(message)
    assert "\n" not in own[0]
    # The bad key is ignored: its default is used.
    defaults = Settings()
    if key in TuningOverrides.__dataclass_fields__:
        assert getattr(settings.tuning, key) is None
    elif key == "modules":
        assert settings.modules == ()
    elif key != "database":
        assert getattr(settings, key) == getattr(defaults, key)
    else:
        assert settings.database is None


def test_password_value_is_never_echoed() -> None:
    _, problems = parse({"admin_password": "hunter2", "database": "x"})
    assert problems and all("hunter2" not in p for p in problems)


def test_unknown_key_with_suggestion() -> None:
    settings, problems = parse({"domian": "erp.example.com", "colour": "blue"})
    assert "settings.domian: unknown setting, ignored (did you mean 'domain'?)" in problems
    assert "settings.colour: unknown setting, ignored" in problems
    assert settings == Settings()


def test_valid_settings_round_trip() -> None:
    settings, problems = parse(
        {
            "domain": "ERP.Example.com.",
            "letsencrypt_email": "ops@example.com",
            "database": "prod",
            "modules": ["sale", "base", "crm", "sale"],
            "admin_login": "boss@example.com",
            "admin_password": "correct horse battery",
            "language": "fr_BE",
            "country": "be",
            "demo": True,
            "workers": 4,
            "max_cron_threads": 1,
            "shared_buffers": "1GB",
            "effective_cache_size": "3gb",
            "work_mem": "16MB",
            "maintenance_work_mem": "256MB",
            "max_connections": 200,
            "db_maxconn": 8,
            "limit_memory_soft": "1GB",
            "limit_memory_hard": 1610612736,
            "limit_time_cpu": 300,
            "limit_time_real": 600,
        }
    )
    assert problems == []
    assert settings.domain == "erp.example.com"
    assert settings.modules == ("sale", "crm")  # base is implicit, duplicates dropped
    assert settings.country == "BE" and settings.demo is True
    assert settings.admin_password == "correct horse battery" and not settings.generate_admin_password
    assert settings.tuning == TuningOverrides(
        workers=4,
        max_cron_threads=1,
        shared_buffers=1 * GiB,
        effective_cache_size=3 * GiB,
        work_mem=16 * MiB,
        maintenance_work_mem=256 * MiB,
        max_connections=200,
        db_maxconn=8,
        limit_memory_soft=1 * GiB,
        limit_memory_hard=1536 * MiB,
        limit_time_cpu=300,
        limit_time_real=600,
    )


def test_defaults_are_safe() -> None:
    settings, problems = parse(None)
    assert problems == []
    assert settings.generate_admin_password and settings.admin_login == "admin"
    assert settings.demo is False and settings.language == "en_US" and settings.domain is None
    assert parse({"admin_password": "generate"})[0].generate_admin_password


def test_modules_string_and_partial_bad_list() -> None:
    settings, problems = parse({"database": "prod", "modules": ["sale", "Bad-Name", "crm"]})
    assert settings.modules == ("sale", "crm")
    assert problems == ["settings.modules[1]: 'Bad-Name' is not a module name (lowercase letters, digits and '_')"]
    assert parse({"database": "prod", "modules": "sale, crm"})[0].modules == ("sale", "crm")


def test_cross_field_problems() -> None:
    settings, problems = parse({"modules": ["sale"], "letsencrypt_email": "ops@example.com"})
    assert "settings.modules: ignored because settings.database is not set" in problems
    assert "settings.letsencrypt_email: ignored because settings.domain is not set" in problems
    assert settings.modules == () and settings.letsencrypt_email is None
    _, problems = parse({"domain": "erp.example.com"})
    assert any(p.startswith("settings.letsencrypt_email: not set") for p in problems)


def test_not_a_mapping_and_bad_yaml(tmp_path: Path) -> None:
    settings, problems = parse(["domain", "x"])
    assert settings == Settings() and problems[0].startswith("settings: settings.yaml must be a mapping")
    path = tmp_path / "settings.yaml"
    path.write_text("domain: [unclosed\n")
    settings, problems = load(path)
    assert settings == Settings()
    assert len(problems) == 1 and problems[0].startswith("settings: settings.yaml is not valid YAML")
    assert "line" in problems[0]


def test_missing_file_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path / "absent.yaml") == (Settings(), [])


def test_schema_doc_documents_every_key() -> None:
    doc = (REPO / "cloud_init" / "settings.schema.md").read_text()
    for key in KNOWN_KEYS:
        assert f"`{key}`" in doc, key


def _settings_from_user_data(path: Path) -> object:
    text = path.read_text()
    assert text.startswith("#cloud-config\n"), path
    data = yaml.safe_load(text)
    files = [f for f in data.get("write_files", []) if f.get("path") == "/etc/odoo-image/settings.yaml"]
    if not files:
        return None
    assert files[0].get("permissions") == "0600" and files[0].get("owner") == "root:root"
    return yaml.safe_load(files[0]["content"])


@pytest.mark.parametrize("example", sorted((REPO / "cloud_init" / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid(example: Path) -> None:
    _, problems = parse(_settings_from_user_data(example))
    # A domain example without e-mail would get the informational line; ours all set one.
    assert problems == []


def test_userdata_render_round_trips_and_passes_cloud_init_schema(tmp_path: Path) -> None:
    import shutil
    import subprocess

    from odoo_firstboot import userdata

    wanted = {"domain": "erp.example.com", "letsencrypt_email": "ops@example.com", "database": "erp",
              "modules": ["sale", "crm"], "admin_password": "generate"}  # fmt: skip
    text, problems = userdata.render(wanted, ssh_authorized_keys=["ssh-ed25519 AAAAC3Nza you@example.com"])
    assert problems == []
    path = tmp_path / "user-data"
    path.write_text(text)
    assert _settings_from_user_data(path) == wanted
    if shutil.which("cloud-init"):
        argv = ["cloud-init", "schema", "--config-file", str(path)]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
    assert userdata.render({"domain": "exa mple"})[1] == ["settings.domain: 'exa mple' is not a valid DNS name"]
    assert userdata.render({}) == ("#cloud-config\n", [])
