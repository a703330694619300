"""NGINX include files owned by first boot; the site itself is baked by provisioning.

The baked site (/etc/nginx/sites-available/odoo) includes, from /etc/nginx/odoo-image/:
- server_name.conf      in the :80 and :443 server blocks (`server_name <domain>;` or `_`),
- acme-challenge.conf   in the :80 server block, before the HTTPS redirect,
- hsts.conf             in the :443 server block (and in any location that has its own
                        add_header, since NGINX does not inherit add_header into those).
HSTS is a promise browsers cache for a year: it is switched on only when a publicly
trusted certificate is in place, never for the self-signed fallback.
"""

from __future__ import annotations

from . import paths
from .fsutil import ensure_dir, write_atomic
from .paths import Layout
from .runner import Runner
from .systemd import Systemd

HSTS_ON = 'add_header Strict-Transport-Security "max-age=31536000" always;\n'
HSTS_OFF = "# HSTS is off: the site serves a self-signed certificate (odoo-firstboot turns it on with Let's Encrypt).\n"


def render_server_name(domain: str | None) -> str:
    return f"server_name {domain or '_'};\n"


def render_acme() -> str:
    # certbot --webroot writes challenge files under <webroot>/.well-known/acme-challenge/;
    # only that prefix is served, straight from disk, never proxied to Odoo.
    return (
        "location ^~ /.well-known/acme-challenge/ {\n"
        f"    root {paths.ACME_WEBROOT};\n"
        "    default_type text/plain;\n"
        "    try_files $uri =404;\n"
        "}\n"
    )


def write_includes(layout: Layout, *, domain: str | None, hsts: bool) -> bool:
    """Write all three includes; returns True when any changed (NGINX needs a reload)."""
    ensure_dir(layout.at(paths.NGINX_INCLUDE_DIR), 0o755)
    ensure_dir(layout.at(paths.ACME_WEBROOT / ".well-known" / "acme-challenge"), 0o755)
    changed = write_atomic(layout.at(paths.NGINX_SERVER_NAME), render_server_name(domain))
    changed |= write_atomic(layout.at(paths.NGINX_ACME), render_acme())
    changed |= set_hsts(layout, hsts)
    return changed


def set_hsts(layout: Layout, enabled: bool) -> bool:
    return write_atomic(layout.at(paths.NGINX_HSTS), HSTS_ON if enabled else HSTS_OFF)


def hsts_enabled(layout: Layout) -> bool:
    try:
        return layout.at(paths.NGINX_HSTS).read_text() == HSTS_ON
    except FileNotFoundError:
        return False


def check_config(runner: Runner) -> None:
    """`nginx -t`: never reload into a configuration NGINX would reject."""
    runner.run(["nginx", "-t", "-q"], timeout=60)


def apply(runner: Runner, systemd: Systemd) -> None:
    """Test, then reload NGINX (or start it: on first boot it was skipped until the
    certificate existed — see the nginx.service drop-in)."""
    check_config(runner)
    systemd.reload_or_restart(paths.UNIT_NGINX)
