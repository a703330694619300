"""The few systemctl operations first boot needs, named for what they mean."""

from __future__ import annotations

from .runner import Runner


class Systemd:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def is_active(self, unit: str) -> bool:
        return self.runner.run(["systemctl", "is-active", "--quiet", unit], check=False).ok

    def is_enabled(self, unit: str) -> bool:
        return self.runner.run(["systemctl", "is-enabled", "--quiet", unit], check=False).ok

    def start(self, unit: str, *, no_block: bool = False) -> None:
        # --no-block matters when the unit is ordered after the caller (odoo.service is
        # After=odoo-firstboot.service): a blocking start from inside it would deadlock.
        argv = ["systemctl", "start", unit]
        if no_block:
            argv.insert(2, "--no-block")
        self.runner.run(argv, timeout=300)

    def restart(self, unit: str) -> None:
        self.runner.run(["systemctl", "restart", unit], timeout=300)

    def reload_or_restart(self, unit: str) -> None:
        """Reload when running, start otherwise (a skipped or failed unit gets started)."""
        self.runner.run(["systemctl", "reload-or-restart", unit], timeout=300)

    def enable(self, unit: str, *, now: bool = False) -> None:
        argv = ["systemctl", "enable", unit]
        if now:
            argv.insert(2, "--now")
        self.runner.run(argv, timeout=300)

    def disable(self, unit: str, *, now: bool = False) -> None:
        argv = ["systemctl", "disable", unit]
        if now:
            argv.insert(2, "--now")
        self.runner.run(argv, timeout=300, check=False)
