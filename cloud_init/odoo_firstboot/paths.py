"""Where things live on an instance (docs/image-layout.md), relative to an injectable root.

Files we *write* go through `Layout.at()` so tests can point the root at a temp dir.
Paths we *render into other files* (an NGINX include naming the ACME webroot, the
odoo-bin command line) stay absolute instance paths: they are read on the instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Operator input and the certificate the NGINX site uses.
ETC_IMAGE = PurePosixPath("/etc/odoo-image")
SETTINGS = ETC_IMAGE / "settings.yaml"
TLS_DIR = ETC_IMAGE / "tls"
TLS_FULLCHAIN = TLS_DIR / "fullchain.pem"
TLS_PRIVKEY = TLS_DIR / "privkey.pem"
SELF_SIGNED_DIR = TLS_DIR / "self-signed"
RELEASE = PurePosixPath("/etc/odoo-image-release")

# Per-host state: one data root, never baked.
STATE_DIR = PurePosixPath("/var/lib/odoo-image")
STATUS = STATE_DIR / "firstboot.json"
DONE = STATE_DIR / "firstboot.done"
SECRETS = STATE_DIR / "secrets.json"
CREDENTIALS = STATE_DIR / "credentials"
CERTBOT_STATE = STATE_DIR / "certbot-retry.json"

# Odoo.
ODOO_ETC = PurePosixPath("/etc/odoo")
ODOO_CONF_D = ODOO_ETC / "conf.d"
ODOO_CONF = ODOO_ETC / "odoo.conf"
SECRETS_CONF = ODOO_CONF_D / "10-secrets.conf"
TUNING_CONF = ODOO_CONF_D / "20-tuning.conf"
SITE_CONF = ODOO_CONF_D / "30-site.conf"
ODOO_SRC = PurePosixPath("/opt/odoo/src")
ODOO_BIN = ODOO_SRC / "odoo-bin"
ODOO_PYTHON = PurePosixPath("/opt/odoo/venv/bin/python3")
ODOO_DATA_DIR = PurePosixPath("/var/lib/odoo")
ODOO_LOG = PurePosixPath("/var/log/odoo/odoo.log")
ODOO_USER = "odoo"
ODOO_GROUP = "odoo"
ODOO_DB_ROLE = "odoo"

# PostgreSQL (Debian/Ubuntu cluster layout: /etc/postgresql/<major>/main).
PG_ETC = PurePosixPath("/etc/postgresql")
PG_TUNING_NAME = "50-odoo-image-tuning.conf"

# NGINX (sites baked by provisioning). The image enables the "starting" site (HTTP, 503
# for everything except ACME challenges); first boot switches the enabled link to the
# Odoo site once the certificate exists, and owns the two include files it reads.
NGINX_SITE_ENABLED = PurePosixPath("/etc/nginx/sites-enabled/odoo.conf")
NGINX_SITE_ODOO = PurePosixPath("/etc/nginx/sites-available/odoo.conf")
NGINX_SITE_STARTING = PurePosixPath("/etc/nginx/sites-available/odoo-starting.conf")
NGINX_INCLUDE_DIR = ETC_IMAGE / "nginx"
NGINX_SERVER_NAME = NGINX_INCLUDE_DIR / "server_name.conf"
NGINX_HSTS = NGINX_INCLUDE_DIR / "hsts.conf"
# Served at /.well-known/acme-challenge/ on port 80 by both baked sites.
ACME_WEBROOT = PurePosixPath("/var/www/letsencrypt")

LETSENCRYPT_LIVE = PurePosixPath("/etc/letsencrypt/live")
MOTD_SCRIPT = PurePosixPath("/etc/update-motd.d/60-odoo-image")
PROC_MEMINFO = PurePosixPath("/proc/meminfo")
CLOUD_INSTANCE_DATA = PurePosixPath("/run/cloud-init/instance-data.json")
CLOUD_INSTANCE_ID = PurePosixPath("/var/lib/cloud/data/instance-id")
RUN_DIR = PurePosixPath("/run/odoo-image")

# systemd units shipped by cloud_init/systemd/ or by the distribution.
UNIT_ODOO = "odoo.service"
UNIT_NGINX = "nginx.service"
UNIT_POSTGRESQL = "postgresql.service"
UNIT_CERTBOT_RETRY_TIMER = "odoo-certbot-retry.timer"
UNIT_CERTBOT_RENEW_TIMER = "certbot.timer"


@dataclass(frozen=True)
class Layout:
    """Maps instance paths onto a filesystem root ("/" on an instance, a temp dir in tests)."""

    root: Path = Path("/")

    def at(self, instance_path: PurePosixPath) -> Path:
        return self.root / instance_path.relative_to("/")

    def pg_conf_d(self, major: str) -> Path:
        return self.at(PG_ETC / major / "main" / "conf.d")

    def letsencrypt_live(self, domain: str) -> Path:
        return self.at(LETSENCRYPT_LIVE / domain)
