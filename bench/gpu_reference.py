#!/usr/bin/env python3
"""Reference side of the GPU benchmark (scripts/gpu-check.sh): Ultralytics' v8DetectionLoss (8.3.117) on the
device's PyTorch, CUDA, float32, AMP off, timed forward + `loss.sum().backward()` with CUDA events, on the very
inputs that crates/cuda/examples/gpu_bench.rs wrote (--write-cases). Then the comparison table.

    python3 bench/gpu_reference.py run CASE_DIR [--iters N] [--warmup N] [--wheels DIR]   # one JSON line
    python3 bench/gpu_reference.py table OURS_JSON REF_JSON                               # the table

Ultralytics is imported from the environment; when it is missing and --wheels names a folder holding an
ultralytics wheel (gpu-check.sh --prepare downloads one; it is never committed: AGPL code stays out of this
repository), that wheel is installed into a temporary folder without dependencies and imported from there.
When neither works, the JSON says `"ok": false` and why, and the table says the reference is unavailable.

The criterion gets a minimal model object (parameters(), args, model[-1].stride / nc / reg_max), as
bench/reference.py and fixtures/generate.py do. This file only imports and runs the reference; it contains no
Ultralytics source.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from types import SimpleNamespace


def import_reference(wheels: str | None):
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_OFFLINE", "True")
    try:
        import ultralytics  # noqa: F401
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
        import ultralytics  # noqa: F401
        from ultralytics.utils import loss  # noqa: F401
    except Exception as e:  # noqa: BLE001
        return f"ultralytics from the carried wheel does not import: {type(e).__name__}: {e}"
    return None


# The model object the criteria read (parameters, args, model[-1]): one definition, shared with the fixture generator.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from fake_model import FakeModel  # noqa: E402


def run(case_dir: str, iters: int, warmup: int, wheels: str | None) -> dict:
    import numpy as np
    import torch

    man = json.load(open(os.path.join(case_dir, "manifest.json")))
    out = {"labels": man["labels"] // max(1, man["levels"][0]["shape"][0]), "case": os.path.basename(case_dir)}
    on_cpu = os.environ.get("YL_REF_DEVICE") == "cpu"  # local smoke test of this script only
    if not on_cpu and not torch.cuda.is_available():
        return {**out, "ok": False, "error": "torch sees no CUDA device"}
    why = import_reference(wheels)
    if why:
        return {**out, "ok": False, "error": why}
    import ultralytics
    from ultralytics.utils.loss import v8DetectionLoss

    dev = torch.device("cpu" if on_cpu else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    load = lambda f, shape: torch.from_numpy(np.fromfile(os.path.join(case_dir, f), dtype="<f4").reshape(shape))
    preds = [load(l["file"], l["shape"]).to(dev).requires_grad_(True) for l in man["levels"]]
    n = man["labels"]
    batch = {
        "batch_idx": load(man["batch_idx"], (n,)).to(dev),
        "cls": load(man["cls"], (n, 1)).to(dev),
        "bboxes": load(man["bboxes"], (n, 4)).to(dev),
    }
    hyp = {"box": man["hyp"]["box"], "cls": man["hyp"]["cls"], "dfl": man["hyp"]["dfl"]}
    model = FakeModel(man["nc"], man["reg_max"], man["strides"], hyp, device=dev)
    crit = v8DetectionLoss(model, tal_topk=man["tal_topk"])

    def step():
        for p in preds:
            p.grad = None
        loss, _ = crit(preds, batch)
        loss.sum().backward()
        return loss

    try:
        for _ in range(warmup):
            step()
        times = []
        if on_cpu:
            import time
            for _ in range(iters):
                t0 = time.perf_counter()
                loss = step()
                times.append((time.perf_counter() - t0) * 1e3)
        else:
            torch.cuda.synchronize()
            for _ in range(iters):
                e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                e0.record()
                loss = step()
                e1.record()
                torch.cuda.synchronize()
                times.append(e0.elapsed_time(e1))
    except torch.OutOfMemoryError as e:
        return {**out, "ok": False, "error": f"reference out of GPU memory: {e}"}
    times.sort()
    return {
        **out,
        "ok": True,
        "ref_ms": times[len(times) // 2],
        "ref_min_ms": times[0],
        "loss": [float(v) for v in loss.detach().cpu()],
        "peak_mem_mb": 0.0 if on_cpu else torch.cuda.max_memory_allocated() / 2**20,
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "device": "cpu" if on_cpu else torch.cuda.get_device_name(0),
    }


def table(ours_path: str, ref_path: str) -> str:
    ours = [json.loads(l) for l in open(ours_path) if l.strip()]
    refs = {}
    if os.path.exists(ref_path):
        for l in open(ref_path):
            if l.strip():
                r = json.loads(l)
                refs[r["labels"]] = r
    rows = []
    head = ("case", "ours kernel ms", "ours e2e ms", "reference ms", "kernel speed-up", "e2e speed-up",
            "floor ms", "kernel/floor", "positives", "loss rel. diff")
    for o in ours:
        r = refs.get(o["labels"], {})
        ok = r.get("ok")
        ref = r.get("ref_ms") if ok else None
        diff = "-"
        if ok:
            d = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(o["loss"], r["loss"]))
            diff = f"{d:.1e}"
        rows.append((
            f"B{o['batch']} {o['size']}² nc{o['nc']} {o['labels']} labels/img",
            f"{o['kernel_ms']:.3f}",
            f"{o['e2e_ms']:.2f}",
            f"{ref:.2f}" if ref else "unavailable",
            f"{ref / o['kernel_ms']:.1f}×" if ref else "-",
            f"{ref / o['e2e_ms']:.1f}×" if ref else "-",
            f"{o['floor_ms']:.4f}",
            f"{o['kernel_ms'] / o['floor_ms']:.2f}×",
            str(o["positives"]),
            diff,
        ))
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))
    lines = [fmt(head), fmt(tuple("-" * w for w in widths))] + [fmt(r) for r in rows]
    dev = ours[0]["device"] if ours else "?"
    lines.append(f"device: {dev}; copy bandwidth {ours[0]['bandwidth_gbs']:.0f} GB/s (read+write)" if ours else "")
    by = {o["labels"]: o for o in ours}
    notes = []
    for lab, r in sorted(refs.items()):
        if not r.get("ok"):
            notes.append(f"reference unavailable for {lab} labels/img: {r.get('error')}")
        else:
            notes.append(f"reference: ultralytics {r['ultralytics']}, torch {r['torch']}, fp32, AMP off, "
                         f"forward + backward, peak {r['peak_mem_mb']:.0f} MiB ({lab} labels/img)")
    if not refs:
        notes.append("reference unavailable: no reference results")
    targets = []
    if 8 in by:
        r = refs.get(8, {})
        if r.get("ok"):
            s = r["ref_ms"] / by[8]["kernel_ms"]
            targets.append(f"kernel ≥ 30× faster than the reference at 8 labels/img: {s:.1f}× {'PASS' if s >= 30 else 'FAIL'}")
        k = by[8]["kernel_ms"] / by[8]["floor_ms"]
        targets.append(f"kernel within 4× of the memory-traffic floor (8 labels/img): {k:.2f}× {'PASS' if k <= 4 else 'FAIL'}")
    if 8 in by and 1000 in by:
        q = by[1000]["kernel_ms"] / by[8]["kernel_ms"]
        targets.append(f"1000 labels/img at most 3× the time of 8: {q:.2f}× {'PASS' if q <= 3 else 'FAIL'} (no OOM)")
    for o in ours:
        if "loss_rel_diff" in o:
            notes.append(f"CPU backend check ({o['labels']} labels/img): loss rel. diff {o['loss_rel_diff']:.1e}, "
                         f"gradient max|Δ|/max|CPU| {o['grad_rel_diff']:.1e}, "
                         f"{o.get('grad_outside_tolerance', '?')} elements outside the fixtures' tolerance "
                         f"(1e-4·|ref| + 1e-5·max|ref|), CPU {o['cpu_ms']:.0f} ms")
    for o in ours:
        st = o.get("stages_ms")
        if st:
            parts = ", ".join(f"{k} {v * 1e3:.0f}" for k, v in st.items())
            notes.append(f"where the time goes ({o['labels']} labels/img): kernels (µs) {parts}; host (ms): checks + "
                         f"uploads {o['upload_ms']:.1f}, downloads {o['download_ms']:.1f}; e2e without our pinned "
                         f"staging {o.get('e2e_pageable_ms', float('nan')):.1f} ms")
    notes.append("e2e: ours from host Float32 arrays to host gradients (PCIe copies included); the reference's "
                 "tensors already live on the GPU")
    return "\n".join(lines + notes + ["targets:"] + ["  " + t for t in targets])


def main(argv):
    if len(argv) >= 2 and argv[0] == "run":
        case_dir = argv[1]
        opts = {"--iters": "20", "--warmup": "3", "--wheels": None}
        i = 2
        while i < len(argv):
            opts[argv[i]] = argv[i + 1]
            i += 2
        try:
            res = run(case_dir, int(opts["--iters"]), int(opts["--warmup"]), opts["--wheels"])
        except Exception as e:  # noqa: BLE001 - report, never crash the check script
            res = {"case": os.path.basename(case_dir), "labels": -1, "ok": False, "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(res), flush=True)
        return 0
    if len(argv) == 3 and argv[0] == "table":
        print(table(argv[1], argv[2]))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
