"""Stream ``hodata`` shards (``hodata/1`` and ``hodata/2``) into training and evaluation batches.

Only the shard schema is known here (``hodata.schema``); no dataset source is imported.

Training (:func:`make_train_loader`): each DDP rank takes its own disjoint slice of the shards
(``shards[rank::world_size]``); every DataLoader worker resamples shards from that slice with its own seed
(so no worker is ever left without data) and is cut to a fixed number of batches, so every rank yields
exactly ``steps`` batches and no collective waits on a rank that ran dry. Per-source weights (``mix``) draw
from one resampled stream per source. Augmentation is seeded per sample from the stream's own RNG (the
global torch RNG of the training process is left alone), so a run is reproducible for a given
(seed, rank, world_size, epoch, num_workers).

Evaluation (:func:`make_eval_loader`): every sample exactly once over all ranks and workers, in a fixed
order, no augmentation; images of different sizes are padded to the batch maximum (image 0, mask 255).

Labels: a batch's ``mask`` holds the stage's targets (:mod:`hotrain.stages`), mapped once per sample at decode
time: class ids, label-set ids (a hand of unknown side) and 255. The ``sides`` stage reads its map from
``inst.png`` and the json's ``instances`` (:func:`hodata.schema.side_label_map`); a ``hodata/1`` shard has
neither, so all its hands are of unknown side. The training flip relabels left and right hands.

Images stay uint8 on the CPU; :func:`normalize` converts them on the model's device, where it is cheap.
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
import re
import warnings
from collections import defaultdict
from itertools import islice
from typing import Any, Iterable, Iterator

import torch
import webdataset as wds
from webdataset.shardlists import expand_urls  # brace patterns ({000..009}), '::' lists
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from hodata.errors import DataError
from hodata.schema import IGNORE, decode_inst, decode_seg, side_label_map
from hotrain.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize  # noqa: F401 (re-exported)
from hotrain.stages import Stage, get_stage

SHUFFLE_BUFFER = 256  # samples held per worker for shuffling (a few hundred uint8 frames: modest memory)
SCALE_RANGE = (0.75, 1.5)  # scale jitter: shorter side = crop_size * U(SCALE_RANGE)

# <source>-<split>-NNNNNN.tar (hodata.shards.shard_name); the split holds no '-', the source may.
_SHARD_NAME = re.compile(r"(?P<source>[^\s/]+)-(?P<split>[^\s/-]+)-(?P<index>\d+)\.tar$")
_SHARD_IN_TEXT = re.compile(r"[^\s/]+\.tar(?=$|[\s?#])")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")  # pipe:, http:, s3:, file:, ...


# ------------------------------------------------------------------------------------------ shard lists


def parse_shard_name(url: str) -> tuple[str, str] | None:
    """``(source, split)`` from a shard path, URL or ``pipe:`` command; None when it does not follow the pattern."""
    names = _SHARD_IN_TEXT.findall(url)
    if not names:
        return None
    m = _SHARD_NAME.match(names[-1])
    return (m["source"], m["split"]) if m else None


def _expand_item(item: str) -> list[str]:
    if item.startswith("pipe:") or _URL.match(item) and not os.path.exists(item):
        return expand_urls(item)  # remote: webdataset opens it, nothing to check here
    if os.path.isdir(item):
        found = sorted(glob.glob(os.path.join(glob.escape(item), "*.tar")))
        if not found:
            raise DataError("folder holds no *.tar shards", item)
        return found
    out: list[str] = []
    for path in expand_urls(item):
        if glob.has_magic(path):
            out.extend(sorted(glob.glob(path)))
        elif os.path.isfile(path):
            out.append(path)
        else:
            raise DataError("shard not found", path)
    return out


def list_shards(spec: str | list[str], split: str | None = None) -> list[str]:
    """Shard URLs from a folder, glob(s), comma-separated list, brace pattern, URL or ``pipe:`` command.

    With ``split``, keep the shards whose file name (``<source>-<split>-NNNNNN.tar``) names that split.
    """
    items = [spec] if isinstance(spec, str) else list(spec)
    parts: list[str] = []
    for item in items:
        item = str(item)
        # a pipe: command may contain commas of its own; anything else is a comma-separated list
        parts.extend([item] if item.startswith("pipe:") else [p.strip() for p in item.split(",") if p.strip()])
    shards = list(dict.fromkeys(u for p in parts for u in _expand_item(p)))
    if not shards:
        raise DataError("no shards match", spec if isinstance(spec, str) else ",".join(map(str, spec)))
    if split is not None:
        kept = [u for u in shards if (parsed := parse_shard_name(u)) and parsed[1] == split]
        if not kept:
            splits = sorted({p[1] for u in shards if (p := parse_shard_name(u))})
            raise DataError(f"no shard of split {split!r} among {len(shards)} (splits found: {splits or 'none'})",
                            spec if isinstance(spec, str) else ",".join(map(str, spec)))
        shards = kept
    return shards


def rank_shards(shards: list[str], rank: int, world_size: int) -> list[str]:
    """This rank's disjoint slice of the shards."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(shards[rank::world_size])


