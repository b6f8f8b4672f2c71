#!/usr/bin/env bash
# One call of the device tool: bench/gpu.py in MODE on the device machine, with its report
# and its log in $OUT, the two files that come back.
#
#   bash bench/gpu_call.sh quick|full [bench/gpu.py options ...]
#
# Run from the repository root, through the device tool, which sets OUT. What it fixes, so
# no minute of a lease goes on a mistyped command:
#   - python3: on the device machine that is the interpreter that holds PyTorch ($PYTHON
#     overrides it, as the CPU test does);
#   - the run store (checkpoints, worker logs) in a fresh folder under $TMPDIR or /tmp: only 8
#     files come back from $OUT, and a store has more;
#   - the log teed into $OUT, unbuffered, so a call stopped at its limit still returns it.
# The data: a device machine has no Fashion-MNIST of its own. Here, before the first call:
#   mkdir -p data && cp /usr/share/datasets/fashion-mnist/*.gz data/
# and name "data" in each call's carry (data/ is ignored by git; 31 MB of the 64 MiB that
# may travel). bench/gpu.py stops at once, with that fix, when the data is not there.
set -euo pipefail
mode=${1:?usage: bash bench/gpu_call.sh quick|full [bench/gpu.py options]}
shift
out=${OUT:?OUT is not set: run this through the device tool, which sets it}
runs=$(mktemp -d "${TMPDIR:-/tmp}/cnnlab-runs-$mode.XXXXXX")
export PYTHONUNBUFFERED=1
"${PYTHON:-python3}" bench/gpu.py --mode "$mode" --out "$out" --runs-dir "$runs" "$@" 2>&1 \
    | tee "$out/$mode.log"
