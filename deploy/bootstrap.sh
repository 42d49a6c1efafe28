#!/usr/bin/env bash
# Brings a fresh Debian machine to the point where wanmig runs: Debian packages, node_modules, build.
# Idempotent and quick when nothing is missing; safe to run before every demo, test or benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# Debian packages: binary we need -> package that ships it.
declare -A NEED=(
  [nats-server]=nats-server
  [qemu-img]=qemu-utils
  [qemu-io]=qemu-utils
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [ip]=iproute2
  [qemu-system-x86_64]=qemu-system-x86
  [cpio]=cpio
  [debootstrap]=debootstrap
  [mke2fs]=e2fsprogs
)
# Files we need -> package that ships them (the guest image for QEMU tests: test/guest/build-guest.sh).
declare -A NEED_FILE=(
  [/bin/busybox]=busybox-static
)
missing=()
for bin in "${!NEED[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${NEED[$bin]}")
done
for file in "${!NEED_FILE[@]}"; do
  [ -e "$file" ] || missing+=("${NEED_FILE[$file]}")
done
# The guest's kernel: any Debian kernel image in /boot.
compgen -G '/boot/vmlinuz-*' >/dev/null || missing+=(linux-image-amd64)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    say "missing Debian packages: ${missing[*]}"
    say "install them as root with:"
    echo "  apt-get update && apt-get install -y ${missing[*]}"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node_modules: reinstall when the lock file changed since the last install.
lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.wanmig-lock
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
  say "installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" >"$stamp"
fi

# Build when any source or config is newer than the last build.
build_stamp=dist/.wanmig-build
if [ ! -f "$build_stamp" ] || [ -n "$(find apps libs test package.json tsconfig.json tsconfig.build.json \
  -newer "$build_stamp" \( -name '*.ts' -o -name '*.json' \) -print -quit 2>/dev/null)" ]; then
  say "building"
  npm run --silent build
  touch "$build_stamp"
fi
