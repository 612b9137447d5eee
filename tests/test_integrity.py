"""Integrity on read: damaged shards and checkpoints end in one line naming the file (or a recorded skip),
never a traceback and never a silently different result.

Shards: ``eval`` refuses a shard that differs from its manifest (flipped bytes, truncated, empty, damaged
header, missing); ``fit`` skips damaged shards up to ``--max-bad-shards`` and records them; without a manifest
(or with ``--no-verify``) a shard that does not read as a tar is still one line. Checkpoints: flipped bytes,
NaN weights, empty, truncated, foreign files, missing or mis-shaped tensors, an unknown model, a missing
optimizer state on ``--resume``, for eval / predict / --init / --resume; stale temp files of killed writes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hotrain import checkpoint as ckpt_io
from hotrain.cli import main
from predict_helpers import save_checkpoint

pytestmark = pytest.mark.slow

VAL = "egohos-val-000000.tar"
FIT = ["--preset", "tiny", "--weights", "none", "--no-progress", "--steps", "2", "--steps-per-epoch", "2",
       "--crop-size", "64", "--batch-size", "2", "--bn-recompute", "0", "--eval-every", "2", "--eval-batch-size", "4"]


def invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def one_line_error(args: list[str], names: str | Path) -> str:
    """Run the CLI; it must fail with exactly one ``Error:`` line that names ``names``, and no traceback."""
    res = invoke(args)
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert res.output.rstrip().endswith(errors[0]), res.output  # nothing after it: the message is one line
    assert str(names) in errors[0], res.output
    return errors[0]


# ------------------------------------------------------------------------------------------ damage


def flip_byte(path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if at is None else at
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_shard(path: Path, kind: str) -> None:
    if kind == "flip":  # inside a member's bytes: the tar still reads, only the sha256 tells
        flip_byte(path, 3000)
    elif kind == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header":  # the first member's header: the tar reader fails its checksum
        data = bytearray(path.read_bytes())
        data[10:110] = b"\xff" * 100
        path.write_bytes(bytes(data))
    elif kind == "missing":
        path.unlink()
    else:
        raise ValueError(kind)


@pytest.fixture()
def copy(egohos_demo_shards, tmp_path) -> Path:
    out = tmp_path / "shards"
    shutil.copytree(egohos_demo_shards, out)
    return out


@pytest.fixture(scope="module")
def best(tmp_path_factory) -> Path:
    """A model-only checkpoint as fit's best.pt (untrained: only loading and refusing are tested here)."""
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt", "hand")


# ------------------------------------------------------------------------------------------ eval: shards


@pytest.mark.parametrize("kind", ["flip", "truncate", "empty", "header", "missing"])
def test_eval_refuses_a_damaged_shard_naming_it(copy, best, tmp_path, kind):
    damage_shard(copy / VAL, kind)
    line = one_line_error(["eval", "--checkpoint", str(best), "--shards", str(copy), "--out", str(tmp_path / "ev"),
                           "--num-workers", "1"], copy / VAL)
    expect = {"flip": "sha256 differs", "truncate": "bytes", "empty": "0 bytes", "header": "sha256 differs",
              "missing": "missing"}
    assert expect[kind] in line
    assert not (tmp_path / "ev" / "report.json").exists()  # no score over a different set of frames


@pytest.mark.parametrize("kind", ["truncate", "empty", "header"])
def test_eval_without_verification_still_names_an_unreadable_shard(copy, best, tmp_path, kind):
    damage_shard(copy / VAL, kind)
    line = one_line_error(["eval", "--checkpoint", str(best), "--shards", str(copy), "--out", str(tmp_path / "ev"),
                           "--num-workers", "1", "--no-verify"], copy / VAL)
    assert "does not read as a tar file" in line


