#!/usr/bin/env bash
# The GPU check, for the first machine with an NVIDIA GPU at hand (issues 28 and 15): what the
# machine is, the CUDA smoke tests (pytest -m gpu: bf16, fp16 + GradScaler, torch.compile,
# channels_last, the teacher's outputs on the device, DDP over nccl with one rank, a language
# model in bf16), then the timings of bench/gpu_check.py (precision, compilation and layout against
# float32; 224-px JPEGs with a live and a cached teacher). About 5 minutes on one H100; every part
# has a time limit, and the whole ends within 9 minutes. Downloads nothing.
#
#   bash bench/gpu_check.sh               # on the GPU machine (make gpu-check)
#   bash bench/gpu_check.sh --cpu-smoke   # the same code on the CPU, tiny (results under /tmp)
#
# Results: gpu_check.md (the table), gpu_check.json and gpu_check.log (all the output) in $OUT when
# it is set, else bench/results/gpu_check.md. The exit status is 0 only if every part passed.
#
# Python: .venv/bin/python when there is one, else python3 (PYTHON=... to choose). The package is
# not installed: the repository's root goes on PYTHONPATH. What kdistill needs beyond PyTorch
# (pydantic and the few packages below) may be missing on a machine without PyPI: then run
# `make gpu-wheels` on a machine with PyPI, which downloads their wheels into .whl/ (for CPython
# 3.12 on x86-64, the GPU image's; `make gpu-wheels GPU_PYTHON=3.11` for another), and bring that
# folder along with the working tree: this script installs them from there with pip --no-index
# into /tmp/kdistill-gpu-site.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
MODE=gpu
if [ "${1:-}" = "--cpu-smoke" ]; then MODE=cpu-smoke; fi
RESULTS=${OUT:-bench/results}
if [ "$MODE" = cpu-smoke ] && [ -z "${OUT:-}" ]; then RESULTS=/tmp/kdistill-gpu-check-smoke; fi
mkdir -p "$RESULTS"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1  # every model the tests use is built from local files
# module names of what kdistill, its tests and the timings import; the wheels of the missing ones
# come from .whl/ (make gpu-wheels downloads pydantic's; add any other there)
NEEDS="torch numpy pydantic annotated_types typing_inspection yaml typer tqdm safetensors sklearn matplotlib
       pytest transformers tokenizers PIL"
WHEELS=${GPU_CHECK_WHEELS:-.whl}

missing() {
    "$PY" -c "import importlib.util as u, sys; print(' '.join(n for n in sys.argv[1:] if u.find_spec(n) is None))" \
        $NEEDS
}

machine() {
    echo "== machine"
    if [ "$MODE" = gpu ]; then
        if ! command -v nvidia-smi >/dev/null; then
            echo "gpu_check: no nvidia-smi; run on a machine with an NVIDIA GPU, or pass --cpu-smoke" >&2
            return 2
        fi
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    fi
    echo "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', \
torch.cuda.is_available())" || { echo "gpu_check: $PY cannot import torch" >&2; return 3; }
    if [ "$MODE" = gpu ]; then
        "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
            || { echo "gpu_check: torch sees no CUDA device" >&2; return 3; }
    fi
}

packages() {
    echo "== what kdistill, its tests and the timings import"
    local lacking
    lacking=$(missing)
    if [ -n "$lacking" ] && compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "missing: $lacking; installing the wheels in $WHEELS/ into /tmp/kdistill-gpu-site"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/kdistill-gpu-site "$WHEELS"/*.whl || return 4
        export PYTHONPATH="/tmp/kdistill-gpu-site:$PYTHONPATH"
        lacking=$(missing)
    fi
    if [ -n "$lacking" ]; then
        echo "gpu_check: missing Python modules: $lacking. On a machine with PyPI, 'make gpu-wheels' puts the" \
             "wheels of pydantic and its needs in .whl/ (name any other module's package there too); bring .whl/" \
             "along with the working tree and run this again." >&2
        return 4
    fi
    "$PY" -c "import kdistill, pydantic; print('kdistill from', kdistill.__file__, '| pydantic', pydantic.VERSION)"
}

main() {
    machine || return
    packages || return
    local status=0
    echo "== the CUDA smoke tests: pytest -m gpu (at most 3.5 min)"
    # tests/test_gpu.py named: collecting every test module would import packages the check does not need
    timeout 210 "$PY" -m pytest -m gpu -q -p no:cacheprovider -rs --durations=0 tests/test_gpu.py || status=1
    echo "== the timings (at most 5 min)"
    local quick=()
    if [ "$MODE" = cpu-smoke ]; then quick=(--quick --device cpu); fi
    timeout 300 "$PY" bench/gpu_check.py ${quick[@]+"${quick[@]}"} --out "$RESULTS" || status=1
    echo "== done: $RESULTS/gpu_check.md; status $status (0: every part passed)"
    return $status
}

if [ -n "${OUT:-}" ]; then  # the whole output kept beside the table
    main 2>&1 | tee "$OUT/gpu_check.log"
    exit "${PIPESTATUS[0]}"
fi
main
