#!/usr/bin/env bash
# `npm run test:package`: the packed packages, installed and used the way a user would.
#
#   1. packs them (scripts/pack-prebuilt.sh → prebuilt/*.tgz; `--no-pack` reuses existing tarballs);
#   2. checks the addon of the platform package (glibc floor ≤ 2.17, nothing NEEDED beyond glibc and libgcc_s, the
#      CUDA driver not linked) and what the main package contains (no binary, no demo, bench or tests);
#   3. installs both tarballs into an empty temporary project with PATH=<node's dir>:/usr/bin:/bin, where no cargo,
#      rustc or nvcc can be found, asserts that npm really installed yolo-loss-linux-x64-gnu (npm skips an optional
#      package silently), and runs scripts/package-check/smoke.{cjs,mjs} there: every task loss against its fixture
#      through `require` and `import`, the embedded kernels' SASS list, `yolo-loss/tfjs`; then compiles a TypeScript
#      user's code against the package's declarations.
#
# scripts/registry-rehearsal.sh runs step 3 against packages published to a local registry instead
# (`--install-from-registry URL`). Prints "package: N passed, N failed" last; exit status 1 on any failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
version=$(node -p "require('./package.json').version")
platform=linux-x64-gnu
main_tgz=$root/prebuilt/yolo-loss-$version.tgz
platform_tgz=$root/prebuilt/yolo-loss-$platform-$version.tgz

pack=1
registry=
while [ $# -gt 0 ]; do
  case "$1" in
    --no-pack) pack=0; shift ;;
    --install-from-registry) registry=${2:?--install-from-registry needs a URL}; pack=0; shift 2 ;;
    *) echo "test-package.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done

passed=0
failed=0
check() { # check <what> <command…>: runs the command, counts and prints the outcome
  local what=$1; shift
  if "$@"; then passed=$((passed + 1)); echo "ok   $what"; else failed=$((failed + 1)); echo "FAIL $what"; fi
}

[ "$pack" = 1 ] && bash scripts/pack-prebuilt.sh

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ -z "$registry" ]; then
  echo; echo "=== the packages"
  for f in "$main_tgz" "$platform_tgz"; do
    [ -f "$f" ] || { echo "test-package.sh: $f is missing: run npm run pack:prebuilt" >&2; exit 1; }
    printf '%8s  %s\n' "$(stat -c %s "$f")" "${f#"$root"/}"
  done
  tar -tzf "$main_tgz" | sed 's|^package/||' | sort >"$work/main.files"
  check "the main package has the JS, the types and yolo-loss/tfjs" \
    grep -qx -e 'dist/index.js' "$work/main.files"
  check "the main package has dist/tfjs/index.js and index.d.ts" \
    bash -c "grep -qx dist/tfjs/index.js '$work/main.files' && grep -qx dist/index.d.ts '$work/main.files'"
  check "the main package carries no binary, demo, benchmark or test build" \
    bash -c "! grep -E '\\.node\$|^dist/(demo|bench|__test__)/' '$work/main.files'"

  mkdir -p "$work/platform"
  tar -xzf "$platform_tgz" -C "$work/platform"
  addon=$work/platform/package/yolo-loss.$platform.node
  check "the platform package holds yolo-loss.$platform.node" test -f "$addon"
  node - "$work/platform/package/package.json" "$platform" <<'JS' && ok=1 || ok=0
