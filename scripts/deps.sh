#!/usr/bin/env bash
# Installs the Debian packages moat needs to build, test and benchmark,
# only those missing.  Needs root (or sudo) when something is missing.
set -euo pipefail

PKGS=(
	build-essential pkg-config clang libclang-rt-14-dev
	libevent-dev libssl-dev zlib1g-dev
	libcmocka-dev
	python3-pytest python3-aiosmtpd swaks
	postfix
)
# Later capabilities add theirs here (liblmdb-dev, libhiredis-dev,
# redis-server, rbldnsd, clamav-daemon) when their code lands.

missing=()
for p in "${PKGS[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
	    grep -q "install ok installed"; then
		missing+=("$p")
	fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=
[ "$(id -u)" -ne 0 ] && SUDO=sudo
echo "deps: installing ${missing[*]}" >&2
# Postfix asks what kind of mail system this is; we only use its tools
# and private instances, so "No configuration".
echo "postfix postfix/main_mailer_type select No configuration" |
	$SUDO debconf-set-selections
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	--no-install-recommends "${missing[@]}" >/dev/null
