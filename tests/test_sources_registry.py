"""Sources as plug-ins: declared options reach only their source, the CLI comes from the registry, and a
failure that is not a bad frame stops the build loudly."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hodata.cli import main as hodata_cli
from hodata.errors import BadFrame, DataError, UserError
from hodata.shards import BuildConfig, SchemaViolation, TooManySkipped, build
from hodata.sources import REGISTRY, Option, Source, demo_layouts, open_source, resolve_options, source_names
from toy_source import ToySource

runner = CliRunner()


def cfg(out, **kw):
    return BuildConfig(out=out, progress=False, command=["test"], **({"max_samples": 4} | kw))


# ------------------------------------------------------------------------------------------ options


def test_options_are_typed_validated_and_defaulted():
    declared = (Option("level", click.IntRange(0, 9), 3, "how much"), Option("mode", click.Choice(["a", "b"]), "a"))
    opts = resolve_options("toy", declared, {"level": "7"})
    assert opts == {"level": 7, "mode": "a"}
    with pytest.raises(DataError, match=r"toy: --level: .*10"):
        resolve_options("toy", declared, {"level": 10})
    with pytest.raises(DataError, match=r"toy does not take --colour \(its options: --level, --mode\)"):
        resolve_options("toy", declared, {"colour": "red"})
    with pytest.raises(TypeError):
        opts["level"] = 1  # read-only once resolved


def test_each_source_declares_its_options(tmp_path):
    names = {n: {o.name for o in REGISTRY[n].load_class().OPTIONS} for n in source_names()}
    assert names["egohos"] == {"egohos_second_order"}
    assert names["egohands"] == {"egohands_split", "egohands_raster", "split_file"}
    assert {"mano_dir", "ycb_dir", "masks", "renderer"} <= names["ho3d"]
    assert "ycb_dir" not in names["freihand"] and "mano_dir" in names["freihand"]
    (tmp_path / "train" / "image").mkdir(parents=True)
    with pytest.raises(DataError, match="egohos does not take --mano-dir"):
        open_source("egohos", tmp_path, {"mano_dir": tmp_path})


def test_build_help_shows_the_chosen_sources_options_only():
    r = runner.invoke(hodata_cli, ["build", "--source", "egohos", "--help"])
    assert r.exit_code == 0, r.output
    assert "--egohos-second-order" in r.output and "--mano-dir" not in r.output and "--max-skip-fraction" in r.output
    r = runner.invoke(hodata_cli, ["build", "--source=ho3d", "--help"])
    assert "--mano-dir" in r.output and "--ycb-dir" in r.output and "--egohos-second-order" not in r.output
    r = runner.invoke(hodata_cli, ["build", "--help"])
    assert "hodata build --source NAME --help" in r.output and "--mano-dir" not in r.output
    for name in source_names():
        assert name in r.output  # --source choices come from the registry


def test_an_option_of_another_source_is_refused_in_one_line(tmp_path):
    r = runner.invoke(hodata_cli, ["build", "--source", "egohos", "--root", str(tmp_path), "--out",
                                   str(tmp_path / "o"), "--mano-dir", str(tmp_path)])
    assert r.exit_code == 2
    assert "No such option: --mano-dir for --source egohos (its options: --egohos-second-order); --mano-dir belongs to dexycb, freihand, ho3d" in r.output


def test_demo_layouts_come_from_the_registry():
    assert set(demo_layouts()) == {n for n, e in REGISTRY.items() if e.demo}
    r = runner.invoke(hodata_cli, ["demo", "--help"])
    assert all(name in r.output for name in demo_layouts())


def skeleton_from_design_doc() -> tuple[str, str]:
    """The minimal source module and its registry line, as docs/DESIGN.md shows them."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "DESIGN.md").read_text()
    block = text.split("# hodata/sources/mydata.py\n", 1)[1].split("```", 1)[0]
    module, registry = block.split("# hodata/sources/__init__.py\n")
    return module, registry.strip()


def test_a_new_source_is_one_module_and_one_registry_line(tmp_path, monkeypatch):
    """The skeleton of docs/DESIGN.md, run as written: the CLI takes its option, the build reads its frames."""
    import sys
    import types

    import cv2
    import numpy as np

    module_code, registry_line = skeleton_from_design_doc()
    mod = types.ModuleType("hodata.sources.mydata")
    exec(compile(module_code, "hodata/sources/mydata.py", "exec"), mod.__dict__)
    monkeypatch.setitem(sys.modules, "hodata.sources.mydata", mod)
    monkeypatch.setattr("hodata.sources.REGISTRY", dict(REGISTRY))
    import hodata.sources as sources

    exec(registry_line, {"register": sources.register})
    assert sources.REGISTRY["mydata"].target == "hodata.sources.mydata:MyDataSource"

    root = tmp_path / "mydata"
    (root / "seqA").mkdir(parents=True)
    for i in range(3):
        img = np.full((12, 16, 3), 40 * i, np.uint8)
        cv2.imwrite(str(root / "seqA" / f"f{i}.jpg"), img)
        mask = np.zeros((12, 16), np.uint8)
        mask[2:6, 3:9] = 1
        cv2.imwrite(str(root / "seqA" / f"f{i}.png"), mask)
    r = runner.invoke(hodata_cli, ["build", "--source", "mydata", "--help"])
    assert "--min-area" in r.output and "--egohos-second-order" not in r.output
    r = runner.invoke(hodata_cli, ["build", "--source", "mydata", "--root", str(root), "--out", str(tmp_path / "o"),
                                   "--min-area", "5", "--quiet"])
    assert r.exit_code == 0, r.output
    rec = json.loads((tmp_path / "o" / "manifest.json").read_text())["builds"]["mydata"]
    assert rec["totals"]["samples"] == 3 and rec["options"]["min_area"] == 5
    assert rec["source"]["licence"] == "CC BY 4.0"
    assert rec["command"][:4] == ["hodata", "build", "--source", "mydata"]
    assert rec["totals"]["class_pixels"]["hand"] == 3 * 24


