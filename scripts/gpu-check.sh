#!/usr/bin/env bash
# GPU check of the CUDA backend (issue 4): the CUDA tests and the GPU benchmark against the reference, in one
# device call of under 5 minutes.
#
# 1. Here, on a machine with cargo (no GPU needed):
#
#        bash scripts/gpu-check.sh --prepare
#
#    builds into .gpu-check/ (git-ignored through .git/info/exclude; about 37 MB: the device tool carries at most
#    64 MiB, and the binaries alone are ~90 MB, each test binary carrying the 3.4 MB of kernel fatbins, so they
#    travel xz-compressed in bundle.tar.xz, ~11 MB, unpacked on the GPU machine with python's tarfile):
#      tests/      the yolo-loss-cuda test binaries (`cargo test --no-run`), every kernel compiled by nvcc to a fatbin
#                  (YOLO_LOSS_REQUIRE_CUDA=1; scripts/install-nvcc.sh provides nvcc), listed in tests.txt;
#      bin/        the release benchmark crates/cuda/examples/gpu_bench/;
#      js/         the built package (dist/, the addon) for scripts/gpu-node-check.cjs (needs node and node_modules
#                  here: `npm ci` first);
#      (those three in bundle.tar.xz) node.xz  this machine's node binary;
#      wheels/     the ultralytics 8.3.117 wheel for the reference (pip download; carried, never committed).
#
# 2. On the GPU machine (CUDA driver, python3 with PyTorch; no cargo, node or network needed), from the
#    repository root:
#
#        bash scripts/gpu-check.sh
#
#    runs every prepared test binary with YOLO_LOSS_REQUIRE_GPU=1 (no GPU = failure, not a skip; the emulator
#    tests are skipped there, CI runs them), the package's JS API on the GPU (scripts/gpu-node-check.cjs), then
#    gpu_bench on every task loss at the CPU benchmark's shapes (detection B=16 640×640 nc=80 at 8 and 1000
#    labels per image, segmentation, pose, OBB at 1024×1024, classification, E2E, TVP detect / segment; see
#    `gpu_bench --list`): kernel time by CUDA events, end-to-end time from host f32 arrays (also into `out` from
#    page-locked buffers), the memory-traffic floor from the measured copy bandwidth, the PCIe floor from the
#    measured page-locked copy rates, a CPU-backend cross-check; then bench/gpu_reference.py (every task's
#    ultralytics loss on the device's torch, CUDA, fp32, AMP off, forward + backward, same inputs, one python
#    process), and prints the tables with the ratios and the goals (kernel ≥ 30× faster than the reference,
#    within 4× of the floor; end to end from page-locked buffers ≥ 2× faster than the reference, within 2× of the
#    PCIe floor). The bench half takes about 1–2 minutes on an H100, the whole check under 5.
#    Without a GPU, scripts/gpu-bench-plumbing.sh tries the bench's plumbing against the reference on the CPU.
#    Logs and JSON go to $OUT when it is set (the device tool brings them back), else to .gpu-check/out.
#    Exit status: non-zero when a test failed or the benchmark could not run.
#
# Through this workplace's device tool, after step 1:
#
#        run(command="bash scripts/gpu-check.sh", carry=[".gpu-check"], timeout_s=420)
#
# Options: --prepare; on the GPU machine --skip-tests or --skip-bench to run one half; GPU_CHECK_PROFILE=1 adds
# an Nsight Compute profile of one call's kernels (8 and 1000 labels/img) to the output.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
prep=.gpu-check

log() { printf '[gpu-check] %s\n' "$*" >&2; }

