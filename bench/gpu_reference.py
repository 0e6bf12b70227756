#!/usr/bin/env python3
"""Reference side of the GPU benchmark (scripts/gpu-check.sh): every task's Ultralytics loss (8.3.117) on the
device's PyTorch, CUDA, float32, AMP off, timed forward + `loss.sum().backward()` with CUDA events, on the very
inputs that crates/cuda/examples/gpu_bench wrote (--write-cases), all cases in one process. Then the table.

    python3 bench/gpu_reference.py run CASES_DIR [--device cuda|cpu] [--target-s 1.0] [--max-iters 20]
                                   [--warmup 2] [--wheels DIR]        # one JSON line per case folder
    python3 bench/gpu_reference.py table OURS_JSON REF_JSON           # the tables (gpu_bench's ours.json)
    python3 bench/gpu_reference.py check OURS_JSON REF_JSON           # CPU backend vs reference, exit 1 if apart

`run` times each case folder of CASES_DIR (in ours.json's order when it is there): 1 call, then as many as fit in
--target-s (at least 3, at most --max-iters), after --warmup. The criterion and its inputs come from
bench/ref_tasks.py (shared with bench/reference.py). `--device cpu` runs the reference on torch's CPU instead
(wall-clock timing): with `gpu_bench --cases-only --cpu-check` at a small shape and `check`, this tries the plumbing
on a machine without a GPU (scripts/gpu-bench-plumbing.sh).

Ultralytics is imported from the environment; when it is missing and --wheels names a folder holding an
ultralytics wheel (gpu-check.sh --prepare downloads one; it is never committed: AGPL code stays out of this
repository), that wheel is installed into a temporary folder without dependencies and imported from there. When
neither works, every case's line says `"ok": false` and why, and the table says the reference is unavailable.
This file only imports and runs the reference; it contains no Ultralytics source.
"""

from __future__ import annotations

import glob
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_tasks import build, load_tensors  # noqa: E402

# The goals of issue 12 for every task loss (a benchmark, not a test).
SPEEDUP_GOAL = 30.0
FLOOR_GOAL = 4.0
# Issue 13's, end to end from page-locked host arrays: faster than the reference with its tensors on the GPU, and
# near the PCIe floor.
E2E_SPEEDUP_GOAL = 2.0
PCIE_GOAL = 2.0


def import_reference(wheels: str | None):
    """None when ultralytics imports (from the environment or the carried wheel), else why not."""
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_OFFLINE", "True")
    try:
        from ultralytics.utils import loss  # noqa: F401
        return None
    except Exception as e:  # noqa: BLE001
        first = f"{type(e).__name__}: {e}"
    found = sorted(glob.glob(os.path.join(wheels, "*.whl"))) if wheels else []
    if not any(os.path.basename(w).startswith("ultralytics-") for w in found):
        return f"ultralytics is not installed ({first}) and no ultralytics wheel was carried"
    target = tempfile.mkdtemp(prefix="yl-ref-")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--disable-pip-version-check", "--target", target, *found]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return f"installing the carried wheels failed: {r.stderr.strip()[-400:]}"
    sys.path.insert(0, target)
    try:
        from ultralytics.utils import loss  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"ultralytics from the carried wheel does not import: {type(e).__name__}: {e}"
    return None


def case_dirs(root: str) -> list[str]:
    """The case folders of `root`, in ours.json's order when it is there."""
    ours = os.path.join(root, "ours.json")
    if os.path.exists(ours):
        ids = [json.loads(l)["case"] for l in open(ours) if l.strip()]
    else:
        ids = sorted(d for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "manifest.json")))
    return [os.path.join(root, i) for i in ids]


