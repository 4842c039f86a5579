#!/usr/bin/env bash
# Prepare an ARM64 "device" on this machine for tests/test_arm64_device.py (docs/arm64-device.md).
#
# As root: a Debian bookworm arm64 root under /opt/edgeprune-arm64, run through qemu-user-static
# and binfmt_misc (nothing to emulate on an aarch64 host), for sshd's `ChrootDirectory`:
#   - `debootstrap --foreign --variant=minbase --include=python3` (first stage only: downloads the
#     packages and unpacks the essential ones), then `dpkg-deb -x` of every downloaded package —
#     no second stage, no maintainer scripts, so nothing arm64 runs while building except the final
#     compileall and import check;
#   - aarch64 wheels of numpy, onnxruntime and psutil installed from this host with
#     `pip install --target <root>/usr/local/lib/python3.X/dist-packages --platform ...`, where the
#     root's own /usr/bin/python3 finds them without PYTHONPATH (a device whose Python is not ours);
#   - an unprivileged user `edgeprune-arm` (host account: key-only, home /home/edgeprune-arm inside
#     the root), /proc mounted in the root (only /proc: with /sys mounted onnxruntime crashes under
#     qemu), /tmp world-writable, the device nodes debootstrap creates.
# The tests start their own sshd (free port, `Match User edgeprune-arm` -> `ChrootDirectory`); the
# loopback test device of scripts/prepare_test_device.sh (user edgeprune-dev) is not touched.
#
# Idempotent: a stamp in the root records what was built; a second run with the same pins only
# re-does what a reboot undoes (binfmt_misc registration, the /proc mount) and the host user.
# Prints one `ready:` line, or exits 1 with a one-line reason (`error: ...`) when this machine
# cannot do it (not root, no binfmt_misc, no mirror, no aarch64 wheel).
#
#   bash scripts/prepare_arm64_device.sh            # build or check (~1 minute the first time)
#   bash scripts/prepare_arm64_device.sh --remove   # unmount /proc, delete the root and the user
#
#   EDGEPRUNE_ARM64_DIR      the root (default /opt/edgeprune-arm64; every path component must be
#                            root-owned and not group/other-writable, as ChrootDirectory requires)
#   EDGEPRUNE_ARM64_MIRROR   Debian mirror (default http://deb.debian.org/debian)
set -euo pipefail

root="${EDGEPRUNE_ARM64_DIR:-/opt/edgeprune-arm64}"
mirror="${EDGEPRUNE_ARM64_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
user=edgeprune-arm
home="/home/$user"
# Same pins as the loopback device (scripts/prepare_test_device.sh), which match the host venv:
# aarch64 manylinux wheels of all three exist for CPython 3.11 (bookworm's python3).
pins=(numpy==2.4.6 onnxruntime==1.32.0 psutil==7.2.2)
stamp="$root/.edgeprune-arm64-stamp"
binfmt=/proc/sys/fs/binfmt_misc

log() { printf '[prepare_arm64_device] %s\n' "$*" >&2; }
die() { printf '[prepare_arm64_device] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (debootstrap, binfmt_misc, mount, useradd): run it with sudo"
case "${1:-}" in
  ""|--remove) ;;
  *) die "unknown option '$1' (use --remove)" ;;
esac

# One build at a time (two test sessions may start this together).
exec 9>/run/lock/edgeprune-arm64.lock
flock 9

unmount_proc() {  # $1: a root; never delete a tree with /proc still mounted in it
  if mountpoint -q "$1/proc"; then umount "$1/proc" || umount -l "$1/proc"; fi
}

remove_tree() {
  [ -d "$1" ] || return 0
  unmount_proc "$1"
  rm -rf --one-file-system "$1"
}

ours() {  # $1: a path this script may replace or delete: absent, or a root it built (stamped)
  [ ! -e "$1" ] || [ -f "$1/.edgeprune-arm64-stamp" ]
}

a_build() {  # $1: a build dir of this script: empty, or holding a debootstrap tree
  [ -d "$1" ] && { [ -z "$(ls -A "$1")" ] || [ -d "$1/debootstrap" ] || [ -d "$1/var/lib/dpkg" ]; }
}

