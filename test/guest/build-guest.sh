#!/usr/bin/env bash
# Builds the small real guest that QEMU tests boot: the Debian kernel from /boot, a busybox initramfs that
# loads the virtio modules, mounts /dev/vda and runs a workload (a hot set in RAM, gentle synced disk writes, a
# counter served on TCP port 7777 once per connection and streamed every 50 ms on port 7778), and a 2 GiB ext4 disk
# holding a debootstrapped Debian base system. The guest's address is 10.0.2.15/24 via 10.0.2.2 (QEMU's user-mode
# network) unless the kernel command line says `wanmig.ip=<addr>/<len>` and `wanmig.gw=<addr>` (a tap on a bridge).
#
# Output (in ${WANMIG_GUEST_CACHE:-/var/cache/wanmig/guest}, outside the repository):
#   vmlinuz  initramfs.cpio.gz  disk.img  kernel-version  .stamp
# Idempotent: the outputs are rebuilt only when this script, the kernel or busybox changed (the stamp holds their
# hashes). The debootstrapped base (rootfs-<suite>-minbase/) is kept separately and made only once: editing this
# script does not download Debian again. Prints the cache directory on stdout when done.
#
# Environment: WANMIG_GUEST_CACHE (cache dir), WANMIG_DEBIAN_MIRROR (default: the first bookworm mirror in
# /etc/apt/sources.list*), WANMIG_GUEST_KERNEL (a version in /lib/modules; default: the newest /boot/vmlinuz-*).
set -euo pipefail

CACHE=${WANMIG_GUEST_CACHE:-/var/cache/wanmig/guest}
SUITE=bookworm
VARIANT=minbase
DISK_SIZE=2G
CHURN_MIB=16
ROOTFS=$CACHE/rootfs-$SUITE-$VARIANT
BUSYBOX=/bin/busybox
# insmod order (dependencies first). virtio before virtio_ring fails silently: no /dev/vda (GROUND.md).
MODULES=(
  virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk
  failover net_failover virtio_net
  crc16 mbcache jbd2 crc32c_generic libcrc32c ext4
)

say() { printf '[build-guest] %s\n' "$*" >&2; }
die() {
  printf '[build-guest] error: %s\n' "$*" >&2
  exit 1
}

