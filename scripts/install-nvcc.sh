#!/usr/bin/env bash
# Installs NVIDIA's CUDA compiler (nvcc) from its PyPI wheels, without root, and prints the environment that
# makes `crates/cuda/build.rs` compile the kernels of `cuda/*.cu` to fatbins (SASS for every GPU architecture
# from sm_75 up, plus PTX of the newest).
#
# Usage (CI, or a developer without a CUDA toolkit):
#
#     eval "$(bash scripts/install-nvcc.sh)"        # sets NVCC and CUDA_HOME in the calling shell
#     YOLO_LOSS_REQUIRE_CUDA=1 cargo build ...      # a missing nvcc or a failing kernel is then an error
#
# or, to keep the settings in a file:   bash scripts/install-nvcc.sh --env-file nvcc.env && . ./nvcc.env
#
# Standard output carries only shell-quoted `export NAME=value` lines (safe to eval); progress and errors go to
# standard error. The exit status is non-zero when nvcc could not be installed or cannot compile a test kernel
# to a fatbin, and then nothing is printed on standard output.
#
# Idempotent: the wheels go into one directory per toolkit version (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/cuda-<version>; override with YOLO_LOSS_NVCC_DIR). When that directory
# already holds a working nvcc of the pinned version, nothing is downloaded again.
#
# Why CUDA 13, and 13.0 exactly. The kernels ship as SASS for every architecture this nvcc knows (sm_75 to sm_121
# for 13.0), which any driver of the same CUDA major loads (minor-version compatibility), plus PTX of the newest,
# which the driver JIT-compiles on a still newer GPU and only accepts when the driver is at least as new as the
# nvcc. A CUDA 12 nvcc would reach more drivers (R525+ rather than R580+), but PyPI has no CUDA 12 compiler:
# nvidia-cuda-nvcc-cu12 (12.1.105, 12.8.93 and 12.9.86 looked at) holds only ptxas, libnvvm, libdevice and the
# crt headers, with no nvcc driver, no cicc front end and no fatbinary, so it cannot compile a .cu file at all; the
# CUDA 12 toolkit comes from NVIDIA's own installers and repositories, which this project's builds do not reach.
# CUDA 13's wheels carry the whole compiler (nvcc, cicc, ptxas, fatbinary). Within 13, 13.0 keeps the PTX
# loadable by every CUDA 13 driver (a newer nvcc would write PTX that a 13.0 driver rejects). sm_75 (Turing) is
# the lowest target CUDA 13 supports. Override the version with YOLO_LOSS_CUDA_WHEELS_VERSION (all four wheels
# must exist in that version).
#
# Needs: python3 with pip (or PYTHON=/path/to/python), network access to PyPI (or a pip mirror/--find-links set up
# in pip's own configuration), and a host C++ compiler (g++), which nvcc runs to preprocess device code too.
set -euo pipefail

version=${YOLO_LOSS_CUDA_WHEELS_VERSION:-13.0.88}
python=${PYTHON:-python3}
prefix=${YOLO_LOSS_NVCC_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/cuda-$version}
env_file=

while [ $# -gt 0 ]; do
  case "$1" in
    --env-file) env_file=${2:?--env-file needs a path}; shift 2 ;;
    --env-file=*) env_file=${1#--env-file=}; shift ;;
    -h|--help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) echo "install-nvcc.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { printf 'install-nvcc.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The wheels unpack into <site>/nvidia/cu<major>/{bin,include,lib,nvvm}: a toolkit root that nvcc.profile
# understands (it locates cicc and libdevice relative to bin/).
major=${version%%.*}
root=$prefix/nvidia/cu$major
nvcc=$root/bin/nvcc

# A quick check that nvcc runs, reports the expected release, and turns a real kernel into a fatbin with SASS and
# PTX (so ptxas and fatbinary work too). Runs in a temporary directory so that a read-only prefix is fine.
check_nvcc() {
  [ -x "$nvcc" ] || return 1
  local want=${version%.*} have tmp
  have=$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p')
  [ "$have" = "$want" ] || { log "nvcc at $nvcc reports release '${have:-?}', expected $want"; return 1; }
  tmp=$(mktemp -d)
  cat >"$tmp/probe.cu" <<'CU'
#include <cstdint>
extern "C" __global__ void yolo_loss_probe(const float* __restrict__ x, float* __restrict__ y, int64_t n) {
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = log1pf(expf(-fabsf(x[i]))) + fmaxf(x[i], 0.0f);
}
CU
  if ! "$nvcc" -fatbin -gencode=arch=compute_75,code='[sm_75,compute_75]' -O3 -std=c++17 -o "$tmp/probe.fatbin" \
       "$tmp/probe.cu" >"$tmp/log" 2>&1 \
     || ! grep -q 'yolo_loss_probe' "$tmp/probe.fatbin"; then
    log "nvcc failed to compile a test kernel to a fatbin:"; sed 's/^/    /' "$tmp/log" >&2
    rm -rf "$tmp"; return 1
  fi
  rm -rf "$tmp"
}

if check_nvcc 2>/dev/null; then
  log "nvcc $version already installed in $prefix"
else
  command -v "$python" >/dev/null 2>&1 || die "'$python' not found: set PYTHON to a Python 3 with pip"
  "$python" -m pip --version >/dev/null 2>&1 || die "'$python -m pip' does not work: install pip for $python"
  command -v g++ >/dev/null 2>&1 || command -v c++ >/dev/null 2>&1 \
    || log "warning: no host C++ compiler (g++) on PATH; nvcc needs one even for device code"
  log "installing the CUDA $version compiler wheels into $prefix (about 250 MB)"
  # Install into a fresh sibling directory and swap it in, so that an interrupted download never leaves a
  # half-populated prefix that a later run would mistake for a working one.
  mkdir -p "$(dirname "$prefix")"
  staging=$(mktemp -d "$prefix.partial.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --no-compile --target "$staging" \
      "nvidia-cuda-nvcc==$version" "nvidia-cuda-crt==$version" "nvidia-nvvm==$version" \
      "nvidia-cuda-runtime==$version" >&2 \
    || die "pip could not install the nvcc wheels (version $version)"
  rm -rf "$prefix"
  mv "$staging" "$prefix"
  trap - EXIT
  check_nvcc || die "the installed nvcc does not work (see above)"
  log "nvcc $version installed in $prefix"
fi

# CUDA_HOME lets other tools (and build.rs's fallback) find the same toolkit. No include flags are needed: the
# wheel's nvcc.profile resolves <root>/include (cuda_runtime.h, crt/) and nvvm/ relative to its own bin/.
lines=$(printf 'export NVCC=%q\nexport CUDA_HOME=%q' "$nvcc" "$root")
if [ -n "$env_file" ]; then
  printf '%s\n' "$lines" >"$env_file"
  log "wrote $env_file"
fi
printf '%s\n' "$lines"
