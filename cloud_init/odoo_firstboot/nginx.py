"""NGINX: switch from the baked "starting" site to the Odoo site, and own its include files.

Provisioning bakes two sites and enables /etc/nginx/sites-enabled/odoo.conf →
odoo-starting.conf, which needs no certificate: from the first second of boot NGINX
answers every request with the 503 "starting" page (and serves ACME challenges). Once
first boot has a certificate it points that link at the Odoo site (HTTP→HTTPS redirect,
TLS, proxy to Odoo, itself falling back to the starting page while Odoo is down).

The Odoo site includes, from /etc/odoo-image/nginx/:
- server_name.conf  `server_name <domain>;` or `server_name _;`,
- hsts.conf         the Strict-Transport-Security header, or only a comment.
HSTS is a promise browsers cache for a year: it is switched on only when a publicly
trusted certificate is in place, never for the self-signed fallback.
"""

from __future__ import annotations

from . import paths
from .fsutil import ensure_dir, replace_symlink, write_atomic
from .paths import Layout
from .runner import CommandFailed, Runner
from .systemd import Systemd

HSTS_ON = 'add_header Strict-Transport-Security "max-age=31536000" always;\n'
HSTS_OFF = (
    "# Written per host by odoo-firstboot: HSTS stays off while the site serves a self-signed\n"
    "# certificate; it is switched on together with a Let's Encrypt certificate.\n"
)


class SiteError(Exception):
    pass


def render_server_name(domain: str | None) -> str:
    return f"# Written per host by odoo-firstboot from settings.yaml (domain).\nserver_name {domain or '_'};\n"


def write_includes(layout: Layout, *, domain: str | None, hsts: bool) -> bool:
    """Write both includes (and the ACME webroot); returns True when anything changed."""
    ensure_dir(layout.at(paths.NGINX_INCLUDE_DIR), 0o755)
    ensure_dir(layout.at(paths.ACME_WEBROOT), 0o755)
    changed = write_atomic(layout.at(paths.NGINX_SERVER_NAME), render_server_name(domain))
    return set_hsts(layout, hsts) or changed


def set_hsts(layout: Layout, enabled: bool) -> bool:
    return write_atomic(layout.at(paths.NGINX_HSTS), HSTS_ON if enabled else HSTS_OFF)


def hsts_enabled(layout: Layout) -> bool:
    try:
        return layout.at(paths.NGINX_HSTS).read_text() == HSTS_ON
    except FileNotFoundError:
        return False


def enabled_site(layout: Layout) -> str:
    """'odoo', 'starting' or 'other': what sites-enabled/odoo.conf points at."""
    link = layout.at(paths.NGINX_SITE_ENABLED)
    if not link.is_symlink():
        return "other"
    target = link.resolve()
    if target == layout.at(paths.NGINX_SITE_ODOO).resolve():
        return "odoo"
    if target == layout.at(paths.NGINX_SITE_STARTING).resolve():
        return "starting"
    return "other"


def check_config(runner: Runner) -> None:
    """`nginx -t`: never reload into a configuration NGINX would reject."""
    runner.run(["nginx", "-t", "-q"], timeout=60)


def apply(runner: Runner, systemd: Systemd) -> None:
    """Test, then reload NGINX (or start it, if it is not running)."""
    check_config(runner)
    systemd.reload_or_restart(paths.UNIT_NGINX)


def enable_odoo_site(layout: Layout, runner: Runner, systemd: Systemd) -> None:
    """Point sites-enabled/odoo.conf at the Odoo site and reload; if NGINX rejects the
    result, go back to the starting site so the instance keeps answering."""
    site = layout.at(paths.NGINX_SITE_ODOO)
    if not site.is_file():
        raise SiteError(f"{paths.NGINX_SITE_ODOO} is missing (baked by provisioning)")
    previous = enabled_site(layout)
    replace_symlink(layout.at(paths.NGINX_SITE_ENABLED), site)
    try:
        apply(runner, systemd)
    except CommandFailed:
        if previous == "starting":
            replace_symlink(layout.at(paths.NGINX_SITE_ENABLED), layout.at(paths.NGINX_SITE_STARTING))
            systemd.reload_or_restart(paths.UNIT_NGINX)
        raise
