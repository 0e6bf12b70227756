"""The reference side of one benchmark case, for every task: the case folder's tensors (bench/data.ts's format,
also written by crates/cuda/examples/gpu_bench) and the Ultralytics criterion with its inputs. Shared by
bench/reference.py (the CPU benchmark) and bench/gpu_reference.py (the GPU check).

    t = load_tensors(case_dir, manifest, device)
    crit, preds, batch, leaves = build(manifest["case"], t, device)
    loss, items = crit(preds, batch); loss.sum().backward()      # gradients in leaf.grad

Tasks (manifest `case.task`): detect, segment, pose, obb (bench/cases.ts), classify, e2e, tvp_detect, tvp_segment.
The criteria get a minimal model object (fixtures/fake_model.py; TVPSegmentLoss also the construction step that
8.3.117 omits). This file only imports and runs the reference; it contains no Ultralytics source.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from fake_model import FakeModel, tvpseg_supply_construction  # noqa: E402

# Ultralytics default.yaml's gains (what the cases of bench/cases.ts use; gpu_bench writes its own in case.hyp).
DEFAULT_HYP = {"box": 7.5, "cls": 0.5, "dfl": 1.5, "pose": 12.0, "kobj": 1.0, "overlap_mask": True}


def load_tensors(case_dir: str, manifest: dict, device=None) -> dict:
    """Every tensor of the case folder, float32, on `device` (CPU when None)."""
    import numpy as np
    import torch

    out = {}
    for name, e in manifest["tensors"].items():
        a = np.fromfile(os.path.join(case_dir, e["file"]), dtype="<f4").reshape(e["shape"])
        out[name] = torch.from_numpy(a) if device is None else torch.from_numpy(a).to(device)
    return out


def levels(t: dict, prefix: str, n: int) -> list:
    return [t[f"{prefix}.{i}"].requires_grad_(True) for i in range(n)]


def build(c: dict, t: dict, device=None):
    """(criterion, preds, batch, leaves) of case `c` on the tensors `t`: `crit(preds, batch)` is the reference's
    call, `leaves` the prediction tensors whose .grad the backward fills (in the order of our gradients)."""
    from ultralytics.utils import loss as ref

    task = c["task"]
    if task == "classify":
        logits = t["preds.logits"].requires_grad_(True)
        return ref.v8ClassificationLoss(), logits, {"cls": t["batch.cls"].long()}, [logits]
    hyp = dict(c.get("hyp") or DEFAULT_HYP)
    kpt_shape = list(c["kpt_shape"]) if task == "pose" else None  # a list, as models built from YAML carry it
    model = FakeModel(c["nc"], c["reg_max"], [float(s) for s in c["strides"]], hyp, kpt_shape, device=device)
    nlev = len(c["strides"])
    batch = {"batch_idx": t["batch.batch_idx"], "cls": t["batch.cls"], "bboxes": t["batch.bboxes"]}
    if task == "e2e":
        one2many, one2one = levels(t, "preds.one2many", nlev), levels(t, "preds.one2one", nlev)
        preds = {"one2many": one2many, "one2one": one2one}
        return ref.E2EDetectLoss(model), preds, batch, one2many + one2one
    feats = levels(t, "preds", nlev)
    if task == "detect":
        return ref.v8DetectionLoss(model, tal_topk=c.get("tal_topk", 10)), feats, batch, feats
    if task == "tvp_detect":
        return ref.TVPDetectLoss(model), feats, batch, feats
    if task in ("segment", "tvp_segment"):
        pm, pr = t["preds.pred_masks"].requires_grad_(True), t["preds.proto"].requires_grad_(True)
        batch["masks"] = t["batch.masks"]
        if task == "segment":
            crit = ref.v8SegmentationLoss(model)
        else:
            crit = ref.TVPSegmentLoss(model)
            tvpseg_supply_construction(crit, model)
        return crit, (feats, pm, pr), batch, feats + [pm, pr]
    if task == "pose":
        kp = t["preds.kpts"].requires_grad_(True)
        batch["keypoints"] = t["batch.keypoints"]
        return ref.v8PoseLoss(model), (feats, kp), batch, feats + [kp]
    if task == "obb":
        ang = t["preds.angle"].requires_grad_(True)
        return ref.v8OBBLoss(model), (feats, ang), batch, feats + [ang]
    raise ValueError(f"unknown task {task}")
