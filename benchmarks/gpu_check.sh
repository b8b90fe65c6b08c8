#!/usr/bin/env bash
# GPU check (issue 6): the cupy backend's tests and the GPU benchmark, in one go.
#
# Run from anywhere on a machine with an NVIDIA GPU (an H200 with a CUDA 12 or 13 driver
# was the target; root is fine, nothing outside this repository is written but the
# packages it installs). It finishes in a few minutes (well under 10):
#
#     bash benchmarks/gpu_check.sh            # PYTHON=python3 by default; OUT=folder for logs
#
# 1. Reports the GPU (nvidia-smi).
# 2. Installs what is missing into $PYTHON's environment, trying in order for each package:
#    already importable -> `pip install NAME` (registry; short timeouts) -> wheels from the
#    repository's `.whl/` folder (`pip install --no-index --find-links .whl NAME`).
#    Packages: numpy, networkx, graphviz (the Python package), tqdm, pytest, hypothesis, and
#    cupy — if `import cupy` does not already run a kernel, `cupy-cuda12x` (works with CUDA 12
#    and 13 drivers), else `cupy-cuda13x`. flowgrad itself: `pip install -e . --no-deps
#    --no-build-isolation`, or, failing that, a copy of the package folders put on PYTHONPATH.
#    Where package registries are unreachable (the usual case on a lent GPU machine), prepare
#    the wheels beforehand, on a machine with internet, in this repository's root:
#        echo /.whl/ >> .git/info/exclude
#        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#            --implementation cp --platform manylinux2014_x86_64 -d .whl graphviz cupy-cuda12x
#    (only what the GPU machine lacks: its image already had numpy, networkx, tqdm, pytest,
#    hypothesis and cupy-cuda13x when last looked at; the Python package graphviz was missing)
#    and send the `.whl` folder along with the checkout (the device tool: carry [".whl"]).
# 3. Runs the backend suite on cupy: pytest tests/test_backends.py -k cupy.
# 4. Runs benchmarks/bench_gpu.py (batch logistic regression n=10^6, d=512, and an MLP step,
#    batch 8192, 784-1024-10, float32; flowgrad on cupy vs hand-written cupy), which prints
#    the markdown table for benchmarks/RESULTS.md ("## GPU").
# Logs go to $OUT (default /tmp/flowgrad_gpu_check/): pip.log, pytest.log, bench_gpu.md.
# Exit status: 0 when the tests pass and the benchmark's results agree; 1 otherwise.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-${TMPDIR:-/tmp}/flowgrad_gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
status=0
say() { printf '\n== %s\n' "$*"; }

say "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || \
    echo "nvidia-smi failed: is there an NVIDIA GPU and driver here?"
"$PY" --version

# install NAME MODULE [CHECK]: make `import MODULE` (and the CHECK code, if given) work
install() {
    local name=$1 module=$2 check=${3:-"import $2"}
    if "$PY" -c "$check" >/dev/null 2>&1; then
        echo "  $name: present ($("$PY" -c "import $module as m; print(getattr(m, '__version__', '?'))" 2>/dev/null))"
        return 0
    fi
    echo "  $name: installing"
    timeout 240 "$PY" -m pip install -q --retries 0 --timeout 15 "$name" >>"$OUT/pip.log" 2>&1 ||
        { [ -d .whl ] && "$PY" -m pip install -q --no-index --find-links .whl "$name" \
            >>"$OUT/pip.log" 2>&1; } ||
        { echo "  $name: could not be installed (no registry, no wheel in .whl/); see $OUT/pip.log"
          return 1; }
    "$PY" -c "$check" >>"$OUT/pip.log" 2>&1 || { echo "  $name: installed but not working"; return 1; }
}

say "packages"
for spec in numpy:numpy networkx:networkx graphviz:graphviz tqdm:tqdm pytest:pytest \
            hypothesis:hypothesis; do
    install "${spec%%:*}" "${spec##*:}" || status=1
done
CUPY_CHECK='import cupy; assert int((cupy.arange(3) + 1).sum()) == 6'
install cupy-cuda12x cupy "$CUPY_CHECK" || install cupy-cuda13x cupy "$CUPY_CHECK" || status=1

say "flowgrad"
if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . >>"$OUT/pip.log" 2>&1; then
    site=$(mktemp -d)
    cp -r flowgrad "$site/flowgrad"
    for sub in ops backends viz; do cp -r "$sub" "$site/flowgrad/$sub"; done
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    echo "  pip install -e . failed (see $OUT/pip.log); using a copy on PYTHONPATH: $site"
fi
"$PY" -c "import flowgrad as fg; print('  flowgrad', fg.__file__); print('  backend', fg.get_backend('cupy'))" ||
    { echo "flowgrad's cupy backend is not usable here"; exit 1; }

say "backend suite on cupy (tests/test_backends.py -k cupy)"
timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_backends.py -k cupy -rs 2>&1 |
    tee "$OUT/pytest.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
if grep -q "no NVIDIA GPU" "$OUT/pytest.log"; then
    echo "the cupy cases were skipped: no GPU reached"; status=1
fi

say "benchmark (benchmarks/bench_gpu.py)"
timeout 420 "$PY" benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.md"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

say "done: $([ $status -eq 0 ] && echo OK || echo FAILED) (logs in $OUT)"
exit $status