# ------------------------------------------------------------------------------------------ failures


class BuggySource(ToySource):
    """Raises something other than BadFrame on one frame: a bug, which must stop the build."""

    def load(self, ref):
        if ref.info[0] == 5:
            return {}["no such key"]
        return super().load(ref)


class BadSchemaSource(ToySource):
    def load(self, ref):
        s = super().load(ref)
        s.seg[0, 1] = 7  # not a hodata label
        return s


def test_a_bug_in_a_source_propagates_naming_the_frame(tmp_path):
    with pytest.raises(KeyError) as e:
        build(BuggySource(tmp_path, frames=12), cfg(tmp_path / "out"))
    assert any("toy frame" in n and "00005" in n for n in e.value.__notes__)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bug_propagates_from_worker_processes_too(tmp_path, workers):
    with pytest.raises(KeyError):
        build(BuggySource(tmp_path, frames=12), cfg(tmp_path / "out", workers=workers))


def test_a_schema_violation_is_a_bug_not_a_skip(tmp_path):
    with pytest.raises(SchemaViolation, match="outside 0/1/2/255"):
        build(BadSchemaSource(tmp_path, frames=4), cfg(tmp_path / "out"))


def test_too_many_skips_stop_the_build_with_the_first_reasons(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TooManySkipped) as e:
        build(ToySource(tmp_path, frames=200, bad=set(range(0, 200, 10))), cfg(out, max_skip_fraction=0.05))
    msg = str(e.value)
    assert "more than --max-skip-fraction 0.05" in msg and "corrupt image (toy)" in msg and "\n" not in msg
    rec = json.loads((out / "manifest.json").read_text())["builds"]["toy"]
    assert rec["status"] == "failed" and len(rec["skipped"]) == 11  # stopped at the first skip over 10 allowed
    # within the ceiling (here 20 of 200 = 10 %), the same data builds
    rec = build(ToySource(tmp_path, frames=200, bad=set(range(0, 200, 10))),
                cfg(tmp_path / "ok", max_skip_fraction=0.1))
    assert rec["status"] == "complete" and rec["totals"]["skipped"] == 20


def test_a_build_that_skips_every_frame_fails_even_when_tiny(tmp_path):
    with pytest.raises(TooManySkipped, match="no sample could be built: all 4 frame"):
        build(ToySource(tmp_path, frames=4, bad={0, 1, 2, 3}), cfg(tmp_path / "out"))


def test_user_errors_share_one_base_across_packages():
    from hotrain import checkpoint  # noqa: F401 - imports hodata's errors too

    assert issubclass(DataError, UserError) and issubclass(BadFrame, UserError)
    assert issubclass(TooManySkipped, UserError) and not issubclass(SchemaViolation, UserError)


def test_a_broken_mano_file_stops_the_build_at_once_in_one_line(tmp_path):
    from hodata.demo import ho3d as demo

    demo.write(tmp_path / "d", frames=4)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "MANO_RIGHT.pkl").write_bytes(b"not a pickle at all")
    r = runner.invoke(hodata_cli, ["build", "--source", "ho3d", "--root", str(tmp_path / "d" / "HO3D_v3"),
                                   "--mano-dir", str(tmp_path / "junk"), "--ycb-dir", str(tmp_path / "d" / "models"),
                                   "--out", str(tmp_path / "o"), "--quiet"])
    assert r.exit_code == 1
    line = r.output.strip()
    assert line.startswith("Error: ") and "MANO_RIGHT.pkl" in line and "\n" not in line
    assert not (tmp_path / "o" / "manifest.json").exists()  # nothing was built


def test_a_list_file_that_is_not_text_is_one_line(tmp_path):
    from hodata.demo import ho3d as demo

    info = demo.write(tmp_path / "d", frames=3)
    root = Path(info["root"])
    (root / "train.txt").write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(DataError, match=r"train.txt: list file is not text"):
        open_source("ho3d", root, {"mano_dir": info["mano_dir"], "ycb_dir": info["ycb_dir"]}).frames()


def test_ragged_camera_json_is_one_line(tmp_path):
    from hodata.demo import freihand as demo

    info = demo.write(tmp_path / "d", samples=2)
    root = Path(info["root"])
    (root / "training_K.json").write_text("[[[1, 0, 0], [0, 1]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]]")
    with pytest.raises(DataError, match=r"training_K.json: expected a list of 3x3 number matrices"):
        open_source("freihand", root).frames()
