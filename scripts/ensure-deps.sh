#!/bin/sh
# Installs the Debian packages a make target needs, if any is missing.
# Idempotent and quick when everything is there (one dpkg-query per
# package, no apt-get). Usage: scripts/ensure-deps.sh demo|test|bench
set -eu

base="gcc make cmake pkg-config libc6-dev"
case "${1:-test}" in
  demo)  pkgs="$base libuv1-dev libcurl4-openssl-dev famfamfam-flag-gif" ;;
  test)  pkgs="$base libcmocka-dev libglib2.0-dev libuv1-dev valgrind
               libcurl4-openssl-dev famfamfam-flag-gif curl clang
               libclang-rt-14-dev python3 python3-httpx" ;;
  bench) pkgs="$base libcmocka-dev libglib2.0-dev libuv1-dev python3
               libcurl4-openssl-dev famfamfam-flag-gif wrk nginx-light
               python3-httpx python3-aiohttp python3-tqdm" ;;
  *) echo "usage: $0 demo|test|bench" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "ensure-deps: not a Debian system; please install: $pkgs" >&2
  exit 0
fi

missing=""
for p in $pkgs; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

echo "ensure-deps: installing$missing"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "ensure-deps: need root (or sudo) to install:$missing" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