# EDGEPRUNE_ARM64_DIR may point anywhere, and this runs as root: never replace or delete a
# directory this script did not build
ours "$root" || die "$root exists and was not built by this script (no .edgeprune-arm64-stamp); \
choose another EDGEPRUNE_ARM64_DIR or remove it yourself"

if [ "${1:-}" = --remove ]; then
  if [ ! -e "$root" ]; then
    log "nothing to remove: $root does not exist (user $user left as it is)"
    exit 0
  fi
  remove_tree "$root"
  # the build's temp dir (left by a killed build) has a debootstrap tree, nothing of a user's
  if a_build "$root.build"; then remove_tree "$root.build"; fi
  if id -u "$user" >/dev/null 2>&1; then userdel "$user"; fi
  log "removed $root and user $user (qemu-user-static, debootstrap and binfmt_misc stay)"
  exit 0
fi

# --- host tools ---------------------------------------------------------------------------------
host_arch="$(uname -m)"
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ "$host_arch" != aarch64 ] && [ ! -e /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
  need+=(qemu-user-static)
fi
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq || die "apt-get update failed: no Debian mirror reachable"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" \
    >/dev/null || die "apt-get install ${need[*]} failed"
fi
mkdir -p /run/sshd

# --- binfmt_misc: run aarch64 ELF files through qemu (also inside the chroot) ------------------
qemu_interpreter=""
if [ "$host_arch" != aarch64 ]; then
  if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
      || die "binfmt_misc is not available (cannot mount $binfmt): the kernel lacks it or this" \
             "container may not mount it"
  fi
  [ "$(cat "$binfmt/status")" = enabled ] || die "binfmt_misc is disabled ($binfmt/status)"
  if [ ! -e "$binfmt/qemu-aarch64" ]; then
    # binfmt-support/systemd-binfmt would do this at boot; neither runs here, so register by hand
    # with the line qemu-user-static ships (flag F: qemu is opened now, so it works in a chroot).
    tr -d '\n' < /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register" 2>/dev/null \
      || die "cannot register qemu-aarch64 with binfmt_misc ($binfmt/register not writable)"
  fi
  grep -qx enabled "$binfmt/qemu-aarch64" \
    || die "the qemu-aarch64 binfmt_misc entry is disabled: echo 1 > $binfmt/qemu-aarch64"
  qemu_interpreter="$(sed -n 's/^interpreter //p' "$binfmt/qemu-aarch64")"
  # Without flag F the kernel looks the interpreter up inside the chroot: put it there.
  grep -q '^flags:.*F' "$binfmt/qemu-aarch64" || qemu_interpreter="copy:$qemu_interpreter"
fi

place_interpreter() {  # $1: a root
  case "$qemu_interpreter" in
    copy:*) local path="${qemu_interpreter#copy:}"
            mkdir -p "$1$(dirname "$path")"
            cp -L "$path" "$1$path" ;;
  esac
}

# --- the root ------------------------------------------------------------------------------------
key="$suite arm64 minbase+python3 ${pins[*]}"

