#!/usr/bin/env bash
# Prepare this machine to act as an SSH test "device" for edgeprune's tests and benchmarks.
#
# As root: installs OpenSSH server if missing, and builds the device-side Python package directory
# (numpy, onnxruntime, ai-edge-litert for .tflite, psutil) for the *system* interpreter
# /usr/bin/python3 with `pip install --target DIR` — the device's Python is not ours, exactly like
# a real board. tests/_sshd.py gives the unprivileged device user PYTHONPATH=DIR.
#
# Idempotent: a stamp file records what was installed; a second run with the same pins only
# checks that the packages import (about a second). A changed pin list rebuilds the directory
# beside the old one and swaps it in, so SSH tests running meanwhile keep a complete directory.
#
#   EDGEPRUNE_DEVICE_PYDIR   target directory (default /opt/edgeprune-device/python)
set -euo pipefail

pydir="${EDGEPRUNE_DEVICE_PYDIR:-/opt/edgeprune-device/python}"
device_python="${EDGEPRUNE_DEVICE_PYTHON:-/usr/bin/python3}"
# Pins for the device side; numpy 2, onnxruntime and ai-edge-litert wheels exist for CPython 3.11
# on x86_64/aarch64. ai-edge-litert 2.3.0 needs numpy >= 1.23.2 (numpy 2 fine); tflite-runtime
# would need numpy < 2, so it is not installed here (the runner takes whichever is present).
pins=(numpy==2.4.6 onnxruntime==1.32.0 ai-edge-litert==2.3.0 psutil==7.2.2)

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
  PYTHONPATH="$1" "$device_python" -c \
    'import numpy, onnxruntime, psutil; from ai_edge_litert.interpreter import Interpreter' \
    >/dev/null 2>&1
}
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && check "$pydir"; then
  log "device python packages up to date ($pydir)"
else
  log "installing ${pins[*]} into $pydir for $device_python"
  staging="$pydir.new.$$"
  rm -rf "$staging"
  mkdir -p "$staging"
  # --target never touches the system site-packages, so PEP 668's guard does not apply.
  "$device_python" -m pip install --disable-pip-version-check -q --no-compile \
    --only-binary=:all: --target "$staging" "${pins[@]}"
  check "$staging" || { log "packages installed but do not import with $device_python";
                        rm -rf "$staging"; exit 1; }
  echo "$key" > "$staging/.edgeprune-device-stamp"
  old="$pydir.old.$$"
  [ -e "$pydir" ] && mv "$pydir" "$old"
  mv "$staging" "$pydir"
  rm -rf "$old"
fi
# The device user is unprivileged: make the directory world-readable.
chmod -R a+rX "$(dirname "$pydir")"
log "ready: PYTHONPATH=$pydir $device_python"