prepare() {
  set -e
  command -v cargo >/dev/null || { log "cargo not found"; exit 1; }
  grep -qx '/.gpu-check/' .git/info/exclude 2>/dev/null || echo '/.gpu-check/' >> .git/info/exclude
  eval "$(bash scripts/install-nvcc.sh)"
  export YOLO_LOSS_REQUIRE_CUDA=1
  # A target folder of its own (other profile settings would rebuild the main one), no debug info: small
  # binaries that still print panics with symbol names.
  export CARGO_TARGET_DIR="$here/target/gpu-check" CARGO_PROFILE_TEST_DEBUG=0 CARGO_PROFILE_RELEASE_DEBUG=0
  rm -rf "$prep/tests" "$prep/bin" "$prep/bundle.tar.xz"
  mkdir -p "$prep/tests" "$prep/bin" "$prep/wheels"
  log "building the CUDA test binaries (nvcc kernels required)"
  cargo test -p yolo-loss-cuda --no-run --message-format=json-render-diagnostics >"$prep/build.json"
  python3 - "$prep" <<'PY'
import json, os, shutil, sys
prep = sys.argv[1]
names = []
for line in open(os.path.join(prep, "build.json")):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"] + ("-lib" if "lib" in m["target"]["kind"] else "")
        shutil.copy2(m["executable"], os.path.join(prep, "tests", name))
        names.append(name)
open(os.path.join(prep, "tests.txt"), "w").write("\n".join(sorted(names)) + "\n")
print("test binaries:", ", ".join(sorted(names)), file=sys.stderr)
PY
  rm -f "$prep/build.json"
  log "building the benchmark (release)"
  cargo build --release -p yolo-loss-cuda --example gpu_bench
  cp "$CARGO_TARGET_DIR/release/examples/gpu_bench" "$prep/bin/"
  strip "$prep"/tests/* "$prep/bin/gpu_bench" 2>/dev/null || true
  # The package through its JS API on the GPU (scripts/gpu-node-check.cjs): the addon and dist/ as `npm run build`
  # makes them, and this machine's node binary (xz-compressed, ~27 MB; the GPU machine may have no node).
  rm -rf "$prep/js" "$prep/node.xz"
  if command -v node >/dev/null && [ -d node_modules ]; then
    log "building the JS package (npm run build) for the node check"
    npm run build >"$prep/npm-build.log" 2>&1 || { tail -20 "$prep/npm-build.log" >&2; exit 1; }
    mkdir -p "$prep/js/dist" "$prep/js/native"
    cp package.json "$prep/js/"
    cp -r dist/index.js dist/src "$prep/js/dist/"
    cp native/yolo-loss.node "$prep/js/native/"
    xz -T0 -6 -c "$(command -v node)" >"$prep/node.xz"
    rm -f "$prep/npm-build.log"
  else
    log "warning: no node or no node_modules (npm ci): the node check will be skipped on the GPU machine"
  fi
  if ! ls "$prep"/wheels/ultralytics-8.3.117-*.whl >/dev/null 2>&1; then
    log "downloading the ultralytics 8.3.117 wheel for the reference (not committed)"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$prep/wheels" ultralytics==8.3.117 \
      || log "warning: no ultralytics wheel; the reference will only run where ultralytics is installed"
  fi
  log "compressing the binaries into $prep/bundle.tar.xz"
  local parts=(tests bin)
  [ -d "$prep/js" ] && parts+=(js)
  tar -C "$prep" -cf - "${parts[@]}" | xz -T0 -6 >"$prep/bundle.tar.xz"
  rm -rf "$prep/tests" "$prep/bin" "$prep/js"
  du -sh "$prep" >&2
  log "prepared; on the GPU machine run: bash scripts/gpu-check.sh (carry .gpu-check)"
}

check() {
  local skip_tests=$1 skip_bench=$2
  [ -f "$prep/tests.txt" ] || { log "no $prep/tests.txt: run 'bash scripts/gpu-check.sh --prepare' first (and carry $prep)"; exit 2; }
  local out=${OUT:-$prep/out}
  local work
  work=$(mktemp -d /tmp/yl-gpu-check.XXXXXX)
  mkdir -p "$out"
  # The binaries (tests/, bin/, js/), unpacked with python: the GPU machine may have no xz.
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$prep/bundle.tar.xz" "$work" \
    || { log "cannot unpack $prep/bundle.tar.xz: run --prepare again"; exit 2; }
  local status=0 summary=""
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/[gpu] /' >&2
  # cudarc dlopens libcuda.so; some images keep the driver outside the loader's cache.
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so'; then
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib /usr/lib/x86_64-linux-gnu; do
      [ -e "$d/libcuda.so.1" ] || [ -e "$d/libcuda.so" ] || continue
      export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      log "libcuda not in the loader cache; using $d"
      break
    done
  fi
  export YOLO_LOSS_REQUIRE_GPU=1 YOLO_LOSS_FIXTURES_DIR="$here/fixtures/data" RUST_BACKTRACE=1
  if [ "$skip_tests" = 0 ]; then
    while read -r t; do
      [ -n "$t" ] || continue
      log "tests: $t"
      local start=$SECONDS
      timeout 100 "$work/tests/$t" --skip emulator --test-threads=4 >"$out/test-$t.log" 2>&1
      local rc=$?
      grep -E "^test |test result|panicked|skipping" "$out/test-$t.log" | tail -40 >&2
      summary+="tests $t: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start)) s"$'\n'
      [ $rc = 0 ] || status=1
    done <"$prep/tests.txt"
  fi
  if [ "$skip_tests" = 0 ]; then
    if [ -f "$prep/node.xz" ] && [ -d "$work/js" ]; then
      log "node check: the package's JS API on the GPU"
      local start=$SECONDS
      python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$prep/node.xz" "$work/node" && chmod +x "$work/node"
      timeout 150 "$work/node" scripts/gpu-node-check.cjs "$work/js" >"$out/node-check.log" 2>&1
      local rc=$?
      cat "$out/node-check.log" >&2
      summary+="node check: $([ $rc = 0 ] && echo ok || echo "FAILED (exit $rc)") in $((SECONDS - start)) s"$'\n'
      [ $rc = 0 ] || status=1
    else
      log "node check skipped: not prepared (no node or node_modules where --prepare ran)"
    fi
  fi
  if [ "$skip_bench" = 0 ]; then
    # Every task loss (gpu_bench --list): ours first (kernel, e2e, floor, CPU check; writes each case's inputs),
    # then the reference of every case in one python process (1 s of timed calls per case, 3 to 20 calls).
    log "benchmark: ours (every task loss)"
    local start=$SECONDS
    if timeout 180 "$work/bin/gpu_bench" --out "$work" --iters 20 --write-cases --cpu-check \
        >"$out/ours.json" 2>"$out/bench.log"; then
      log "benchmark: ours in $((SECONDS - start)) s; reference (ultralytics on torch, CUDA, fp32, every case)"
      start=$SECONDS
      PYTHONUNBUFFERED=1 timeout 180 python3 bench/gpu_reference.py run "$work" --target-s 1 --max-iters 20 \
        --wheels "$prep/wheels" >"$out/reference.json" 2>>"$out/bench.log" \
        || log "the reference did not finish (exit $?); the table shows the cases it did"
      log "benchmark: reference in $((SECONDS - start)) s"
      python3 bench/gpu_reference.py table "$out/ours.json" "$out/reference.json" | tee "$out/table.txt"
    else
      status=1
      log "the benchmark failed:"
      tail -20 "$out/bench.log" >&2
    fi
  fi
  if [ "${GPU_CHECK_PROFILE:-0}" = 1 ]; then
    # Per-kernel hardware counters of one call (Nsight Compute), for tuning: $OUT/ncu-<labels>.txt.
    if command -v ncu >/dev/null; then
      for n in 8 1000; do
        log "profile: ncu, $n labels/img"
        timeout 120 ncu --kernel-name regex:yl_det_ --launch-count 6 --section SpeedOfLight --section Occupancy \
          --section LaunchStats --section MemoryWorkloadAnalysis --section WarpStateStats \
          "$work/bin/gpu_bench" --out "$work/profile" --cases "det$n" --iters 1 --warmup 0 >"$out/ncu-$n.txt" 2>&1 \
          || log "ncu failed (exit $?); see $out/ncu-$n.txt"
        grep -E "yl_det_|Duration|Memory Throughput|Achieved Occupancy|Registers Per|Compute \(SM\) Throughput" \
          "$out/ncu-$n.txt" | head -60 >&2
      done
    else
      log "profile: ncu not found"
    fi
  fi
  rm -rf "$work"
  printf '%s' "$summary"
  [ $status = 0 ] && log "all done" || log "FAILED (see $out)"
  return $status
}

case "${1:-}" in
  --prepare) prepare ;;
  --skip-tests) check 1 0 ;;
  --skip-bench) check 0 1 ;;
  "") check 0 0 ;;
  *) sed -n '2,40p' "$0"; exit 2 ;;
esac
