#!/usr/bin/env python
"""Benchmark ``hodata build`` against a plain single-process webdataset.TarWriter loop, on HO3D and EgoHOS.

Data: synthetic datasets in the real release layouts, 640x480 by default, generated once into ``--data-dir``
(kept for reruns): HO3D v3 (``hodata.demo.ho3d``: MANO hand + YCB-like object, poses rendered to masks) and
EgoHOS (``hodata.demo.egohos``: label maps of ids 0..8).

Baselines (what a competent user writes; one process, webdataset's TarWriter, PIL for the PNGs), each giving
the same samples as the build: the same keys, the members ``jpg``, ``seg.png``, ``inst.png`` and ``json``, and
the same label maps pixel for pixel (checked on every sample in the first round, or the script stops):

- HO3D: read the RGB bytes and the annotation pickle, pose MANO (hodata.mano) and the object, render with the
  same z-buffer (hodata.render), encode the label map once and store it as both ``seg.png`` and ``inst.png``
  (HO3D's instance ids are its labels), split by scene as the source does;
- EgoHOS: read the image bytes and the label PNG, map ids to labels and to instance ids with lookup tables,
  encode both maps.

What the build does on top, in the timed runs: decodes every image to the end (a truncated file is skipped
and recorded, not stored), checks every label map and instance map against the schema, counts class pixels,
hashes and fsyncs every shard and journals the manifest (after the first shard, then every 10 s); for HO3D it
also reads and decodes the shipped quarter-resolution masks and records their IoU with the render.

Each round runs the baseline and the ``--workers`` values interleaved, the builds in this process (which, like
``hodata build``, never imports torch) and the baselines in one process of their own; the best of
``--repeats`` rounds counts (other load only ever slows a run down) and the ratios of each round are shown
too. Beside wall-clock rates the script prints frames per CPU-second (the process's CPU time plus its
workers'): on a machine shared with other work, that is the steadier figure of what one core does. The load
average is printed with every round. Each round also times the dataset's bare frame-encoding loop in one
forked process and in two at once (:class:`BareLoops`): what two processes of this work get from the machine
in those minutes, the ceiling for ``--workers 2`` against ``--workers 1``.

Then (unless ``--no-memory`` or ``--quick``) the peak RSS of EgoHOS builds of 1x and 4x the frames, each in its
own subprocess: the builder streams, so the peaks should be the same.

  .venv/bin/python scripts/bench_build.py --quick            # 300 frames per dataset, 3 rounds: ~3-5 min
  .venv/bin/python scripts/bench_build.py                    # 2400 HO3D + 1000 EgoHOS frames, memory
  .venv/bin/python scripts/bench_build.py --datasets ho3d --workers 0 --profile   # where the time goes
  .venv/bin/python scripts/bench_build.py --no-speed --no-memory --slices 1000   # what slicing ranges gives
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pickle
import pstats
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

EGOHOS_SPLITS = ("train", "val", "test_indomain", "test_outdomain")
TARGETS = {"w0_vs_baseline": 1.3, "w2_vs_w1": 1.8, "ho3d_one_core": 250.0}


def png_bytes(labels: np.ndarray) -> bytes:
    """A label map as PNG, the usual way (PIL, default settings)."""
    bio = io.BytesIO()
    Image.fromarray(labels, mode="L").save(bio, format="PNG")
    return bio.getvalue()


def load_avg() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


# ----------------------------------------------------------------------------------------------- EgoHOS


def _write_egohos_chunk(args: tuple[str, int, int, tuple[int, int]]) -> None:
    from hodata.demo.egohos import write

    out, frames, seed, size = args
    write(Path(out), frames=frames, seed=seed, size=size)


def make_egohos(root: Path, frames: int, size: tuple[int, int], jobs: int) -> None:
    """EgoHOS-layout frames under ``root``, generated in parallel chunks (one seed each; names carry it)."""
    chunks = max(1, min(jobs, frames // 50))
    per = [frames // chunks + (i < frames % chunks) for i in range(chunks)]
    parts = root.parent / (root.name + ".parts")
    shutil.rmtree(parts, ignore_errors=True)
    with ProcessPoolExecutor(chunks) as pool:
        list(pool.map(_write_egohos_chunk, [(str(parts / str(i)), n, i, size) for i, n in enumerate(per)]))
    for i in range(chunks):
        for f in sorted((parts / str(i)).rglob("*")):
            if f.is_file():
                dest = root / f.relative_to(parts / str(i))
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, dest)
    shutil.rmtree(parts)


def egohos_source(root: Path):
    from hodata.sources.egohos import EgoHOSSource

    return EgoHOSSource(root)


def egohos_baseline(root: Path, out: Path, max_samples: int) -> int:
    """The plain way: one process, PIL for the labels, TarWriter for the tar. Returns samples written."""
    import webdataset as wds

    from hodata.sources.egohos import frame_instances, id_lut, instance_lut  # the same id mappings

    lut, inst_lut = id_lut("ignore"), instance_lut("ignore")
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for split in EGOHOS_SPLITS:
        names = sorted(p.stem for p in (root / split / "image").glob("*.jpg"))
        writer, in_shard, index = None, 0, 0
        for name in names:
            image = (root / split / "image" / f"{name}.jpg").read_bytes()
            ids = np.asarray(Image.open(root / split / "label" / f"{name}.png"))
            seg, inst = lut[ids], inst_lut[ids]
            seq = name.rsplit("_", 1)[0]
            meta = {"schema": "hodata/2", "source": "egohos", "split": split, "sequence": seq, "frame": name,
                    "width": int(seg.shape[1]), "height": int(seg.shape[0]),
                    "labels": {"hand": True, "object": True, "sides": True},
                    "instances": frame_instances(np.unique(ids).tolist(), inst_lut)}
            if writer is None or in_shard >= max_samples:
                if writer is not None:
                    writer.close()
                writer = wds.TarWriter(str(out / f"egohos-{split}-{index:06d}.tar"), encoder=False)
                index, in_shard = index + 1, 0
            writer.write({"__key__": f"egohos/{split}/{seq}/{name}", "jpg": image, "seg.png": png_bytes(seg),
                          "inst.png": png_bytes(inst), "json": json.dumps(meta).encode()})
            in_shard += 1
            written += 1
        if writer is not None:
            writer.close()
    return written


# ------------------------------------------------------------------------------------------------- HO3D


def make_ho3d(root: Path, frames: int, size: tuple[int, int], jobs: int) -> None:
    from hodata.demo.ho3d import write

    write(root, frames=frames, size=size)


def ho3d_source(root: Path):
    from hodata.sources.ho3d import HO3DSource

    return HO3DSource(root / "HO3D_v3", {"mano_dir": root / "mano", "ycb_dir": root / "models"})


def ho3d_baseline(root: Path, out: Path, max_samples: int) -> int:
    """The plain way for HO3D: pose, render, PNG, TarWriter; one process. Returns samples written."""
    import trimesh
    import webdataset as wds

    from hodata.mano import axis_angle_to_matrix, load_mano
    from hodata.render import render_labels
    from hodata.sources.ho3d import sequence_group  # the split rule: multi-camera scenes stay together
    from hodata.splits import assign_groups

    data = root / "HO3D_v3"
    mano = load_mano(root / "mano" / "MANO_RIGHT.pkl", "right")
    hand_faces = np.asarray(mano.faces, np.int64)
    flip = np.diag([1.0, -1.0, -1.0])  # HO3D's OpenGL camera frame -> OpenCV
    entries = [tuple(line.split("/")) for line in (data / "train.txt").read_text().split()]
    seqs = sorted({s for s, _ in entries})
    groups = assign_groups({sequence_group(s) for s in seqs}, 0.1, seed="ho3d")
    by_split: dict[str, list] = {}
    for seq, frame in entries:
        by_split.setdefault(groups[sequence_group(seq)], []).append((seq, frame))
    meshes: dict[str, tuple] = {}
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    for split, items in by_split.items():
        writer, in_shard, index = None, 0, 0
        for seq, frame in items:
            d = data / "train" / seq
            image = (d / "rgb" / f"{frame}.jpg").read_bytes()
            with open(d / "meta" / f"{frame}.pkl", "rb") as f:
                meta = pickle.load(f, encoding="latin1")
            with Image.open(io.BytesIO(image)) as im:
                size = im.size
            hand, _ = mano.forward(np.asarray(meta["handPose"], np.float64).reshape(48),
                                   np.asarray(meta["handBeta"], np.float64).reshape(10),
                                   np.asarray(meta["handTrans"], np.float64).reshape(3), flat_hand_mean=True)
            name = str(meta["objName"])
            if name not in meshes:
                m = trimesh.load(root / "models" / name / "textured_simple.obj", force="mesh", process=False)
                meshes[name] = (np.asarray(m.vertices, np.float64), np.asarray(m.faces, np.int64))
            ov, of = meshes[name]
            rot = axis_angle_to_matrix(np.asarray(meta["objRot"], np.float64).reshape(1, 3))[0]
            ov = ov @ rot.T + np.asarray(meta["objTrans"], np.float64).reshape(1, 3)
            K = np.asarray(meta["camMat"], np.float64).reshape(3, 3)
            seg = render_labels(K, size, [(hand @ flip, hand_faces, 1), (ov @ flip, of, 2)])
            png = png_bytes(seg)
            info = {"schema": "hodata/2", "source": "ho3d", "split": split, "sequence": seq, "frame": frame,
                    "width": size[0], "height": size[1], "labels": {"hand": True, "object": True, "sides": True},
                    "instances": [{"id": 1, "class": "hand", "side": "right"}, {"id": 2, "class": "object",
                                                                               "name": name}],
                    "camera": {"K": K.tolist()}}
            if writer is None or in_shard >= max_samples:
                if writer is not None:
                    writer.close()
                writer = wds.TarWriter(str(out / f"ho3d-{split}-{index:06d}.tar"), encoder=False)
                index, in_shard = index + 1, 0
            writer.write({"__key__": f"ho3d/{split}/{seq}/{frame}", "jpg": image, "seg.png": png, "inst.png": png,
                          "json": json.dumps(info).encode()})
            in_shard += 1
            written += 1
        if writer is not None:
            writer.close()
    return written


DATASETS = {
    "ho3d": {"make": make_ho3d, "source": ho3d_source, "baseline": ho3d_baseline, "frames": 2400},
    "egohos": {"make": make_egohos, "source": egohos_source, "baseline": egohos_baseline, "frames": 1000},
}


def prepare(name: str, data_dir: Path, frames: int, size: tuple[int, int]) -> Path:
    """The dataset folder (generated when missing; reused after), its files read once into the page cache."""
    root = data_dir / f"{name}_{frames}_{size[0]}x{size[1]}"
    stamp = root / ".bench.json"
    want = {"frames": frames, "size": list(size)}
    if not (stamp.exists() and json.loads(stamp.read_text()) == want):
        shutil.rmtree(root, ignore_errors=True)
        t0 = time.time()
        DATASETS[name]["make"](root, frames, size, os.cpu_count() or 2)
        stamp.write_text(json.dumps(want))
        print(f"generated {name}: {frames} frames at {size[0]}x{size[1]} in {time.time() - t0:.0f} s -> {root}")
    for f in root.rglob("*.*"):  # warm the page cache so neither side pays for the first read
        f.read_bytes()
    return root


# -------------------------------------------------------------------------------------------- timing


def project_build(name: str, root: Path, out: Path, workers: int, max_samples: int) -> int:
    from hodata.shards import BuildConfig, build

    rec = build(DATASETS[name]["source"](root), BuildConfig(out=out, workers=workers, max_samples=max_samples,
                                                            progress=False, command=["bench_build"]))
    return rec["totals"]["samples"]


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


LAST_SPLIT: dict[str, float] = {}  # CPU seconds of the last timed run: this process, its workers


def timed(fn, *args) -> tuple[int, float, float]:
    """(result, wall seconds, CPU seconds of this process and of the workers it started and reaped)."""
    c0, k0, t0 = time.process_time(), children_cpu(), time.perf_counter()
    n = fn(*args)
    wall = time.perf_counter() - t0
    LAST_SPLIT.update(main=time.process_time() - c0, workers=children_cpu() - k0)
    return n, wall, LAST_SPLIT["main"] + LAST_SPLIT["workers"]


def _baseline_in_child(name: str, root: Path, out: Path, max_samples: int) -> tuple[int, float, float]:
    """Run in the baseline's own process: (samples, wall seconds, CPU seconds) of one baseline run."""
    c0, t0 = time.process_time(), time.perf_counter()
    n = DATASETS[name]["baseline"](root, out, max_samples)
    return n, time.perf_counter() - t0, time.process_time() - c0


