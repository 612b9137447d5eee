"""hotrain predict: label PNGs of the input's size from folders, globs and videos; overlays; flip TTA; errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hodata.errors import DataError
from hotrain import checkpoint as ckpt_io
from hotrain.cli import main
from hotrain.model import build_model, model_from_checkpoint, predict_logits
from hotrain.predict import predict_labels, run_predict
from hotrain.train import DEFAULTS

MOBILE = "deeplabv3_mobilenet_v3_large"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A fresh (untrained) 3-class checkpoint, written the way hotrain fit writes its model part."""
    torch.manual_seed(0)
    model, _ = build_model(MOBILE, 3, aux=False, bn_momentum=0.1)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    ckpt_io.save_atomic({"model": model.state_dict(), "num_classes": 3, "step": 0,
                         "config": dict(DEFAULTS, model=MOBILE, aux=False, bn_momentum=0.1, stage="handobj")}, path)
    return path


def rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_folder_of_mixed_sizes_gives_label_pngs_of_each_input_size(ckpt, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    sizes = {"a": (40, 56), "b": (48, 64), "c": (40, 56)}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        cv2.imwrite(str(frames / f"{name}.{'png' if i % 2 else 'jpg'}"), rgb(h, w, i))
    (frames / "notes.txt").write_text("not an image")
    info = run_predict(ckpt, str(frames), tmp_path / "masks", overlay_images=True, batch_size=2)
    assert info["frames"] == 3
    net = model_from_checkpoint(ckpt_io.load(ckpt)).eval()
    for name, (h, w) in sizes.items():
        mask = cv2.imread(str(tmp_path / "masks" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (h, w) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
        # the file holds exactly the model's argmax on that frame
        src = next(frames.glob(f"{name}.*"))
        img = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(img).permute(2, 0, 1)[None]
        expected = predict_logits(net, x, device=torch.device("cpu")).argmax(1)[0].numpy()
        assert (mask == expected).mean() > 0.999  # batch vs single-frame float noise at most
        over = cv2.imread(str(tmp_path / "masks" / "overlay" / f"{name}.jpg"))
        assert over.shape == (h, w, 3)


def test_glob_and_max_side_keep_the_input_size(ckpt, tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), rgb(90, 120, i))
    run_predict(ckpt, str(tmp_path / "f*.png"), tmp_path / "out", max_side=48)
    for i in range(2):
        assert cv2.imread(str(tmp_path / "out" / f"f{i}.png"), cv2.IMREAD_UNCHANGED).shape == (90, 120)


def test_video_gives_one_mask_per_frame(ckpt, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(rgb(48, 64, i))
    writer.release()
    info = run_predict(ckpt, str(path), tmp_path / "masks", batch_size=2)
    names = sorted(p.name for p in (tmp_path / "masks").glob("*.png"))
    assert info["kind"] == "video" and names == [f"clip_{i:06d}.png" for i in range(5)]
    assert cv2.imread(str(tmp_path / "masks" / names[0]), cv2.IMREAD_UNCHANGED).shape == (48, 64)


def test_flip_tta_is_mirror_equivariant(ckpt):
    net = model_from_checkpoint(ckpt_io.load(ckpt)).eval()
    img = rgb(48, 64, 7)
    a = predict_labels(net, [img], device=torch.device("cpu"), tta=True)[0]
    b = predict_labels(net, [img[:, ::-1].copy()], device=torch.device("cpu"), tta=True)[0]
    assert (a == b[:, ::-1]).mean() > 0.999  # TTA of the mirror image = mirror of the TTA output


def test_unreadable_input_names_the_file(ckpt, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="broken.png"):
        run_predict(ckpt, str(tmp_path), tmp_path / "out")
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(ckpt), "--input", str(bad), "--out",
                                    str(tmp_path / "out")])
    assert res.exit_code == 1 and "broken.png" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["predict", "--checkpoint", str(tmp_path / "nope.pt"), "--input", str(bad),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 1 and "nope.pt" in res.output
