"""--gpu-augment: the loader leaves images encoded with their drawn augmentation; the training device decodes
and augments them. Run here on the CPU (the same code, device "cpu"); a CUDA test runs where there is a GPU."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from hotrain.augment import TrainAugment, Window
from hotrain.data import make_train_loader
from hotrain.gpu_augment import batch_images, collate_planned, planned_sample


def frame(h: int = 96, w: int = 128, seed: int = 0) -> tuple[bytes, bytes, np.ndarray]:
    """A smooth colour frame (JPEG and PNG bytes) and a label map of blobs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 / w), (yy * 255 / h), 128 + 60 * np.sin(xx / 9.0 + yy / 13.0)], -1)
    rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    mask = np.zeros((h, w), np.uint8)
    mask[20:60, 10:50] = 1
    mask[40:80, 70:120] = 2
    return (cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 98])[1].tobytes(),
            cv2.imencode(".png", bgr)[1].tobytes(), mask)


def planned_batch(samples: list[dict]) -> dict:
    return collate_planned([s | {"has_object": True, "source": "t", "key": f"k{i}"} for i, s in enumerate(samples)])


@pytest.mark.parametrize("crop", [64, 40])
def test_same_draws_same_targets_and_images_within_rounding(crop):
    jpg, png, mask = frame()
    flip_lut = np.arange(256, dtype=np.uint8)
    flip_lut[[1, 2]] = [2, 1]  # a side swap, as the sides stage's
    aug = TrainAugment(crop, augment=True, flip_lut=flip_lut)
    seeds = range(12)
    for data in (jpg, png):
        cpu = [aug(data, mask, s) for s in seeds]
        batch = planned_batch([planned_sample(data, mask, aug, s) for s in seeds])
        images = batch_images(batch, "cpu")
        assert images.dtype == torch.uint8 and images.shape == (len(seeds), 3, crop, crop)
        for i, (img, tgt) in enumerate(cpu):
            assert np.array_equal(batch["mask"][i].numpy(), tgt)  # targets: the very same crop
            diff = np.abs(images[i].permute(1, 2, 0).numpy().astype(int) - img.astype(int))
            # float bilinear against OpenCV's fixed point (and, where the crop shrinks the frame, libjpeg's reduced
            # decode against a full one): measured mean <= 0.62 and max 4 levels here
            assert diff.mean() < 1.0 and diff.max() <= 6, (i, diff.mean(), diff.max())


def test_no_augment_is_the_plain_crop_and_a_flip_mirrors_it():
    jpg, _, mask = frame()
    aug = TrainAugment(48, augment=False)
    out_mask, affine, jitter = aug.plan(mask, 0)
    assert jitter is None
    (image,) = batch_images(planned_batch([planned_sample(jpg, mask, aug, 0)]), "cpu")
    want, want_mask = aug(jpg, mask, 0)
    assert np.abs(image.permute(1, 2, 0).numpy().astype(int) - want.astype(int)).max() <= 3
    assert np.array_equal(out_mask, want_mask)
    # the same window mirrored: the image and the map read right to left
    flipped = aug.affine(Window(1.0, 0, 0, True), 1.0, 1.0)
    plain = aug.affine(Window(1.0, 0, 0, False), 1.0, 1.0)
    from hotrain.gpu_augment import image_plan

    a, b = (batch_images(planned_batch([{"mask": torch.zeros(48, 48, dtype=torch.uint8), "frame": mask.shape}
                                        | image_plan(jpg, m, None)]), "cpu")[0] for m in (plain, flipped))
    assert torch.equal(a.flip(-1), b)


def test_a_frame_of_another_size_is_one_line_naming_the_sample():
    jpg, _, mask = frame()
    aug = TrainAugment(32)
    sample = planned_sample(jpg, np.zeros((50, 60), np.uint8), aug, 0)
    with pytest.raises(Exception, match=r"sample k0: seg.png is \(50, 60\), image is \(96, 128\)"):
        batch_images(planned_batch([sample]), "cpu")


def test_loader_batches_with_gpu_augment(egohos_demo_shards):
    shards = sorted(str(p) for p in egohos_demo_shards.glob("egohos-train-*.tar"))
    kw = dict(stage="hand", batch_size=4, crop_size=32, num_workers=0, steps=2, seed=3)
    plain = list(make_train_loader(shards, **kw))
    planned = list(make_train_loader(shards, **kw, gpu_augment=True))
    for a, b in zip(plain, planned):
        assert a["key"] == b["key"] and torch.equal(a["mask"], b["mask"])
        images = batch_images(b, "cpu")
        # demo frames shrunk to crop 32: libjpeg's reduced decode against a full decode (measured mean ~2 levels)
        assert (images.int() - a["image"].int()).abs().float().mean() < 3.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_decode_and_augment_agree_with_the_cpu():
    jpg, _, mask = frame(480, 640)
    aug = TrainAugment(256)
    batch = planned_batch([planned_sample(jpg, mask, aug, s) for s in range(8)])
    on_gpu = batch_images(batch, "cuda")
    assert on_gpu.is_cuda
    assert (on_gpu.cpu().int() - batch_images(batch, "cpu").int()).abs().max() <= 2  # nvJPEG vs libjpeg rounding
