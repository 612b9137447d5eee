"""Writer locks on an output folder, held by real processes: refuse in one line, --wait, kill -9, parts."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from hodata.cli import main as hodata_main
from hodata.lock import FolderBusy, writer_lock
from hodata.merge import merge
from hodata.shards import BuildConfig, build
from toy_source import ToySource

TESTS = str(Path(__file__).resolve().parent)
HOLD = textwrap.dedent("""
    import sys, time
    from hodata.lock import writer_lock
    out, source, tag, seconds = sys.argv[1:5]
    with writer_lock(out, source, part_tag=tag or None, command=["hodata", "build", "--holder-of", source]):
        print("locked", flush=True)
        time.sleep(float(seconds))
""")


def cfg(out, **kw):
    return BuildConfig(out=out, progress=False, command=["test"], **({"max_samples": 4} | kw))


def hold(out: Path, source: str, tag: str = "", seconds: float = 60) -> subprocess.Popen:
    """Another process holding the folder's lock for ``source`` (a whole build, or part ``tag``)."""
    out.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(out), source, tag, str(seconds)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_writer_refuses_in_one_line_naming_the_holder(tmp_path):
    demo = tmp_path / "demo"
    assert CliRunner().invoke(hodata_main, ["demo", "--layout", "egohos", "--out", str(demo)]).exit_code == 0
    out = tmp_path / "out"
    holder = hold(out, "egohos")
    try:
        res = CliRunner().invoke(hodata_main, ["build", "--source", "egohos", "--root", str(demo), "--out", str(out),
                                               "--quiet"])
        assert res.exit_code == 1
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and f"pid {holder.pid}" in lines[0] and "--holder-of egohos" in lines[0]
        assert "--wait" in lines[0] and "Traceback" not in res.output
        assert not list(out.glob("*.tar")) and not (out / "manifest.json").exists()
        # another source into the same folder is another writer: it runs
        with writer_lock(out, "egohands"):
            pass
    finally:
        holder.kill()
        holder.wait()


def test_wait_blocks_until_the_holder_ends(tmp_path, capfd):
    out = tmp_path / "out"
    holder = hold(out, "toy", seconds=1.0)
    t0 = time.time()
    rec = build(ToySource(tmp_path, frames=8), cfg(out, wait=True))
    holder.wait()
    assert rec["status"] == "complete" and time.time() - t0 > 0.5
    assert f"waiting for pid {holder.pid}" in capfd.readouterr().err


def test_kill_9_releases_the_lock(tmp_path):
    out = tmp_path / "out"
    holder = hold(out, "toy")
    with pytest.raises(FolderBusy):
        build(ToySource(tmp_path, frames=8), cfg(out))
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert build(ToySource(tmp_path, frames=8), cfg(out))["status"] == "complete"


def test_parts_run_side_by_side_but_exclude_whole_builds_and_merges(tmp_path):
    out = tmp_path / "out"
    holder = hold(out, "toy", tag="part-1-of-2")
    try:
        rec = build(ToySource(tmp_path, frames=20), cfg(out, part=(2, 2)))  # the other part: fine
        assert rec["status"] == "complete"
        with pytest.raises(FolderBusy, match=f"part-1-of-2 of a toy build \\(pid {holder.pid}"):
            build(ToySource(tmp_path, frames=20), cfg(out, overwrite=True))
        with pytest.raises(FolderBusy, match="part-1-of-2"):
            merge(out)
        with pytest.raises(FolderBusy, match=f"pid {holder.pid}"):  # the same part twice
            build(ToySource(tmp_path, frames=20), cfg(out, part=(1, 2)))
    finally:
        holder.kill()
        holder.wait()
    build(ToySource(tmp_path, frames=20), cfg(out, part=(1, 2)))
    assert merge(out)["toy"]["totals"]["samples"] == 20


def test_a_killed_builder_leaves_no_worker_and_no_lock(tmp_path):
    """SIGKILL of a --workers 2 build: its workers end too, and the folder is free at once."""
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import multiprocessing, os, signal, sys, time
        sys.path.insert(0, {TESTS!r})
        from toy_source import ToySource
        from hodata.shards import BuildConfig, build
        class Slow(ToySource):
            def load(self, ref):
                time.sleep(0.01)
                return super().load(ref)
        def on_shard(info):  # the first shards come from the builder's own warm-up batch: wait for the pool's
            if info["name"] != "toy-train-000004.tar":
                return
            print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        build(Slow({str(tmp_path)!r}, frames=200), BuildConfig(out={str(out)!r}, max_samples=4, workers=2,
              progress=False, command=["test"]), on_shard=on_shard)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == -9, r.stderr
    workers = [int(p) for p in r.stdout.split()]
    assert len(workers) == 2
    deadline = time.time() + 5
    while time.time() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    with writer_lock(out, "toy"):  # free: no worker kept the descriptor
        pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _lock_files_open(ctx, item) -> list[str]:
    """The lock files this process has open (read from /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if ".hodata-" in target:
            found.append(target)
    return found


def test_lock_descriptors_are_closed_in_workers(tmp_path):
    """A forked worker does not keep the builder's lock open (else a kill -9 of the builder would not free it)."""
    from hodata.workers import ordered_map

    out = tmp_path / "out"
    out.mkdir()
    with writer_lock(out, "toy"):
        seen = list(ordered_map(_lock_files_open, None, range(12), workers=1, batch=2))
    assert seen[0]  # the first batch runs in the builder itself, which holds the lock
    assert seen[-1] == []  # the last ones in the worker, which closed it
    assert mp.parent_process() is None and threading.current_thread() is threading.main_thread()