def _import_baseline_libraries() -> None:
    import webdataset  # noqa: F401 - pulls in torch: seconds, paid once before any timed run


class BaselineProcess:
    """The baselines run in a process of their own, started once: webdataset imports torch (~0.5 GB of
    mappings), and a build forked from a process that holds it pays ~25 ms per worker to copy the page
    tables. ``hodata build`` never imports torch, so its builds are timed here, in a process that does not
    either; each side runs as its users run it."""

    def __init__(self) -> None:
        import multiprocessing as mp

        self._pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
        self._pool.submit(_import_baseline_libraries).result()

    def run(self, name: str, root: Path, out: Path, max_samples: int) -> tuple[int, float, float]:
        return self._pool.submit(_baseline_in_child, name, root, out, max_samples).result()

    def close(self) -> None:
        self._pool.shutdown()


def read_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                key, ext = m.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return samples


def check_equivalent(project: Path, baseline: Path) -> None:
    """Same keys, same members, same label maps (decoded raw) on every sample; else stop."""
    from hodata.schema import decode_seg

    a, b = read_samples(project), read_samples(baseline)
    if sorted(a) != sorted(b):
        raise SystemExit(f"keys differ: project {len(a)}, baseline {len(b)}, {len(set(a) ^ set(b))} not shared")
    for key in a:
        if sorted(a[key]) != sorted(b[key]):
            raise SystemExit(f"{key}: members differ: project {sorted(a[key])}, baseline {sorted(b[key])}")
        for ext in ("seg.png", "inst.png"):
            if not np.array_equal(decode_seg(a[key][ext]), decode_seg(b[key][ext])):
                raise SystemExit(f"{key}: {ext} differs between project and baseline")
        if a[key]["jpg"] != b[key]["jpg"]:
            raise SystemExit(f"{key}: image bytes differ")


