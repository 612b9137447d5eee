"""A real 2-process ``torchrun -m hotrain fit`` (gloo, CPU) and a 2-process eval on demo shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner


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


def keys_of(shard: str) -> set[str]:
    with tarfile.open(shard) as tf:
        return {m.name.split(".", 1)[0] for m in tf.getmembers()}


FIT = ["--preset", "tiny", "--weights", "none", "--no-progress", "--steps", "6", "--steps-per-epoch", "3",
       "--crop-size", "64", "--batch-size", "2", "--num-workers", "1", "--aux", "--eval-every", "100"]


@pytest.fixture(scope="module")
def ddp_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    res = torchrun("fit", "--shards", str(shards), "--out", str(out), *FIT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out


def test_two_ranks_finish_with_identical_parameters_on_disjoint_shards(ddp_run, shards):
    ranks = [json.loads((ddp_run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["step"] for r in ranks] == [6, 6] and all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"]
    # buffers too: BatchNorm statistics were re-estimated on both ranks' frames and averaged (--bn-recompute)
    assert ranks[0]["state_sha256"] == ranks[1]["state_sha256"]
    s0, s1 = (set(r["shards"]) for r in ranks)
    train = {str(p) for p in shards.glob("*-train-*.tar")}
    assert s0 and s1 and not s0 & s1 and s0 | s1 == train
    # what each rank really read: keys seen come only from its own shards
    k0, k1 = (set(r["keys_seen"]) for r in ranks)
    assert k0 and k1 and not k0 & k1
    assert k0 <= set().union(*map(keys_of, s0)) and k1 <= set().union(*map(keys_of, s1))
    last = json.loads((ddp_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["split"] == "val" and last["step"] == 6  # validated at the end (rank 1 had no val shard)


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
