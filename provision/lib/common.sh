# shellcheck shell=bash
# Helpers shared by the provisioning scripts. Sourced, never run.

PAYLOAD=${PAYLOAD:-/var/tmp/odoo-image}
FILES="$PAYLOAD/provision/files"
INPUTS="$PAYLOAD/inputs"
export DEBIAN_FRONTEND=noninteractive

log() {
  printf '[%s] %s\n' "$(basename "$0" .sh)" "$*"
}

die() {
  printf '[%s] ERROR: %s\n' "$(basename "$0" .sh)" "$*" >&2
  exit 1
}

# Install packages without recommends; keep existing config files on upgrade.
apt_install() {
  apt-get install -y --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}

# install_file REL MODE [OWNER:GROUP]: copy files/REL to /REL (the tree mirrors the target).
install_file() {
  local rel=$1 mode=$2 owner=${3:-root:root}
  install -D -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$FILES/$rel" "/$rel"
}

# A value from the build facts the pipeline put into the payload.
build_fact() {
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$INPUTS/build-info.json" "$1"
}

in_container() {
  systemd-detect-virt --container --quiet
}