# ------------------------------------------------------------------------------------------ labels / norm


def map_labels(stored: torch.Tensor, stage: str | Stage) -> torch.Tensor:
    """Stored label values (``seg.png``'s, or the side map's for ``sides``) -> the stage's targets, int64."""
    lut = torch.from_numpy(get_stage(stage).target_lut)
    return lut[stored.long()].long()


def stage_targets(sample: dict[str, Any], seg: Any, meta: dict[str, Any], stage: Stage) -> torch.Tensor:
    """The stage's uint8 target map of one decoded sample (class ids, label-set ids, 255)."""
    if stage.labels == "sides":  # hodata/1 (no inst.png): every hand pixel of unknown side
        inst = decode_inst(sample["inst.png"]) if "inst.png" in sample else None
        seg = side_label_map(seg, inst, meta.get("instances"))
    return torch.from_numpy(stage.target_lut[seg])


# ------------------------------------------------------------------------------------------ decoding


def _decode_rgb(data: bytes) -> torch.Tensor:
    """Image bytes -> uint8 (3, H, W). torchvision 0.29 marks its codecs deprecated in favour of TorchCodec
    (not a dependency here); its JPEG decoder is still the fastest at hand (1.4 ms at 640x480 against 1.9
    for cv2, which also needs an HWC->CHW copy), so the warning is silenced for this call only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def decode_sample(sample: dict[str, Any], stage: str | Stage) -> dict[str, Any]:
    """Raw tar members -> ``image`` uint8 (3, H, W), ``mask`` uint8 (H, W) of the stage's targets, ``source``,
    ``has_object`` (the source annotates objects), ``key``."""
    key, url = sample.get("__key__", "?"), sample.get("__url__")
    try:
        data = sample.get("jpg", sample.get("png"))
        if data is None or "seg.png" not in sample or "json" not in sample:
            raise ValueError(f"needs jpg|png, seg.png and json; has {sorted(k for k in sample if not k.startswith('__'))}")
        image = _decode_rgb(data)
        seg = decode_seg(sample["seg.png"])
        meta = json.loads(sample["json"])
        if tuple(seg.shape) != tuple(image.shape[1:]):
            raise ValueError(f"seg.png is {tuple(seg.shape)}, image is {tuple(image.shape[1:])}")
        mask = stage_targets(sample, seg, meta, get_stage(stage))
    except DataError:
        raise
    except Exception as e:  # one line naming the shard and the sample
        raise DataError(f"sample {key}: {e}", url) from e
    return {"image": image, "mask": mask, "source": str(meta.get("source", "?")),
            "has_object": bool(meta.get("labels", {}).get("object", False)), "key": key}


# ------------------------------------------------------------------------------------------ augmentation


_GRAY = torch.tensor([0.299, 0.587, 0.114])  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ_INV = torch.linalg.inv(_YIQ)


class LinearColorJitter(v2.Transform):
    """Brightness, contrast, saturation and hue jitter of uint8 images as ONE 3x3 colour matrix + offset.

    ``v2.ColorJitter`` on uint8 costs ~100 ms per 480x480 frame on one core (hue goes through HSV in
    float; each other factor is a separate float round trip), far more than decoding and resizing together.
    Brightness, contrast and saturation are linear in RGB; hue is done as a rotation of the chroma plane
    in YIQ space (as NVIDIA DALI does), also linear, so all four fold into one matrix applied in a single
    float pass (~5 ms). Brightness, contrast and saturation match torchvision's to +-1 level; the YIQ hue
    turn is a close relative of the HSV one, not the same values. Factors are drawn like ``v2.ColorJitter``'s, from the global torch RNG.
    Masks and other inputs pass through untouched.
    """

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0):
        super().__init__()
        if not 0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.ranges = {"brightness": (max(0.0, 1 - brightness), 1 + brightness),
                       "contrast": (max(0.0, 1 - contrast), 1 + contrast),
                       "saturation": (max(0.0, 1 - saturation), 1 + saturation), "hue": (-hue, hue)}

    def make_params(self, flat_inputs: list[Any]) -> dict[str, float]:
        return {k: float(torch.empty(1).uniform_(lo, hi)) for k, (lo, hi) in self.ranges.items()}

    @staticmethod
    def colour_matrix(brightness: float, contrast: float, saturation: float, hue: float) -> torch.Tensor:
        """The 3x3 matrix of saturation and hue (brightness and contrast scale it, see ``transform``)."""
        sat = saturation * torch.eye(3) + (1 - saturation) * torch.ones(3, 1) * _GRAY
        theta = -2 * math.pi * hue  # a fraction of a full turn, in the direction of torchvision's HSV shift
        cos, sin = math.cos(theta), math.sin(theta)
        rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
        return _YIQ_INV @ rot @ _YIQ @ sat

    def transform(self, inpt: Any, params: dict[str, float]) -> Any:
        x = inpt.as_subclass(torch.Tensor)
        if x.dtype != torch.uint8 or x.shape[-3] != 3:
            raise ValueError(f"LinearColorJitter needs uint8 RGB (..., 3, H, W), got {x.dtype} {tuple(x.shape)}")
        flat = x.reshape(-1, 3, x.shape[-2] * x.shape[-1]).float()
        b, c = params["brightness"], params["contrast"]
        # contrast blends towards the mean grey level of the brightened image; saturation and hue keep grey
        grey_mean = (flat.mean(-1) @ _GRAY) * b  # (N,)
        matrix = self.colour_matrix(**params) * (c * b)
        offset = ((1 - c) * grey_mean).view(-1, 1, 1)
        out = torch.matmul(matrix, flat).add_(offset).clamp_(0, 255).round_().to(torch.uint8)
        return tv_tensors.wrap(out.view_as(x), like=inpt)


class HorizontalFlip(v2.RandomHorizontalFlip):
    """``v2.RandomHorizontalFlip`` that also relabels mask classes which mirror into each other.

    A left hand seen in a mirror is a right hand: with ``mask_lut`` (:attr:`hotrain.stages.Stage.flip_lut`) a
    flipped mask's values are mapped through it. The random draw is the parent's, so without a lookup this is
    exactly ``v2.RandomHorizontalFlip``.
    """

    def __init__(self, p: float = 0.5, mask_lut: Any = None):
        super().__init__(p)
        self.mask_lut = None if mask_lut is None else torch.as_tensor(mask_lut, dtype=torch.uint8)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        out = super().transform(inpt, params)
        if self.mask_lut is not None and isinstance(inpt, tv_tensors.Mask):
            out = tv_tensors.wrap(self.mask_lut[out.as_subclass(torch.Tensor).long()], like=out)
        return out


class FocusCrop(v2.RandomCrop):
    """``v2.RandomCrop`` (padding as needed) that, with probability ``p``, places the crop over a labelled pixel.

    The pixel is drawn in two steps, first one of the labelled values present in the mask (``focus``, e.g.
    hand and object) with equal chances, then one of its pixels, so a class covering 1 % of the frame is
    seen as often as one covering 30 %; the crop's offset around it is uniform. Small, rare objects then
    appear in far more crops than uniform crops give them (foreground oversampling, as nnU-Net does).
    """

    def __init__(self, size: int, *, p: float, focus: list[int], fill: dict):
        super().__init__(size, pad_if_needed=True, fill=fill)
        self.p, self.focus = float(p), torch.tensor(sorted(focus), dtype=torch.uint8)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        params = super().make_params(flat_inputs)
        if float(torch.rand(())) >= self.p:
            return params
        mask = next((x for x in flat_inputs if isinstance(x, tv_tensors.Mask)), None)
        if mask is None:
            return params
        m = mask.as_subclass(torch.Tensor)
        present = [int(v) for v in self.focus if (m == v).any()]
        if not present:
            return params
        value = present[int(torch.randint(len(present), ()))]
        ys, xs = torch.nonzero(m == value, as_tuple=True)
        i = int(torch.randint(len(ys), ()))
        pad_left, pad_top, pad_right, pad_bottom = params["padding"]
        h, w = m.shape[-2] + pad_top + pad_bottom, m.shape[-1] + pad_left + pad_right
        ch, cw = params["height"], params["width"]
        top = self._offset(int(ys[i]) + pad_top, ch, h)
        left = self._offset(int(xs[i]) + pad_left, cw, w)
        return params | {"top": top, "left": left, "needs_crop": h > ch or w > cw}

    @staticmethod
    def _offset(at: int, crop: int, size: int) -> int:
        """A uniform crop start in [0, size - crop] whose window [start, start + crop) contains ``at``."""
        lo, hi = max(0, at - crop + 1), min(at, size - crop)
        return lo + int(torch.randint(hi - lo + 1, ()))


def train_transform(crop_size: int, augment: bool = True, flip_lut: Any = None, focus_crops: float = 0.0,
                    focus: list[int] | None = None) -> v2.Transform:
    """Joint image+mask transform; masks are resized nearest and padded with 255, images padded with 0.
    ``flip_lut``: what each mask value becomes in a mirrored image (left <-> right hand), if anything swaps;
    ``focus_crops``: the share of crops placed over a pixel whose value is in ``focus`` (:class:`FocusCrop`)."""
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
    if focus_crops > 0 and focus:
        crop = FocusCrop(crop_size, p=focus_crops, focus=focus, fill=fill)
    else:
        crop = v2.RandomCrop(crop_size, pad_if_needed=True, fill=fill)
    if not augment:  # still a fixed-size crop so batches stack
        return v2.Compose([crop])
    lo, hi = (max(1, round(crop_size * s)) for s in SCALE_RANGE)
    return v2.Compose([
        v2.RandomResize(lo, hi + 1, antialias=True),
        crop,
        HorizontalFlip(mask_lut=flip_lut),
        LinearColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    ])


def apply_seeded(transform: v2.Transform, image: torch.Tensor, seg: torch.Tensor, seed: int):
    """Run a transforms-v2 pipeline with its random draws seeded by ``seed``, restoring the global CPU RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators are never touched
        img, mask = transform(tv_tensors.Image(image), tv_tensors.Mask(seg))
    return img.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


