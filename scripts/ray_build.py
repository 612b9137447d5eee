#!/usr/bin/env python
"""Build one source in N parts on a Ray cluster, then join them with ``hodata merge``.

Ray is not a dependency of hodata: this example imports it only when it runs (``pip install ray``). Each part
is one Ray task that runs ``hodata build ... --part i/N --workers C`` as a subprocess on a node with C free
CPUs; a task that fails is retried, and the retry resumes the part (finished shards are kept). The driver
merges once every part succeeded. Every node must see the dataset at the same path and the output folder on
a shared file system.

  python scripts/ray_build.py --parts 16 --cpus-per-part 8 -- \\
      --source ho3d --root /data/HO3D_v3 --out /shared/shards --mano-dir /models/mano --ycb-dir /data/YCB/models
  python scripts/ray_build.py --parts 3 --dry-run -- --source egohos --root demo --out shards   # the commands only

``--address`` connects to a running cluster (default: ``auto`` when RAY_ADDRESS is set, else a local one).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys


def build_command(build_args: list[str], part: int, parts: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "hodata.cli", "build", *build_args, "--part", f"{part}/{parts}",
            "--workers", str(workers), "--quiet"]


def out_folder(build_args: list[str]) -> str:
    for i, arg in enumerate(build_args):
        if arg == "--out" and i + 1 < len(build_args):
            return build_args[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    raise SystemExit("the hodata build arguments after -- must include --out")


def run_part(command: list[str]) -> str:
    """One part, in its own process (its workers, its signals); the last line it printed, or an error."""
    done = subprocess.run(command, capture_output=True, text=True)
    lines = (done.stdout + done.stderr).strip().splitlines()
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {lines[-1] if lines else ''}")
    return lines[0] if lines else ""


def main() -> None:
    argv = sys.argv[1:]
    if "--" not in argv:
        raise SystemExit("usage: ray_build.py --parts N [--cpus-per-part C] [--address A] [--dry-run] -- "
                         "HODATA BUILD ARGUMENTS (--source, --root, --out, source options)")
    split = argv.index("--")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", type=int, required=True, help="how many parts (Ray tasks)")
    ap.add_argument("--cpus-per-part", type=int, default=4, help="CPUs per task = --workers of each part")
    ap.add_argument("--retries", type=int, default=2, help="retries of a failed part (each resumes it)")
    ap.add_argument("--address", default=None, help="Ray cluster address (default: auto / local)")
    ap.add_argument("--dry-run", action="store_true", help="print the part and merge commands; run nothing")
    args = ap.parse_args(argv[:split])
    build_args = argv[split + 1:]
    out = out_folder(build_args)
    commands = [build_command(build_args, i, args.parts, args.cpus_per_part) for i in range(1, args.parts + 1)]
    merge = [sys.executable, "-m", "hodata.cli", "merge", out]
    if args.dry_run:
        for c in commands + [merge]:
            print(shlex.join(c))
        return

    import ray  # only here: Ray is optional

    ray.init(address=args.address or ("auto" if os.environ.get("RAY_ADDRESS") else None))
    task = ray.remote(num_cpus=args.cpus_per_part, max_retries=args.retries, retry_exceptions=True)(run_part)
    pending = {task.remote(c): i for i, c in enumerate(commands, 1)}
    failed = []
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        try:
            print(f"part {i}/{args.parts}: {ray.get(ready[0])}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every part, then stop
            failed.append(i)
            print(f"part {i}/{args.parts} failed after {args.retries} retries: {e}", file=sys.stderr, flush=True)
    if failed:
        raise SystemExit(f"{len(failed)} part(s) failed ({', '.join(map(str, sorted(failed)))}): rerun this "
                         "command to resume them, then it merges")
    subprocess.run(merge, check=True)


if __name__ == "__main__":
    main()
