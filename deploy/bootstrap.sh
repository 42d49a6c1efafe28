#!/usr/bin/env bash
# Brings a fresh Debian machine to the point where wanmig runs: Debian packages, node_modules, build.
# Idempotent and quick when nothing is missing; safe to run before every demo, test or benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[bootstrap] %s\n' "$*" >&2; }

# Debian packages: binary we need -> package that ships it. QEMU is apart (below): it must be new enough.
declare -A NEED=(
  [nats-server]=nats-server
  [nbdinfo]=libnbd-bin
  [nbdcopy]=libnbd-bin
  [ip]=iproute2
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

# QEMU 9.0 or newer. Before 9.0, live migration of a TCG guest loses guest writes: the dirty-bitmap sync clears the
# migration bits 64 pages at a time without resetting TCG's TLB, so later stores through it are never marked dirty
# and the destination keeps stale pages (QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap coherency with
# TCG memory access", in 9.0). Debian 12 ships 7.2; its backports carry 10.x, which is what is installed there.
QEMU_MIN=9.0
QEMU_PACKAGES=(qemu-system-x86 qemu-utils)
qemu_version() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\.[0-9]*\).*/\1/p'; }
older_than() { [ "$1" != "$2" ] && [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }
qemu_have=$(qemu_version)
qemu_needed=false
if [ -z "$qemu_have" ] || older_than "$qemu_have" "$QEMU_MIN" || ! command -v qemu-img >/dev/null 2>&1 ||
  ! command -v qemu-io >/dev/null 2>&1; then
  qemu_needed=true
fi
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
backports=/etc/apt/sources.list.d/wanmig-backports.sources

if [ ${#missing[@]} -gt 0 ] || $qemu_needed; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sed '/^$/d' | sort -u)
  if [ "$(id -u)" -ne 0 ]; then
    [ ${#missing[@]} -gt 0 ] && say "missing Debian packages: ${missing[*]}"
    $qemu_needed && say "and QEMU >= $QEMU_MIN (found: ${qemu_have:-none}); on Debian 12 from bookworm-backports"
    say "install them as root with:"
    [ ${#missing[@]} -gt 0 ] && echo "  apt-get update && apt-get install -y ${missing[*]}"
    if $qemu_needed && [ "$codename" = bookworm ]; then
      echo "  echo 'deb http://deb.debian.org/debian bookworm-backports main' >/etc/apt/sources.list.d/backports.list"
      echo "  apt-get update && apt-get install -y -t bookworm-backports ${QEMU_PACKAGES[*]}"
    fi
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if $qemu_needed && [ "$codename" = bookworm ] && [ ! -f "$backports" ]; then
    # The Debian mirror this machine already uses (deb822 `URIs:` or one-line `deb` entries), else deb.debian.org.
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
      awk '/^URIs:/ { print $2 } /^deb / { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' |
      grep -v security | head -1 || true)
    say "enabling bookworm-backports (${mirror:-http://deb.debian.org/debian}) for QEMU >= $QEMU_MIN"
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "${mirror:-http://deb.debian.org/debian}" /usr/share/keyrings/debian-archive-keyring.gpg >"$backports"
  fi
  apt-get update -qq
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if $qemu_needed; then
    target=()
    [ "$codename" = bookworm ] && target=(-t bookworm-backports)
    say "installing ${QEMU_PACKAGES[*]} ${target[*]} (QEMU found: ${qemu_have:-none}, need >= $QEMU_MIN)"
    apt-get install -y -qq --no-install-recommends "${target[@]}" "${QEMU_PACKAGES[@]}" >/dev/null
    qemu_have=$(qemu_version)
    if [ -z "$qemu_have" ] || older_than "$qemu_have" "$QEMU_MIN"; then
      say "QEMU ${qemu_have:-none} is older than $QEMU_MIN: live migration of TCG guests would lose writes; install a newer QEMU"
      exit 1
    fi
  fi
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