def run_case(case_dir: str, dev, opts: dict) -> dict:
    import torch

    man = json.load(open(os.path.join(case_dir, "manifest.json")))
    c = man["case"]
    out = {"case": c["id"], "task": c["task"]}
    on_gpu = dev.type == "cuda"
    if on_gpu:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    crit, preds, batch, leaves = build(c, load_tensors(case_dir, man, dev), dev)
    last = {}

    def step() -> float:
        for leaf in leaves:
            leaf.grad = None
        if on_gpu:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t0 = time.perf_counter()
        loss, items = crit(preds, batch)
        loss.sum().backward()
        if on_gpu:
            e1.record()
            torch.cuda.synchronize()
            ms = e0.elapsed_time(e1)
        else:
            ms = (time.perf_counter() - t0) * 1e3
        last["loss"], last["items"] = loss, items
        return ms

    try:
        for _ in range(opts["warmup"]):
            step()
        times = [step()]
        n = min(opts["max_iters"], max(3, math.ceil(opts["target_s"] * 1e3 / max(times[0], 1e-3))))
        times += [step() for _ in range(n - 1)]
    except torch.OutOfMemoryError as e:
        return {**out, "ok": False, "error": f"reference out of GPU memory: {e}"}
    grad_norm = math.sqrt(sum(float((leaf.grad.double() ** 2).sum()) for leaf in leaves if leaf.grad is not None))
    times.sort()
    return {
        **out,
        "ok": True,
        "ref_ms": times[len(times) // 2],
        "ref_min_ms": times[0],
        "iters": len(times),
        "loss": [float(v) for v in last["loss"].detach().reshape(-1).cpu()],
        "items": [float(v) for v in last["items"].detach().reshape(-1).cpu()],
        "grad_norm": grad_norm,
        "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
    }


def run(root: str, opts: dict) -> int:
    dirs = case_dirs(root)
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        why = f"torch does not import: {type(e).__name__}: {e}"
    else:
        why = import_reference(opts["wheels"])
    if not why and opts["device"] == "cuda" and not torch.cuda.is_available():
        why = "torch sees no CUDA device"
    if why:
        for d in dirs:
            print(json.dumps({"case": os.path.basename(d), "ok": False, "error": why}), flush=True)
        return 0
    import ultralytics

    dev = torch.device(opts["device"])
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    versions = {"torch": torch.__version__, "ultralytics": ultralytics.__version__,
                "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"}
    for d in dirs:
        try:
            res = {**run_case(d, dev, opts), **versions}
        except Exception as e:  # noqa: BLE001 - report, never stop the other cases
            res = {"case": os.path.basename(d), "ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(res), flush=True)
    return 0


def read_lines(path: str) -> list[dict]:
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


def within_tolerance(a: list, b: list) -> float:
    """max over elements of |a − b| / (1e-4·|b| + 1e-5·max|b|): ≤ 1 is within the fixtures' tolerance."""
    if len(a) != len(b):
        return math.inf
    scale = max((abs(v) for v in b), default=0.0)
    return max((abs(x - y) / (1e-4 * abs(y) + 1e-5 * scale + 1e-12) for x, y in zip(a, b)), default=0.0)


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def fmt_table(head: tuple, rows: list) -> list[str]:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    return [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]


def table(ours_path: str, ref_path: str) -> str:
    ours, refs = read_lines(ours_path), {r["case"]: r for r in read_lines(ref_path)}
    head = ("case", "ours kernel ms", "ours e2e ms", "reference ms", "kernel ×", "e2e ×", "floor ms",
            "kernel ÷ floor", f"goal (≥{SPEEDUP_GOAL:.0f}×, ≤{FLOOR_GOAL:.0f}× floor)", "CPU check: loss / grad",
            "vs ref: loss")
    rows, notes, missed = [], [], []
    for o in ours:
        r = refs.get(o["case"], {})
        ref = r.get("ref_ms") if r.get("ok") else None
        speed, k_floor = (ref / o["kernel_ms"] if ref else None), o["kernel_ms"] / o["floor_ms"]
        fails = ([] if speed is None or speed >= SPEEDUP_GOAL else ["speed"]) + \
                ([] if k_floor <= FLOOR_GOAL else ["floor"])
        goal = ("no: " + ", ".join(fails)) if fails else ("yes" if speed is not None else "no reference; floor ok")
        if fails:
            missed.append(o["case"])
        cpu = (f"{o['loss_rel_diff']:.0e} / {o['grad_rel_diff']:.0e} ({o['grad_outside_tolerance']} out)"
               if "loss_rel_diff" in o else "-")
        rows.append((
            o["case"], f"{o['kernel_ms']:.3f}", f"{o['e2e_ms']:.2f}", f"{ref:.2f}" if ref else "unavailable",
            f"{speed:.1f}×" if ref else "-", f"{ref / o['e2e_ms']:.1f}×" if ref else "-", f"{o['floor_ms']:.4f}",
            f"{k_floor:.1f}×", goal, cpu, f"{within_tolerance(o['loss'], r['loss']):.2f} tol" if ref else "-",
        ))
    lines = fmt_table(head, rows)
    if ours:
        lines.append(f"device: {ours[0]['device']}; copy bandwidth {ours[0]['bandwidth_gbs']:.0f} GB/s (read+write)")
    for o in ours:
        r = refs.get(o["case"], {})
        line = f"{o['case']}: {o['task']} {o['shape']}"
        if r.get("ok"):
            line += (f"; reference peak {r['peak_mem_mb']:.0f} MiB, {r['iters']} calls"
                     if r.get("peak_mem_mb") is not None else f"; reference on {r['device']}")
        elif r:
            line += f"; reference unavailable: {r.get('error')}"
        notes.append(line)
        st = o.get("stages_ms")
        if st:
            parts = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in st.items())
            notes.append(f"  kernels (µs) {parts}; {o['positives']} positives; host (ms): checks + uploads "
                         f"{o['upload_ms']:.1f}, downloads {o['download_ms']:.1f}")
    ref_versions = next((r for r in refs.values() if r.get("ok")), None)
    if ref_versions:
        notes.append(f"reference: ultralytics {ref_versions['ultralytics']}, torch {ref_versions['torch']} on "
                     f"{ref_versions['device']}, fp32, AMP off, forward + backward, tensors already on the device")
    elif not refs:
        notes.append("reference unavailable: no reference results")
    notes += [
        "kernel: CUDA events around each call's kernels (uploads and downloads excluded); e2e: ours from host",
        "  Float32 arrays to host gradients (PCIe copies included); floor: every prediction read once and every",
        "  gradient written once at the copy bandwidth; CPU check: our CPU backend's loss rel. diff / gradient",
        "  max|Δ|/max|CPU| (elements outside the fixtures' tolerance); vs ref: the largest loss difference in units",
        "  of the fixtures' tolerance (1e-4·|ref| + 1e-5·max|ref|), ≤ 1 is within it",
    ]
    by = {o["case"]: o for o in ours}
    if "det8" in by and "det1000" in by:
        q = by["det1000"]["kernel_ms"] / by["det8"]["kernel_ms"]
        notes.append(f"det1000 kernel ÷ det8 kernel: {q:.2f}× (issue 4: at most 3×, {'met' if q <= 3 else 'missed'})")
    notes.append(f"goal missed by: {', '.join(missed)}" if missed else "goal met by every case")
    return "\n".join(lines + notes + [""] + e2e_table(ours, refs))


def e2e_table(ours: list, refs: dict) -> list[str]:
    """Issue 13's table: end to end from page-locked caller buffers against the reference and the PCIe floor."""
    head = ("case", "e2e ms", "e2e pinned ms", "PCIe floor ms", "reference ms", "pinned ×", "pinned ÷ PCIe",
            f"goal (≥{E2E_SPEEDUP_GOAL:.0f}×, ≤{PCIE_GOAL:.0f}× PCIe)", "locked", "same bits")
    rows, missed = [], []
    for o in ours:
        if "e2e_pinned_ms" not in o:
            continue
        r = refs.get(o["case"], {})
        ref = r.get("ref_ms") if r.get("ok") else None
        pinned, pcie = o["e2e_pinned_ms"], o["pcie_floor_ms"]
        speed, p_floor = (ref / pinned if ref else None), pinned / pcie
        fails = ([] if speed is None or speed >= E2E_SPEEDUP_GOAL else ["speed"]) + \
                ([] if p_floor <= PCIE_GOAL else ["PCIe"])
        goal = ("no: " + ", ".join(fails)) if fails else ("yes" if speed is not None else "no reference; PCIe ok")
        if fails:
            missed.append(o["case"])
        rows.append((
            o["case"], f"{o['e2e_ms']:.2f}", f"{pinned:.2f}", f"{pcie:.2f}", f"{ref:.2f}" if ref else "unavailable",
            f"{speed:.1f}×" if ref else "-", f"{p_floor:.1f}×", goal,
            f"{o['pinned_buffers']} ({o['pinned_bytes'] / 2**20:.0f} MiB, {o['pin_refusals']} refused)",
            "yes" if o["pinned_same_bits"] else "NO",
        ))
    if not rows:
        return ["end to end from page-locked buffers: not measured (an ours.json from before issue 13)"]
    o = next(o for o in ours if "e2e_pinned_ms" in o)
    return ["End to end from page-locked host buffers (issue 13)"] + fmt_table(head, rows) + [
        f"PCIe (page-locked, 256 MiB copies): host→device {o['htod_gbs']:.1f} GB/s, device→host {o['dtoh_gbs']:.1f} GB/s",
        "e2e pinned: value_and_grad into out, predictions and out page-locked by the binding's cache (HostPins +",
        "  PinnedCall; inputs on their second sighting), the registering calls untimed; PCIe floor: every prediction",
        "  up and every gradient down at those rates, one after the other; pinned ×: reference ms ÷ e2e pinned ms",
        "  (the reference's tensors are already on the GPU); locked: the buffers registered (≥ 1 MiB each), their",
        "  size, and registrations the driver refused; same bits: pinned results = plain e2e results, bit for bit",
        f"end-to-end goal missed by: {', '.join(missed)}" if missed else "end-to-end goal met by every case",
    ]


def check(ours_path: str, ref_path: str) -> int:
    """Our CPU backend's values (gpu_bench --cpu-check) against the reference's, per case."""
    ours, refs = read_lines(ours_path), {r["case"]: r for r in read_lines(ref_path)}
    rows, bad = [], 0
    for o in ours:
        r = refs.get(o["case"], {})
        if not r.get("ok") or "cpu_loss" not in o:
            rows.append((o["case"], o["task"], "-", "-", "-", "missing: " + r.get("error", "no reference / no cpu_loss")))
            bad += 1
            continue
        loss, items = within_tolerance(o["cpu_loss"], r["loss"]), within_tolerance(o["cpu_items"], r["items"])
        gn = rel(o["cpu_grad_norm"], r["grad_norm"])
        ok = loss <= 1 and items <= 1 and gn <= 1e-4
        bad += not ok
        rows.append((o["case"], o["task"], f"{loss:.3f}", f"{items:.3f}", f"{gn:.1e}", "ok" if ok else "DIFFERENT"))
    head = ("case", "task", "loss ÷ tol", "items ÷ tol", "grad-norm rel. diff", "verdict")
    print("\n".join(fmt_table(head, rows)))
    print("tol: 1e-4·|ref| + 1e-5·max|ref| per element (≤ 1 passes); gradient norms within 1e-4 relative")
    return 1 if bad else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "run":
        opts = {"--device": "cuda", "--target-s": "1.0", "--max-iters": "20", "--warmup": "2", "--wheels": None}
        rest = argv[2:]
        for flag, value in zip(rest[::2], rest[1::2]):
            if flag not in opts:
                print(f"unknown option {flag}\n{__doc__}", file=sys.stderr)
                return 2
            opts[flag] = value
        return run(argv[1], {"device": opts["--device"], "target_s": float(opts["--target-s"]),
                             "max_iters": int(opts["--max-iters"]), "warmup": int(opts["--warmup"]),
                             "wheels": opts["--wheels"]})
    if len(argv) == 3 and argv[0] == "table":
        print(table(argv[1], argv[2]))
        return 0
    if len(argv) == 3 and argv[0] == "check":
        return check(argv[1], argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
