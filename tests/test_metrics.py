"""hotrain.metrics: split-level IoU from the accumulated confusion matrix, per source, DDP reduction, plots."""

from __future__ import annotations

import json
import math

import cv2
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hotrain.metrics import ConfusionMatrix, save_plots


def t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.int64)


def test_iou_is_accumulated_over_the_split_not_averaged_per_batch():
    cm = ConfusionMatrix(2)
    # batch 1: 4 hand pixels, all found.  batch 2: 1 hand pixel, missed, plus 3 background pixels
    cm.update(t([[[1, 1], [1, 1]]]), t([[[1, 1], [1, 1]]]))
    cm.update(t([[[0, 0], [0, 0]]]), t([[[1, 0], [0, 0]]]))
    assert cm.mat.tolist() == [[3, 0], [1, 4]]
    iou = cm.iou().tolist()
    assert iou == pytest.approx([3 / 4, 4 / 5])  # hand: 4 / (4 + 1); per-batch mean would give (1 + 0) / 2
    assert cm.mean_iou() == pytest.approx((0.75 + 0.8) / 2)
    assert cm.pixel_accuracy() == pytest.approx(7 / 8)


def test_ignore_absent_classes_and_bad_labels():
    cm = ConfusionMatrix(3)
    cm.update(t([[0, 1, 2, 1]]), t([[0, 1, 255, 255]]))  # 255 ignored whatever was predicted
    assert int(cm.mat.sum()) == 2
    iou = cm.iou()
    assert iou[:2].tolist() == [1.0, 1.0] and math.isnan(iou[2])  # object absent: NaN, left out of the mean
    assert cm.mean_iou() == 1.0
    with pytest.raises(ValueError, match="outside 0..2"):
        cm.update(t([[0]]), t([[7]]))


def test_per_source_and_partial_label_report(tmp_path):
    cm = ConfusionMatrix(3)
    pred = t([[[0, 1, 2, 2]], [[0, 1, 2, 0]]])
    target = t([[[0, 1, 2, 0]], [[0, 1, 0, 0]]])  # fh: object predicted where labels say "not hand"
    cm.update(pred, target, ["ego", "fh"], torch.tensor([True, False]))
    assert cm.per_source["ego"].tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    # fh labels no objects: its predicted object is only "not hand", which is right there
    assert cm.per_source["fh"].tolist() == [[3, 0, 0], [0, 1, 0], [0, 0, 0]]
    assert torch.equal(cm.mat, cm.per_source["ego"] + cm.per_source["fh"])
    rep = cm.report()
    json.dumps(rep)  # JSON-able: no NaN, no tensors
    assert rep["classes"] == ["background", "hand", "object"]
    assert rep["iou"]["object"] == pytest.approx(1 / 2) and rep["pixel_accuracy"] == pytest.approx(7 / 8)
    fh = rep["per_source"]["fh"]
    assert fh["object_labels"] is False and fh["meaningful"] == ["hand"] and fh["mean_iou"] is None
    assert fh["iou"]["hand"] == 1.0 and fh["iou"]["object"] is None
    ego = rep["per_source"]["ego"]
    assert ego["mean_iou"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert rep["object_labelled"]["sources"] == ["ego"] and rep["object_labelled"]["mean_iou"] == ego["mean_iou"]
    png = save_plots(rep, tmp_path / "plots" / "eval.png")
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] >= 300 and (img != 255).any()


def _reduce_worker(rank: int, world: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        cm = ConfusionMatrix(2)
        if rank == 0:
            cm.update(t([[[1, 1], [0, 0]]]), t([[[1, 0], [0, 0]]]), ["a"], [True])
        else:
            cm.update(t([[[0, 1], [1, 1]]]), t([[[1, 1], [1, 255]]]), ["b"], [False])
            cm.update(t([[[1]]]), t([[[1]]]), ["a"], [True])
        cm.reduce_()
        torch.save({"mat": cm.mat, "a": cm.per_source["a"], "b": cm.per_source["b"],
                    "labels": cm.object_labels, "iou": cm.iou()}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_reduce_sums_over_two_gloo_processes(tmp_path):
    init = f"file://{tmp_path}/rendezvous"
    # fork: the children inherit the imported modules (spawn would re-import torch in each, ~10 s here)
    mp.start_processes(_reduce_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    ref = ConfusionMatrix(2)  # the same three batches in one process
    ref.update(t([[[1, 1], [0, 0]]]), t([[[1, 0], [0, 0]]]), ["a"])
    ref.update(t([[[0, 1], [1, 1]]]), t([[[1, 1], [1, 255]]]), ["b"])
    ref.update(t([[[1]]]), t([[[1]]]), ["a"])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert torch.equal(got["mat"], ref.mat) and got["mat"].tolist() == [[2, 1], [1, 4]]
        assert torch.equal(got["a"], ref.per_source["a"]) and torch.equal(got["b"], ref.per_source["b"])
        assert got["labels"] == {"a": True, "b": False}
        assert torch.allclose(got["iou"], ref.iou())


def test_reduce_is_a_noop_without_a_process_group():
    cm = ConfusionMatrix(2)
    cm.update(t([[1, 0]]), t([[1, 1]]))
    before = cm.mat.clone()
    assert cm.reduce_() is cm and torch.equal(cm.mat, before)


def test_predicted_objects_in_hand_only_sources_count_as_not_hand():
    from hotrain.metrics import ConfusionMatrix

    target = torch.tensor([[[0, 0, 1, 1]], [[0, 2, 1, 0]]])
    pred = torch.tensor([[[2, 0, 1, 1]], [[2, 2, 1, 0]]])  # sample 0 (no object labels) "finds" an object
    cm = ConfusionMatrix(3)
    cm.update(pred, target, ["egohands", "ho3d"], torch.tensor([False, True]))
    assert cm.mat[0, 2] == 1  # only ho3d's wrong object counts against background
    assert cm.mat[0, 0] == 3 and cm.mat[2, 2] == 1
    assert cm.per_source["egohands"][0, 0] == 2 and cm.per_source["egohands"][:, 2].sum() == 0


def test_sides_report_left_right_confusion_and_object_folding():
    # targets: 0 bg, 1 left, 2 right, 3 object
    target = torch.tensor([[[1, 1, 1, 1, 2, 2, 0, 3]], [[1, 2, 0, 0, 0, 0, 0, 0]]])
    pred = torch.tensor([[[1, 1, 2, 0, 2, 1, 0, 3]], [[1, 2, 3, 0, 0, 0, 0, 0]]])
    cm = ConfusionMatrix(4)
    cm.update(pred, target, ["ego", "fh"], torch.tensor([True, False]))
    rep = cm.report()
    assert rep["classes"] == ["background", "left_hand", "right_hand", "object"]
    lr = rep["left_right"]
    assert lr["left_pixels"] == 5 and lr["right_pixels"] == 3
    assert lr["left_as_right"] == 1 and lr["right_as_left"] == 1
    assert lr["iou_left"] == pytest.approx(3 / 6) and lr["iou_right"] == pytest.approx(2 / 4)
    assert lr["side_error_rate"] == pytest.approx(2 / 7)  # of the 7 hand pixels found as a hand, 2 wrong side
    assert lr["iou_hand_either_side"] == pytest.approx(7 / 8)
    # fh labels no objects: its predicted object counts as background, and only its hand IoUs mean something
    assert cm.per_source["fh"][0, 3] == 0 and rep["per_source"]["fh"]["meaningful"] == ["left_hand", "right_hand"]
