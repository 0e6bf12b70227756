#!/usr/bin/env bash
# Installs zig and cargo-zigbuild from PyPI into a virtual environment and prints the `export PATH=…` line that puts
# them first on PATH. `napi build -x --target x86_64-unknown-linux-gnu.2.17` runs cargo-zigbuild, which links with
# zig against glibc 2.17's symbol versions: the portable binary of the npm package (scripts/pack-prebuilt.sh).
#
#     eval "$(bash scripts/install-zig.sh)"
#
# Idempotent: one virtual environment per pinned version pair, under
# ${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/zig-<ziglang>-<cargo-zigbuild> (override with YOLO_LOSS_ZIG_DIR); nothing
# is downloaded when it already works. Standard output carries only the export line; progress goes to standard error.
set -euo pipefail

ziglang=${YOLO_LOSS_ZIGLANG_VERSION:-0.17.1}
zigbuild=${YOLO_LOSS_CARGO_ZIGBUILD_VERSION:-0.24.1}
python=${PYTHON:-python3}
venv=${YOLO_LOSS_ZIG_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/yolo-loss/zig-$ziglang-$zigbuild}

log() { printf 'install-zig.sh: %s\n' "$*" >&2; }

works() {
  [ -x "$venv/bin/cargo-zigbuild" ] && [ -x "$venv/bin/zig" ] && "$venv/bin/zig" version >/dev/null 2>&1
}

if ! works; then
  log "installing ziglang $ziglang and cargo-zigbuild $zigbuild into $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "ziglang==$ziglang" "cargo-zigbuild==$zigbuild" >&2
  # cargo-zigbuild looks for `zig` on PATH before it falls back to `python3 -m ziglang`; a plain shim makes the
  # venv's zig the one it finds, whatever python3 is first on PATH.
  printf '#!/bin/sh\nexec "%s" -m ziglang "$@"\n' "$venv/bin/python" >"$venv/bin/zig"
  chmod +x "$venv/bin/zig"
  works || { log "error: zig did not run from $venv"; exit 1; }
fi
log "zig $("$venv/bin/zig" version), cargo-zigbuild $zigbuild in $venv"
printf 'export PATH=%q:"$PATH"\n' "$venv/bin"