# ------------------------------------------------------------------------------------------ collation


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch, padding to the largest size (image 0, mask 255); masks become int64."""
    h = max(s["image"].shape[1] for s in samples)
    w = max(s["image"].shape[2] for s in samples)
    image = torch.zeros((len(samples), 3, h, w), dtype=torch.uint8)
    mask = torch.full((len(samples), h, w), IGNORE, dtype=torch.uint8)
    for i, s in enumerate(samples):
        _, sh, sw = s["image"].shape
        image[i, :, :sh, :sw] = s["image"]
        mask[i, :sh, :sw] = s["mask"]
    return {
        "image": image,
        "mask": mask.long(),  # int64 once per batch
        "has_object": torch.tensor([s["has_object"] for s in samples], dtype=torch.bool),
        "source": [s["source"] for s in samples],
        "key": [s["key"] for s in samples],
    }


# ------------------------------------------------------------------------------------------ seeding


def stream_seed(*parts: int) -> int:
    """A stable 63-bit seed from integers, the same in every process and Python version."""
    return random.Random(repr(tuple(int(p) for p in parts))).getrandbits(63)


def _worker() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def _seed_worker(seed: int, rank: int, epoch: int):
    """DataLoader ``worker_init_fn``: seed the worker's global RNGs per (seed, rank, epoch, worker)."""

    def init(worker_id: int) -> None:
        import numpy as np

        s = stream_seed(seed, rank, epoch, worker_id)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)

    return init


