"""Builds in parts (--part i/N) joined by hodata merge: the same dataset as one build, and every bad join refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from hodata.cli import main as hodata_main
from hodata.errors import DataError
from hodata.merge import MergeRefused, merge
from hodata.parts import BadPart, assign_groups, parse_part, select
from hodata.shards import BuildConfig, build
from toy_source import ToySource

HODATA = [sys.executable, "-m", "hodata.cli"]


def cfg(out, **kw):
    return BuildConfig(out=out, progress=False, command=["test"], **({"max_samples": 3} | kw))


def samples(out: Path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes} over every shard of a folder, read the way tar readers read them."""
    found: dict[str, dict[str, bytes]] = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tf:
            for m in tf:
                key, ext = m.name.split(".", 1)
                assert ext not in found.get(key, {}), f"{key}.{ext} twice"
                found.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return found


def record(out: Path, source: str) -> dict:
    return json.loads((out / "manifest.json").read_text())["builds"][source]


@pytest.fixture(scope="module")
def egohos_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("parts") / "egohos"
    res = CliRunner().invoke(hodata_main, ["demo", "--layout", "egohos", "--frames", "60", "--out", str(root)])
    assert res.exit_code == 0, res.output
    bad = sorted((root / "train" / "image").glob("*.jpg"))[7]
    bad.write_bytes(bad.read_bytes()[:300])  # one truncated image: skipped and recorded, in whichever part
    return root


def test_three_processes_then_merge_equal_one_build(egohos_root, tmp_path):
    """3 parts built by 3 concurrent processes into one folder, merged: the samples, the split of every
    sample, the skipped frames and the per-class totals of a single build; hodata inspect finds no problem."""
    single, parted = tmp_path / "single", tmp_path / "parted"
    common = ["build", "--source", "egohos", "--root", str(egohos_root), "--max-samples", "4", "--quiet"]
    procs = [subprocess.Popen(HODATA + common + ["--out", str(parted), "--part", f"{i}/3"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in (1, 2, 3)]
    res = CliRunner().invoke(hodata_main, common + ["--out", str(single)])
    assert res.exit_code == 0, res.output
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    names = sorted(p.name for p in parted.glob("*.tar"))
    assert names and all(n.split("-")[-1][0] in "123" and len(n.split("-")[-1]) == len("1000000.tar") for n in names)
    res = CliRunner().invoke(hodata_main, ["merge", str(parted)])
    assert res.exit_code == 0, res.output
    assert "3 parts merged" in res.output and "sha256 verified" in res.output

    a, b = samples(single), samples(parted)
    assert a == b  # every sample, member by member, byte for byte
    one, joined = record(single, "egohos"), record(parted, "egohos")
    split_of = {sh["name"]: sh["split"] for sh in joined["shards"]}
    for shard in parted.glob("*.tar"):  # each sample sits in a shard of its own split
        with tarfile.open(shard) as tf:
            assert {m.name.split("/")[1] for m in tf} == {split_of[shard.name]}
    assert joined["totals"]["class_pixels"] == one["totals"]["class_pixels"]
    assert joined["totals"]["samples"] == one["totals"]["samples"] == 59
    assert [(s["split"], s["frame"]) for s in joined["skipped"]] == [(s["split"], s["frame"]) for s in one["skipped"]]
    assert {k: (v["frames"], v["samples"], v["skipped"]) for k, v in joined["splits"].items()} == \
           {k: (v["frames"], v["samples"], v["skipped"]) for k, v in one["splits"].items()}
    assert joined["fingerprint"] == one["fingerprint"] and len(joined["parts"]) == 3
    groups = [g for p in joined["parts"] for g in p["groups"]]
    assert len(groups) == len(set(groups))  # no sequence in two parts
    res = CliRunner().invoke(hodata_main, ["inspect", str(parted)])
    assert res.exit_code == 0 and "no problems found" in res.output, res.output


def test_parts_resume_and_rebuild_byte_identical(tmp_path):
    """A part resumes like a single build; rerunning every part and merging again changes nothing."""
    out = tmp_path / "out"
    src = lambda: ToySource(tmp_path, frames=40)  # noqa: E731
    for i in (1, 2):
        build(src(), cfg(out, part=(i, 2)))
    merge(out)
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    for i in (1, 2):
        rec = build(src(), cfg(out, part=(i, 2), workers=2))
        assert rec["runs"] == 2
    merge(out)
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == before


def test_group_assignment_is_balanced_and_order_free():
    sizes = {f"seq{i:02d}": 10 + (i * 7) % 13 for i in range(20)}
    a = assign_groups(sizes, 3)
    assert a == assign_groups(dict(reversed(list(sizes.items()))), 3)
    load = [sum(n for g, n in sizes.items() if a[g] == k) for k in (1, 2, 3)]
    assert max(load) - min(load) <= max(sizes.values())
    refs = ToySource(Path("."), frames=50).frames()
    got = [select(refs, (i, 4), lambda r: r.sequence)[0] for i in range(1, 5)]
    assert sorted(r.frame for part in got for r in part) == sorted(r.frame for r in refs)
    assert not set(r.sequence for r in got[0]) & set(r.sequence for r in got[1])


def test_bad_part_values():
    assert parse_part("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(BadPart):
            parse_part(bad)
    res = CliRunner().invoke(hodata_main, ["build", "--source", "egohos", "--root", ".", "--out", "x", "--part", "5/3"])
    assert res.exit_code != 0 and "--part 5/3" in res.output and "Traceback" not in res.output


def _two_parts(tmp_path, **kw) -> Path:
    out = tmp_path / "out"
    for i in (1, 2):
        build(ToySource(tmp_path, frames=30), cfg(out, part=(i, 2), **kw))
    return out


def test_merge_refuses_a_gap(tmp_path):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=30), cfg(out, part=(1, 3)))
    build(ToySource(tmp_path, frames=30), cfg(out, part=(3, 3)))
    with pytest.raises(MergeRefused, match=r"part\(s\) 2/3 missing"):
        merge(out)
    assert not (out / "manifest.json").exists()


def test_merge_refuses_mixed_options_and_counts(tmp_path):
    out = _two_parts(tmp_path)
    build(ToySource(tmp_path, frames=30), cfg(out, part=(2, 2), max_samples=5, overwrite=True))
    with pytest.raises(MergeRefused, match="other options"):
        merge(out)
    with pytest.raises(DataError, match="would mix layouts"):  # a part of another count: refused at once
        build(ToySource(tmp_path, frames=30), cfg(out, part=(1, 3)))
    (out / "manifest.part-1-of-3.json").write_text((out / "manifest.part-1-of-2.json").read_text())
    with pytest.raises(MergeRefused, match="different counts"):
        merge(out)


def test_merge_refuses_overlaps(tmp_path):
    out = _two_parts(tmp_path)
    m2 = out / "manifest.part-2-of-2.json"
    data = json.loads(m2.read_text())
    one = json.loads((out / "manifest.part-1-of-2.json").read_text())["builds"]["toy"]
    data["builds"]["toy"]["part"]["groups"].append(one["part"]["groups"][0])  # a sequence claimed twice
    m2.write_text(json.dumps(data))
    with pytest.raises(MergeRefused, match="is in part 1/2 and part 2/2"):
        merge(out)


def test_merge_verifies_every_shard(tmp_path):
    out = _two_parts(tmp_path)
    victim = sorted(out.glob("toy-val-2*.tar"))[0]
    data = bytearray(victim.read_bytes())
    data[600] ^= 0x01
    victim.write_bytes(bytes(data))
    res = CliRunner().invoke(hodata_main, ["merge", str(out)])
    assert res.exit_code == 1 and victim.name in res.output and "does not match" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (out / "manifest.json").exists()
    victim.unlink()
    with pytest.raises(MergeRefused, match="missing"):
        merge(out)


def test_merge_of_an_incomplete_part_is_refused(tmp_path):
    from hodata.shards import BuildInterrupted

    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=30), cfg(out, part=(1, 2)))
    with pytest.raises(BuildInterrupted):
        build(ToySource(tmp_path, frames=30), cfg(out, part=(2, 2)), stop_after=4)
    with pytest.raises(MergeRefused, match="part 2/2 is in_progress"):
        merge(out)


