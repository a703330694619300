"""Let's Encrypt: one attempt at first boot, then a systemd timer retries with backoff.

Why `certbot certonly --webroot` and not `certbot --nginx`: the NGINX plugin rewrites
the site file, which is ours (baked, with include files we toggle). With --webroot our
sites serve /.well-known/acme-challenge/ from /var/www/letsencrypt, certbot only
writes certificates, and we point the TLS symlinks at /etc/letsencrypt/live/<domain>.
Certbot stores the webroot and the deploy hook in its renewal config, so the packaged
certbot.timer renews the same way and reloads NGINX.

We only call certbot once the domain points at this host (DNS answers one of our
addresses, or an HTTP probe through the domain comes back to our webroot — needed on
clouds that NAT the public IP), so a missing DNS record costs nothing against Let's
Encrypt's failed-validation rate limit.
"""

from __future__ import annotations

import json
import logging
import random
import secrets
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import nginx, paths, tls
from .fsutil import ensure_dir, write_atomic
from .paths import Layout
from .runner import CommandFailed, Runner
from .systemd import Systemd

log = logging.getLogger("odoo-firstboot")

BACKOFF_BASE = 10 * 60.0  # first retry after ~10 min, then 20, 40, 80 ...
BACKOFF_MAX = 6 * 3600.0
JITTER_FRACTION = 0.25  # spread retries of many instances launched together
CERTBOT_TIMEOUT = 600.0


@dataclass
class RetryState:
    domain: str
    attempts: int = 0
    last_attempt: float | None = None
    next_attempt: float = 0.0
    last_error: str = ""
    obtained: bool = False


@dataclass(frozen=True)
class Outcome:
    obtained: bool
    message: str


@dataclass(frozen=True)
class Reachability:
    """How we decide that `domain` reaches this host (injectable for tests)."""

    resolve: Callable[[str], list[str]]
    local_addresses: Callable[[], list[str]]
    http_probe: Callable[[str], bool]


@dataclass
class Deps:
    layout: Layout
    runner: Runner
    systemd: Systemd
    reach: Reachability
    clock: Callable[[], float]
    rng: random.Random = field(default_factory=random.SystemRandom)


def next_delay(attempts: int, rng: random.Random) -> float:
    """Seconds until the next attempt after `attempts` failures: doubling, capped, jittered."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return float(delay + rng.uniform(0, JITTER_FRACTION * delay))


def load_state(path: Path) -> RetryState | None:
    try:
        data = json.loads(path.read_text())
        return RetryState(**{k: v for k, v in data.items() if k in RetryState.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return None


def save_state(path: Path, state: RetryState) -> None:
    ensure_dir(path.parent, 0o755)
    write_atomic(path, json.dumps(asdict(state), indent=2, sort_keys=True) + "\n", mode=0o644)


def http_probe(webroot: Path, domain: str, timeout: float = 10.0) -> bool:
    """Serve a random token from our ACME webroot and fetch it through the domain: if it
    comes back, Let's Encrypt's HTTP-01 validation will reach this host too."""
    name = f"odoo-image-probe-{secrets.token_urlsafe(12)}"
    token = secrets.token_urlsafe(24)
    target = webroot / ".well-known" / "acme-challenge" / name
    try:
        ensure_dir(target.parent, 0o755)
        target.write_text(token)
        target.chmod(0o644)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        url = f"http://{domain}/.well-known/acme-challenge/{name}"
        with opener.open(url, timeout=timeout) as response:  # plain HTTP on purpose: HTTP-01 is plain HTTP
            return bool(response.read(256).decode(errors="replace").strip() == token)
    except (OSError, ValueError):
        return False
    finally:
        target.unlink(missing_ok=True)


def points_here(domain: str, reach: Reachability) -> tuple[bool, str]:
    resolved = reach.resolve(domain)
    if not resolved:
        return False, f"{domain} does not resolve (yet)"
    local = reach.local_addresses()
    mine = [a for a in resolved if a in local]
    if mine:
        return True, f"{domain} resolves to this host ({mine[0]})"
    if reach.http_probe(domain):
        return True, f"{domain} reaches this host over HTTP (resolves to {', '.join(resolved)})"
    return False, f"{domain} resolves to {', '.join(resolved)}, not to this host ({', '.join(local) or 'no address'})"


def certbot_argv(domain: str, email: str) -> list[str]:
    return [
        "certbot",
        "certonly",
        "--webroot",
        "-w",
        str(paths.ACME_WEBROOT),
        "-d",
        domain,
        "--cert-name",
        domain,
        "-m",
        email,
        "--agree-tos",
        "--no-eff-email",
        "--non-interactive",
        "--keep-until-expiring",
        # Stored in /etc/letsencrypt/renewal/<domain>.conf: renewals reload NGINX too.
        "--deploy-hook",
        "systemctl reload nginx",
    ]


def activate(deps: Deps, domain: str) -> None:
    """Serve the Let's Encrypt certificate and turn HSTS on; roll back if NGINX objects."""
    tls.link_letsencrypt(deps.layout, domain)
    nginx.set_hsts(deps.layout, True)
    try:
        nginx.apply(deps.runner, deps.systemd)
    except CommandFailed:
        tls.link_self_signed(deps.layout)
        nginx.set_hsts(deps.layout, False)
        nginx.apply(deps.runner, deps.systemd)
        raise


