"""A real 2-process ``torchrun -m hotrain fit`` (gloo, CPU) and a 2-process eval on demo shards."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from hotrain.dist import state_digest


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(egohos_demo_shards) -> Path:
    return egohos_demo_shards


def torchrun(*args: str, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "hotrain", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


FIT = ["--preset", "tiny", "--weights", "none", "--no-progress", "--steps", "6", "--steps-per-epoch", "3",
       "--crop-size", "64", "--batch-size", "2", "--num-workers", "1", "--aux", "--eval-every", "100"]


@pytest.fixture(scope="module")
def ddp_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    res = torchrun("fit", "--shards", str(shards), "--out", str(out), *FIT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def rank_shards_in_log(out: Path) -> dict[int, set[str]]:
    """``rank R reads N train shard(s): a.tar b.tar`` lines of train.log -> {R: {names}}."""
    found = {}
    for line in (out / "train.log").read_text().splitlines():
        m = re.match(r"rank (\d+) reads (\d+) train shard\(s\): (.*)$", line)
        if m:
            found[int(m[1])] = set(m[3].split())
            assert len(found[int(m[1])]) == int(m[2])
    return found


def test_two_ranks_finish_with_identical_parameters_on_disjoint_shards(ddp_run, shards):
    log = (ddp_run / "train.log").read_text()
    ckpt = torch.load(ddp_run / "last.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["world_size"] == 2
    # parameters and buffers agree on both ranks (BatchNorm statistics were re-estimated on both ranks' frames
    # and averaged, --bn-recompute), and they are what rank 0 saved
    m = re.search(r"model state sha256 ([0-9a-f]{64}) \(identical on 2 rank\(s\)\)", log)
    assert m, log[-2000:]
    assert m[1] == state_digest(ckpt["model"])
    assert "DDP" in log
    ranks = rank_shards_in_log(ddp_run)
    train = {p.name for p in shards.glob("*-train-*.tar")}
    assert set(ranks) == {0, 1} and ranks[0] and ranks[1]
    assert not ranks[0] & ranks[1] and ranks[0] | ranks[1] == train
    assert len(ckpt["rng"]) == 2  # every rank's RNG states, for an exact resume
    last = json.loads((ddp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "val" and last["step"] == 6  # validated at the end (rank 1 had no val shard)
    assert not (ddp_run / "ranks").exists()


def test_two_process_eval_counts_each_pixel_once(ddp_run, shards, tmp_path):
    ckpt = ddp_run / "last.pt"
    res = torchrun("eval", "--checkpoint", str(ckpt), "--shards", str(shards), "--split", "train",
                   "--out", str(tmp_path / "ddp"), "--num-workers", "0")
    assert res.returncode == 0, res.stderr[-3000:]
    from hotrain.cli import main

    single = CliRunner().invoke(main, ["eval", "--checkpoint", str(ckpt), "--shards", str(shards), "--split", "train",
                                       "--out", str(tmp_path / "one"), "--num-workers", "0"])
    assert single.exit_code == 0, single.output
    two, one = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("ddp", "one"))
    assert two["pixels"] == one["pixels"] > 0
    m2, m1 = np.array(two["confusion_matrix"]), np.array(one["confusion_matrix"])
    assert (m2.sum(1) == m1.sum(1)).all()  # the same labelled pixels, each counted once
    assert np.abs(m2 - m1).sum() <= 1e-3 * m1.sum()  # predictions: float noise of other batches / thread counts


def test_fewer_shards_than_ranks_is_a_clear_error(shards, tmp_path):
    one = sorted(shards.glob("*-train-*.tar"))[0]
    res = torchrun("fit", "--shards", f"{one},{shards / 'egohos-val-000000.tar'}", "--out", str(tmp_path / "x"),
                   *FIT, timeout=120)
    assert res.returncode != 0
    assert "1 train shard(s) for 2 ranks" in res.stderr + res.stdout