def run_dataset(name: str, root: Path, work: Path, workers: list[int], repeats: int, max_samples: int,
                size: tuple[int, int], baseline: BaselineProcess) -> dict:
    sides = ["baseline"] + [f"w{w}" for w in workers]
    best = {s: (float("inf"), float("inf")) for s in sides}  # (wall, cpu) of the fastest run
    scaling = 1 in workers and 2 in workers
    bare = BareLoops(name, root, max_samples) if scaling else None
    bare_best = {1: float("inf"), 2: float("inf")}  # wall seconds of one loop alone, of two at once
    rounds: list[dict[str, float]] = []
    n = 0
    print(f"\n{name} {size[0]}x{size[1]}: {repeats} interleaved rounds of baseline, "
          + ", ".join(f"--workers {w}" for w in workers) + f"; {os.cpu_count()} cores")
    for r in range(repeats):
        rates: dict[str, float] = {}
        line = [f"  round {r + 1} (load {load_avg()})"]
        os.sync()  # no run pays for the writeback of the one before it (the baseline never fsyncs)
        n, wall, cpu = baseline.run(name, root, work / "baseline", max_samples)
        best["baseline"] = min(best["baseline"], (wall, cpu))
        rates["baseline"] = n / wall
        line.append(f"baseline {n / wall:.1f}/s ({n / cpu:.0f}/cpu-s)")
        for w in workers:
            out = work / f"project_w{w}"
            os.sync()
            got, wall, cpu = timed(project_build, name, root, out, w, max_samples)
            if got != n:
                raise SystemExit(f"sample counts differ: project {got}, baseline {n}")
            if r == 0:
                check_equivalent(out, work / "baseline")
            best[f"w{w}"] = min(best[f"w{w}"], (wall, cpu))
            rates[f"w{w}"] = n / wall
            line.append(f"w{w} {n / wall:.1f}/s ({n / cpu:.0f}/cpu-s" + (
                f"; CPU ms/frame main {1e3 * LAST_SPLIT['main'] / n:.2f}, workers {1e3 * LAST_SPLIT['workers'] / n:.2f})"
                if w else ")"))
            shutil.rmtree(out)
        shutil.rmtree(work / "baseline")
        if bare is not None:
            walls = {k: bare.wall(k) for k in (1, 2)}
            for k, v in walls.items():
                bare_best[k] = min(bare_best[k], v)
            rates["bare"] = walls[1] / walls[2]
            line.append(f"bare loops 2 vs 1 {rates['bare']:.2f}x")
        rounds.append(rates)
        print(", ".join(line) + f"; load after {load_avg()}", flush=True)

    base_wall, base_cpu = best["baseline"]
    print(f"best of {repeats} ({n} samples; wall-clock frames/s, and frames per CPU-second):")
    print(f"  baseline loop (TarWriter, PIL png, 1 process): {n / base_wall:7.1f}/s  {n / base_cpu:7.1f}/cpu-s")
    for w in workers:
        wall, cpu = best[f"w{w}"]
        per_round = [rd[f"w{w}"] / rd["baseline"] for rd in rounds]
        print(f"  hodata build --workers {w}:                    {n / wall:7.1f}/s  {n / cpu:7.1f}/cpu-s"
              f"  = {base_wall / wall:.2f}x baseline (rounds: {', '.join(f'{v:.2f}' for v in per_round)})")
    summary = {"samples": n, "best": best}
    if 0 in workers:
        w0_wall, w0_cpu = best["w0"]
        print(f"  --workers 0 vs baseline: {base_wall / w0_wall:.2f}x wall, {base_cpu / w0_cpu:.2f}x per CPU-second"
              f" (target >= {TARGETS['w0_vs_baseline']}x)")
        if name == "ho3d":
            print(f"  --workers 0, one core: {n / w0_cpu:.0f} frames per CPU-second, {n / w0_wall:.0f}/s wall"
                  f" (target >= {TARGETS['ho3d_one_core']:.0f})")
    if scaling:
        per_round = [rd["w2"] / rd["w1"] for rd in rounds]
        (w1_wall, w1_cpu), (w2_wall, w2_cpu) = best["w1"], best["w2"]
        print(f"  --workers 2 vs --workers 1: {w1_wall / w2_wall:.2f}x wall (rounds: "
              f"{', '.join(f'{v:.2f}' for v in per_round)}; target >= {TARGETS['w2_vs_w1']}x); CPU per frame "
              f"{1e3 * w2_cpu / n:.2f} vs {1e3 * w1_cpu / n:.2f} ms, so on 2 free cores at most "
              f"{2 * w1_cpu / w2_cpu:.2f}x")
        bare_rounds = ", ".join(f"{rd['bare']:.2f}" for rd in rounds)
        print(f"  the machine in the same rounds: the same frames encoded by two bare forked loops against one "
              f"(no builder, no files): {bare_best[1] / bare_best[2]:.2f}x (rounds: {bare_rounds}); one bare loop "
              f"{n / bare_best[1]:.1f}/s")
        summary["bare_2_vs_1"] = bare_best[1] / bare_best[2]
    return summary


