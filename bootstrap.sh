#!/usr/bin/env bash
# Install what the pipeline and its tests need on a Debian 12 machine (root; idempotent).
set -euo pipefail
cd "$(dirname "$0")"

export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
apt-get update -q
apt-get install -y -q --no-install-recommends \
  packer shellcheck nginx fail2ban cloud-init \
  qemu-system-x86 qemu-utils mmdebstrap debootstrap systemd-container cloud-image-utils \
  genisoimage fdisk e2fsprogs dosfstools openssh-client iproute2 nftables gnupg \
  openssl ca-certificates curl git xz-utils postgresql python3-pip
# A root-owned build host: Debian marks its own python3 "externally managed" (PEP 668).
PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet -r requirements.txt
echo "bootstrap: dependencies installed in $(( $(date +%s) - start )) s"
