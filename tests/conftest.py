"""Shared test setup: headless rendering, and a tiny in-memory source for builder tests."""

from __future__ import annotations

import os

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture()
def tree(demo_out, tmp_path) -> Path:
    """A private copy of the test module's ``demo_out`` fixture (a demo dataset), for tests that edit it."""
    import shutil

    dst = tmp_path / "demo"
    shutil.copytree(demo_out, dst)
    return dst


@pytest.fixture(scope="session")
def egohos_demo_shards(tmp_path_factory) -> Path:
    """EgoHOS-layout synthetic colour-blob frames built into hodata/1 shards (8 samples per shard), once per run.

    Read-only for tests: copy it before changing anything.
    """
    from click.testing import CliRunner

    from hodata.cli import main as hodata_main

    root = tmp_path_factory.mktemp("egohos_demo")
    for args in (["demo", "--out", str(root / "egohos")],
                 ["build", "--source", "egohos", "--root", str(root / "egohos"), "--out", str(root / "shards"),
                  "--max-samples", "8", "--quiet"]):
        res = CliRunner().invoke(hodata_main, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
    return root / "shards"