# -------------------------------------------------------------------------------------------- slices


def slices(name: str, root: Path, work: Path, repeats: int, max_samples: int, workers: int = 2) -> None:
    """``--workers 2`` with ranges sliced (the builder's plan) against every range one task (the builder
    before slices: its plan replaced in this process), interleaved; at the default 1,000-frame shards these
    builds have only a few ranges."""
    import hodata.shards as builder

    sliced_plan = builder.plan_tasks
    whole_plan = lambda ranges, w: sliced_plan(ranges, 1)  # noqa: E731 - every range one task, as for 1 worker
    best = {"sliced": float("inf"), "whole": float("inf")}
    n = 0
    print(f"\n{name}: --workers {workers}, --max-samples {max_samples}: ranges sliced vs every range one task")
    try:
        for r in range(repeats):
            line = []
            for side, plan in (("whole", whole_plan), ("sliced", sliced_plan)):
                builder.plan_tasks = plan
                os.sync()
                n, wall, _ = timed(project_build, name, root, work / side, workers, max_samples)
                shutil.rmtree(work / side)
                best[side] = min(best[side], wall)
                line.append(f"{side} {n / wall:.1f}/s")
            print(f"  round {r + 1}: " + ", ".join(line), flush=True)
    finally:
        builder.plan_tasks = sliced_plan
    print(f"  sliced {n / best['sliced']:.1f}/s against whole ranges {n / best['whole']:.1f}/s: "
          f"{best['whole'] / best['sliced']:.2f}x (best of {repeats})")


