"""A tiny Source used by the builder tests: frames are generated from their index, some are bad."""

from __future__ import annotations

import cv2
import numpy as np

from hodata.errors import BadFrame
from hodata.schema import Sample
from hodata.sources import FrameRef, Source


class ToySource(Source):
    name = "toy"

    def __init__(self, root, options=None, *, frames=30, bad=(), size=(32, 24), splits=("train", "val")):
        super().__init__(root, options)
        self.n, self.bad, self.size, self.splits = frames, set(bad), size, splits

    def frames(self):
        return [FrameRef(self.splits[i % len(self.splits)], f"seq{i // 10}", f"{i:05d}", (i,)) for i in range(self.n)]

    def load(self, ref):
        i = ref.info[0]
        if i in self.bad:
            raise BadFrame("corrupt image (toy)", f"{ref.sequence}/{ref.frame}.jpg")
        w, h = self.size
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img)
        seg = np.zeros((h, w), np.uint8)
        seg[: h // 2, : (i % w) + 1] = 1
        seg[h // 2 :, : w // 3] = 2
        seg[0, 0] = 255
        return Sample("toy", ref.split, ref.sequence, ref.frame, buf.tobytes(), "jpg", seg, w, h,
                      {"hand": True, "object": True}, camera={"K": [[30.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]]},
                      provenance={"image": f"{ref.sequence}/{ref.frame}.jpg"}, extra={"mask_agreement": {"hand_iou": 0.9 + i / 1000}})