build() {
  local new="$root.build" t0=$SECONDS
  if [ -e "$new" ] && ! a_build "$new"; then
    die "$new exists and is not a build of this script; remove it or choose another EDGEPRUNE_ARM64_DIR"
  fi
  remove_tree "$new"
  trap 'remove_tree "$root.build"' EXIT  # a failed build leaves nothing behind
  log "debootstrap --foreign $suite arm64 into $new (from $mirror)"
  local dlog
  dlog="$(mktemp /tmp/edgeprune-arm64-debootstrap.XXXXXX.log)"
  debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 "$suite" "$new" \
    "$mirror" >"$dlog" 2>&1 \
    || { tail -n 5 "$dlog" >&2
         die "debootstrap could not build the $suite arm64 root from $mirror (log: $dlog)"; }
  rm -f "$dlog"
  log "unpacking $(ls "$new"/var/cache/apt/archives/*.deb | wc -l) packages with dpkg-deb -x"
  for deb in "$new"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$new"
  done
  local glibc pyver
  glibc="$(dpkg-deb -f "$(ls "$new"/var/cache/apt/archives/libc6_*.deb)" Version)"  # 2.36-9+...
  glibc="${glibc#2.}"
  glibc="${glibc%%[!0-9]*}"
  rm -rf "$new"/var/cache/apt/archives/*.deb "$new/debootstrap"
  pyver="$(readlink "$new/usr/bin/python3")"  # python3.11
  pyver="${pyver#python}"
  [ -x "$new/usr/bin/python$pyver" ] || die "no python3 in the $suite arm64 root"
  # pip before 23.3 does not widen a manylinux_2_N platform to older ones: list every one.
  local platforms=(--platform manylinux2014_aarch64)
  for minor in $(seq 17 "$glibc"); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
  local site="$new/usr/local/lib/python$pyver/dist-packages"
  log "installing aarch64 wheels ${pins[*]} for CPython $pyver into $site"
  /usr/bin/python3 -m pip install --disable-pip-version-check --root-user-action=ignore -q --no-compile --only-binary=:all: \
    --target "$site" "${platforms[@]}" --implementation cp --python-version "$pyver" \
    --abi "cp${pyver/./}" "${pins[@]}" \
    || die "no aarch64 wheels of ${pins[*]} for CPython $pyver (pip install --platform failed)"

  # The unprivileged user cannot write __pycache__ under /usr: compile once, with the root's own
  # (emulated) Python, or every start re-compiles the stdlib and numpy under qemu.
  place_interpreter "$new"
  mount -t proc proc "$new/proc"
  chroot "$new" "/usr/bin/python$pyver" -m compileall -q -j 0 "/usr/lib/python$pyver" \
    "/usr/local/lib/python$pyver/dist-packages" >/dev/null 2>&1 \
    || log "compileall reported errors (test files with bad syntax, harmless)"
  umount "$new/proc"

  chown root:root "$new"
  chmod 755 "$new"
  chmod 1777 "$new/tmp"
  echo "$key" > "$new/.edgeprune-arm64-stamp"
  local old="$root.old.$$"
  if [ -e "$root" ]; then unmount_proc "$root"; mv "$root" "$old"; fi
  mv "$new" "$root"
  trap - EXIT
  remove_tree "$old"
  log "built $root in $((SECONDS - t0)) s ($(du -sh --one-file-system "$root" | cut -f1))"
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -x "$root/usr/bin/python3" ]; then
  log "arm64 root up to date ($root)"
  fresh=0
else
  build
  fresh=1
fi
place_interpreter "$root"

# --- the device user: a host account (sshd authenticates it) mirrored inside the root ----------
if ! id -u "$user" >/dev/null 2>&1; then
  useradd -M -d "$home" -s /bin/bash -c "edgeprune arm64 test device" "$user"
fi
usermod -p '*' "$user"  # locked for passwords, open to keys
uid="$(id -u "$user")"
gid="$(id -g "$user")"
write_if_changed() {  # $1: file, $2: content (a running device may be reading it)
  [ -f "$1" ] && [ "$(cat "$1")" = "$2" ] && return 0
  printf '%s\n' "$2" > "$1.new" && mv "$1.new" "$1"
}
write_if_changed "$root/etc/passwd" "root:x:0:0:root:/root:/bin/bash
$user:x:$uid:$gid:edgeprune arm64 test device:$home:/bin/bash"
write_if_changed "$root/etc/group" "root:x:0:
$user:x:$gid:"
mkdir -p "$root$home"
chown "$uid:$gid" "$root$home"
chmod 755 "$root$home"

# --- /proc only ----------------------------------------------------------------------------------
mountpoint -q "$root/proc" || mount -t proc proc "$root/proc" \
  || die "cannot mount /proc in $root"

check() {
  chroot --userspec="$uid:$gid" "$root" /usr/bin/python3 -c "$1" 2>/dev/null
}
if [ "$fresh" = 1 ]; then
  versions="$(check 'import platform, numpy, onnxruntime, psutil
print(platform.machine(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__,
      "psutil", psutil.__version__)')" \
    || die "the arm64 root's python3 cannot import numpy, onnxruntime and psutil"
else
  versions="$(check 'import platform; print(platform.machine())')" \
    || die "the arm64 root's python3 does not run (binfmt_misc / qemu-aarch64?)"
fi
log "ready: $root ($versions) for user $user, python /usr/bin/python3"