# -------------------------------------------------------------------------------------------- profile


def profile(name: str, root: Path, work: Path, max_samples: int, workers: int, top: int = 22) -> None:
    """cProfile of one build (the main process; with --workers 0 that is all the work)."""
    project_build(name, root, work / "warm", workers, max_samples)  # imports and caches, as in rounds 2+
    shutil.rmtree(work / "warm")
    prof = cProfile.Profile()
    prof.enable()
    project_build(name, root, work / "prof", workers, max_samples)
    prof.disable()
    shutil.rmtree(work / "prof")
    s = io.StringIO()
    pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(top)
    print(f"\nprofile of {name} --workers {workers} (main process, by own time):")
    print("\n".join(line for line in s.getvalue().splitlines() if line.strip())[-4000:])


class BareLoops:
    """The machine's own 2-vs-1 in the same minutes as the builds: the build's frames encoded by bare forked
    processes, one alone and then two at once (the shard ranges a build would give its workers, dealt out in
    turn), with no builder, pool, files or fsync. A frame's encoding is ~95 % of a worker's CPU: where two
    bare loops reach only 1.6x one, two workers cannot reach 1.8x, whatever the builder does (on a virtual
    machine the vCPUs' speed depends on what else the host runs)."""

    def __init__(self, name: str, root: Path, max_samples: int):
        from hodata.shard_tasks import plan_ranges
        from hodata.shards import encode_frame

        self.src = DATASETS[name]["source"](root)
        self.by_split: dict[str, list] = {}
        for ref in self.src.frames():
            self.by_split.setdefault(ref.split, []).append(ref)
        self.tasks = sorted(((split, a, b) for split, refs in self.by_split.items()
                             for a, b in plan_ranges(0, len(refs), max_samples)), key=lambda t: t[1] - t[2])
        self.encode = encode_frame
        split, a, _ = self.tasks[0]
        for i in range(a, a + 8):  # imports and numba's cache, loaded once before the forks
            encode_frame(self.src, i, self.by_split[split][i], None)

    def _loop(self, tasks: list) -> None:
        for split, a, b in tasks:
            refs = self.by_split[split]
            for i in range(a, b):
                self.encode(self.src, i, refs[i], None)

    def wall(self, procs: int) -> float:
        """Seconds from the first fork until ``procs`` loops have all finished."""
        import multiprocessing as mp

        from hodata.workers import single_threaded_libraries

        ctx = mp.get_context("fork")
        # libraries set to one thread before the fork, as in a build (a child that reconfigures a thread pool
        # it inherited can deadlock)
        with single_threaded_libraries():
            t0 = time.perf_counter()
            children = [ctx.Process(target=self._loop, args=(self.tasks[i::procs],)) for i in range(procs)]
            for c in children:
                c.start()
            for c in children:
                c.join()
            wall = time.perf_counter() - t0
        if any(c.exitcode for c in children):
            raise SystemExit(f"a bare encoding loop failed (exit codes {[c.exitcode for c in children]})")
        return wall


