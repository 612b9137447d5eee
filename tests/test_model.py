"""hotrain.model / hotrain.checkpoint: weights sources (never downloaded), head surgery, atomic checkpoints."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
import torch
import torchvision

from hodata.errors import DataError
from hotrain import checkpoint as ckpt_io
from hotrain.config import DEFAULTS, resolve_config
from hotrain.model import (
    MODELS,
    OBJECT_BIAS_OFFSET,
    WeightsError,
    build_model,
    cached_weights_path,
    model_from_checkpoint,
    widen_head,
)
from hotrain.train import make_optimizer, make_scheduler

MOBILE = "deeplabv3_mobilenet_v3_large"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty, private torch hub cache (the user's real cache is never read or written)."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def fixed_input(seed=0, size=64):
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_missing_cached_weights_give_a_clear_message_naming_the_file(hub):
    entry = MODELS[MOBILE]
    for choice, enum in (("coco", entry.coco), ("imagenet", entry.imagenet)):
        with pytest.raises(WeightsError) as e:
            build_model(MOBILE, 2, weights=choice)
        msg = str(e.value)
        assert str(hub / enum.url.rsplit("/", 1)[1]) in msg and "get_state_dict" in msg and "--weights none" in msg
    assert not hub.exists() or not any(hub.iterdir())  # nothing was fetched


def test_coco_weights_from_cache_load_all_but_the_class_convs(hub):
    coco = MODELS[MOBILE].coco
    torch.manual_seed(1)  # stand-in for the real file: a 21-class COCO/VOC-shaped model with aux head
    reference = torchvision.models.segmentation.deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                            num_classes=21, aux_loss=True)
    hub.mkdir(parents=True)
    torch.save(reference.state_dict(), cached_weights_path(coco))
    model, origin = build_model(MOBILE, 3, weights="coco", aux=True)
    assert "COCO" in origin and str(cached_weights_path(coco)) in origin
    ref = reference.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith(("classifier.4", "aux_classifier.4")):
            assert v.shape[0] == 3
        else:
            assert torch.equal(v, ref[k]), k


def test_imagenet_backbone_weights_from_cache(hub):
    imagenet = MODELS[MOBILE].imagenet
    torch.manual_seed(2)
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    hub.mkdir(parents=True)
    torch.save(classifier.state_dict(), cached_weights_path(imagenet))
    model, origin = build_model(MOBILE, 2, weights="imagenet", aux=False)
    assert "ImageNet" in origin
    src = classifier.state_dict()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, src["features." + k]), k


def test_local_weights_file_and_checkpoint_file(tmp_path):
    torch.manual_seed(3)
    a, _ = build_model(MOBILE, 2, aux=False)
    torch.save(a.state_dict(), tmp_path / "w.pt")
    b, origin = build_model(MOBILE, 2, weights=str(tmp_path / "w.pt"), aux=False)
    assert str(tmp_path / "w.pt") in origin
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        build_model(MOBILE, 2, weights=str(tmp_path / "junk.pt"))
    state = a.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("nan"))
    torch.save(state, tmp_path / "nan.pt")
    with pytest.raises(WeightsError, match=rf"nan.pt: tensor {re.escape(name)} holds NaN"):
        build_model(MOBILE, 2, weights=str(tmp_path / "nan.pt"), aux=False)


def test_head_surgery_keeps_bg_and_hand_logits_and_adds_a_low_object_row():
    torch.manual_seed(4)
    model, _ = build_model(MOBILE, 2, aux=True, bn_momentum=0.1)
    model.eval()
    x = fixed_input()
    with torch.no_grad():
        before = model(x)
        widen_head(model, MOBILE, ["background", "hand"], ["background", "hand", "object"])
        after = model(x)
    for head in ("out", "aux"):
        assert after[head].shape[1] == 3
        torch.testing.assert_close(after[head][:, :2], before[head], rtol=0, atol=1e-5)
        # object row = background row lowered by the offset: p_obj starts at exp(-4) * p_bg
        torch.testing.assert_close(after[head][:, 2], before[head][:, 0] - OBJECT_BIAS_OFFSET, rtol=0, atol=1e-4)
    assert (after["out"].argmax(1) == before["out"].argmax(1)).all()


def test_model_from_checkpoint_widens_a_hand_checkpoint(tmp_path):
    torch.manual_seed(5)
    model, _ = build_model(MOBILE, 2, aux=False, bn_momentum=0.1)
    cfg = dict(DEFAULTS, model=MOBILE, aux=False, bn_momentum=0.1, stage="hand")
    ckpt_io.save_atomic({"model": model.state_dict(), "config": cfg, "num_classes": 2}, tmp_path / "hand.pt")
    ckpt = ckpt_io.load(tmp_path / "hand.pt")
    wide = model_from_checkpoint(ckpt, 3).eval()
    x = fixed_input(1)
    with torch.no_grad():
        torch.testing.assert_close(wide(x)["out"][:, :2], model.eval()(x)["out"], rtol=0, atol=1e-5)


def test_tiny_preset_sets_bn_momentum_0_1_everywhere():
    cfg = resolve_config({"preset": "tiny", "shards": "x"})
    assert cfg.model == MOBILE and cfg.bn_momentum == 0.1 and cfg.optimizer == "adamw"
    assert resolve_config({"preset": "tiny", "shards": "x", "steps": 7}).steps == 7  # CLI wins over preset
    model, origin = build_model(cfg.model, 2, aux=cfg.aux, bn_momentum=cfg.bn_momentum)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.momentum == 0.1 for m in bns) and "momentum 0.1" in origin


def lr_per_step(**overrides) -> list[float]:
    """The learning rate used at each of cfg["steps"] optimizer steps."""
    cfg = dict(DEFAULTS, optimizer="sgd", **overrides)
    opt = make_optimizer(cfg, torch.nn.Linear(2, 2))
    sched = make_scheduler(cfg, opt)
    lrs = []
    for _ in range(cfg["steps"]):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_poly_lr_follows_the_reference_formula():
    lrs = lr_per_step(steps=10, warmup_steps=0, lr=0.02)
    assert lrs == pytest.approx([0.02 * (1 - s / 10) ** 0.9 for s in range(10)])


def test_warmup_then_poly():
    lrs = lr_per_step(steps=10, warmup_steps=4, lr=0.1)
    expected = [0.1 * (s + 1) / 4 for s in range(4)] + [0.1 * (1 - (s - 4) / 6) ** 0.9 for s in range(4, 10)]
    assert lrs == pytest.approx(expected)


def test_checkpoint_is_atomic_and_loads_with_weights_only(tmp_path):
    path = tmp_path / "last.pt"
    ckpt_io.save_atomic({"model": {"w": torch.ones(2)}, "config": {"a": 1}, "step": 3}, path)
    with pytest.raises(Exception):  # an unpicklable object fails mid-save ...
        ckpt_io.save_atomic({"model": {}, "config": {}, "bad": lambda: 0}, path)
    ckpt = torch.load(path, weights_only=True)  # ... and the previous file is intact, no temp file is left
    assert ckpt["step"] == 3 and torch.equal(ckpt["model"]["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    path.write_bytes(path.read_bytes()[:50])  # truncated
    with pytest.raises(DataError, match="last.pt"):
        ckpt_io.load(path)


def test_rng_state_round_trip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt_io.save_atomic({"rng": ckpt_io.rng_state()}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt_io.set_rng_state(torch.load(tmp_path / "r.pt", weights_only=True)["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


# ------------------------------------------------------------------------------------------ stages, registry

LRASPP = "lraspp_mobilenet_v3_large"
SIDES = ["background", "left_hand", "right_hand", "object"]


def test_stage_registry_names_and_flip_permutation():
    from hotrain.stages import STAGES, flip_swap_permutation

    assert [list(STAGES[s].classes) for s in ("hand", "handobj", "sides")] == [
        ["background", "hand"], ["background", "hand", "object"], SIDES]
    assert flip_swap_permutation(SIDES) == [0, 2, 1, 3]
    assert flip_swap_permutation(["background", "hand", "object"]) == [0, 1, 2]
    assert flip_swap_permutation(["right_hand", "background", "left_hand"]) == [2, 1, 0]
    lut = STAGES["sides"].flip_lut  # targets: 1 left <-> 2 right; 4 (hand of unknown side) stays; 255 stays
    assert [int(lut[v]) for v in (0, 1, 2, 3, 4, 255)] == [0, 2, 1, 3, 4, 255]
    assert STAGES["hand"].flip_lut is None


@pytest.mark.parametrize("name", [MOBILE, LRASPP])
@pytest.mark.parametrize("old", [["background", "hand"], ["background", "hand", "object"]])
def test_head_surgery_to_sides_keeps_the_hand_and_object_mass(name, old):
    torch.manual_seed(6)
    model, _ = build_model(name, len(old), aux=name == MOBILE, bn_momentum=0.1)
    model.eval()
    x = fixed_input(2)
    with torch.no_grad():
        before = model(x)["out"].softmax(1)
        widen_head(model, name, old, SIDES)
        after = model(x)["out"].softmax(1)
    assert after.shape[1] == 4
    # both hand rows start from the hand row, each with half its probability: p_left = p_right, sum = p_hand
    torch.testing.assert_close(after[:, 1], after[:, 2], rtol=0, atol=1e-6)
    if "object" in old:  # exactly the old model, with the hand split in two
        torch.testing.assert_close(after[:, 1] + after[:, 2], before[:, 1], rtol=0, atol=1e-5)
        torch.testing.assert_close(after[:, 3], before[:, 2], rtol=0, atol=1e-5)
    else:  # object starts low, from background (as in hand -> handobj)
        assert (after[:, 3] < 0.05 * after[:, 0] + 1e-6).all()
        torch.testing.assert_close((after[:, 1] + after[:, 2]) / after[:, 0], before[:, 1] / before[:, 0],
                                   rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", [n if "resnet" not in n else pytest.param(n, marks=pytest.mark.slow)
                                  for n in MODELS if "resnet101" not in n])  # 101: resnet50's entry, 2x the time
def test_every_registered_model_builds_and_trains_a_step(name):
    from hotrain.losses import total_loss

    entry = MODELS[name]
    torch.manual_seed(0)
    model, _ = build_model(name, 2, aux=entry.aux_head is not None)
    out = model(fixed_input(size=32))
    assert out["out"].shape == (2, 2, 32, 32), name
    assert ("aux" in out) == (entry.aux_head is not None)
    loss = total_loss(out, torch.randint(0, 2, (2, 32, 32)), torch.tensor([True, True]), "hand")
    loss.backward()
    assert all(c.out_channels == 2 for g in entry.heads(model) for c in map(model.get_submodule, g))


def test_second_family_weights_from_cache(hub):
    """LR-ASPP: COCO weights (all but its two class convs) and ImageNet backbone weights, through its entry."""
    entry = MODELS[LRASPP]
    torch.manual_seed(7)
    reference = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                         num_classes=21)
    classifier = torchvision.models.mobilenet_v3_large(weights=None)
    hub.mkdir(parents=True)
    torch.save(reference.state_dict(), cached_weights_path(entry.coco))
    torch.save(classifier.state_dict(), cached_weights_path(entry.imagenet))
    model, origin = build_model(LRASPP, 4, weights="coco", aux=False)
    assert "COCO" in origin
    ref = reference.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith(("classifier.low_classifier", "classifier.high_classifier")):
            assert v.shape[0] == 4
        else:
            assert torch.equal(v, ref[k]), k
    model, origin = build_model(LRASPP, 2, weights="imagenet", aux=False)
    src = classifier.state_dict()
    assert all(torch.equal(v, src["features." + k]) for k, v in model.backbone.state_dict().items())
    with pytest.raises(ValueError, match="no auxiliary head"):
        build_model(LRASPP, 2, aux=True)


def test_config_round_trip_and_cli_options_come_from_it():
    from hotrain.cli import fit as fit_cmd
    from hotrain.config import FIELDS, TrainConfig

    cfg = resolve_config({"shards": "x", "preset": "tiny", "mix": {"a": 1.0}, "stage": "sides"})
    blob = cfg.to_dict()
    assert type(blob) is dict and TrainConfig.from_dict(blob) == cfg
    assert resolve_config({"shards": "x", "model": LRASPP}).aux is False  # a model without aux head: off
    options = {p.name for p in fit_cmd.params}
    assert set(FIELDS) <= options and options - set(FIELDS) == {"resume"}
    stage = next(p for p in fit_cmd.params if p.name == "stage")
    assert list(stage.type.choices) == ["hand", "handobj", "sides"]
    model = next(p for p in fit_cmd.params if p.name == "model")
    assert list(model.type.choices) == list(MODELS)


# ------------------------------------------------------------------------------------------ torch.compile


class TinySeg(torch.nn.Module):
    """A two-conv segmentation model with torchvision's output convention ({"out": logits})."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(), torch.nn.Conv2d(8, classes, 1))

    def forward(self, x):
        return {"out": self.body(x)}