def test_whole_and_part_builds_do_not_mix(tmp_path):
    out = _two_parts(tmp_path)
    with pytest.raises(DataError, match="hodata merge"):
        build(ToySource(tmp_path, frames=30), cfg(out))
    rec = build(ToySource(tmp_path, frames=30), cfg(out, overwrite=True))  # replaces the parts
    assert not list(out.glob("manifest.part-*")) and all(len(p.stem.split("-")[-1]) == 6 for p in out.glob("*.tar"))
    assert rec["totals"]["samples"] == 30 and len(list(out.glob("*.tar"))) == len(rec["shards"])
    with pytest.raises(DataError, match="whole build"):
        build(ToySource(tmp_path, frames=30), cfg(out, part=(1, 2)))


def test_a_part_without_frames_is_complete(tmp_path):
    out = tmp_path / "out"
    for i in (1, 2, 3, 4, 5):  # 3 sequences, 5 parts: two parts hold nothing
        build(ToySource(tmp_path, frames=30), cfg(out, part=(i, 5)))
    rec = merge(out)["toy"]
    assert rec["totals"]["samples"] == 30 and sum(1 for p in rec["parts"] if not p["groups"]) == 2


def test_slurm_and_ray_examples_name_every_part(tmp_path):
    """The launch examples without a cluster: the SLURM script against a stand-in sbatch, Ray in --dry-run."""
    scripts = Path(__file__).resolve().parent.parent / "scripts"
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sbatch").write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {tmp_path / 'log'}\necho 42\n")
    (fake / "sbatch").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    r = subprocess.run(["bash", str(scripts / "slurm_build_array.sh"), "4", "ho3d", "/data", "/shards", "--",
                        "--mano-dir", "/m"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    log = (tmp_path / "log").read_text().splitlines()
    assert "--array=1-4" in log[0] and "HODATA_PARTS=4" in log[0] and "--dependency=afterok:42" in log[1]
    r = subprocess.run([sys.executable, str(scripts / "ray_build.py"), "--parts", "3", "--dry-run", "--",
                        "--source", "egohos", "--root", "r", "--out", "o"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split("--part ")[1].split()[0] for ln in lines[:3]] == ["1/3", "2/3", "3/3"]
    assert lines[3].endswith("merge o") and "ray" not in sys.modules


def test_part_shard_names_parse_as_hotrain_reads_them(tmp_path):
    """hotrain finds source and split in a shard's file name: part names keep that pattern."""
    from hotrain.data import parse_shard_name

    out = tmp_path / "out"
    for split in ("train", "test_indomain"):
        rec = build(ToySource(tmp_path, frames=12, splits=(split,)), cfg(out / split, part=(2, 3)))
        assert rec["shards"] and all(parse_shard_name(sh["name"]) == ("toy", split) for sh in rec["shards"])
    with pytest.raises(MergeRefused, match="no such folder"):
        merge(tmp_path / "nowhere")
