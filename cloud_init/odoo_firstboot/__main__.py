"""`python3 -m odoo_firstboot [run|certbot-retry|banner]` — same as /usr/local/sbin/odoo-firstboot."""

import sys

from .main import firstboot_main

sys.exit(firstboot_main())
