#!/usr/bin/env bash
# Builds Horovod 0.28.1 from source into the given virtual environment, against
# its TensorFlow, with Gloo for CPU collectives (no MPI, no NCCL).
# Skips the build when a working Horovod with TensorFlow + Gloo is there.
# On a GPU cluster, see README "Beyond one machine" for the MPI/NCCL flags.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
HOROVOD_VERSION=0.28.1

check_build() {
    # horovodrun --check-build prints "[X] TensorFlow" and "[X] Gloo" when built in.
    local out
    out=$(PATH="$VENV/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>&1) || return 1
    grep -q '\[X\] TensorFlow' <<<"$out" && grep -q '\[X\] Gloo' <<<"$out"
}

installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("horovod"))' 2>/dev/null || true)
if [[ "$installed" == "$HOROVOD_VERSION" ]] && check_build; then
    echo "horovod $HOROVOD_VERSION with TensorFlow and Gloo: already installed"
    exit 0
fi

echo "Building horovod $HOROVOD_VERSION from source (TensorFlow + Gloo, CPU)."
echo "This takes about 10 minutes on 2 cores the first time; pip caches the wheel."
# The build links against the installed TensorFlow, so no build isolation; it
# needs cmake < 4 (see setup.cfg [build] extra) from the venv on PATH.
PATH="$VENV/bin:$PATH" \
HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
HOROVOD_WITHOUT_MPI=1 HOROVOD_WITH_GLOO=1 MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}" \
    "$PY" -m pip install --no-build-isolation "horovod==$HOROVOD_VERSION"

if ! check_build; then
    echo "ERROR: horovod was installed but 'horovodrun --check-build' does not list" >&2
    echo "both TensorFlow and Gloo:" >&2
    PATH="$VENV/bin:$PATH" "$VENV/bin/horovodrun" --check-build >&2 || true
    exit 1
fi
echo "horovod $HOROVOD_VERSION built with TensorFlow and Gloo"
