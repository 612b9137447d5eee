"""The shard writer: layout, resume after a kill, determinism with workers, skipped frames, manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from hodata.errors import DataError
from hodata.schema import decode_seg
from hodata.shards import BuildConfig, BuildInterrupted, build, sha256_file
from toy_source import ToySource


def cfg(out, **kw):
    return BuildConfig(out=out, command=["test"], **({"max_samples": 4, "progress": False} | kw))


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers()]


def all_samples(out: Path) -> dict[str, list]:
    return {p.name: tar_members(p) for p in sorted(out.glob("*.tar"))}


def test_layout_names_and_members(tmp_path):
    rec = build(ToySource(tmp_path, frames=20, bad={3}), cfg(tmp_path / "out"))
    out = tmp_path / "out"
    names = sorted(p.name for p in out.glob("*.tar"))
    assert names == ["toy-train-000000.tar", "toy-train-000001.tar", "toy-train-000002.tar",
                     "toy-val-000000.tar", "toy-val-000001.tar", "toy-val-000002.tar"]
    assert not list(out.glob("*.tmp"))
    members = tar_members(out / "toy-train-000000.tar")
    first = {m: data for m, data in members[:3]}
    assert sorted(first) == ["toy/train/seq0/00000.jpg", "toy/train/seq0/00000.json", "toy/train/seq0/00000.seg.png"]
    meta = json.loads(first["toy/train/seq0/00000.json"])
    assert meta["schema"] == "hodata/2" and meta["labels"] == {"hand": True, "object": True, "sides": False}
    seg = decode_seg(first["toy/train/seq0/00000.seg.png"])
    assert seg.shape == (24, 32) and seg[0, 0] == 255 and seg[5, 0] == 1 and seg[20, 0] == 2
    # plain webdataset reads the same keys back (no image decoding)
    ds = wds.WebDataset(str(out / "toy-val-{000000..000002}.tar"), shardshuffle=False)
    keys = [s["__key__"] for s in ds]
    assert len(keys) == 9 and all(k.startswith("toy/val/") for k in keys)  # 10 val frames, frame 3 bad
    assert rec["totals"]["samples"] == 19 and rec["totals"]["skipped"] == 1
    assert rec["skipped"][0]["frame"] == "00003" and "corrupt image" in rec["skipped"][0]["reason"]
    assert rec["skipped"][0]["file"].endswith("00003.jpg")


def test_manifest_records_provenance(tmp_path):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=12), cfg(out))
    m = json.loads((out / "manifest.json").read_text())
    rec = m["builds"]["toy"]
    assert rec["status"] == "complete" and rec["command"] == ["test"]
    assert rec["source"]["root"] == str(tmp_path.resolve())
    for sh in rec["shards"]:
        assert sha256_file(out / sh["name"]) == sh["sha256"]
        assert sh["bytes"] == (out / sh["name"]).stat().st_size
    px = rec["totals"]["class_pixels"]
    assert px["ignore"] == 12 and px["hand"] > 0 and px["object"] == 12 * 12 * 10
    assert rec["splits"]["train"]["samples"] == 6
    q = rec["totals"]["quality"]["hand_iou"]
    assert q["frames"] == 12 and q["min"] == pytest.approx(0.9)


def test_resume_after_interrupt_equals_uninterrupted(tmp_path):
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    build(ToySource(tmp_path, frames=30, bad={7, 8}), cfg(ref_out))
    with pytest.raises(BuildInterrupted):  # (the hook imitates a kill: the journal as it was, every shard in it)
        build(ToySource(tmp_path, frames=30, bad={7, 8}), cfg(out, journal_every_s=0), stop_after=9)
    assert list(out.glob("*.tar.tmp")), "a killed build leaves its half shard as .tmp"
    done_before = json.loads((out / "manifest.json").read_text())["builds"]["toy"]
    assert done_before["status"] == "in_progress" and len(done_before["shards"]) == 2
    kept = {sh["name"]: (out / sh["name"]).stat().st_mtime_ns for sh in done_before["shards"]}
    rec = build(ToySource(tmp_path, frames=30, bad={7, 8}), cfg(out))
    assert all_samples(out) == all_samples(ref_out)
    for name, mtime in kept.items():  # complete shards were kept, not rewritten
        assert (out / name).stat().st_mtime_ns == mtime
    assert not list(out.glob("*.tmp"))
    assert rec["totals"]["skipped"] == 2 and rec["runs"] == 2
    ref = json.loads((ref_out / "manifest.json").read_text())["builds"]["toy"]
    assert [s["sha256"] for s in rec["shards"]] == [s["sha256"] for s in ref["shards"]]


def test_journal_is_throttled_and_written_when_a_run_is_interrupted(tmp_path):
    out = tmp_path / "out"
    seen = []

    def on_shard(info):
        seen.append(info["name"])
        on_disk = json.loads((out / "manifest.json").read_text())["builds"]["toy"]["shards"]
        assert len(on_disk) == 1  # the first shard is journalled at once, later ones not before the interval
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build(ToySource(tmp_path, frames=30), cfg(out, journal_every_s=3600), on_shard=on_shard)
    rec = json.loads((out / "manifest.json").read_text())["builds"]["toy"]
    assert rec["status"] == "in_progress" and [s["name"] for s in rec["shards"]] == seen  # written on the way out
    again = build(ToySource(tmp_path, frames=30), cfg(out))
    ref = build(ToySource(tmp_path, frames=30), cfg(tmp_path / "ref"))
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert (out / "manifest.json").read_text().startswith("{\n")  # the final record is indented


def test_resume_rebuilds_a_corrupted_shard(tmp_path):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=16), cfg(out))
    before = all_samples(out)
    victim = out / "toy-train-000000.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    build(ToySource(tmp_path, frames=16), cfg(out))
    assert all_samples(out) == before


def test_killed_process_then_rerun(tmp_path):
    """A real kill (SIGKILL mid-build) followed by the same command gives the uninterrupted result."""
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    build(ToySource(tmp_path, frames=40), cfg(ref_out))
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from toy_source import ToySource
        from hodata.shards import BuildConfig, build
        def on_shard(info):
            if info["name"] == "toy-train-000001.tar":
                os.kill(os.getpid(), signal.SIGKILL)
        build(ToySource({str(tmp_path)!r}, frames=40), BuildConfig(out={str(out)!r}, max_samples=4,
              progress=False, command=["test"]), on_shard=on_shard)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert r.returncode == -9
    build(ToySource(tmp_path, frames=40), cfg(out))
    assert all_samples(out) == all_samples(ref_out)


def test_workers_give_identical_output(tmp_path):
    build(ToySource(tmp_path, frames=25, bad={4}), cfg(tmp_path / "a", workers=0))
    build(ToySource(tmp_path, frames=25, bad={4}), cfg(tmp_path / "b", workers=2))
    assert all_samples(tmp_path / "a") == all_samples(tmp_path / "b")


def test_max_bytes_cuts_shards(tmp_path):
    rec = build(ToySource(tmp_path, frames=10, splits=("train",)), cfg(tmp_path / "out", max_samples=100, max_bytes=3000))
    assert len(rec["shards"]) > 1
    # the cap counts members with their tar headers; the file adds only tar's final record padding (10 KiB blocks)
    assert all(s["bytes"] <= -(-3000 // 10240) * 10240 for s in rec["shards"])
    assert sum(s["samples"] for s in rec["shards"]) == 10


def test_other_options_refuse_without_overwrite(tmp_path):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=8), cfg(out))
    with pytest.raises(DataError, match="other options"):
        build(ToySource(tmp_path, frames=8), cfg(out, max_samples=2))
    rec = build(ToySource(tmp_path, frames=8), cfg(out, max_samples=2, overwrite=True))
    assert len(rec["shards"]) == 4 and len(list(out.glob("*.tar"))) == 4


def test_a_build_by_another_hodata_version_is_refused_naming_both_versions(tmp_path):
    from hodata import __version__

    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=8), cfg(out))
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["builds"]["toy"].update(hodata_version="0.1.0", fingerprint="made by 0.1.0")
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=rf"by hodata 0\.1\.0 \(this is {__version__}"):
        build(ToySource(tmp_path, frames=8), cfg(out))


def test_max_side_resizes_image_mask_and_camera(tmp_path):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=2, size=(64, 48), splits=("train",)), cfg(out, max_side=32))
    members = dict(tar_members(out / "toy-train-000000.tar"))
    meta = json.loads(members["toy/train/seq0/00000.json"])
    seg = decode_seg(members["toy/train/seq0/00000.seg.png"])
    assert (meta["width"], meta["height"]) == (32, 24) and seg.shape == (24, 32)
    assert set(np.unique(seg)) <= {0, 1, 2, 255}
    K = np.array(meta["camera"]["K"])
    assert K[0, 0] == pytest.approx(15.0) and K[0, 2] == pytest.approx((32 + 0.5) * 0.5 - 0.5)


def test_split_file_accepts_lists_and_recorded_assignment(tmp_path):
    from hodata.splits import assign_groups, load_split_file

    groups = [f"seq{i}" for i in range(20)]
    a = assign_groups(groups, 0.2)
    assert a == assign_groups(list(reversed(groups)), 0.2)  # order-independent
    assert "val" in a.values() and "train" in a.values()
    lists = tmp_path / "lists.json"
    lists.write_text(json.dumps({"train": [g for g in groups if a[g] == "train"], "val": [g for g in groups if a[g] == "val"]}))
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(a))
    assert load_split_file(lists) == a == load_split_file(mapping)
    lists.write_text(json.dumps({"train": ["x"], "val": ["x"]}))
    with pytest.raises(DataError, match="both"):
        load_split_file(lists)


def test_shard_bytes_are_what_tarfile_writes(tmp_path):
    """The writer assembles tar blocks itself (built in the workers); the file equals tarfile's own output."""
    import io

    from hodata.tar_blocks import TAR_MTIME

    build(ToySource(tmp_path, frames=6, splits=("train",)), cfg(tmp_path / "out", max_samples=10))
    shard = tmp_path / "out" / "toy-train-000000.tar"
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w|", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in tar_members(shard):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), TAR_MTIME, 0o444, "hodata", "hodata"
            tf.addfile(info, io.BytesIO(data))
    assert shard.read_bytes() == bio.getvalue()


