"""Ctrl-C and SIGTERM during a --workers 2 build, sent for real to a subprocess: one line, no worker
tracebacks, no half shard left, and the rerun gives the shards of an uninterrupted build byte for byte.
Ctrl-C during ``hotrain fit`` with loader workers: one line saying how to resume, no tracebacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

from hodata.interrupt import RESUME_HINT
from hodata.shards import BuildConfig, build
from toy_source import ToySource

TESTS = str(Path(__file__).resolve().parent)
FRAMES = 160
# the CLI on a slowed-down toy source (registered in the subprocess only), so the signal lands mid-build
SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    from toy_source import ToySource
    from hodata.sources import register

    class SlowToy(ToySource):
        def __init__(self, root, options=None):
            super().__init__(root, options, frames={frames})

        def load(self, ref):
            time.sleep({delay})
            return super().load(ref)

    register("slowtoy", "__main__:SlowToy")
    from hodata.cli import main
    main(["build", "--source", "slowtoy", "--root", {root!r}, "--out", {out!r}, "--workers", "2",
          "--max-samples", "4", "--quiet"])
""")


def shards(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}


def run_cli(tmp_path: Path, out: Path, delay: float) -> subprocess.Popen:
    code = SCRIPT.format(tests=TESTS, frames=FRAMES, delay=delay, root=str(tmp_path), out=str(out))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a terminal gives a command


@pytest.mark.parametrize("signum, to_group", [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_interrupted_build_says_one_line_and_resumes_byte_identical(tmp_path, signum, to_group):
    ref = tmp_path / "ref"
    build(ToySource(tmp_path, frames=FRAMES), BuildConfig(out=ref, max_samples=4, progress=False, command=["t"]))
    out = tmp_path / "out"
    p = run_cli(tmp_path, out, delay=0.03)  # about 2.5 s of building: time to interrupt it midway
    deadline = time.time() + 60
    while len(list(out.glob("toy-train-*.tar"))) < 4 and time.time() < deadline and p.poll() is None:
        time.sleep(0.02)  # the first shards come from the builder's warm-up batch; then the pool runs
    assert p.poll() is None, "the build ended before it could be interrupted"
    if to_group:  # Ctrl-C: the terminal signals the whole foreground group, workers included
        os.killpg(p.pid, signum)
    else:  # kill PID / a scheduler's time limit: the builder alone
        p.send_signal(signum)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 128 + signum, stderr
    assert stderr.strip().splitlines() == [RESUME_HINT], stderr
    assert "Traceback" not in stdout + stderr
    assert not list(out.glob("*.tmp"))  # the half shard is removed; finished ones stay
    kept = shards(out)
    assert 0 < len(kept) < len(shards(ref))
    for name, data in kept.items():
        assert data == (ref / name).read_bytes()
        with tarfile.open(out / name) as tf:
            assert len(tf.getmembers()) == 4 * 3

    p = run_cli(tmp_path, out, delay=0.0)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 0, stderr
    assert shards(out) == shards(ref)


def test_ctrl_c_during_fit_is_one_line_without_worker_tracebacks(tmp_path, egohos_demo_shards):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "hotrain", "fit", "--shards", str(egohos_demo_shards), "--stage", "hand",
           "--preset", "tiny", "--weights", "none", "--steps", "10000", "--crop-size", "32", "--batch-size", "2",
           "--num-workers", "2", "--eval-every", "10000", "--log-every", "1", "--no-progress", "--out", str(out)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        log = out / "metrics.jsonl"
        if log.exists() and '"loss"' in log.read_text():  # training steps are running, workers alive
            break
        time.sleep(0.1)
    assert p.poll() is None, p.communicate()
    os.killpg(p.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group, loader workers included
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 130, stderr
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: rerun with --resume to continue from the last checkpoint"


def test_a_loader_worker_is_silent_about_a_handover_its_interrupted_main_process_dropped():
    """The thread that hands a batch's file descriptors to the main process reports a peer gone mid-handshake
    through sys.excepthook: in a loader worker that is silent; other errors, and any on the main thread, are
    reported as before."""
    import threading

    from hotrain.data import quiet_lost_handover

    reported = []
    hook = quiet_lost_handover(lambda kind, value, tb: reported.append(kind))

    def in_thread(kind):
        t = threading.Thread(target=hook, args=(kind, kind(), None))
        t.start()
        t.join()

    in_thread(EOFError)
    in_thread(ConnectionResetError)
    assert reported == []
    in_thread(ValueError)
    hook(EOFError, EOFError(), None)
    assert reported == [ValueError, EOFError]