def compile_or_skip(model, device: str):
    """torch.compile(model) after checking that inductor can build code here (a C++ compiler on CPUs)."""
    try:
        probe = torch.compile(lambda t: (t * 2).sin())
        probe(torch.ones(4, device=device))
    except Exception as e:  # noqa: BLE001 - missing compilers and headers surface as many types
        pytest.skip(f"torch.compile cannot build code on this {device}: {type(e).__name__}: {str(e)[:120]}")
    return torch.compile(model)


def compiled_matches_eager(device: str) -> None:
    from hotrain.losses import total_loss
    from hotrain.preprocess import normalize

    torch.manual_seed(0)
    eager = TinySeg().to(device)
    twin = TinySeg().to(device)
    twin.load_state_dict(eager.state_dict())
    compiled = compile_or_skip(twin, device)
    image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8, device=device)
    mask = torch.randint(0, 3, (2, 16, 16), device=device)
    has = torch.tensor([True, False], device=device)
    grads = []
    for net in (eager, compiled):
        loss = total_loss(net(normalize(image)), mask, has, "handobj")
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in (eager if net is eager else twin).parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-4, atol=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.slow
def test_torch_compile_of_a_tiny_model_matches_eager_on_cpu():
    compiled_matches_eager("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_torch_compile_and_bf16_prediction():
    compiled_matches_eager("cuda")
    from hotrain.model import predict_logits

    torch.manual_seed(1)
    model, _ = build_model(MOBILE, 4, aux=False)
    model = model.cuda().eval()
    image = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    full = predict_logits(model, image, device=torch.device("cuda")).softmax(1)
    half = predict_logits(model, image, device=torch.device("cuda"), amp="bf16", channels_last=True).softmax(1)
    assert (full - half).abs().max() < 0.05
    perm = [0, 2, 1, 3]
    tta = predict_logits(model, image, device=torch.device("cuda"), tta=True, flip_perm=perm)
    mirrored = predict_logits(model, image.flip(-1), device=torch.device("cuda"), tta=True, flip_perm=perm)
    torch.testing.assert_close(tta, mirrored.flip(-1)[:, perm], rtol=1e-3, atol=1e-3)


def test_flip_tta_swaps_left_and_right_scores():
    from hotrain.model import predict_logits
    from hotrain.stages import flip_swap_permutation

    torch.manual_seed(2)
    model = TinySeg(4).eval()
    perm = flip_swap_permutation(SIDES)
    image = torch.randint(0, 256, (1, 3, 12, 16), dtype=torch.uint8)
    cpu = torch.device("cpu")
    tta = predict_logits(model, image, device=cpu, tta=True, flip_perm=perm)
    mirrored = predict_logits(model, image.flip(-1), device=cpu, tta=True, flip_perm=perm)
    # the mirror image's left-hand scores are the original's right-hand scores, mirrored
    torch.testing.assert_close(tta, mirrored.flip(-1)[:, perm], rtol=1e-5, atol=1e-5)