def test_member_headers_are_tarfiles_for_every_name_and_size():
    from hodata.tar_blocks import header, tarfile_header

    names = ["a.jpg", "toy/train/seq/000001.seg.png", "x" * 100, "d" * 60 + "/" + "y" * 50 + ".json", "ünïcode/köy.png"]
    for name in names:
        for size in (0, 1, 511, 512, 123_456_789, 8 ** 11 - 1):
            assert header(name, size) == tarfile_header(name, size), (name, size)
    for name, size in (("big.bin", 8 ** 11), ("d/" + "y" * 120, 1)):  # what USTAR cannot hold, tarfile refuses
        with pytest.raises(ValueError):
            header(name, size)


def test_label_checks_fast_paths_agree_with_full_histograms():
    from hodata.schema import check_inst, instance, label_histogram

    from hodata.label_counts import pair_counts

    rng = np.random.default_rng(0)
    seg = rng.choice(np.array([0, 1, 2, 255], np.uint8), (30, 40))
    assert np.array_equal(label_histogram(seg), np.bincount(seg.ravel(), minlength=256))
    # runs (counted 8 pixels at a time), words that cross a boundary, a tail shorter than a word, a strided view
    runs = np.repeat(rng.choice(np.array([0, 1, 2, 9, 255], np.uint8), 500), rng.integers(1, 40, 500))[:10_003]
    for m in (runs, runs[1:], runs[:10_003 // 7 * 7].reshape(-1, 7)[:, 2:]):
        assert np.array_equal(label_histogram(m), np.bincount(m.ravel(), minlength=256))
    other = np.roll(runs, 5)
    slot = np.arange(256) % 3
    joint = np.zeros((256, 3), np.int64)
    np.add.at(joint, (runs, slot[other]), 1)
    assert np.array_equal(pair_counts(runs, other, slot), joint)
    seg[3, 4] = 7  # a value outside the labels is counted like any other
    assert label_histogram(seg)[7] == 1
    inst = np.where(seg == 1, 1, np.where(seg == 2, 2, 0)).astype(np.uint8)
    seg[3, 4] = 0
    instances = [instance(1, "hand", "right"), instance(2, "object")]
    check_inst(inst, instances, seg)
    inst[0, 0], seg[0, 0] = 1, 2  # a hand instance pixel labelled object
    with pytest.raises(ValueError, match="disagree"):
        check_inst(inst, instances, seg)
    inst[0, 0], seg[0, 0] = 9, 0
    with pytest.raises(ValueError, match=r"ids \[9\]"):
        check_inst(inst, instances, seg)
    inst[0, 0] = 0
    seg = np.where(inst == 1, 1, np.where(inst == 2, 2, 0)).astype(np.uint8)
    check_inst(seg.copy(), instances, seg)  # a map equal to seg whose ids are their labels (HO3D)
    with pytest.raises(ValueError, match="disagree"):  # equal maps, but id 2 is a hand: seg says object
        check_inst(seg.copy(), [instance(1, "object"), instance(2, "hand", "left")], seg)
    # the map passed as seg itself is checked from one histogram, with the same verdicts
    check_inst(seg, instances, seg)
    with pytest.raises(ValueError, match="disagree"):
        check_inst(seg, [instance(1, "object"), instance(2, "hand", "left")], seg)
    with pytest.raises(ValueError, match=r"ids \[2\]"):
        check_inst(seg, [instance(1, "hand", "right")], seg)


def test_image_completeness_check_refuses_every_truncation():
    """A JPEG is complete when it ends with its EOI marker; one cut anywhere is refused, naming the file."""
    import cv2

    from hodata.errors import BadFrame
    from hodata.schema import checked_image_size

    rng = np.random.default_rng(1)
    data = cv2.imencode(".jpg", rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))[1].tobytes()
    assert checked_image_size(data, "a.jpg") == (32, 24)
    for cut in range(1, len(data), 5):
        with pytest.raises(BadFrame, match="a.jpg"):
            checked_image_size(data[:cut], "a.jpg")
    # trailing bytes after the marker (some cameras append data): decoded to the end instead, and accepted
    assert checked_image_size(data + b"trailer", "a.jpg") == (32, 24)


def test_workers_write_the_shards_and_the_builder_encodes_only_its_warm_up_frame(tmp_path, monkeypatch):
    """--workers: every range of frames is encoded and written by a worker; the builder process encodes one
    frame before the fork (the warm-up) and otherwise only renames finished files."""
    from hodata import shard_tasks, shards

    calls = []
    real = shard_tasks.encode_frame

    def counted(*args):
        calls.append(os.getpid())  # a worker appends to its own copy of the list
        return real(*args)

    monkeypatch.setattr(shard_tasks, "encode_frame", counted)
    monkeypatch.setattr(shards, "encode_frame", counted)
    rec = build(ToySource(tmp_path, frames=40, bad={5}), cfg(tmp_path / "w2", workers=2))
    ref = build(ToySource(tmp_path, frames=40, bad={5}), cfg(tmp_path / "w0", workers=0))
    assert calls.count(os.getpid()) == 1 + 40  # the warm-up, then the 40 frames of the --workers 0 build
    assert [s["sha256"] for s in rec["shards"]] == [s["sha256"] for s in ref["shards"]]
    assert [s["frames"] for s in rec["shards"]] == [s["frames"] for s in ref["shards"]]
    assert rec["skipped"] == ref["skipped"]


class SlowToy(ToySource):
    """5 ms a frame: a build is still running when a test interrupts it."""

    def load(self, ref):
        import time

        time.sleep(0.005)
        return super().load(ref)


def interrupt_at(shard_name: str):
    """An ``on_shard`` hook that interrupts the build (as Ctrl-C does) when that shard is recorded."""

    def on_shard(info):
        if info["name"] == shard_name:
            raise KeyboardInterrupt

    return on_shard


def test_an_interrupted_worker_build_leaves_no_temp_file_and_resumes_to_the_same_bytes(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        build(SlowToy(tmp_path, frames=80), cfg(out, workers=2, journal_every_s=3600),
              on_shard=interrupt_at("toy-train-000002.tar"))
    assert not list(out.glob("*.tmp"))  # the workers' unfinished (and finished, not yet recorded) files
    rec = json.loads((out / "manifest.json").read_text())["builds"]["toy"]
    assert [s["name"] for s in rec["shards"]] == [f"toy-train-00000{i}.tar" for i in range(3)]
    again = build(ToySource(tmp_path, frames=80), cfg(out, workers=2))
    ref = build(ToySource(tmp_path, frames=80), cfg(tmp_path / "ref"))
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in ref["shards"]]


@pytest.fixture
def fine_slices(monkeypatch):
    """Slices down to one frame, so that these tiny builds are sliced as a real one is (inherited by fork)."""
    from hodata import shard_tasks

    monkeypatch.setattr(shard_tasks, "MIN_SLICE_FRAMES", 1)


def test_plan_tasks_slices_every_range_of_a_small_build_and_the_last_ranges_of_a_large_one():
    from hodata.shard_tasks import plan_tasks

    few = [("train", a, a + 1000) for a in range(0, 4000, 1000)] + [("test", 0, 800), ("val", 0, 400)]
    many = [("train", a, a + 100) for a in range(0, 10_000, 100)]
    tasks, sliced = plan_tasks(few, 8)  # 6 shards for 8 workers: every range sliced, 4+ tasks per worker
    assert sliced == 6 and len(tasks) >= 4 * 8
    tasks, sliced = plan_tasks(many, 2)  # 50 shards per worker: only the last two, into quarters
    assert sliced == 2 and len(tasks) == 98 + 2 * 4 and all(t.count == 1 for t in tasks[:98])
    for workers in (0, 1):  # one process: nothing to balance
        tasks, sliced = plan_tasks(few, workers)
        assert sliced == 0 and [(t.split, t.start, t.end, t.lo, t.hi, t.count) for t in tasks] == [
            (split, a, b, a, b, 1) for split, a, b in few]
    for ranges, workers in ((few, 8), (many, 2)):
        covered: dict[tuple, list] = {}
        for t in plan_tasks(ranges, workers)[0]:
            covered.setdefault((t.split, t.start, t.end), []).append((t.lo, t.hi))
        assert list(covered) == ranges  # in the ranges' order, each range's slices one after another
        for (_, a, b), parts in covered.items():  # and they tile it
            assert parts[0][0] == a and parts[-1][1] == b and all(x[1] == y[0] for x, y in zip(parts, parts[1:]))


@pytest.mark.parametrize("workers", [2, 3])
def test_sliced_ranges_give_the_shards_and_records_whole_ranges_give(tmp_path, fine_slices, workers):
    """Every range sliced (and the last ones into single frames), with skipped frames and --max-bytes cuts
    inside ranges: the same shard files byte for byte, the same manifest entries, no temporary file left."""
    from hodata.shard_tasks import plan_ranges, plan_tasks

    kw = dict(max_samples=10, max_bytes=9000)
    src = ToySource(tmp_path, frames=47, bad={5, 17, 18})
    ranges = [("train", a, b) for a, b in plan_ranges(0, 24, 10)] + [("val", a, b) for a, b in plan_ranges(0, 23, 10)]
    ranges.sort(key=lambda t: t[1] - t[2])  # longest first, as the builder runs them
    assert all(t.count > 1 for t in plan_tasks(ranges, workers)[0])
    ref = build(src, cfg(tmp_path / "whole", **kw))
    rec = build(src, cfg(tmp_path / "sliced", workers=workers, **kw))
    assert len(ref["shards"]) > len(ranges)  # some ranges were cut by bytes
    assert all_samples(tmp_path / "sliced") == all_samples(tmp_path / "whole")
    assert rec["shards"] == ref["shards"] and rec["skipped"] == ref["skipped"]
    assert not list((tmp_path / "sliced").glob("*.tmp"))


def test_a_sliced_build_with_too_many_bad_frames_fails_as_a_whole_range_build_does(tmp_path, fine_slices):
    from hodata.shards import TooManySkipped

    src = ToySource(tmp_path, frames=60, bad=set(range(0, 60, 3)))  # 20 bad: more than the 10 allowed
    for out, workers in ((tmp_path / "whole", 0), (tmp_path / "sliced", 2)):
        with pytest.raises(TooManySkipped):
            build(src, cfg(out, workers=workers, max_samples=30))
        assert not list(out.glob("*.tmp"))


def test_an_interrupted_sliced_build_leaves_no_temp_file_and_resumes_to_the_same_bytes(tmp_path, fine_slices):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):  # ranges of 20 frames, in slices of 10 (the last two ranges: of 5)
        build(SlowToy(tmp_path, frames=80), cfg(out, workers=2, max_samples=20, journal_every_s=3600),
              on_shard=interrupt_at("toy-train-000001.tar"))
    assert not list(out.glob("*.tmp"))  # slice files, and range files not yet recorded
    again = build(ToySource(tmp_path, frames=80), cfg(out, workers=2, max_samples=20))
    ref = build(ToySource(tmp_path, frames=80), cfg(tmp_path / "ref", max_samples=20))
    assert again["runs"] == 2 and again["shards"] == ref["shards"]


