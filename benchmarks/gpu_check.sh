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
#   CROSSMODAL_PYTHON=/path/to/python  use that interpreter as it is (no venv), the repo on PYTHONPATH
#   WHEELS=dir                         extra wheels (e.g. onnxruntime-gpu, onnxconverter-common, keras):
#                                      with CROSSMODAL_PYTHON installed --no-index into a private folder
#                                      put on PYTHONPATH; for the venv, pip's offline source
#   VENV=dir                           the venv to create or reuse (default .venv-gpu)
#   BUDGET=seconds                     the whole run's limit (default 470: 8 minutes less a margin)
# Offline, when the install fails (no network), it carries on with `python3` and the repo on
# PYTHONPATH: whatever that Python lacks (onnxruntime-gpu, TensorFlow) is reported as skipped, with
# the reason, and the rest is measured.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
BUDGET=${BUDGET:-470}
VENV=${VENV:-.venv-gpu}
REPO=$PWD

need() {  # can this interpreter run the whole check?
  PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$1" - <<'PY' >/dev/null 2>&1
import crossmodal.convert.pipeline, torch, onnxruntime, onnxconverter_common, keras  # noqa: F401
assert "CUDAExecutionProvider" in onnxruntime.get_available_providers()
PY
}

install_venv() (  # a subshell; each step's failure fails the install (set -e does not hold inside `if`)
  PIP_OPTS=(--quiet --disable-pip-version-check)
  [ -n "${WHEELS:-}" ] && PIP_OPTS+=(--no-index --find-links "$WHEELS")
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" || exit 1
  P=$VENV/bin/python
  "$P" -m pip install "${PIP_OPTS[@]}" --upgrade "pip>=24" || exit 1
  TORCH=$(sed -n 's/^ *\(torch==[0-9.]*\).*/\1/p' setup.cfg | head -1)
  "$P" -m pip install "${PIP_OPTS[@]}" "${TORCH:-torch}" || exit 1
  CONSTRAINTS=()
  [ -f constraints.txt ] && CONSTRAINTS=(-c constraints.txt)
  if grep -Eq '^gpu *=' setup.cfg; then
    "$P" -m pip install "${PIP_OPTS[@]}" "${CONSTRAINTS[@]}" -e ".[test,gpu]" || exit 1
  else
    "$P" -m pip install "${PIP_OPTS[@]}" -e ".[test]" || exit 1
    TF=$(sed -n 's/^ *tensorflow-cpu==\([0-9.]*\).*/\1/p' setup.cfg | head -1)
    if "$P" -m pip install "${PIP_OPTS[@]}" "tensorflow[and-cuda]${TF:+==$TF}"; then
      "$P" -m pip uninstall --quiet -y tensorflow-cpu >/dev/null 2>&1 || true
      "$P" -m pip install "${PIP_OPTS[@]}" --force-reinstall --no-deps "tensorflow${TF:+==$TF}" || true
    else
      echo "· TensorFlow's CUDA build could not be installed: TensorFlow figures will be CPU or skipped" >&2
    fi
  fi
  "$P" -m pip install "${PIP_OPTS[@]}" torchvision >/dev/null 2>&1 \
    || echo "· torchvision not installed: no nvJPEG decode figure" >&2
)

if [ -n "${CROSSMODAL_PYTHON:-}" ]; then
  PY=$CROSSMODAL_PYTHON
  export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  if [ -n "${WHEELS:-}" ]; then
    SITE=${SITE:-/tmp/crossmodal-site}
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$WHEELS"/*.whl && export PYTHONPATH="$SITE:$PYTHONPATH"
  fi
elif need "$VENV/bin/python"; then
  PY=$VENV/bin/python
else
  echo "· installing into $VENV (torch, the package, onnxruntime-gpu, TensorFlow CUDA build)" >&2
  if install_venv; then
    PY=$VENV/bin/python
  else
    echo "· the install failed (offline?): carrying on with python3 and the repo on PYTHONPATH" >&2
    PY=python3
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi
need "$PY" || echo "· note: $PY lacks onnxruntime's CUDA provider, onnxconverter-common or Keras; the check says what it could not run" >&2

nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>/dev/null || true
LEFT=$(( BUDGET - ($(date +%s) - START) ))
echo "· $(( $(date +%s) - START )) s spent installing; ${LEFT} s left for the measurements" >&2
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONUNBUFFERED=1
# the Python part stops taking new measurements at its budget; timeout is the backstop
exec timeout --kill-after=15 "$(( LEFT > 60 ? LEFT : 60 ))" "$PY" benchmarks/gpu_check.py \
  --budget "$(( LEFT > 90 ? LEFT - 30 : 60 ))" ${OUT:+--out "$OUT"} "$@"
