#!/bin/sh
# Runs the context switch's own test (tests/cross/switch_test.c) built
# for aarch64 under qemu-user: the assembly switch for a machine we do not
# have. Not part of make test (it needs ~150 MB of cross tools):
#   apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#   tests/cross/aarch64.sh
set -eu
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
aarch64-linux-gnu-gcc -O2 -static -Iinclude -Isrc \
  tests/cross/switch_test.c src/coro.c src/fault.c -o "$out" -lpthread
qemu-aarch64 "$out"
