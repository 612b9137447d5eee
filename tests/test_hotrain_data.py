"""hotrain.data: shard listing, rank/worker partition, fixed step counts, mixing, augmentation, eval loader.

Fixture shards are written here with webdataset's TarWriter in the exact ``hodata/1`` layout: key
``source/split/sequence/frame``, ``png`` image, raw 8-bit ``seg.png``, ``json`` metadata. Each image is a
colour-coded scene whose label map equals a colour threshold of the image (red = hand, blue = object), so
any misalignment between image and mask after augmentation shows up as disagreeing pixels.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import webdataset as wds
from scipy.ndimage import maximum_filter, minimum_filter

from hodata.errors import DataError
from hodata.schema import encode_seg, make_key
from hotrain.stages import STAGES
from hotrain.data import (list_shards, make_eval_loader, make_train_loader, map_labels, normalize,
                          parse_mix, parse_shard_name, rank_shards)

RED, BLUE, GREY = (220, 30, 30), (30, 30, 220), (110, 110, 110)


def scene(rng: np.random.Generator, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB image with red (hand) and blue (object) rectangles; the label map is exactly their pixels."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = GREY
    seg = np.zeros((h, w), np.uint8)
    for colour, label in ((BLUE, 2), (RED, 1), (BLUE, 2)):
        x0, y0 = rng.integers(0, w - w // 3), rng.integers(0, h - h // 3)
        x1, y1 = x0 + rng.integers(w // 6, w // 3), y0 + rng.integers(h // 6, h // 3)
        img[y0:y1, x0:x1] = colour
        seg[y0:y1, x0:x1] = label
    seg[:2, :2] = 255  # a few ignore pixels
    return img, seg


def labels_of(img: np.ndarray) -> np.ndarray:
    """Colour threshold that recovers the label map from an (augmented) image (HWC or CHW RGB)."""
    if img.shape[0] == 3:
        img = img.transpose(1, 2, 0)
    r, g, b = (img[..., i].astype(int) for i in range(3))
    return np.where(r > b + 60, 1, np.where(b > r + 60, 2, 0))


def write_shards(out: Path, source: str, split: str, n_shards: int, per_shard: int, *, labels_object: bool = True,
                 size=(64, 48), sizes=None, seed: int = 0) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for s in range(n_shards):
        path = out / f"{source}-{split}-{s:06d}.tar"
        with wds.TarWriter(str(path), encoder=False) as tw:
            for i in range(per_shard):
                w, h = sizes[i % len(sizes)] if sizes else size
                img, seg = scene(rng, w, h)
                if not labels_object:
                    seg[seg == 2] = 0
                meta = {"schema": "hodata/1", "source": source, "split": split, "sequence": f"s{s}",
                        "frame": f"{i:04d}", "width": w, "height": h,
                        "labels": {"hand": True, "object": labels_object}}
                tw.write({"__key__": make_key(source, split, f"s{s}", f"{i:04d}"),
                          "png": cv2.imencode(".png", img[..., ::-1])[1].tobytes(),
                          "seg.png": encode_seg(seg), "json": json.dumps(meta).encode()})
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("shards")
    return {
        "ego": write_shards(root, "ego", "train", 2, 6, labels_object=True, seed=1),
        "fh": write_shards(root, "fh", "train", 1, 6, labels_object=False, seed=2),
        "val": write_shards(root, "ego", "val", 3, 5, sizes=[(64, 48), (40, 56), (50, 30)], seed=3),
        "root": [str(root)],
    }


def shard_of(key: str) -> str:
    source, split, seq, _ = key.split("/")
    return f"{source}-{split}-{int(seq[1:]):06d}.tar"


# ------------------------------------------------------------------------------------------ listing


def test_list_shards_folder_glob_comma_brace_and_split(shards):
    root = shards["root"][0]
    everything = list_shards(root)
    assert len(everything) == 6 and everything == sorted(everything)
    assert list_shards(root, split="val") == shards["val"]
    assert list_shards(root, split="train") == sorted(shards["ego"] + shards["fh"])
    assert list_shards(f"{root}/ego-*.tar", split="train") == shards["ego"]
    assert list_shards(f"{root}/ego-val-{{000000..000002}}.tar") == shards["val"]
    assert list_shards(f"{shards['fh'][0]},{shards['ego'][1]}") == [shards["fh"][0], shards["ego"][1]]
    assert list_shards([shards["fh"][0], f"{root}/fh-*.tar"]) == shards["fh"]  # duplicates dropped
    pipe = "pipe:aws s3 cp s3://bucket/x/egohos-val-000003.tar -"
    assert list_shards(pipe, split="val") == [pipe]
    assert parse_shard_name(pipe) == ("egohos", "val")
    assert parse_shard_name("/a/ho3d-v3-test_indomain-000012.tar") == ("ho3d-v3", "test_indomain")


def test_list_shards_errors_name_the_spec(shards, tmp_path):
    with pytest.raises(DataError, match="no shard of split 'test'"):
        list_shards(shards["root"], split="test")
    with pytest.raises(DataError, match="nope-train-000000.tar: shard not found"):
        list_shards(str(tmp_path / "nope-train-000000.tar"))
    with pytest.raises(DataError, match="no shards match"):
        list_shards(str(tmp_path / "*.tar"))
    with pytest.raises(DataError, match="no \\*.tar shards"):
        list_shards(str(tmp_path))


# ------------------------------------------------------------------------------------------ labels


def test_map_labels_and_normalize():
    seg = torch.tensor([[0, 1, 2, 255]], dtype=torch.uint8)
    assert map_labels(seg, "hand").tolist() == [[0, 1, 0, 255]]
    assert map_labels(seg, "handobj").tolist() == [[0, 1, 2, 255]]
    assert map_labels(seg, "hand").dtype == torch.int64
    assert {n: s.num_classes for n, s in STAGES.items()} == {"hand": 2, "handobj": 3, "sides": 4}
    with pytest.raises(ValueError, match="unknown stage"):
        map_labels(seg, "objects")
    img = torch.full((2, 3, 2, 2), 255, dtype=torch.uint8)
    x = normalize(img)
    assert x.dtype == torch.float32 and torch.allclose(x[0, :, 0, 0], torch.tensor([2.2489, 2.4286, 2.64]), atol=1e-3)
    assert parse_mix("ho3d=0.5, egohos=1") == {"ho3d": 0.5, "egohos": 1.0}
    with pytest.raises(ValueError, match="NAME=WEIGHT"):
        parse_mix("ho3d")


# ------------------------------------------------------------------------------------------ training


def collect(loader) -> list[dict]:
    return [b for b in loader]


def test_train_batches_shapes_labels_and_alignment(shards):
    for stage in ("handobj", "hand"):
        loader = make_train_loader(shards["ego"] + shards["fh"], stage=stage, batch_size=3, crop_size=32,
                                   num_workers=0, steps=6, seed=0)
        batches = collect(loader)
        assert len(batches) == len(loader) == 6
        with_ignore = 0
        for b in batches:
            assert b["image"].dtype == torch.uint8 and b["image"].shape == (3, 3, 32, 32)
            assert b["mask"].dtype == torch.int64 and b["mask"].shape == (3, 32, 32)
            assert b["has_object"].dtype == torch.bool and b["has_object"].shape == (3,)
            assert len(b["source"]) == len(b["key"]) == 3
            allowed = {0, 1, 2, 255} if stage == "handobj" else {0, 1, 255}
            assert set(b["mask"].unique().tolist()) <= allowed
            for img, mask, src, has_obj in zip(b["image"].numpy(), b["mask"].numpy(), b["source"], b["has_object"]):
                assert has_obj == (src == "ego")
                want = labels_of(img)
                if stage == "hand" or not has_obj:
                    want[want == 2] = 0
                # away from label edges (blurred by the antialiased resize) image and mask must agree
                interior = (maximum_filter(mask, 5, mode="constant", cval=254) ==
                            minimum_filter(mask, 5, mode="constant", cval=254)) & (mask != 255)
                agree = (want[interior] == mask[interior]).mean()
                assert interior.sum() > 200 and agree > 0.97, agree
                with_ignore += int((mask == 255).any())
        assert with_ignore > 0  # padding and ignore pixels are carried along as 255


def test_same_seed_same_batches_other_epoch_differs(shards):
    kw = dict(stage="handobj", batch_size=2, crop_size=32, num_workers=0, steps=4, seed=7)
    a = collect(make_train_loader(shards["ego"], **kw))
    b = collect(make_train_loader(shards["ego"], **kw))
    c = collect(make_train_loader(shards["ego"], epoch=1, **kw))
    assert all(torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"]) and x["key"] == y["key"]
               for x, y in zip(a, b))
    assert not all(torch.equal(x["image"], y["image"]) for x, y in zip(a, c))


def test_global_rng_untouched(shards):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    collect(make_train_loader(shards["ego"], stage="hand", batch_size=2, crop_size=32, num_workers=0, steps=2, seed=0))
    assert torch.equal(torch.rand(3), expected)


def test_exact_steps_per_rank_with_uneven_shards_and_workers(shards):
    all_shards = shards["ego"] + shards["fh"]  # 3 shards, 2 ranks: rank 0 gets 2, rank 1 gets 1
    seen = {}
    for rank in (0, 1):
        loader = make_train_loader(all_shards, stage="handobj", batch_size=2, crop_size=32, num_workers=2,
                                   steps=5, seed=0, rank=rank, world_size=2)
        batches = collect(loader)
        assert len(batches) == 5
        seen[rank] = {shard_of(k) for b in batches for k in b["key"]}
        assert seen[rank] <= {Path(p).name for p in rank_shards(all_shards, rank, 2)}
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    # with workers the stream is still reproducible
    again = collect(make_train_loader(all_shards, stage="handobj", batch_size=2, crop_size=32, num_workers=2,
                                      steps=5, seed=0, rank=1, world_size=2))
    assert [b["key"] for b in again] == [b["key"] for b in batches]
    with pytest.raises(DataError, match="3 shard\\(s\\) for 4 ranks"):
        make_train_loader(all_shards, stage="hand", batch_size=2, crop_size=32, num_workers=0, steps=1, seed=0,
                          rank=0, world_size=4)


def test_mix_weights(shards):
    both = shards["ego"] + shards["fh"]
    kw = dict(stage="handobj", batch_size=4, crop_size=32, num_workers=0, steps=10, seed=0)
    only_fh = collect(make_train_loader(both, mix={"fh": 1.0}, **kw))
    assert {s for b in only_fh for s in b["source"]} == {"fh"}
    assert not any(b["has_object"].any() for b in only_fh)
    counts = Counter(s for b in collect(make_train_loader(both, mix={"fh": 1.0, "ego": 3.0}, **kw)) for s in b["source"])
    assert counts["ego"] > counts["fh"] > 0
    with pytest.raises(ValueError, match="unknown source"):
        make_train_loader(both, mix={"ho3d": 1.0}, **kw)
    # two ranks: ego's 2 shards are split between them, fh's single shard is shared (with a warning)
    seen = []
    for rank in (0, 1):
        with pytest.warns(UserWarning, match="fh has 1 shard"):
            loader = make_train_loader(both, mix={"fh": 1.0, "ego": 1.0}, rank=rank, world_size=2, **kw)
        seen.append({shard_of(k) for b in loader for k in b["key"]})
    assert seen[0] - {"fh-train-000000.tar"} == {"ego-train-000000.tar"}
    assert seen[1] - {"fh-train-000000.tar"} == {"ego-train-000001.tar"}


# ------------------------------------------------------------------------------------------ evaluation


def test_eval_each_sample_once_over_two_ranks_with_padding(shards):
    keys = []
    for rank in (0, 1):
        for b in make_eval_loader(shards["val"], stage="handobj", batch_size=2, num_workers=2, rank=rank,
                                  world_size=2):
            assert b["image"].dtype == torch.uint8 and b["mask"].dtype == torch.int64
            keys.extend(b["key"])
    assert len(keys) == 15 and len(set(keys)) == 15
    # one process: file order, padding to the batch maximum (image 0, mask 255)
    one = list(make_eval_loader(shards["val"], stage="hand", batch_size=3, num_workers=0))
    assert [k for b in one for k in b["key"]] == [f"ego/val/s{s}/{i:04d}" for s in range(3) for i in range(5)]
    first = one[0]
    assert first["image"].shape == (3, 3, 56, 64)  # sizes 64x48, 40x56, 50x30 -> 64 wide, 56 high
    assert (first["mask"][1, :, 40:] == 255).all() and (first["mask"][2, 30:, :] == 255).all()
    assert (first["image"][1, :, :, 40:] == 0).all() and (first["image"][2, :, 30:, :] == 0).all()
    want, got = labels_of(first["image"][1, :, :, :40].numpy()), first["mask"][1, :, :40].numpy()
    want[want == 2] = 0  # hand stage: objects are "not hand"
    assert (want == got)[got != 255].all()  # no augmentation: exact
    small = list(make_eval_loader(shards["val"], stage="hand", batch_size=1, num_workers=0, max_side=32))
    assert all(max(b["image"].shape[-2:]) <= 32 for b in small)
    assert set(torch.cat([b["mask"].flatten() for b in small]).unique().tolist()) <= {0, 1, 255}
    assert list(make_eval_loader(shards["val"][:1], stage="hand", batch_size=2, num_workers=0, rank=1,
                                 world_size=2)) == []


# ------------------------------------------------------------------------------------------ sides


LEFT_RED, RIGHT_GREEN = (230, 40, 40), (40, 220, 40)


def write_sides_shard(path: Path, n: int, *, schema2: bool = True, size=(64, 48), seed: int = 0) -> str:
    """hodata/2 samples: a red left hand in the left half, a green right hand in the right half, a blue object;
    ``schema2=False`` writes the same frames as hodata/1 (no inst.png, no instances)."""
    from hodata.schema import instance

    rng = np.random.default_rng(seed)
    w, h = size
    with wds.TarWriter(str(path), encoder=False) as tw:
        for i in range(n):
            img = np.full((h, w, 3), GREY, np.uint8)
            seg = np.zeros((h, w), np.uint8)
            inst = np.zeros((h, w), np.uint8)
            for k, (colour, x0) in enumerate(((LEFT_RED, rng.integers(2, w // 2 - 16)),
                                              (RIGHT_GREEN, rng.integers(w // 2 + 2, w - 16)))):
                y0 = rng.integers(4, h - 20)
                img[y0:y0 + 16, x0:x0 + 12] = colour
                seg[y0:y0 + 16, x0:x0 + 12] = 1
                inst[y0:y0 + 16, x0:x0 + 12] = k + 1
            img[2:6, w // 2 - 2:w // 2 + 2] = BLUE
            seg[2:6, w // 2 - 2:w // 2 + 2] = 2
            inst[2:6, w // 2 - 2:w // 2 + 2] = 3
            meta = {"schema": "hodata/2" if schema2 else "hodata/1", "source": "ego", "split": "train",
                    "sequence": "s0", "frame": f"{i:04d}", "width": w, "height": h,
                    "labels": {"hand": True, "object": True, "sides": schema2}}
            sample = {"__key__": make_key("ego", "train", "s0", f"{i:04d}"),
                      "png": cv2.imencode(".png", img[..., ::-1])[1].tobytes(), "seg.png": encode_seg(seg)}
            if schema2:
                meta["instances"] = [instance(1, "hand", "left"), instance(2, "hand", "right"),
                                     instance(3, "object", name="cup")]
                sample["inst.png"] = encode_seg(inst)
            sample["json"] = json.dumps(meta).encode()
            tw.write(sample)
    return str(path)


def test_sides_batches_keep_left_hands_left_through_augmentation(tmp_path):
    shard = write_sides_shard(tmp_path / "ego-train-000000.tar", 6)
    flipped = 0
    for b in make_train_loader([shard], stage="sides", batch_size=3, crop_size=48, num_workers=0, steps=8, seed=1):
        for img, mask in zip(b["image"].numpy(), b["mask"].numpy()):
            left, right = np.nonzero(mask == 1), np.nonzero(mask == 2)
            assert set(np.unique(mask)) <= {0, 1, 2, 3, 255}
            if len(left[1]) and len(right[1]):
                assert left[1].mean() < right[1].mean()  # whatever the flip did, the left hand is on the left
            red = labels_of(img) == 1  # red-ish pixels: the originally left hand (labels_of: r > b + 60)
            green = (img[1].astype(int) > img[0].astype(int) + 60) & (mask != 255)
            if red.any() and green.any():
                interior = minimum_filter(mask, 3) == maximum_filter(mask, 3)
                red_label = np.bincount(mask[red & interior], minlength=256).argmax()
                flipped += int(red_label == 2)  # the red hand is labelled right exactly when it was mirrored
    assert flipped > 0
    # a hodata/1 shard (no inst.png): every hand pixel is a hand of unknown side (the "hand" label set)
    old = write_sides_shard(tmp_path / "ego-val-000000.tar", 2, schema2=False)
    batch = next(iter(make_eval_loader([old], stage="sides", batch_size=2, num_workers=0)))
    assert set(np.unique(batch["mask"].numpy())) == {0, 3, 4}


def test_focus_crops_centre_on_small_labelled_regions(tmp_path):
    path = tmp_path / "tiny-train-000000.tar"
    with wds.TarWriter(str(path), encoder=False) as tw:  # 96x96 frames, one 4x4 object each, nothing else
        for i in range(4):
            img, seg = np.full((96, 96, 3), GREY, np.uint8), np.zeros((96, 96), np.uint8)
            y, x = 10 + 20 * i, 80 - 20 * i
            img[y:y + 4, x:x + 4], seg[y:y + 4, x:x + 4] = BLUE, 2
            meta = {"schema": "hodata/1", "source": "tiny", "split": "train", "labels": {"hand": True, "object": True}}
            tw.write({"__key__": make_key("tiny", "train", "s0", f"{i:04d}"), "json": json.dumps(meta).encode(),
                      "png": cv2.imencode(".png", img)[1].tobytes(), "seg.png": encode_seg(seg)})
    kw = dict(stage="handobj", batch_size=4, crop_size=24, num_workers=0, steps=10, seed=0, augment=False)

    def crops_with_object(focus: float) -> float:
        masks = torch.cat([b["mask"] for b in make_train_loader([str(path)], focus_crops=focus, **kw)])
        return float((masks == 2).flatten(1).any(1).float().mean())

    assert crops_with_object(0.0) < 0.3 and crops_with_object(1.0) == 1.0
    half = [b["mask"] for b in make_train_loader([str(path)], focus_crops=0.5, **kw)]
    again = [b["mask"] for b in make_train_loader([str(path)], focus_crops=0.5, **kw)]
    assert all(torch.equal(a, b) for a, b in zip(half, again))  # reproducible like any other crop