def attempt(deps: Deps, domain: str, email: str) -> Outcome:
    ok, why = points_here(domain, deps.reach)
    if not ok:
        return Outcome(False, why)
    result = deps.runner.run(certbot_argv(domain, email), check=False, timeout=CERTBOT_TIMEOUT)
    if not result.ok:
        return Outcome(False, f"certbot failed: {result.tail() or f'exit {result.returncode}'}")
    if not tls.letsencrypt_ready(deps.layout, domain):
        return Outcome(False, f"certbot succeeded but {paths.LETSENCRYPT_LIVE / domain} is incomplete")
    try:
        activate(deps, domain)
    except CommandFailed as exc:
        return Outcome(False, f"NGINX rejected the Let's Encrypt certificate, kept self-signed: {exc}")
    return Outcome(True, f"Let's Encrypt certificate for {domain} in place, HSTS on ({why})")


def run_once(deps: Deps, domain: str, email: str) -> Outcome:
    """One attempt; on failure record the backoff and make sure the retry timer runs."""
    state_path = deps.layout.at(paths.CERTBOT_STATE)
    state = load_state(state_path)
    if state is None or state.domain != domain:
        state = RetryState(domain=domain)
    now = deps.clock()
    try:
        outcome = attempt(deps, domain, email)
    except Exception as exc:  # noqa: BLE001 - whatever broke, the retry must stay scheduled
        outcome = Outcome(False, f"{type(exc).__name__}: {exc}")
    state.last_attempt = now
    if outcome.obtained:
        state.obtained, state.last_error, state.next_attempt = True, "", 0.0
        save_state(state_path, state)
        deps.systemd.disable(paths.UNIT_CERTBOT_RETRY_TIMER, now=True)
    else:
        state.attempts += 1
        state.last_error = outcome.message
        state.next_attempt = now + next_delay(state.attempts, deps.rng)
        save_state(state_path, state)
        deps.systemd.enable(paths.UNIT_CERTBOT_RETRY_TIMER, now=True)
    return outcome


def retry_tick(deps: Deps, domain: str | None, email: str | None) -> Outcome | None:
    """What odoo-certbot-retry.service does on each timer tick. None = nothing to do now."""
    if not domain or not email:
        deps.systemd.disable(paths.UNIT_CERTBOT_RETRY_TIMER, now=True)
        return None
    state = load_state(deps.layout.at(paths.CERTBOT_STATE))
    if state and state.domain == domain and state.obtained and tls.current_kind(deps.layout) == "letsencrypt":
        deps.systemd.disable(paths.UNIT_CERTBOT_RETRY_TIMER, now=True)
        return None
    if state and state.domain == domain and deps.clock() < state.next_attempt:
        log.info("certbot retry: next attempt not before %.0f s from now", state.next_attempt - deps.clock())
        return None
    return run_once(deps, domain, email)


def ensure_renewal(systemd: Systemd) -> str | None:
    """Make sure the packaged certbot.timer will renew; returns a problem line or None."""
    unit = paths.UNIT_CERTBOT_RENEW_TIMER
    if systemd.is_enabled(unit) and systemd.is_active(unit):
        return None
    try:
        systemd.enable(unit, now=True)
    except CommandFailed as exc:
        return f"letsencrypt: renewal is not scheduled, enabling {unit} failed: {exc}"
    if not systemd.is_active(unit):
        return f"letsencrypt: renewal is not scheduled: {unit} is not active"
    return None
