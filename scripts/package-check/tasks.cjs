/**
 * Every task loss once against a reference fixture, through whatever `yolo-loss` module it is given (the installed
 * package, loaded by `require` or by `import`): loss, loss items and every gradient tensor within the fixtures'
 * tolerance, inputs unchanged.
 *
 * SPDX-License-Identifier: AGPL-3.0-only
 */
'use strict';

const path = require('node:path');

const { closeness, leaves, readSafetensors } = require('./fixtures.cjs');

/** fixture file → how to build the loss, its preds, its batch and the reference gradients (structure of preds). */
const CASES = [
  ['det_realistic', (yl, c, t) => ({ loss: new yl.v8DetectionLoss(model(c), c.tal_topk), preds: t.levels('preds'), batch: t.detBatch(), want: t.levels('grad.preds') })],
  ['seg_overlap_nm32', (yl, c, t) => seg(new yl.v8SegmentationLoss(model(c)), t)],
  ['tvp_seg_vp', (yl, c, t) => seg(new yl.TVPSegmentLoss(model(c)), t)],
  [
    'pose_coco_list',
    (yl, c, t) => ({
      loss: new yl.v8PoseLoss({ ...model(c), kpt_shape: c.kpt_shape }, { oksSigmas: c.kpt_shape_is_list }),
      preds: [t.levels('preds'), t.get('preds.kpts')],
      batch: { ...t.detBatch(), keypoints: t.get('batch.keypoints') },
      want: [t.levels('grad.preds'), t.get('grad.kpts')],
    }),
  ],
  ['obb_angles', (yl, c, t) => ({ loss: new yl.v8OBBLoss(model(c)), preds: [t.levels('preds'), t.get('preds.angle')], batch: t.detBatch(), want: [t.levels('grad.preds'), t.get('grad.angle')] })],
  ['cls_basic', (yl, c, t) => ({ loss: new yl.v8ClassificationLoss(), preds: t.get('preds.logits'), batch: { cls: t.get('batch.cls') }, want: t.get('grad.logits') })],
  [
    'e2e_basic',
    (yl, c, t) => ({
      loss: new yl.E2EDetectLoss(model(c)),
      preds: { one2many: t.levels('preds.one2many'), one2one: t.levels('preds.one2one') },
      batch: t.detBatch(),
      want: { one2many: t.levels('grad.one2many'), one2one: t.levels('grad.one2one') },
    }),
  ],
  ['tvp_det_vp', (yl, c, t) => ({ loss: new yl.TVPDetectLoss(model(c)), preds: t.levels('preds'), batch: t.detBatch(), want: t.levels('grad.preds') })],
];

function model(c) {
  return { nc: c.nc, reg_max: c.reg_max, stride: c.stride, args: { ...(c.hyp ?? {}) } };
}

function seg(loss, t) {
  return {
    loss,
    preds: [t.levels('preds'), t.get('preds.pred_masks'), t.get('preds.proto')],
    batch: { ...t.detBatch(), masks: t.get('batch.masks') },
    want: [t.levels('grad.preds'), t.get('grad.pred_masks'), t.get('grad.proto')],
  };
}

/** Accessors over one fixture's tensors. */
function tensorsOf(file) {
  const { metadata, tensors } = readSafetensors(file);
  const get = (name) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`${path.basename(file)} has no tensor ${name}`);
    return { data: t.data, shape: t.shape };
  };
  const levels = (prefix) => {
    const out = [];
    for (let i = 0; tensors.has(`${prefix}.${i}`); i++) out.push(get(`${prefix}.${i}`));
    return out;
  };
  const detBatch = () => ({ batch_idx: get('batch.batch_idx'), cls: get('batch.cls'), bboxes: get('batch.bboxes') });
  return { config: JSON.parse(metadata.config ?? '{}'), kind: metadata.kind, t: { get, levels, detBatch } };
}

/** Runs every case with the module `yl`; reports through `report.check`. */
function checkEveryTask(yl, fixtureDir, report, label) {
  const kinds = new Set();
  for (const [name, setup] of CASES) {
    const { config, kind, t } = tensorsOf(path.join(fixtureDir, `${name}.safetensors`));
    kinds.add(kind);
    const s = setup(yl, config, t);
    const inputs = [...leaves(s.preds), ...leaves(s.batch)];
    const copies = inputs.map((d) => Float32Array.from(d));
    const r = s.loss.valueAndGrad(s.preds, s.batch);
    const got = [r.loss, r.lossItems, ...leaves(r.grads)];
    const want = [t.get('out.loss').data, t.get('out.loss_items').data, ...leaves(s.want)];
    const bad = got.length !== want.length ? `${got.length} arrays, expected ${want.length}` : got.map((g, i) => closeness(g, want[i])).find(Boolean);
    report.check(!bad, `${label}: ${kind} (${name}) loss, items and ${want.length - 2} gradients match the reference${bad ? `: ${bad}` : ''}`);
    const [loss] = s.loss.call(s.preds, s.batch);
    report.check(closeness(loss, want[0]) === null, `${label}: ${kind} call() loss matches`);
    report.check(inputs.every((d, i) => d.every((v, j) => Object.is(v, copies[i][j]))), `${label}: ${kind} left its inputs unchanged`);
  }
  report.check(kinds.size === 8, `${label}: the eight task losses were checked (${[...kinds].join(', ')})`);
}

module.exports = { checkEveryTask };