def test_a_rebuild_from_mid_range_gives_the_shards_an_uninterrupted_build_cut(tmp_path):
    """Ranges are aligned to the split's first frame: a rebuild that starts after a shard --max-bytes cut
    mid-range (here: the next shard's file is damaged) continues that range and gives the same shards."""
    kw = dict(max_samples=6, max_bytes=2600)
    ref = build(ToySource(tmp_path, frames=24, splits=("train",)), cfg(tmp_path / "ref", **kw))
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=24, splits=("train",)), cfg(out, **kw))
    mid = [s for s in ref["shards"] if s["frames"][0] % 6]
    assert mid, "no range was cut by bytes"
    victim = out / mid[0]["name"]
    victim.write_bytes(victim.read_bytes()[:-1] + b"x")
    rec = build(ToySource(tmp_path, frames=24, splits=("train",)), cfg(out, **kw))
    assert [(s["sha256"], s["frames"]) for s in rec["shards"]] == [(s["sha256"], s["frames"]) for s in ref["shards"]]


@pytest.mark.parametrize("workers", [0, 2])  # 2: ranges sliced, the slices' files fail first
def test_a_full_disk_is_one_line_naming_the_shard_and_leaves_no_temp_file(tmp_path, monkeypatch, fine_slices, workers):
    import errno

    from hodata import shard_tasks

    real_open = open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(shard_tasks, "open", lambda path, mode: FullDisk(real_open(path, mode)), raising=False)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="No space left on device") as info:
        build(ToySource(tmp_path, frames=8), cfg(out, workers=workers))
    assert info.value.path.endswith(".tar.tmp") and str(out) in info.value.path
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.tar"))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_fsync_of_a_shard_is_one_line_naming_it_and_nothing_is_left(tmp_path, monkeypatch, workers):
    """Every shard is fsynced before the build is recorded complete: an error the disk reports then (ENOSPC,
    EIO) names the file, the shards it may have lost are removed, and the manifest never says complete."""
    import errno
    import os

    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tar"):
            raise OSError(errno.EIO, "Input/output error")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    out = tmp_path / "out"
    with pytest.raises(DataError, match="Input/output error") as info:
        build(ToySource(tmp_path, frames=8), cfg(out, workers=workers))
    assert info.value.path.endswith(".tar") and str(out) in info.value.path
    assert not list(out.glob("*.tmp")) and not list(out.glob("*.tar"))
    manifest = (out / "manifest.json").read_text()
    assert '"complete"' not in manifest and ".tar" not in manifest
    monkeypatch.setattr(os, "fsync", real_fsync)  # the disk is back: a rerun completes
    assert build(ToySource(tmp_path, frames=8), cfg(out, workers=workers))["totals"]["samples"] == 8


@pytest.mark.parametrize("workers", [0, 2])
def test_every_shard_is_fsynced_before_the_build_is_recorded_complete(tmp_path, monkeypatch, workers):
    import os

    from hodata.manifest import Manifest

    real_fsync, real_update, synced, seen_at_complete = os.fsync, Manifest.update, [], []

    def fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def update(self, source, record, compact=False):
        if record and record.get("status") == "complete":
            seen_at_complete.append(set(synced))
        return real_update(self, source, record, compact)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Manifest, "update", update)
    rec = build(ToySource(tmp_path, frames=10), cfg(tmp_path / "out", workers=workers))
    names = {sh["name"] for sh in rec["shards"]}
    assert len(names) == 4 and seen_at_complete and names <= seen_at_complete[0]