# ---------------------------------------------------------------------------------------------- memory

_MEASURE = """
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {scripts!r})
from bench_build import project_build, reset_peak, vm_kb
import hodata.shards, hodata.sources.egohos  # what the build imports
base = vm_kb("VmRSS")
reset_peak()  # so the peak below is the build's, not the imports' transient one
n = project_build("egohos", Path({root!r}), Path({out!r}), {workers}, {max_samples})
me = vm_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"samples": n, "import_kb": base, "main_kb": me, "worker_kb": kids}}))
"""


def vm_kb(field: str) -> int:
    """A size in kB from /proc/self/status (VmRSS: now, VmHWM: peak); 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> None:
    """Reset this process's peak RSS (Linux >= 4.0: write 5 to clear_refs); best effort."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def replicate(root: Path, dest: Path, copies: int, fraction: float = 1.0) -> int:
    """``dest`` = the first ``fraction`` of each EgoHOS split of ``root``, every frame hard-linked ``copies``
    times under new names. Returns the frames in ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    frames = 0
    for split in EGOHOS_SPLITS:
        names = sorted(p.stem for p in (root / split / "image").glob("*.jpg"))
        names = names[: max(1, round(len(names) * fraction))]
        for name in names:
            for f in (root / split).glob(f"*/{name}.*"):
                for k in range(copies):
                    target = dest / split / f.parent.name / f"r{k}{f.name}"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    try:
                        os.link(f, target)
                    except OSError:
                        shutil.copy2(f, target)
        frames += len(names) * copies
    return frames


def peak_rss(root: Path, out: Path, workers: int, max_samples: int) -> dict:
    """Build in a fresh interpreter; its own peak RSS (kB on Linux) and its workers' largest."""
    code = _MEASURE.format(scripts=str(Path(__file__).resolve().parent), root=str(root), out=str(out),
                           workers=workers, max_samples=max_samples)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def memory(root: Path, work: Path, frames: int, mem_frames: int, max_samples: int) -> None:
    fraction = min(1.0, mem_frames / frames)
    small, big = work / "data_1x", work / "data_4x"
    n1, n4 = replicate(root, small, 1, fraction), replicate(root, big, 4, fraction)
    print(f"\npeak RSS of a whole EgoHOS build, {n1} vs {n4} frames (own subprocess each; workers: the largest):")
    for w in (0, 2):
        r1 = peak_rss(small, work / f"m1_{w}", w, max_samples)
        r4 = peak_rss(big, work / f"m4_{w}", w, max_samples)
        extra = f"; workers {r1['worker_kb'] / 1024:.0f} -> {r4['worker_kb'] / 1024:.0f} MB" if w else ""
        grow = [(r["main_kb"] - r["import_kb"]) / 1024 for r in (r1, r4)]
        print(f"  --workers {w}: main {r1['main_kb'] / 1024:.0f} MB -> {r4['main_kb'] / 1024:.0f} MB "
              f"({r4['main_kb'] / r1['main_kb']:.2f}x; above the {r1['import_kb'] / 1024:.0f} MB after imports: "
              f"{grow[0]:.0f} -> {grow[1]:.0f} MB){extra}")
        shutil.rmtree(work / f"m1_{w}")
        shutil.rmtree(work / f"m4_{w}")


