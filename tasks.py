"""invoke tasks: a thin CLI over the odoo_image package (flags in, one call out)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from invoke import Context, task
from invoke.exceptions import Exit

from odoo_image import cli
from odoo_image.errors import PipelineError, SpecError
from odoo_image.proc import sigterm_as_interrupt

F = TypeVar("F", bound=Callable[..., Any])


def operator_errors(func: F) -> F:
    """Turn pipeline errors into one line on stderr and the error's exit code; SIGTERM
    unwinds like Ctrl-C so that nothing half-done is left behind."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with sigterm_as_interrupt():
                return func(*args, **kwargs)
        except SpecError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None
        except PipelineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Exit(code=exc.exit_code) from None

    return wrapper  # type: ignore[return-value]


@task(help={"image": "only this image (default: all)", "catalogue": "catalogue file"})
@operator_errors
def render(c: Context, image: str | None = None, catalogue: str = "images.yaml") -> None:
    """Render images.yaml into build/<image>/<version>/ (Packer HCL, scripts, files)."""
    cli.render(Path(catalogue), image)


@task(help={"image": "only this image (default: all)", "catalogue": "catalogue file"})
@operator_errors
def validate(c: Context, image: str | None = None, catalogue: str = "images.yaml") -> None:
    """Render, then check with python-hcl2, packer, shellcheck, nginx, fail2ban, cloud-init."""
    cli.validate(Path(catalogue), image)


@task(help={"image": "only this image (default: the first)", "catalogue": "catalogue file"})
@operator_errors
def base(c: Context, image: str | None = None, catalogue: str = "images.yaml") -> None:
    """Build (or reuse from cache) the base qcow2 from the distribution archive."""
    cli.base(Path(catalogue), image)


@task(help={"image": "only this image (default: the first)", "catalogue": "catalogue file",
            "only": "Packer source to build: qemu or amazon-ebs (default: qemu)"})
@operator_errors
def build(c: Context, image: str | None = None, catalogue: str = "images.yaml", only: str = "qemu") -> None:
    """Bake the image with Packer: dist/<image>-<version>.qcow2 + manifest (or AMIs)."""
    cli.build(Path(catalogue), image, only)


@task(help={"image": "only this image (default: the first)", "catalogue": "catalogue file",
            "keep": "leave the VM running after the tests (prints how to reach it)"})
@operator_errors
def test(c: Context, image: str | None = None, catalogue: str = "images.yaml", keep: bool = False) -> None:
    """Boot the built qcow2 like a user (NoCloud seed) and run the testinfra suite over SSH."""
    cli.boot_test(Path(catalogue), image, keep)


@task(help={"domain": "public DNS name", "email": "Let's Encrypt account e-mail",
            "database": "database to create", "modules": "comma-separated modules to install",
            "admin_login": "admin login", "ssh_key": "public key file for the default user",
            "output": "write here instead of stdout"})
@operator_errors
def userdata(c: Context, domain: str = "", email: str = "", database: str = "", modules: str = "",
             admin_login: str = "", ssh_key: str = "", output: str = "") -> None:
    """Render a #cloud-config for launching an instance of the image."""
    cli.userdata(domain=domain, email=email, database=database, modules=modules,
                 admin_login=admin_login, ssh_key=ssh_key, output=output)


@task(help={"dest": "directory for the fixture archive and its catalogue"})
@operator_errors
def fixture(c: Context, dest: str = "build/fixture") -> None:
    """Write the Odoo-shaped TEST FIXTURE archive and a catalogue that bakes it (no GitHub/PGDG)."""
    from tests.fixtures.catalogue import write_fixture_catalogue

    path = write_fixture_catalogue(Path(dest))
    print(f"fixture catalogue: {path}\nbuild it: invoke build --catalogue {path}")
