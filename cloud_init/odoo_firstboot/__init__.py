"""First-boot finaliser and per-boot tuning for the Odoo 18 golden image.

Copied into the image at /usr/local/lib/odoo-image/odoo_firstboot and run by the OS
python3 (jammy 3.10, bookworm 3.11) with only the standard library and PyYAML
(python3-yaml, a cloud-init dependency), so it never touches Odoo's virtualenv.
Paths follow docs/image-layout.md; every module takes the filesystem root as a
parameter so the whole flow runs on a developer host inside a temporary directory.
"""

__version__ = "1.0.0"
