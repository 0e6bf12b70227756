#!/usr/bin/env python3
"""Reference side of `npm run bench`: times the Ultralytics loss (forward + `loss.sum().backward()`) on the inputs
that bench/data.ts wrote for one case, on the CPU in float32, and prints one JSON line.

    python3 bench/reference.py --probe                      # can the reference be imported? (versions or error)
    python3 bench/reference.py CASE_DIR '{"plan": {...}, "threads": 2}'

The case folder holds manifest.json and one raw little-endian float32 file per tensor (bench/data.ts). The
criterion and its inputs come from bench/ref_tasks.py (shared with bench/gpu_reference.py): a minimal model object
(the attributes the losses read: parameters(), args, model[-1].stride / nc / reg_max / kpt_shape), as
fixtures/generate.py does. Every timed iteration clears the leaves' .grad, calls the
criterion and back-propagates loss.sum(), the trainer's step minus the optimizer. Peak RSS is
resource.getrusage(RUSAGE_SELF).ru_maxrss (KiB on Linux) of this process, which holds one case only.

This file only imports and runs the reference; it contains no Ultralytics source.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import time


def rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20  # macOS reports bytes


def probe() -> dict:
    try:
        import numpy
        import torch
        import ultralytics
        from ultralytics.utils import loss as _  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "no reference"
        return {"ok": False, "error": f"{type(e).__name__}: {e}", "python": platform.python_version()}
    return {
        "ok": True,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
        "numpy": numpy.__version__,
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
    }


# The criterion and inputs of every task, shared with bench/gpu_reference.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_tasks import build, load_tensors  # noqa: E402


def iterations(plan: dict, first_ms: float) -> int:
    n = math.ceil(plan["targetS"] * 1000 / max(first_ms, 1e-3))
    return min(plan["max"], max(plan["min"], n))


def quantile(s, q):
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def run(case_dir: str, opts: dict) -> dict:
    threads = int(opts.get("threads", 2))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch
    import ultralytics

    torch.set_num_threads(threads)
    with open(os.path.join(case_dir, "manifest.json")) as f:
        m = json.load(f)
    c = m["case"]

    t = load_tensors(case_dir, m)
    rss_after_load = rss_mb()
    crit, preds, batch, leaves = build(c, t)

    result = {}

    def once() -> float:
        for leaf in leaves:
            leaf.grad = None
        t0 = time.perf_counter()
        loss, items = crit(preds, batch)
        loss.sum().backward()
        dt = (time.perf_counter() - t0) * 1e3
        result["loss"], result["items"] = loss, items
        return dt

    plan = opts["plan"]
    warm = [once() for _ in range(plan["warmup"])]
    loss = [float(x) for x in result["loss"].detach()]
    items = [float(x) for x in result["items"]]
    grad_norm = math.sqrt(sum(float((leaf.grad.double() ** 2).sum()) for leaf in leaves if leaf.grad is not None))
    result.clear()
    n = iterations(plan, warm[-1] if warm else 0.0)
    times = []
    for _ in range(n):
        times.append(once())
        result.clear()
    s = sorted(times)
    return {
        "status": "ok",
        "median_ms": quantile(s, 0.5),
        "min_ms": s[0],
        "p25_ms": quantile(s, 0.25),
        "p75_ms": quantile(s, 0.75),
        "max_ms": s[-1],
        "warmup_ms": warm,
        "times_ms": times,
        "iters": n,
        "peak_rss_mb": rss_mb(),
        "rss_after_load_mb": rss_after_load,
        "loss": loss,
        "loss_items": items,
        "grad_norm": grad_norm,
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "ultralytics": ultralytics.__version__},
    }


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--probe":
        print(json.dumps(probe()))
        return
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        out = run(sys.argv[1], json.loads(sys.argv[2]))
    except Exception as e:  # noqa: BLE001 - reported to the runner
        out = {"status": "error", "message": f"{type(e).__name__}: {e}"}
        print(json.dumps(out))
        sys.exit(1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