def _loader_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """A private generator for the DataLoader's own draw (its base seed): without it, iterating the loader
    advances the training process's global torch RNG."""
    return torch.Generator().manual_seed(stream_seed(seed, rank, epoch, -1))


# ------------------------------------------------------------------------------------------ training stream


def _resampled_samples(urls: list[str], rng: random.Random) -> Iterator[dict[str, Any]]:
    """Endless samples from shards drawn with replacement (``wds.ResampledShards`` with our own seed)."""
    seed = rng.getrandbits(31)
    shards = wds.ResampledShards(urls, seed=seed, worker_seed=lambda: 0, deterministic=True)
    return iter(wds.DataPipeline(shards, wds.tarfile_to_samples()))


def _weighted_mix(streams: list[Iterator], weights: list[float], rng: random.Random) -> Iterator:
    """Draw from the streams with the given weights (like ``wds.RandomMix``, but with a private seeded RNG
    instead of the process-global ``random``, so the mixture is reproducible in the main process too)."""
    while True:
        yield next(rng.choices(streams, weights)[0])


def group_by_source(shards: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for u in shards:
        parsed = parse_shard_name(u)
        if parsed is None:
            raise DataError("shard name does not follow <source>-<split>-NNNNNN.tar, needed for --mix", u)
        groups[parsed[0]].append(u)
    return dict(groups)


def parse_mix(text: str) -> dict[str, float]:
    """``"ho3d=0.5,egohos=0.3"`` -> ``{"ho3d": 0.5, "egohos": 0.3}`` (for the CLI's ``--mix``)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--mix entry {part!r} is not NAME=WEIGHT")
    return out


class TrainStream(IterableDataset):
    """One rank's endless augmented sample stream, batched and cut to this worker's share of the steps."""

    def __init__(self, shards: list[str], *, stage: str, batch_size: int, crop_size: int, steps: int, seed: int,
                 rank: int, epoch: int, mix: dict[str, float] | None, augment: bool,
                 all_shards: list[str], world_size: int, focus_crops: float = 0.0):
        self.shards, self.stage, self.batch_size, self.steps = shards, get_stage(stage), batch_size, steps
        self.seed, self.rank, self.epoch = seed, rank, epoch
        focus = [t for n, t in self.stage.target_ids.items() if n != "background" and n != self.stage.object_unlabelled]
        self.transform = train_transform(crop_size, augment, flip_lut=self.stage.flip_lut, focus_crops=focus_crops,
                                         focus=focus)
        self.sources = self._plan_mix(mix, all_shards, world_size) if mix else None

    def _plan_mix(self, mix: dict[str, float], all_shards: list[str], world_size: int) -> list[tuple[list[str], float]]:
        groups = group_by_source(all_shards)
        unknown = sorted(set(mix) - set(groups))
        if unknown:
            raise ValueError(f"--mix names unknown source(s) {unknown}; shards hold {sorted(groups)}")
        if any(w < 0 for w in mix.values()) or not any(mix.get(s, 0) > 0 for s in groups):
            raise ValueError(f"--mix weights must be >= 0 with at least one > 0: {mix}")
        plan = []
        for name, urls in sorted(groups.items()):
            weight = float(mix.get(name, 0.0))  # a source left out of the mix is not drawn
            if weight <= 0:
                continue
            if len(urls) >= world_size:
                mine = urls[self.rank::world_size]  # disjoint per rank, within each source
            else:
                warnings.warn(f"source {name} has {len(urls)} shard(s) for {world_size} ranks: all ranks share them")
                mine = urls
            plan.append((mine, weight))
        return plan

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        rng = random.Random(stream_seed(self.seed, self.rank, self.epoch, worker))
        if self.sources is None:
            samples = _resampled_samples(self.shards, rng)
        else:
            streams = [_resampled_samples(urls, rng) for urls, _ in self.sources]
            samples = _weighted_mix(streams, [w for _, w in self.sources], rng)
        samples = wds.shuffle(SHUFFLE_BUFFER, initial=min(SHUFFLE_BUFFER, 64), rng=rng)(samples)
        batches = math.ceil(self.steps / num_workers)  # every worker cut to a fixed count; the loader trims
        batch: list[dict[str, Any]] = []
        for raw in samples:
            s = decode_sample(raw, self.stage)
            s["image"], s["mask"] = apply_seeded(self.transform, s["image"], s["mask"], rng.getrandbits(63))
            batch.append(s)
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
                batches -= 1
                if batches == 0:
                    return


class FixedSteps:
    """Iterable over exactly ``steps`` batches from a DataLoader; ``len()`` works (progress bars)."""

    def __init__(self, loader: DataLoader, steps: int):
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = iter(self.loader)
        try:
            yield from islice(it, self.steps)
        finally:
            del it  # shuts the workers down


def _check_args(stage: str, batch_size: int, num_workers: int, rank: int, world_size: int) -> None:
    get_stage(stage)
    if batch_size < 1 or num_workers < 0:
        raise ValueError(f"batch_size must be >= 1 and num_workers >= 0 (got {batch_size}, {num_workers})")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")


def make_train_loader(shards: list[str], *, stage: str, batch_size: int, crop_size: int, num_workers: int,
                      steps: int, seed: int, rank: int = 0, world_size: int = 1, epoch: int = 0,
                      mix: dict[str, float] | None = None, augment: bool = True, focus_crops: float = 0.0,
                      pin_memory: bool | None = None) -> FixedSteps:
    """Exactly ``steps`` training batches for this rank (see the module docstring)."""
    _check_args(stage, batch_size, num_workers, rank, world_size)
    shards = list(shards)
    if len(shards) < world_size:
        raise DataError(f"{len(shards)} shard(s) for {world_size} ranks: every rank needs at least one shard "
                        "(write smaller shards, e.g. hodata build --max-samples)")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    stream = TrainStream(rank_shards(shards, rank, world_size), stage=stage, batch_size=batch_size,
                         crop_size=crop_size, steps=steps, seed=seed, rank=rank, epoch=epoch, mix=mix,
                         augment=augment, all_shards=shards, world_size=world_size, focus_crops=focus_crops)
    loader = DataLoader(stream, batch_size=None, num_workers=num_workers,
                        worker_init_fn=_seed_worker(seed, rank, epoch) if num_workers else None,
                        generator=_loader_generator(seed, rank, epoch),
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                        prefetch_factor=2 if num_workers else None)
    return FixedSteps(loader, steps)


# ------------------------------------------------------------------------------------------ evaluation stream


def eval_resize(image: torch.Tensor, seg: torch.Tensor, max_side: int | None):
    """Shrink so the longer side is at most ``max_side`` (image antialiased, mask nearest); never enlarge."""
    h, w = image.shape[1:]
    if max_side is None or max(h, w) <= max_side:
        return image, seg
    scale = max_side / max(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    image = v2.functional.resize(image, size, antialias=True)
    seg = v2.functional.resize(seg[None], size, interpolation=v2.InterpolationMode.NEAREST)[0]
    return image, seg


class EvalStream(IterableDataset):
    """This rank's shards, split over workers, each sample once, in file order."""

    def __init__(self, shards: list[str], *, stage: str, batch_size: int, max_side: int | None):
        self.shards, self.stage, self.batch_size, self.max_side = shards, get_stage(stage), batch_size, max_side

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        mine = self.shards[worker::num_workers]
        if not mine:
            return
        pipeline = wds.DataPipeline(wds.SimpleShardList(mine), wds.tarfile_to_samples())
        batch: list[dict[str, Any]] = []
        for raw in pipeline:
            s = decode_sample(raw, self.stage)
            s["image"], s["mask"] = eval_resize(s["image"], s["mask"], self.max_side)
            batch.append(s)
            if len(batch) == self.batch_size:
                yield collate(batch)
                batch = []
        if batch:
            yield collate(batch)


def make_eval_loader(shards: list[str], *, stage: str, batch_size: int, num_workers: int, rank: int = 0,
                     world_size: int = 1, max_side: int | None = None,
                     pin_memory: bool | None = None) -> Iterable[dict[str, Any]]:
    """Every sample exactly once over all ranks; a rank without shards yields nothing."""
    _check_args(stage, batch_size, num_workers, rank, world_size)
    mine = rank_shards(list(shards), rank, world_size)
    if not mine:
        return []
    num_workers = min(num_workers, len(mine))  # a worker without a shard would only idle
    return DataLoader(EvalStream(mine, stage=stage, batch_size=batch_size, max_side=max_side),
                      batch_size=None, num_workers=num_workers, generator=_loader_generator(0, rank, 0),
                      pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                      prefetch_factor=2 if num_workers else None)
