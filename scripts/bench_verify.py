"""What verifying shards against their manifest costs (``hotrain.integrity``), against reading them unverified.

Two measures, each against its baseline in the same process, best of ``--rounds`` interleaved rounds:

- ``fit``'s check before training: size + sha256 of every shard (:func:`hotrain.integrity.check_file`) against
  reading the same files without hashing;
- ``eval``'s streamed check: raw samples through :func:`hotrain.data.read_shards` with the manifest index
  (hashed while the tar reader consumes them) against the same stage without it. Nothing is decoded and no
  model runs, so this is the worst case: in a real evaluation decoding and the model dominate.

The shards are the demo's (``hodata demo`` + ``hodata build``) copied ``--copies`` times under new names, with
a manifest that lists every copy (the page cache holds them all: this measures the CPU, not the disk).

    python scripts/bench_verify.py --copies 100
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from click.testing import CliRunner


def make_shards(root: Path, copies: int) -> list[str]:
    from hodata.cli import main as hodata_main

    for args in (["demo", "--out", str(root / "egohos")],
                 ["build", "--source", "egohos", "--root", str(root / "egohos"), "--out", str(root / "one"),
                  "--max-samples", "8", "--quiet"]):
        res = CliRunner().invoke(hodata_main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    manifest = json.loads((root / "one" / "manifest.json").read_text())
    rec = manifest["builds"]["egohos"]
    out = root / "shards"
    out.mkdir()
    shards = []
    for i in range(copies):
        for sh in rec["shards"]:
            name = f"bench{i:04d}-{sh['split']}-{int(sh['name'].rsplit('-', 1)[1][:-4]):06d}.tar"
            shutil.copy(root / "one" / sh["name"], out / name)
            shards.append(sh | {"name": name})
    manifest["builds"] = {"bench": rec | {"shards": shards}}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return [str(out / sh["name"]) for sh in shards]


def plain_read(urls: list[str]) -> int:
    n = 0
    for u in urls:
        with open(u, "rb") as f:
            while block := f.read(1 << 22):
                n += len(block)
    return n


def run() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import webdataset as wds

    from hotrain.data import read_shards
    from hotrain.integrity import check_file, index_shards

    with tempfile.TemporaryDirectory() as tmp:
        urls = make_shards(Path(tmp), args.copies)
        index = index_shards(urls)
        mb = sum(Path(u).stat().st_size for u in urls) / 1e6

        def fit_check():
            assert all(check_file(u, index.expected(u)) is None for u in urls)

        def eval_stream(verify):
            return lambda: sum(1 for _ in wds.DataPipeline(wds.SimpleShardList(urls), read_shards(verify)))

        pairs = {"fit check (sha256 per shard) vs plain read": (fit_check, lambda: plain_read(urls)),
                 "eval stream with streamed sha256 vs without": (eval_stream(index), eval_stream(None))}
        best = {k: [float("inf"), float("inf")] for k in pairs}
        for _ in range(args.rounds):
            for k, fns in pairs.items():
                for i, fn in enumerate(fns):
                    t0 = time.perf_counter()
                    fn()
                    best[k][i] = min(best[k][i], time.perf_counter() - t0)
        print(f"{len(urls)} shards, {mb:.1f} MB (page cache), best of {args.rounds}")
        for k, (a, b) in best.items():
            print(f"{k}: {a:.3f} s vs {b:.3f} s = {a / b:.2f}x ({mb / a:.0f} MB/s vs {mb / b:.0f} MB/s)")


if __name__ == "__main__":
    run()
