#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU (H100/H200 class: under 8 minutes in all).
#
#   benchmarks/gpu_check.sh                 # install into .venv-gpu if needed, then measure
#   OUT=/some/dir benchmarks/gpu_check.sh   # also writes gpu_check.json / .md and verify_*.json / .md there
#   benchmarks/gpu_check.sh --no-zoo        # options go to benchmarks/gpu_check.py (see its --help)
#
# What it installs (only when the Python it finds cannot import them already):
#   python3 -m venv $VENV (default .venv-gpu), torch==<setup.cfg's pin> (PyPI's Linux wheel is the
#   CUDA build), then the package: `pip install -e ".[test,gpu]"` when setup.cfg has a `gpu` extra
#   (onnxruntime-gpu, tensorflow[and-cuda]; with constraints.txt when present), else
#   `pip install -e ".[test]"` (which already brings onnxruntime-gpu) and TensorFlow's CUDA build in
#   place of tensorflow-cpu. torchvision (nvJPEG decode figure) is tried, never required.
# Environment:
#   CROSSMODAL_PYTHON=/path/to/python  use that interpreter as it is (no install)
#   VENV=dir                           the venv to create or reuse (default .venv-gpu)
#   WHEELS=dir                         install offline from a wheel folder (pip --no-index --find-links)
#   BUDGET=seconds                     the whole run's limit (default 470: 8 minutes less a margin)
set -euo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-470}
VENV=${VENV:-.venv-gpu}

need() {  # can this interpreter run the check?
  "$1" - <<'PY' >/dev/null 2>&1
import crossmodal, torch, onnxruntime, onnxconverter_common  # noqa: F401
assert "CUDAExecutionProvider" in onnxruntime.get_available_providers()
PY
}

PIP_OPTS=(--quiet --disable-pip-version-check)
[ -n "${WHEELS:-}" ] && PIP_OPTS+=(--no-index --find-links "$WHEELS")

if [ -n "${CROSSMODAL_PYTHON:-}" ]; then
  PY=$CROSSMODAL_PYTHON
elif need "$VENV/bin/python" 2>/dev/null; then
  PY=$VENV/bin/python
else
  echo "· installing into $VENV (torch, the package, onnxruntime-gpu, TensorFlow CUDA build)" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  PY=$VENV/bin/python
  "$PY" -m pip install "${PIP_OPTS[@]}" --upgrade "pip>=24"
  TORCH=$(sed -n 's/^ *\(torch==[0-9.]*\).*/\1/p' setup.cfg | head -1)
  "$PY" -m pip install "${PIP_OPTS[@]}" "${TORCH:-torch}"
  CONSTRAINTS=()
  [ -f constraints.txt ] && CONSTRAINTS=(-c constraints.txt)
  if grep -Eq '^gpu *=' setup.cfg; then
    "$PY" -m pip install "${PIP_OPTS[@]}" "${CONSTRAINTS[@]}" -e ".[test,gpu]"
  else
    "$PY" -m pip install "${PIP_OPTS[@]}" -e ".[test]"
    TF=$(sed -n 's/^ *tensorflow-cpu==\([0-9.]*\).*/\1/p' setup.cfg | head -1)
    if "$PY" -m pip install "${PIP_OPTS[@]}" "tensorflow[and-cuda]${TF:+==$TF}"; then
      "$PY" -m pip uninstall --quiet -y tensorflow-cpu >/dev/null 2>&1 || true
      "$PY" -m pip install "${PIP_OPTS[@]}" --force-reinstall --no-deps "tensorflow${TF:+==$TF}" || true
    else
      echo "· TensorFlow's CUDA build could not be installed: TensorFlow figures will be CPU or skipped" >&2
    fi
  fi
  "$PY" -m pip install "${PIP_OPTS[@]}" torchvision >/dev/null 2>&1 \
    || echo "· torchvision not installed: no nvJPEG decode figure" >&2
fi
need "$PY" || echo "· warning: $PY lacks the CUDA execution provider or a package; the check says what it could not run" >&2

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
LEFT=$(( BUDGET - ($(date +%s) - START) ))
echo "· $(( $(date +%s) - START )) s spent installing; ${LEFT} s left for the measurements" >&2
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
# the Python part stops taking new measurements at its budget; timeout is the backstop
exec timeout --kill-after=15 "$(( LEFT > 60 ? LEFT : 60 ))" "$PY" benchmarks/gpu_check.py \
  --budget "$(( LEFT > 90 ? LEFT - 30 : 60 ))" ${OUT:+--out "$OUT"} "$@"
