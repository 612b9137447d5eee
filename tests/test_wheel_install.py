"""A wheel install (no checkout beside it) builds every demo dataset with its default options, EgoHands'
split included: the per-source facts ship inside the package."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from hodata.sources import REGISTRY, demo_layouts

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd, env=None):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    return r


@pytest.mark.slow
def test_wheel_install_builds_every_demo(tmp_path):
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", dist, REPO],
        cwd=tmp_path)
    wheel = next(dist.glob("handobj_seg-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    # The dependencies come from this environment's site-packages (a path line, not a site dir: its
    # editable-install hook is not run), the project itself only from the wheel.
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    python = venv / "bin" / "python"
    # no PYTHONPATH, for pip too: a checkout on it carries the egg-info `pip wheel` leaves there, which pip would
    # take for an installed copy and skip the wheel
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MANO_DIR", "YCB_DIR")}
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel],
        cwd=tmp_path, env=env)
    where = run([python, "-c", "import hodata, hodata.manifests as m; print(hodata.__file__); "
                 "print(m.path('egohands_split.json'))"], cwd=tmp_path, env=env).stdout.split()
    assert all(str(venv) in w for w in where), where  # imported from the wheel, not the checkout

    for layout in demo_layouts():
        demo = tmp_path / "demo" / layout
        info = run([venv / "bin" / "hodata", "demo", "--layout", layout, "--out", demo], cwd=tmp_path, env=env)
        build_cmd = info.stdout.strip().splitlines()[-1].removeprefix("next: ").split()
        assert build_cmd[:3] == ["hodata", "build", "--source"] and build_cmd[3] == layout, info.stdout
        out = run([venv / "bin" / build_cmd[0], *build_cmd[1:], "--quiet"], cwd=tmp_path, env=env).stdout
        assert f"{layout}: " in out and " 0 samples" not in out, out
    assert sorted(demo_layouts()) == sorted(n for n, e in REGISTRY.items() if e.demo)