# ------------------------------------------------------------------------------------------------ main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="ho3d,egohos", help="comma-separated: ho3d, egohos")
    ap.add_argument("--frames", type=int, default=None, help="frames per dataset (default: HO3D 2400, EgoHOS 1000)")
    ap.add_argument("--size", default="640x480", help="frame size WxH")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "hodata_bench_build",
                    help="where the generated datasets are kept between runs")
    ap.add_argument("--workers", default="0,1,2", help="comma-separated --workers values to time")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each side counts")
    ap.add_argument("--max-samples", type=int, default=100, help="frames per shard: each shard is one worker's "
                    "task, and 100 gives these small builds the 10+ shards a real build's steady state has")
    ap.add_argument("--quick", action="store_true", help="300 frames per dataset, no memory runs")
    ap.add_argument("--slices", type=int, default=0, metavar="MAX_SAMPLES", help="also time --workers 2 with "
                    "ranges sliced against every range one task, at this --max-samples (1000: the default)")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of each --workers value's "
                    "main process")
    ap.add_argument("--mem-frames", type=int, default=250, help="frames of the 1x peak-RSS build (4x: four times)")
    ap.add_argument("--no-memory", action="store_true", help="skip the 1x / 4x peak-RSS runs")
    ap.add_argument("--no-speed", action="store_true", help="skip the timed runs")
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    workers = [int(v) for v in args.workers.split(",")]
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    work = Path(tempfile.mkdtemp(prefix="bench_build_"))
    print(f"hodata build benchmark: {os.cpu_count()} cores, load {load_avg()} (1/5/15 min), "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    baseline = None
    try:
        for name in names:
            frames = 300 if args.quick else (args.frames or DATASETS[name]["frames"])
            root = prepare(name, args.data_dir, frames, size)
            if not args.no_speed:
                baseline = baseline or BaselineProcess()
                run_dataset(name, root, work, workers, args.repeats, args.max_samples, size, baseline)
            if args.slices:
                slices(name, root, work, args.repeats, args.slices)
            if args.profile:
                for w in workers:
                    profile(name, root, work, args.max_samples, w)
            if name == "egohos" and not (args.no_memory or args.quick):
                memory(root, work, frames, args.mem_frames, args.max_samples)
        print(f"\nload at the end {load_avg()}; data in {args.data_dir}")
    finally:
        if baseline is not None:
            baseline.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