const [file, platform] = process.argv.slice(2);
const m = require(file);
const want = { os: ['linux'], cpu: ['x64'], libc: ['glibc'], main: `yolo-loss.${platform}.node` };
for (const [k, v] of Object.entries(want)) {
  if (JSON.stringify(m[k]) !== JSON.stringify(v)) { console.error(`package.json ${k}: ${JSON.stringify(m[k])}, expected ${JSON.stringify(v)}`); process.exit(1); }
}
JS
  check "the platform package.json says os linux, cpu x64, libc glibc and its main file" test "$ok" = 1

  glibc=$(objdump -T "$addon" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  echo "     glibc floor (newest GLIBC_ symbol version needed): $glibc"
  check "the addon needs glibc ≤ 2.17 (needs $glibc)" test "$(printf '%s\n2.17\n' "$glibc" | sort -V | tail -1)" = 2.17
  needed=$(readelf -d "$addon" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort | tr '\n' ' ')
  echo "     NEEDED: $needed"
  # glibc 2.17 keeps libpthread, libdl and librt apart from libc: they are glibc too, present wherever it is.
  check "the addon needs nothing beyond glibc (libc, libm, libpthread, libdl, librt, ld-linux) and libgcc_s" \
    bash -c "! printf '%s\n' $needed | grep -vx -E 'libc\\.so\\.6|libm\\.so\\.6|libpthread\\.so\\.0|libdl\\.so\\.2|librt\\.so\\.1|libgcc_s\\.so\\.1|ld-linux-x86-64\\.so\\.2'"
  check "the addon does not link the CUDA driver (it is opened at run time)" bash -c "! printf '%s\n' $needed | grep -q libcuda"
fi

echo; echo "=== install into an empty project, without a Rust or CUDA toolchain"
project=$work/project
mkdir -p "$project"
cp scripts/package-check/* "$project/"
printf '{ "name": "user-project", "version": "1.0.0", "private": true }\n' >"$project/package.json"
node_dir=$(dirname "$(command -v node)")
tfjs_version=$(node -p "require('@tensorflow/tfjs-core/package.json').version")
# TypeScript users: the same compiler and Node types as this repository.
ts_deps=$(node -p 'const d = require("./package.json").devDependencies; "typescript@" + d.typescript + " @types/node@" + d["@types/node"]')
(
  cd "$project"
  export PATH="$node_dir:/usr/bin:/bin"
  for tool in cargo rustc nvcc; do
    if command -v "$tool" >/dev/null; then echo "test-package.sh: $tool is on the user's PATH ($(command -v $tool))" >&2; exit 1; fi
  done
  # yolo-loss alone first, timed (what a user waits for), then what the checks need besides.
  start=$(date +%s.%N)
  if [ -n "$registry" ]; then
    npm install --no-audit --no-fund --registry "$registry" yolo-loss
  else
    npm install --no-audit --no-fund --prefer-offline "$main_tgz" "$platform_tgz"
  fi
  echo "     npm install yolo-loss took $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $start }") s"
  npm install --no-audit --no-fund --prefer-offline ${registry:+--registry "$registry"} \
    "@tensorflow/tfjs-core@$tfjs_version" "@tensorflow/tfjs-backend-cpu@$tfjs_version" $ts_deps
) || { echo "FAIL npm install"; failed=$((failed + 1)); }
check "npm installed yolo-loss-$platform (the optional platform package)" test -f "$project/node_modules/yolo-loss-$platform/yolo-loss.$platform.node"
check "no native build in the installed yolo-loss" bash -c "! ls '$project'/node_modules/yolo-loss/native/*.node 2>/dev/null"

for script in smoke.cjs smoke.mjs; do
  echo; echo "=== $script"
  check "$script" env -C "$project" PATH="$node_dir:/usr/bin:/bin" node "$script" "$root/fixtures/data" "$platform"
done

echo; echo "=== TypeScript users (tsc --strict)"
tsc=(env -C "$project" PATH="$node_dir:/usr/bin:/bin" node node_modules/typescript/bin/tsc --strict --noEmit --module node16
  --moduleResolution node16 --target ES2022 --types node)
check "consumer.ts compiles against the package's declarations (skipLibCheck off)" "${tsc[@]}" consumer.ts
check "consumer-tfjs.ts compiles against yolo-loss/tfjs" "${tsc[@]}" --skipLibCheck consumer-tfjs.ts

echo
echo "package: $passed passed, $failed failed"
[ "$failed" = 0 ]
