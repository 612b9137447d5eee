"""What a build does with what it finds in --out: hostile manifests, stale temp files, a bad --out, a damaged
or newer manifest. Every refusal is one line naming the file; nothing outside --out is touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from hodata.cli import main as hodata_main
from hodata.errors import DataError, UserError
from hodata.merge import merge
from hodata.shards import BuildConfig, build
from toy_source import ToySource

TESTS = str(Path(__file__).resolve().parent)


def cfg(out, **kw):
    return BuildConfig(out=out, progress=False, command=["test"], **({"max_samples": 4} | kw))


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reliability") / "egohos"
    assert CliRunner().invoke(hodata_main, ["demo", "--layout", "egohos", "--frames", "16", "--out", str(root)]).exit_code == 0
    return root


def cli_build(demo: Path, out: Path, *extra: str):
    return CliRunner().invoke(hodata_main, ["build", "--source", "egohos", "--root", str(demo), "--out", str(out),
                                            "--quiet", *extra])


def one_line_error(res) -> str:
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in res.output, res.output
    return lines[0]


# --------------------------------------------------------------------------------------- paths from files


@pytest.mark.parametrize("name", ["../victim.tar", "VICTIM", "sub/x.tar", "..", "toy-train-000000.tar/.."])
def test_shard_names_from_the_manifest_never_leave_out(tmp_path, name):
    out = tmp_path / "out"
    build(ToySource(tmp_path, frames=12), cfg(out))
    victim = tmp_path / "victim.tar"
    victim.write_bytes(b"precious")
    name = str(victim) if name == "VICTIM" else name  # an absolute path
    m = out / "manifest.json"
    data = json.loads(m.read_text())
    data["builds"]["toy"]["shards"][0]["name"] = name
    m.write_text(json.dumps(data))
    for overwrite in (False, True):  # neither a resume nor a replacement deletes or opens it
        with pytest.raises(DataError, match="not a shard file name in this folder") as e:
            build(ToySource(tmp_path, frames=12), cfg(out, max_samples=3 if overwrite else 4, overwrite=overwrite))
        assert str(m) in str(e.value) and "\n" not in str(e.value)
    assert victim.read_bytes() == b"precious"


def test_a_shard_linked_outside_is_refused(tmp_path):
    out = tmp_path / "out"
    rec = build(ToySource(tmp_path, frames=12), cfg(out))
    first = out / rec["shards"][0]["name"]
    outside = tmp_path / "elsewhere.tar"
    outside.write_bytes(first.read_bytes())
    first.unlink()
    first.symlink_to(outside)
    with pytest.raises(DataError, match="link to a file outside"):
        build(ToySource(tmp_path, frames=12), cfg(out))
    assert outside.exists()


def test_hostile_names_in_a_part_manifest_are_refused_by_merge(tmp_path):
    out = tmp_path / "out"
    for i in (1, 2):
        build(ToySource(tmp_path, frames=20), cfg(out, part=(i, 2)))
    m = out / "manifest.part-2-of-2.json"
    data = json.loads(m.read_text())
    data["builds"]["toy"]["shards"][0]["name"] = "../../etc/passwd"
    m.write_text(json.dumps(data))
    with pytest.raises(DataError, match="not a shard file name"):
        merge(out)


# ----------------------------------------------------------------------------------------- stale temp files


def test_stale_temp_files_of_this_writer_are_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    mine = [out / "toy-train-000003.tar.tmp", out / "manifest.json.tmp"]
    others = [out / "toyother-train-000000.tar.tmp",  # another source
              out / "toy-train-2000000.tar.tmp"]  # a part's: not this single build's to remove
    for p in mine + others:
        p.write_bytes(b"half")
    build(ToySource(tmp_path, frames=8), cfg(out))
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)
    res = CliRunner().invoke(hodata_main, ["inspect", str(out)])
    assert "toy-train-2000000.tar.tmp" in res.output  # inspect still reports what nobody accounts for


def test_a_part_removes_only_its_own_temp_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    own, other = out / "toy-val-1000002.tar.tmp", out / "toy-val-2000000.tar.tmp"
    own_manifest_tmp = out / "manifest.part-1-of-2.json.tmp"
    for p in (own, other, own_manifest_tmp):
        p.write_bytes(b"half")
    build(ToySource(tmp_path, frames=20), cfg(out, part=(1, 2)))
    assert not own.exists() and not own_manifest_tmp.exists() and other.exists()


def test_temp_files_of_a_live_writer_are_left_alone(tmp_path):
    """While another process holds the folder for toy, a second build refuses and removes nothing."""
    out = tmp_path / "out"
    out.mkdir()
    tmp = out / "toy-train-000000.tar.tmp"
    tmp.write_bytes(b"being written")
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from hodata.lock import writer_lock
        with writer_lock({str(out)!r}, "toy"):
            print("locked", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="is being written by"):
            build(ToySource(tmp_path, frames=8), cfg(out))
        assert tmp.read_bytes() == b"being written"
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------------------------- --out itself


def test_out_that_is_a_file(demo, tmp_path):
    f = tmp_path / "shards"
    f.write_text("not a folder")
    line = one_line_error(cli_build(demo, f))
    assert str(f) in line and "is a file" in line
    line = one_line_error(cli_build(demo, f / "sub"))
    assert str(f / "sub") in line and "cannot create" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_not_writable(demo, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = one_line_error(cli_build(demo, ro))
        assert str(ro) in line and "not writable" in line
    finally:
        ro.chmod(0o755)


# ------------------------------------------------------------------------------------------- the manifest


def test_damaged_manifest_is_one_line(demo, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"schema": "hodata-manifest/1", "builds": {')
    line = one_line_error(cli_build(demo, out))
    assert str(out / "manifest.json") in line and "not valid JSON" in line
    (out / "manifest.json").write_text('["a list"]')
    assert "not a hodata manifest" in one_line_error(cli_build(demo, out))
    (out / "manifest.json").write_text('{"builds": {"egohos": {"shards": "x"}}}')
    assert "'shards' is not a list" in one_line_error(cli_build(demo, out))


def test_manifest_of_a_newer_format_is_refused(demo, tmp_path):
    out = tmp_path / "out"
    assert cli_build(demo, out).exit_code == 0
    m = out / "manifest.json"
    data = json.loads(m.read_text())
    data["schema"] = "hodata-manifest/2"
    m.write_text(json.dumps(data))
    files = lambda: {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".hodata-")}  # noqa: E731
    before = files()
    line = one_line_error(cli_build(demo, out, "--overwrite"))
    assert "newer hodata" in line and "hodata-manifest/2" in line and str(m) in line
    assert files() == before  # nothing replaced, nothing removed (only the lock file names the last writer)


def test_out_not_writable_message(demo, tmp_path, monkeypatch):
    """The same check where the tests run as root (who may write anywhere): what a user without rights sees."""
    import hodata.outdir

    monkeypatch.setattr(hodata.outdir, "writable", lambda folder: False)
    line = one_line_error(cli_build(demo, tmp_path / "out"))
    assert str(tmp_path / "out") in line and "not writable" in line