def test_eval_verifies_by_default_and_no_verify_reads_flipped_bytes(copy, best, tmp_path):
    res = invoke(["eval", "--checkpoint", str(best), "--shards", str(copy), "--out", str(tmp_path / "a"),
                  "--max-side", "48"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["data"]["verified_files"] == 1 and report["data"]["unverified_files"] == 0
    damage_shard(copy / VAL, "flip")
    res = invoke(["eval", "--checkpoint", str(best), "--shards", str(copy), "--out", str(tmp_path / "b"),
                  "--no-verify", "--max-side", "48"])
    assert res.exit_code == 0, res.output  # the flip is inside a member: only the digest could tell


def test_shards_without_a_manifest_get_one_warning(copy, best, tmp_path):
    (copy / "manifest.json").unlink()
    res = invoke(["eval", "--checkpoint", str(best), "--shards", str(copy), "--out", str(tmp_path / "ev"),
                  "--max-side", "48"])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.output.splitlines() if "not verified" in ln]
    assert len(warnings) == 1 and "1 shard(s)" in warnings[0], res.output


# ------------------------------------------------------------------------------------------ fit: shards


@pytest.fixture(scope="module")
def skipped_run(egohos_demo_shards, tmp_path_factory) -> tuple[Path, Path]:
    """A fit over shards of which two training shards are damaged (one flipped byte, one truncated)."""
    root = tmp_path_factory.mktemp("skips")
    shards = root / "shards"
    shutil.copytree(egohos_demo_shards, shards)
    damage_shard(shards / "egohos-train-000001.tar", "flip")
    damage_shard(shards / "egohos-train-000002.tar", "truncate")
    out = root / "run"
    res = invoke(["fit", "--shards", str(shards), "--out", str(out), *FIT])
    assert res.exit_code == 0, res.output
    return shards, out


def test_fit_skips_damaged_shards_and_records_them(skipped_run):
    shards, out = skipped_run
    log = (out / "train.log").read_text()
    for name in ("egohos-train-000001.tar", "egohos-train-000002.tar"):
        assert f"skipping damaged shard {shards / name}" in log
    rec = next(json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if "skipped_shards" in ln)
    assert rec["skipped_shards"] == 2 and rec["shards_verified"] == 6
    assert rec["skipped_shard_names"] == ["egohos-train-000001.tar", "egohos-train-000002.tar"]


def test_fit_stops_over_the_ceiling(skipped_run, tmp_path):
    shards, _ = skipped_run
    line = one_line_error(["fit", "--shards", str(shards), "--out", str(tmp_path / "o"), *FIT,
                           "--max-bad-shards", "1"], shards / "egohos-train-000001.tar")
    assert "more than --max-bad-shards 1" in line


def test_fit_without_verification_names_an_unreadable_shard(copy, tmp_path):
    for i in range(5):  # every training shard empty: the first one drawn fails, in a loader worker
        damage_shard(copy / f"egohos-train-00000{i}.tar", "empty")
    line = one_line_error(["fit", "--shards", str(copy), "--out", str(tmp_path / "o"), *FIT, "--no-verify"],
                          copy / "egohos-train-00000")
    assert "does not read as a tar file" in line


# ------------------------------------------------------------------------------------------ checkpoints


def damage_checkpoint(src: Path, dst: Path, kind: str) -> Path:
    """A damaged copy of ``src``. The kinds that change tensors re-save (a fresh digest), so what refuses
    them is the check of their own kind, not the digest."""
    if kind == "flip":
        shutil.copy(src, dst)
        flip_byte(dst)
    elif kind == "empty":
        dst.write_bytes(b"")
    elif kind == "truncate":
        dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif kind == "text":
        dst.write_text("not a checkpoint\n")
    elif kind == "foreign":
        torch.save([1, 2, 3], dst)
    else:
        c = torch.load(src, weights_only=True)
        c.pop("digest", None)
        floats = [k for k, v in c["model"].items() if v.is_floating_point() and v.dim() == 4]
        if kind == "nan":
            c["model"][floats[0]].view(-1)[0] = float("nan")
        elif kind == "inf":
            c["model"][floats[-1]].view(-1)[-1] = float("inf")
        elif kind == "missing_keys":
            del c["model"][floats[0]]
        elif kind == "shape":
            c["model"][floats[0]] = torch.zeros(1, 1, 1, 1)
        elif kind == "model_name":
            c["config"]["model"] = "deeplabv3_resnet9000"
        elif kind == "no_optimizer":
            for k in ("optimizer", "scheduler"):
                c.pop(k, None)
        else:
            raise ValueError(kind)
        ckpt_io.save_atomic(c, dst)
    return dst


EXPECT = {"flip": "digest", "empty": "0 bytes", "truncate": "truncated", "text": "not a loadable checkpoint",
          "foreign": "not a hotrain checkpoint", "nan": "NaN or infinite", "inf": "NaN or infinite",
          "missing_keys": "missing tensor", "shape": "of another shape", "model_name": "unknown model"}


@pytest.mark.parametrize("kind", list(EXPECT))
def test_eval_refuses_a_damaged_checkpoint(egohos_demo_shards, best, tmp_path, kind):
    bad = damage_checkpoint(best, tmp_path / "bad.pt", kind)
    line = one_line_error(["eval", "--checkpoint", str(bad), "--shards", str(egohos_demo_shards),
                           "--out", str(tmp_path / "ev")], bad)
    assert EXPECT[kind] in line


@pytest.fixture()
def frames(tmp_path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    cv2.imwrite(str(d / "a.png"), np.full((24, 32, 3), 128, np.uint8))
    return d


@pytest.mark.parametrize("kind", ["flip", "nan", "shape", "truncate"])
def test_predict_refuses_a_damaged_checkpoint(best, frames, tmp_path, kind):
    bad = damage_checkpoint(best, tmp_path / "bad.pt", kind)
    line = one_line_error(["predict", "--checkpoint", str(bad), "--input", str(frames), "--out",
                           str(tmp_path / "masks"), "--num-workers", "0", "--no-progress"], bad)
    assert EXPECT[kind] in line
    assert not list((tmp_path / "masks").glob("*.png")) if (tmp_path / "masks").exists() else True


@pytest.mark.parametrize("kind", ["flip", "inf", "missing_keys", "model_name"])
def test_init_refuses_a_damaged_checkpoint(egohos_demo_shards, best, tmp_path, kind):
    bad = damage_checkpoint(best, tmp_path / "bad.pt", kind)
    line = one_line_error(["fit", "--shards", str(egohos_demo_shards), "--out", str(tmp_path / "o"), *FIT,
                           "--init", str(bad)], bad)
    assert EXPECT[kind] in line


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("kind", ["no_optimizer", "flip", "nan"])
def test_resume_refuses_a_damaged_last_checkpoint_and_clears_stale_temps(skipped_run, tmp_path, kind):
    shards, run = skipped_run
    out = tmp_path / "run"
    out.mkdir()
    damage_checkpoint(run / "last.pt", out / "last.pt", kind)
    stale = out / f".last.pt.tmp.{dead_pid()}"  # what a checkpoint write killed mid-way leaves
    stale.write_bytes(b"\0" * 100_000)
    foreign = [out / ".last.pt.tmp.notes", out / "last.pt.tmp.1"]  # not save_atomic's pattern: kept
    for f in foreign:
        f.write_text("x")
    line = one_line_error(["fit", "--shards", str(shards), "--out", str(out), "--resume", "--no-progress"],
                          out / "last.pt")
    assert ("--resume needs a full checkpoint" in line) if kind == "no_optimizer" else EXPECT[kind] in line
    assert not stale.exists() and all(f.exists() for f in foreign)


def test_checkpoints_carry_a_digest_and_older_ones_load_with_a_note(skipped_run, egohos_demo_shards, tmp_path):
    _, run = skipped_run
    for name in ("last.pt", "best.pt"):
        c = torch.load(run / name, weights_only=True)
        assert c["digest"]["model_sha256"] == ckpt_io.model_digest(c["model"])
    old = torch.load(run / "best.pt", weights_only=True)
    del old["digest"]
    torch.save(old, tmp_path / "old.pt")
    res = invoke(["eval", "--checkpoint", str(tmp_path / "old.pt"), "--shards", str(egohos_demo_shards),
                  "--out", str(tmp_path / "ev"), "--max-side", "48"])
    assert res.exit_code == 0, res.output
    notes = [ln for ln in res.output.splitlines() if "no tensor digest" in ln]
    assert len(notes) == 1 and str(tmp_path / "old.pt") in notes[0]


def test_save_removes_stale_temps_of_dead_writers_only(tmp_path):
    stale = tmp_path / f".best.pt.tmp.{dead_pid()}"
    stale.write_bytes(b"\0" * 1000)
    live = tmp_path / f".other.pt.tmp.{os.getppid()}"  # a running process: maybe mid-write
    live.write_bytes(b"\0")
    ckpt_io.save_atomic({"model": {"w": torch.ones(2)}, "config": {}}, tmp_path / "best.pt")
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["best.pt", live.name])
