"""Golden-image pipeline for Odoo 18: catalogue → render → build → test → release."""

__version__ = "0.1.0"
