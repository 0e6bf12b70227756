#!/usr/bin/env bash
# `npm run pack:prebuilt`: builds the npm packages a user installs, the way a release does, into prebuilt/:
#
#   prebuilt/yolo-loss-<version>.tgz                  the JS, the types and `yolo-loss/tfjs`; no binary
#   prebuilt/yolo-loss-linux-x64-gnu-<version>.tgz    the native addon for Linux x64 with glibc ≥ 2.17, CUDA inside
#
# The addon is linked by zig against glibc 2.17 (`napi build -x --target x86_64-unknown-linux-gnu.2.17`, via
# cargo-zigbuild) and carries the CUDA kernels (nvcc is required here: YOLO_LOSS_REQUIRE_CUDA=1). Both packages are
# staged in a temporary copy: the tracked package.json is not rewritten. The main package's optionalDependencies
# name every platform of `napi.targets` at exactly this version (what `napi pre-publish` writes in a release);
# npm installs only the one whose os/cpu/libc match the machine.
#
# Needs: node/npm (the repository's node_modules: `npm ci`), cargo, python3 with pip (nvcc and zig come from PyPI).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
out=$root/prebuilt
target=x86_64-unknown-linux-gnu
platform=linux-x64-gnu
version=$(node -p "require('./package.json').version")

log() { printf '\n=== pack-prebuilt: %s\n' "$*" >&2; }

log "toolchains (nvcc, zig)"
eval "$(bash scripts/install-nvcc.sh)"
eval "$(bash scripts/install-zig.sh)"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

log "native addon for $target, glibc 2.17, with CUDA kernels"
# Its own target directory: the glibc-2.17 build must not share build-script outputs with the host build.
YOLO_LOSS_REQUIRE_CUDA=1 npx napi build --platform --release --strip -x --target "$target.2.17" \
  --manifest-path crates/node/Cargo.toml --package-json-path package.json --target-dir target/prebuilt \
  --output-dir "$stage/native" --no-js --dts binding.d.ts --no-dts-cache
addon=$stage/native/yolo-loss.$platform.node
[ -f "$addon" ] || { echo "pack-prebuilt: napi build wrote no $addon" >&2; exit 1; }

log "TypeScript"
npm run --silent build:ts

log "packages"
mkdir -p "$out"
bash scripts/stage-main-package.sh "$stage/main"
# The platform package: napi's manifest for it (os, cpu, libc, main) and the addon. npm adds README and LICENSE.
npx napi create-npm-dirs --cwd "$stage/main" --npm-dir npm >/dev/null
pdir=$stage/main/npm/$platform
cp "$addon" LICENSE "$pdir/"

rm -f "$out"/yolo-loss-*.tgz
(cd "$stage/main" && npm pack --silent --pack-destination "$out" >/dev/null)
(cd "$pdir" && npm pack --silent --pack-destination "$out" >/dev/null)
for f in "$out/yolo-loss-$version.tgz" "$out/yolo-loss-$platform-$version.tgz"; do
  [ -f "$f" ] || { echo "pack-prebuilt: $f was not written" >&2; exit 1; }
  printf '%s  %s\n' "$(du -h "$f" | cut -f1)" "${f#"$root"/}"
done
