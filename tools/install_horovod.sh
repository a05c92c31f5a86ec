#!/usr/bin/env bash
# Builds Horovod 0.28.1 from source into the given virtual environment, against
# its TensorFlow, with both Gloo and MPI for CPU collectives (no NCCL), so that
# horovodrun --gloo, horovodrun --mpi, mpirun and srun all launch it.
# OpenMPI comes from the system's package manager (Debian/Ubuntu: apt), installed
# here when missing and we are root (or have password-less sudo).
# Skips the build when a working Horovod with TensorFlow, Gloo and MPI is there.
# The built wheel is kept in ~/.cache/climseg/wheels, by TensorFlow version.
# On a GPU cluster, see README "Beyond one machine" for the NCCL flags.
set -euo pipefail

VENV=${1:-.venv}
PY="$VENV/bin/python"
HOROVOD_VERSION=0.28.1

check_build() {
    # horovodrun --check-build prints "[X] TensorFlow", "[X] MPI" and "[X] Gloo" when built in.
    local out
    out=$(PATH="$VENV/bin:$PATH" TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/horovodrun" --check-build 2>&1) || return 1
    grep -q '\[X\] TensorFlow' <<<"$out" && grep -q '\[X\] Gloo' <<<"$out" \
        && grep -q '\[X\] MPI' <<<"$out"
}

installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("horovod"))' 2>/dev/null || true)
if [[ "$installed" == "$HOROVOD_VERSION" ]] && command -v mpirun >/dev/null && check_build; then
    echo "horovod $HOROVOD_VERSION with TensorFlow, Gloo and MPI: already installed"
    exit 0
fi

if ! command -v mpicxx >/dev/null || ! command -v mpirun >/dev/null; then
    packages="openmpi-bin libopenmpi-dev"
    if [[ $(id -u) == 0 ]]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n);
    else
        echo "ERROR: Horovod is built with MPI, and OpenMPI is not installed. Install it" >&2
        echo "(Debian/Ubuntu: sudo apt-get install $packages; on a cluster: module load" >&2
        echo "openmpi), then run make install again." >&2
        exit 1
    fi
    echo "Installing OpenMPI from the system's packages: $packages"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get install -y -q $packages >/dev/null \
        || { "${as_root[@]}" apt-get update -q >/dev/null && "${as_root[@]}" apt-get install -y -q $packages >/dev/null; }
fi

tf=$("$PY" -c 'import importlib.metadata as m; print(m.version("tensorflow"))')
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/climseg/wheels/horovod-$HOROVOD_VERSION-tf$tf-gloo-mpi"
if ! ls "$wheels"/horovod-*.whl >/dev/null 2>&1; then
    echo "Building horovod $HOROVOD_VERSION from source (TensorFlow $tf + Gloo + MPI, CPU)."
    echo "This takes about 10 minutes on 2 cores the first time; the wheel is kept in $wheels."
    # The build links against the installed TensorFlow, so no build isolation; it
    # needs cmake < 4 (see setup.cfg [build] extra) from the venv on PATH. pip's own
    # cache is bypassed: it would hand back a wheel built with other options.
    mkdir -p "$wheels"
    PATH="$VENV/bin:$PATH" \
    HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
    HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1 MAKEFLAGS="${MAKEFLAGS:--j$(nproc)}" \
        "$PY" -m pip wheel --no-deps --no-build-isolation --no-cache-dir -w "$wheels.tmp" \
        "horovod==$HOROVOD_VERSION"
    mv "$wheels.tmp"/horovod-*.whl "$wheels"/ && rmdir "$wheels.tmp"
fi
"$PY" -m pip install --quiet --force-reinstall --no-deps "$wheels"/horovod-*.whl
"$PY" -m pip install --quiet "horovod==$HOROVOD_VERSION"  # its dependencies, from PyPI

if ! check_build; then
    echo "ERROR: horovod was installed but 'horovodrun --check-build' does not list" >&2
    echo "TensorFlow, Gloo and MPI:" >&2
    PATH="$VENV/bin:$PATH" "$VENV/bin/horovodrun" --check-build >&2 || true
    exit 1
fi
echo "horovod $HOROVOD_VERSION built with TensorFlow, Gloo and MPI"
