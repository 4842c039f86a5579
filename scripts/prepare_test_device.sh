#!/usr/bin/env bash
# Prepare this machine to act as an SSH test "device" for edgeprune's tests and benchmarks.
#
# As root: installs OpenSSH server if missing, and builds the device-side Python package directory
# (numpy, onnxruntime, psutil) for the *system* interpreter /usr/bin/python3 with
# `pip install --target DIR` — the device's Python is not ours, exactly like a real board.
# tests/_sshd.py gives the unprivileged device user PYTHONPATH=DIR.
#
# Idempotent: a stamp file records what was installed; a second run with the same pins only
# checks that the packages import (well under a second).
#
#   EDGEPRUNE_DEVICE_PYDIR   target directory (default /opt/edgeprune-device/python)
set -euo pipefail

pydir="${EDGEPRUNE_DEVICE_PYDIR:-/opt/edgeprune-device/python}"
device_python="${EDGEPRUNE_DEVICE_PYTHON:-/usr/bin/python3}"
# Pins for the device side; numpy 2 and onnxruntime wheels exist for CPython 3.11 on x86_64/aarch64.
pins=(numpy==2.4.6 onnxruntime==1.32.0 psutil==7.2.2)

log() { printf '[prepare_test_device] %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  log "not root: skipping (the tests skip the SSH cases unless run as root)"
  exit 0
fi

if [ ! -x /usr/sbin/sshd ]; then
  log "installing openssh-server"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
fi
mkdir -p /run/sshd

if [ ! -x "$device_python" ]; then
  log "installing python3 for the device side"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-pip >/dev/null
fi
if ! "$device_python" -m pip --version >/dev/null 2>&1; then
  log "installing python3-pip for the device side"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
fi

key="$("$device_python" -c 'import sys, platform; print(sys.version.split()[0], platform.machine())') ${pins[*]}"
stamp="$pydir/.edgeprune-device-stamp"
check() {
  PYTHONPATH="$pydir" "$device_python" -c 'import numpy, onnxruntime, psutil' >/dev/null 2>&1
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && check; then
  log "device python packages up to date ($pydir)"
else
  log "installing ${pins[*]} into $pydir for $device_python"
  rm -rf "$pydir"
  mkdir -p "$pydir"
  # --target never touches the system site-packages, so PEP 668's guard does not apply.
  "$device_python" -m pip install --disable-pip-version-check -q --no-compile \
    --only-binary=:all: --target "$pydir" "${pins[@]}"
  check || { log "packages installed but do not import with $device_python"; exit 1; }
  echo "$key" > "$stamp"
fi
# The device user is unprivileged: make the directory world-readable.
chmod -R a+rX "$(dirname "$pydir")"
log "ready: PYTHONPATH=$pydir $device_python"