pick_kernel() {
  if [ -n "${WANMIG_GUEST_KERNEL:-}" ]; then
    echo "$WANMIG_GUEST_KERNEL"
    return
  fi
  local newest
  newest=$(find /boot -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' 2>/dev/null | sed 's/^vmlinuz-//' | sort -V | tail -1)
  [ -n "$newest" ] || die "no kernel in /boot (apt-get install linux-image-amd64, or run deploy/bootstrap.sh)"
  echo "$newest"
}

KVER=$(pick_kernel)
[ -f "/boot/vmlinuz-$KVER" ] || die "kernel /boot/vmlinuz-$KVER not found"
MODDIR=/lib/modules/$KVER
[ -f "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep not found (modules of kernel $KVER are not installed)"
[ -x "$BUSYBOX" ] || die "$BUSYBOX not found (apt-get install busybox-static)"
file -b "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || ldd "$BUSYBOX" 2>&1 | grep -q 'not a dynamic' ||
  die "$BUSYBOX is not statically linked (apt-get install busybox-static)"

STAMP_VALUE=$(
  {
    sha256sum "$0" | cut -d' ' -f1
    echo "$KVER"
    sha256sum "/boot/vmlinuz-$KVER" "$BUSYBOX" | cut -d' ' -f1
  } | sha256sum | cut -d' ' -f1
)

outputs_current() {
  [ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initramfs.cpio.gz" ] && [ -f "$CACHE/disk.img" ] &&
    [ -f "$CACHE/.stamp" ] && [ "$(cat "$CACHE/.stamp")" = "$STAMP_VALUE" ]
}

if outputs_current; then
  echo "$CACHE"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || die "building the guest needs root (debootstrap, device nodes); cache $CACHE is missing or stale"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
# Another build may have finished while this one waited for the lock.
if outputs_current; then
  echo "$CACHE"
  exit 0
fi
rm -f "$CACHE/.stamp"

# ---------------------------------------------------------------------------------------------------------------
# Debian base system (once).

debian_mirror() {
  if [ -n "${WANMIG_DEBIAN_MIRROR:-}" ]; then
    echo "$WANMIG_DEBIAN_MIRROR"
    return
  fi
  local files=() f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  # One-line format: "deb [opts] URI SUITE COMPONENTS..."; deb822: paragraphs with "URIs:" and "Suites:".
  awk -v suite="$SUITE" '
    FNR == 1 { uris = ""; suites = ""; types = "" }
    /^[[:space:]]*#/ { next }
    /^deb[[:space:]]/ {
      n = split($0, w, /[[:space:]]+/); i = 2
      if (w[i] ~ /^\[/) { while (i <= n && w[i] !~ /\]$/) i++; i++ }
      if (w[i + 1] == suite) { print w[i]; exit }
      next
    }
    /^Types:/ { types = $0 }
    /^URIs:/ { uris = $2 }
    /^Suites:/ { suites = " " $0 " " }
    /^[[:space:]]*$/ { check(); uris = ""; suites = ""; types = "" }
    END { check() }
    function check() {
      if (done || uris == "" || types !~ /[[:space:]]deb([[:space:]]|$)/) return
      if (index(suites, " " suite " ") > 0) { print uris; done = 1; exit }
    }
  ' "${files[@]}" | head -1
}

if [ ! -f "$ROOTFS/.complete" ]; then
  MIRROR=$(debian_mirror)
  [ -n "$MIRROR" ] || die "no Debian $SUITE mirror in /etc/apt/sources.list*; set WANMIG_DEBIAN_MIRROR"
  wget -q -T 20 -t 2 -O /dev/null "$MIRROR/dists/$SUITE/Release" ||
    die "debootstrap cannot reach the Debian mirror $MIRROR ($MIRROR/dists/$SUITE/Release did not download)"
  say "debootstrap --variant=$VARIANT $SUITE from $MIRROR (once; log: $CACHE/debootstrap.log)"
  partial=$ROOTFS.partial
  rm -rf "$partial"
  started=$SECONDS
  if ! debootstrap --variant="$VARIANT" "$SUITE" "$partial" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1; then
    tail -5 "$CACHE/debootstrap.log" >&2 || true
    die "debootstrap of $SUITE from $MIRROR failed (mirror unreachable or incomplete?); see $CACHE/debootstrap.log"
  fi
  rm -rf "$partial/var/cache/apt/archives/"*.deb "$partial/var/lib/apt/lists/"* 2>/dev/null || true
  touch "$partial/.complete"
  rm -rf "$ROOTFS"
  mv "$partial" "$ROOTFS"
  say "debootstrap done in $((SECONDS - started)) s ($(du -sh "$ROOTFS" | cut -f1))"
fi

# ---------------------------------------------------------------------------------------------------------------
# Kernel.

say "kernel $KVER"
install -m 0644 "/boot/vmlinuz-$KVER" "$CACHE/vmlinuz.tmp"
mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
echo "$KVER" >"$CACHE/kernel-version"

# ---------------------------------------------------------------------------------------------------------------
# Initramfs.

stage=$(mktemp -d "$CACHE/initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,mnt,tmp,etc/wanmig,lib/modules}
cp "$BUSYBOX" "$stage/bin/busybox"
for applet in $("$BUSYBOX" --list-full); do
  [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# Module file (relative to $MODDIR) of a module name; modules.dep spells names with '-' or '_'.
module_path() {
  local name=$1 alt=${1//_/-}
  awk -F: -v a="/$name.ko" -v b="/$alt.ko" '
    { p = $1; sub(/\.(xz|zst|gz)$/, "", p) }
    substr(p, length(p) - length(a) + 1) == a || substr(p, length(p) - length(b) + 1) == b { print $1; exit }
  ' "$MODDIR/modules.dep"
}
loaded=" "
: >"$stage/etc/wanmig/modules"
for m in "${MODULES[@]}"; do
  rel=$(module_path "$m")
  if [ -z "$rel" ]; then
    grep -qE "/(${m}|${m//_/-})\.ko\$" "$MODDIR/modules.builtin" 2>/dev/null ||
      die "module $m is neither a module nor built into kernel $KVER"
    continue
  fi
  # Every dependency must come earlier in MODULES (insmod does not resolve them).
  for dep in $(grep -E "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2-); do
    d=$(basename "$dep")
    d=${d%%.ko*}
    d=${d//-/_}
    case "$loaded" in *" $d "*) ;; *) die "module $m needs $d, which is not loaded before it" ;; esac
  done
  case "$rel" in
    *.ko.xz) xz -dc "$MODDIR/$rel" >"$stage/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -qdc "$MODDIR/$rel" >"$stage/lib/modules/$m.ko" ;;
    *.ko.gz) gzip -dc "$MODDIR/$rel" >"$stage/lib/modules/$m.ko" ;;
    *) cp "$MODDIR/$rel" "$stage/lib/modules/$m.ko" ;;
  esac
  echo "$m" >>"$stage/etc/wanmig/modules"
  loaded="$loaded${m//-/_} "
done

cat >"$stage/init" <<'EOF'
#!/bin/sh
# wanmig test guest, PID 1: mount, load virtio + ext4, network, disk; then busybox init runs the workload.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
fail() {
  echo "wanmig-guest: FAILED $*" >/dev/console
  sync
  poweroff -f
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/wanmig
for m in $(cat /etc/wanmig/modules); do
  insmod "/lib/modules/$m.ko" || fail "insmod $m"
done

hot_mib=32
disk_kib=256
ip_cidr=10.0.2.15/24
gateway=10.0.2.2
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    wanmig.hot_mib=*) hot_mib=${arg#*=} ;;
    wanmig.disk_kib=*) disk_kib=${arg#*=} ;;
    wanmig.ip=*) ip_cidr=${arg#*=} ;;
    wanmig.gw=*) gateway=${arg#*=} ;;
  esac
done
echo "$hot_mib" >/run/wanmig/hot_mib
echo "$disk_kib" >/run/wanmig/disk_kib
echo "$ip_cidr" >/run/wanmig/ip

i=0
while [ ! -b /dev/vda ]; do
  i=$((i + 1))
  [ $i -gt 200 ] && fail "no /dev/vda after 20 s"
  usleep 100000
done
mount -t ext4 -o rw,noatime /dev/vda /mnt || fail "cannot mount /dev/vda"
[ -f /mnt/wanmig/churn.bin ] || fail "/dev/vda has no /wanmig/churn.bin"

i=0
while [ ! -e /sys/class/net/eth0 ]; do
  i=$((i + 1))
  [ $i -gt 200 ] && fail "no eth0 after 20 s"
  usleep 100000
done
ip link set lo up
ip link set eth0 up || fail "eth0 does not come up"
ip addr add "$ip_cidr" dev eth0 || fail "cannot set $ip_cidr on eth0"
ip route add default via "$gateway" || fail "cannot route via $gateway"

echo 'COUNTER 0' >/run/counter
exec /bin/busybox init
EOF

cat >"$stage/etc/inittab" <<'EOF'
::respawn:/etc/wanmig/counter.sh
::respawn:/etc/wanmig/hot.sh
::respawn:/etc/wanmig/disk.sh
::respawn:/bin/busybox nc -ll -p 7777 -e /bin/busybox cat /run/counter
::respawn:/bin/busybox nc -ll -p 7778 -e /etc/wanmig/stream.sh
::once:/etc/wanmig/ready.sh
::shutdown:/bin/sync
EOF

# The counter: +1 every 100 ms, in memory only (it survives a migration only if the RAM does).
cat >"$stage/etc/wanmig/counter.sh" <<'EOF'
#!/bin/sh
n=$(cut -d' ' -f2 /run/counter)
while :; do
  n=$((n + 1))
  echo "COUNTER $n" >/run/counter.tmp
  mv /run/counter.tmp /run/counter
  usleep 100000
done
EOF

# The stream (port 7778): one long-lived connection per client, the counter line every 50 ms until it goes away.
cat >"$stage/etc/wanmig/stream.sh" <<'EOF'
#!/bin/sh
while cat /run/counter; do
  usleep 50000
done
EOF

# The hot set: hot_mib MiB of random data in tmpfs; one MiB rewritten every 200 ms (5 MiB/s of dirtied pages).
cat >"$stage/etc/wanmig/hot.sh" <<'EOF'
#!/bin/sh
mib=$(cat /run/wanmig/hot_mib)
[ "$mib" -gt 0 ] || { touch /run/wanmig/hot.ready; exec sleep 2147483647; }
dd if=/dev/urandom of=/run/hot.bin bs=1M count="$mib" 2>/dev/null
touch /run/wanmig/hot.ready
i=0
while :; do
  dd if=/dev/urandom of=/run/hot.bin bs=1M count=1 seek=$((i % mib)) conv=notrunc 2>/dev/null
  i=$((i + 1))
  usleep 200000
done
EOF

# The disk: every second the counter goes to /wanmig/counter (fixed 32 bytes, overwritten in place) and
# disk_kib KiB of random data to the next 64 KiB blocks of /wanmig/churn.bin, both fsync'ed to the image.
cat >"$stage/etc/wanmig/disk.sh" <<'EOF'
#!/bin/sh
kib=$(cat /run/wanmig/disk_kib)
blocks=$(($(stat -c %s /mnt/wanmig/churn.bin) / 65536))
per=$(((kib + 63) / 64))
[ "$per" -le "$blocks" ] || per=$blocks
pos=0
while :; do
  printf '%-31s\n' "$(cat /run/counter)" | dd of=/mnt/wanmig/counter bs=32 count=1 conv=notrunc,fsync 2>/dev/null
  if [ "$per" -gt 0 ]; then
    [ $((pos + per)) -le "$blocks" ] || pos=0
    dd if=/dev/urandom of=/mnt/wanmig/churn.bin bs=64k count="$per" seek="$pos" conv=notrunc,fsync 2>/dev/null
    pos=$((pos + per))
  fi
  sleep 1
done
EOF

# The marker tests wait for: printed once the service listens, the counter runs and the hot set is filled.
cat >"$stage/etc/wanmig/ready.sh" <<'EOF'
#!/bin/sh
i=0
until [ -f /run/wanmig/hot.ready ] && netstat -ltn 2>/dev/null | grep -q ':7777 ' &&
  netstat -ltn 2>/dev/null | grep -q ':7778 '; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then
    echo "wanmig-guest: FAILED workload or service not up after 60 s" >/dev/console
    exit 1
  fi
  usleep 100000
done
echo "wanmig-guest: ready ip=$(cat /run/wanmig/ip) port=7777 stream=7778 hot_mib=$(cat /run/wanmig/hot_mib)" \
  "disk_kib=$(cat /run/wanmig/disk_kib) kernel=$(uname -r)" >/dev/console
EOF
chmod 0755 "$stage/init" "$stage"/etc/wanmig/*.sh

(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) | gzip -6 >"$CACHE/initramfs.cpio.gz.tmp"
mv "$CACHE/initramfs.cpio.gz.tmp" "$CACHE/initramfs.cpio.gz"
say "initramfs $(du -h "$CACHE/initramfs.cpio.gz" | cut -f1) (${#MODULES[@]} modules)"

# ---------------------------------------------------------------------------------------------------------------
# Disk: the Debian base plus the workload's directory, as a sparse raw ext4 image.

rm -rf "$ROOTFS/wanmig"
mkdir -p "$ROOTFS/wanmig"
cat >"$ROOTFS/wanmig/README" <<'EOF'
wanmig test guest workload (see test/guest/build-guest.sh in the wanmig repository):
  counter    the guest's in-memory counter, fixed 32 bytes, rewritten in place and fsync'ed every second
  churn.bin  random data; disk_kib KiB of it are rewritten and fsync'ed every second
EOF
printf '%-31s\n' 'COUNTER 0' >"$ROOTFS/wanmig/counter"
head -c $((CHURN_MIB * 1024 * 1024)) /dev/urandom >"$ROOTFS/wanmig/churn.bin"
rm -f "$CACHE/disk.img.tmp"
mke2fs -q -F -t ext4 -L wanmig -d "$ROOTFS" "$CACHE/disk.img.tmp" "$DISK_SIZE" >/dev/null
mv "$CACHE/disk.img.tmp" "$CACHE/disk.img"
say "disk.img $DISK_SIZE ($(du -h "$CACHE/disk.img" | cut -f1) allocated)"

echo "$STAMP_VALUE" >"$CACHE/.stamp"
echo "$CACHE"
