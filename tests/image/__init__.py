"""testinfra suite run against a booted instance of the image (see README.md here)."""
