"""Stream ``hodata`` shards (``hodata/1`` and ``hodata/2``) into training and evaluation batches.

Only the shard schema is known here (``hodata.schema``); no dataset source is imported.

Training (:func:`make_train_loader`): each DDP rank takes its own disjoint slice of the shards
(``shards[rank::world_size]``); every DataLoader worker resamples shards from that slice with its own seed
(so no worker is ever left without data) and is cut to a fixed number of batches, so every rank yields
exactly ``steps`` batches and no collective waits on a rank that ran dry. Per-source weights (``mix``) draw
from one resampled stream per source. Augmentation (:mod:`hotrain.augment`: the crop taken before the resize,
a JPEG decoded at the size the crop needs, flip and colour jitter in the same pass) is seeded per sample from the
stream's own RNG (the global torch RNG of the training process is left alone), so a run is reproducible for a
given (seed, rank, world_size, epoch, num_workers).

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

import cv2
import numpy as np
import torch
import webdataset as wds
from webdataset.shardlists import expand_urls  # brace patterns ({000..009}), '::' lists
from webdataset.tariterators import group_by_keys, tar_file_expander
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from hodata.errors import DataError
from hodata.schema import IGNORE, apply_lut, decode_inst, decode_seg, side_label_map
from hotrain.augment import SCALE_RANGE, TrainAugment  # noqa: F401 (SCALE_RANGE re-exported)
from hotrain.gpu_augment import collate_planned, planned_sample
from hotrain.integrity import HashingReader, ShardIndex
from hotrain.preprocess import IMAGENET_MEAN, IMAGENET_STD, normalize  # noqa: F401 (re-exported)
from hotrain.stages import Stage, get_stage

SHUFFLE_BUFFER = 256  # samples held per worker for shuffling (a few hundred uint8 frames: modest memory)

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


def train_shards_of_rank(shards: list[str], rank: int, world_size: int,
                         mix: dict[str, float] | None = None) -> list[str]:
    """Every training shard this rank may read: its slice, or with ``mix`` its slice of each mixed source
    (all of a source's shards when it has fewer than ranks), as :class:`TrainStream` draws them."""
    if not mix:
        return rank_shards(shards, rank, world_size)
    out: list[str] = []
    for name, urls in sorted(group_by_source(shards).items()):
        if mix.get(name, 0) > 0:
            out.extend(source_slice(urls, rank, world_size))
    return out


def source_slice(urls: list[str], rank: int, world_size: int) -> list[str]:
    """This rank's shards of one mixed source: disjoint per rank, or all of them when it has fewer than ranks."""
    return urls[rank::world_size] if len(urls) >= world_size else urls


# ------------------------------------------------------------------------------------------ labels / norm


def map_labels(stored: torch.Tensor, stage: str | Stage) -> torch.Tensor:
    """Stored label values (``seg.png``'s, or the side map's for ``sides``) -> the stage's targets, int64."""
    lut = torch.from_numpy(get_stage(stage).target_lut)
    return lut[stored.long()].long()


def stage_targets(sample: dict[str, Any], seg: np.ndarray, meta: dict[str, Any], stage: Stage) -> np.ndarray:
    """The stage's uint8 target map of one decoded sample (class ids, label-set ids, 255)."""
    if stage.labels == "sides":  # hodata/1 (no inst.png): every hand pixel of unknown side
        inst = decode_inst(sample["inst.png"]) if "inst.png" in sample else None
        seg = side_label_map(seg, inst, meta.get("instances"))
    return apply_lut(seg, stage.target_lut)


# ------------------------------------------------------------------------------------------ reading shards


def read_shards(verify: ShardIndex | None = None):
    """Pipeline stage: ``{"url": ...}`` items -> raw samples, like ``wds.tarfile_to_samples()``, except that

    - a shard that does not read as a tar (0 bytes, truncated, damaged header) is one :class:`DataError`
      naming it (webdataset's ``handler=`` hook), never a traceback from inside the tar reader;
    - with ``verify``, every shard it lists is hashed while the tar reader consumes it, and checked against
      the manifest when the reader has done with it (one pass over the file)."""

    def stage(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        current: dict[str, Any] = {"url": None, "stream": None}

        def handler(exn: Exception) -> bool:
            if isinstance(exn, DataError):  # raised by this stage, one level further in
                raise exn
            first = str(exn.args[0]).split(" @ ")[0].splitlines()[0][:200] if exn.args else ""
            message = f"shard does not read as a tar file ({type(exn).__name__}: {first})"
            stream = current.get("stream")
            if isinstance(stream, HashingReader):  # say whether it is the file the manifest lists
                try:
                    stream.finish()
                except DataError as e:
                    message += "; " + e.message.removeprefix("shard's ")
            raise DataError(message, current["url"]) from None

        def opened() -> Iterator[dict[str, Any]]:
            for item in src:
                url = current["url"] = item["url"]
                try:
                    stream = wds.gopen(url)
                except Exception as e:
                    raise DataError(f"shard cannot be opened ({type(e).__name__}: {e})", url) from None
                exp = verify.expected(url) if verify is not None else None
                if exp is not None:
                    stream = HashingReader(stream, url, exp)
                current["stream"] = stream
                yield {**item, "stream": stream}
                if exp is not None:  # the tar reader has asked for the next shard: this one was read whole
                    stream.finish()
                stream.close()

        return group_by_keys(tar_file_expander(opened(), handler=handler), handler=handler)

    return stage


class StreamError(DataError):
    """A :class:`DataError` raised inside a loader worker, re-raised in the training process as one line."""


def _errors_as_items(items: Iterator[Any]) -> Iterator[Any]:
    """Pass items through; a DataError becomes one last item. DataLoader re-raises worker exceptions with the
    worker's traceback in the message; an item crosses the process boundary as it is."""
    try:
        yield from items
    except DataError as e:
        yield {"__error__": (e.message, e.path)}


def raise_stream_errors(batches: Iterable[Any]) -> Iterator[Any]:
    """Batches of a loader whose stream uses :func:`_errors_as_items`; an error item raises here."""
    for b in batches:
        if isinstance(b, dict) and "__error__" in b:
            message, path = b["__error__"]
            raise StreamError(message, path)
        yield b


# ------------------------------------------------------------------------------------------ decoding


def _decode_rgb(data: bytes) -> torch.Tensor:
    """Image bytes -> uint8 (3, H, W). torchvision 0.29 marks its codecs deprecated in favour of TorchCodec
    (not a dependency here); its JPEG decoder is still the fastest at hand (1.4 ms at 640x480 against 1.9
    for cv2, which also needs an HWC->CHW copy), so the warning is silenced for this call only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)


def _members(sample: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """The image bytes and the parsed json of a sample that has jpg|png, seg.png and json."""
    data = sample.get("jpg", sample.get("png"))
    if data is None or "seg.png" not in sample or "json" not in sample:
        raise ValueError(f"needs jpg|png, seg.png and json; has {sorted(k for k in sample if not k.startswith('__'))}")
    return data, json.loads(sample["json"])


def decode_sample(sample: dict[str, Any], stage: str | Stage) -> dict[str, Any]:
    """Raw tar members -> ``image`` uint8 (3, H, W), ``mask`` uint8 (H, W) of the stage's targets, ``source``,
    ``has_object`` (the source annotates objects), ``key``."""
    key, url = sample.get("__key__", "?"), sample.get("__url__")
    try:
        data, meta = _members(sample)
        image = _decode_rgb(data)
        seg = decode_seg(sample["seg.png"])
        if tuple(seg.shape) != tuple(image.shape[1:]):
            raise ValueError(f"seg.png is {tuple(seg.shape)}, image is {tuple(image.shape[1:])}")
        mask = torch.from_numpy(stage_targets(sample, seg, meta, get_stage(stage)))
    except DataError:
        raise
    except Exception as e:  # one line naming the shard and the sample
        raise DataError(f"sample {key}: {e}", url) from e
    return {"image": image, "mask": mask, "source": str(meta.get("source", "?")),
            "has_object": bool(meta.get("labels", {}).get("object", False)), "key": key}


# ------------------------------------------------------------------------------------------ augmentation


def train_sample(sample: dict[str, Any], stage: Stage, augment: TrainAugment, seed: int,
                 planned: bool = False) -> dict[str, Any]:
    """Raw tar members -> one augmented training sample (as :func:`decode_sample`, cropped to ``augment.crop``):
    the label map is decoded and mapped first, the image decoded at the size the crop needs
    (:mod:`hotrain.augment`). ``planned`` (``--gpu-augment``): the target map is cropped here and the image
    left encoded with its plan, for the training device (:mod:`hotrain.gpu_augment`)."""
    key, url = sample.get("__key__", "?"), sample.get("__url__")
    try:
        data, meta = _members(sample)
        mask = stage_targets(sample, decode_seg(sample["seg.png"]), meta, stage)
        if planned:
            out = planned_sample(data, mask, augment, seed)
        else:
            image, mask = augment(data, mask, seed)
            out = {"image": torch.from_numpy(image).permute(2, 0, 1), "mask": torch.from_numpy(mask)}
    except DataError:
        raise
    except Exception as e:  # one line naming the shard and the sample
        raise DataError(f"sample {key}: {e}", url) from e
    return out | {"source": str(meta.get("source", "?")),
                  "has_object": bool(meta.get("labels", {}).get("object", False)), "key": key}


# ------------------------------------------------------------------------------------------ collation


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch, padding to the largest size (image 0, mask 255); masks become int64. Training
    images come as views of HWC arrays and their batch is ``channels_last`` (the same values and shape)."""
    h = max(s["image"].shape[1] for s in samples)
    w = max(s["image"].shape[2] for s in samples)
    if samples[0]["image"].stride(0) == 1:  # views of HWC arrays (training): a channels_last batch copies them as is
        image = torch.zeros((len(samples), h, w, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
    else:
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


def quiet_worker(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C reaches the whole process group; a worker ignores it and ends when
    the main process shuts the loader down (otherwise every worker prints a KeyboardInterrupt traceback), and
    says nothing when the main process, interrupted, drops a batch's handover (:func:`quiet_lost_handover`)."""
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.excepthook = quiet_lost_handover(sys.excepthook)


def quiet_lost_handover(hook):
    """``sys.excepthook`` for a loader worker: a worker hands each batch's tensors to the main process as file
    descriptors, served by a thread of its own (multiprocessing's resource sharer) that reports a peer lost in
    mid-handshake with a traceback. A Ctrl-C that lands in the main process during a handover is such a loss,
    and nothing to report; everything else goes to ``hook``."""
    import threading

    def excepthook(kind, value, tb):
        if issubclass(kind, (EOFError, ConnectionError)) and threading.current_thread() is not threading.main_thread():
            return
        hook(kind, value, tb)

    return excepthook


def _seed_worker(seed: int, rank: int, epoch: int):
    """DataLoader ``worker_init_fn``: seed the worker's global RNGs per (seed, rank, epoch, worker)."""

    def init(worker_id: int) -> None:
        import numpy as np

        quiet_worker()
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
    return iter(wds.DataPipeline(shards, read_shards()))


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
                 all_shards: list[str], world_size: int, focus_crops: float = 0.0, skip: Iterable[str] = (),
                 gpu_augment: bool = False):
        skip = set(skip)
        self.planned = gpu_augment
        self.shards = [u for u in shards if u not in skip]
        if not self.shards:
            raise DataError(f"every training shard of rank {rank} is damaged ({len(shards)} skipped)", shards[0])
        self.stage, self.batch_size, self.steps = get_stage(stage), batch_size, steps
        self.seed, self.rank, self.epoch = seed, rank, epoch
        focus = [t for n, t in self.stage.target_ids.items() if n != "background" and n != self.stage.object_unlabelled]
        self.augment = TrainAugment(crop_size, augment, flip_lut=self.stage.flip_lut, focus_crops=focus_crops,
                                    focus=tuple(focus))
        self.sources = self._plan_mix(mix, all_shards, world_size, skip) if mix else None

    def _plan_mix(self, mix: dict[str, float], all_shards: list[str], world_size: int,
                  skip: set[str]) -> list[tuple[list[str], float]]:
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
            if len(urls) < world_size:
                warnings.warn(f"source {name} has {len(urls)} shard(s) for {world_size} ranks: all ranks share them")
            mine = source_slice(urls, self.rank, world_size)
            kept = [u for u in mine if u not in skip]
            if not kept:
                raise DataError(f"every shard of source {name} read by rank {self.rank} is damaged", mine[0])
            plan.append((kept, weight))
        return plan

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _errors_as_items(self._batches())

    def _batches(self) -> Iterator[dict[str, Any]]:
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
            batch.append(train_sample(raw, self.stage, self.augment, rng.getrandbits(63), self.planned))
            if len(batch) == self.batch_size:
                yield collate_planned(batch) if self.planned else collate(batch)
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
            yield from islice(raise_stream_errors(it), self.steps)
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
                      pin_memory: bool | None = None, skip: Iterable[str] = (), gpu_augment: bool = False
                      ) -> FixedSteps:
    """Exactly ``steps`` training batches for this rank (see the module docstring); shards in ``skip`` (found
    damaged) are left out of this rank's slice. ``gpu_augment``: batches leave the images encoded, with their
    augmentation drawn, for :func:`hotrain.gpu_augment.batch_images` on the training device."""
    _check_args(stage, batch_size, num_workers, rank, world_size)
    # One OpenCV thread per loader process (N workers on N cores, not N x cores threads), set before the workers
    # fork: reconfiguring a thread pool a forked child inherited can deadlock.
    cv2.setNumThreads(1)
    shards = list(shards)
    if len(shards) < world_size:
        raise DataError(f"{len(shards)} shard(s) for {world_size} ranks: every rank needs at least one shard "
                        "(write smaller shards, e.g. hodata build --max-samples)")
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    stream = TrainStream(rank_shards(shards, rank, world_size), stage=stage, batch_size=batch_size,
                         crop_size=crop_size, steps=steps, seed=seed, rank=rank, epoch=epoch, mix=mix,
                         augment=augment, all_shards=shards, world_size=world_size, focus_crops=focus_crops,
                         skip=skip, gpu_augment=gpu_augment)
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

    def __init__(self, shards: list[str], *, stage: str, batch_size: int, max_side: int | None,
                 verify: ShardIndex | None = None):
        self.shards, self.stage, self.batch_size, self.max_side = shards, get_stage(stage), batch_size, max_side
        self.verify = verify

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return _errors_as_items(self._batches())

    def _batches(self) -> Iterator[dict[str, Any]]:
        worker, num_workers = _worker()
        mine = self.shards[worker::num_workers]
        if not mine:
            return
        pipeline = wds.DataPipeline(wds.SimpleShardList(mine), read_shards(self.verify))
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
                     pin_memory: bool | None = None, verify: ShardIndex | None = None,
                     skip: Iterable[str] = ()) -> Iterable[dict[str, Any]]:
    """Every sample exactly once over all ranks; a rank without shards yields nothing. ``verify``: check the
    shards it lists while reading them (a damaged one raises DataError); ``skip``: shards left out (found
    damaged before)."""
    _check_args(stage, batch_size, num_workers, rank, world_size)
    skip = set(skip)
    mine = [u for u in rank_shards(list(shards), rank, world_size) if u not in skip]
    if not mine:
        return []
    num_workers = min(num_workers, len(mine))  # a worker without a shard would only idle
    loader = DataLoader(EvalStream(mine, stage=stage, batch_size=batch_size, max_side=max_side, verify=verify),
                        batch_size=None, num_workers=num_workers, generator=_loader_generator(0, rank, 0),
                        worker_init_fn=quiet_worker if num_workers else None,
                        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
                        prefetch_factor=2 if num_workers else None)
    return _Raising(loader)


class _Raising:
    """An eval DataLoader whose workers' DataErrors are raised as one line (:func:`raise_stream_errors`)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return raise_stream_errors(self.loader)
