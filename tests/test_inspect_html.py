"""``hodata inspect --html``: one self-contained page, read as text and loaded in headless Chromium.

The browser test needs Debian's ``chromium``; when it is missing the session installs it with apt-get
(as root), and when that cannot be done the test is skipped with the reason. Its screenshot is written
beside the test's outputs (the path is printed) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hodata.cli import main as hodata_main

# The build of the fixture below: samples per (source, split), as the demo generators lay them out.
KNOWN_COUNTS = {("egohos", "train"): 6, ("egohos", "val"): 2, ("egohos", "test_indomain"): 2,
                ("egohos", "test_outdomain"): 2, ("ho3d", "train"): 2, ("ho3d", "val"): 6}
GALLERY = 8
BROWSER_TIMEOUT_S = 60
INSTALL_DEADLINE_S = 300


def hodata(*args: str) -> str:
    res = CliRunner().invoke(hodata_main, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> Path:
    """EgoHOS (12 frames) and HO3D (8 frames) demo data built into one folder, 4 samples per shard."""
    root = tmp_path_factory.mktemp("html_two_sources")
    hodata("demo", "--layout", "egohos", "--out", str(root / "egohos"), "--frames", "12")
    hodata("demo", "--layout", "ho3d", "--out", str(root / "ho3d"), "--frames", "8")
    shards = root / "shards"
    hodata("build", "--source", "egohos", "--root", str(root / "egohos"), "--out", str(shards),
           "--max-samples", "4", "--quiet")
    hodata("build", "--source", "ho3d", "--root", str(root / "ho3d" / "HO3D_v3"), "--mano-dir", str(root / "ho3d" / "mano"),
           "--ycb-dir", str(root / "ho3d" / "models"), "--out", str(shards), "--max-samples", "4", "--quiet")
    return shards


class PageParser(HTMLParser):
    """Collects what the tests look at: every URL-bearing attribute, split-table cells, gallery cards, tags."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: set[str] = set()
        self.cells: dict[tuple[str, str], int] = {}
        self.cards: list[dict[str, str]] = []
        self.body: dict[str, str] = {}
        self.by_id: dict[str, dict[str, str]] = {}
        self._source = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        self.urls += [a[k] for k in ("src", "href", "action", "poster", "data") if k in a and tag != "figure"]
        if tag == "body":
            self.body = a
        if "id" in a:
            self.by_id[a["id"]] = a
        if tag == "tr" and "data-source" in a:
            self._source = a["data-source"]
        if tag == "td" and "data-samples" in a and self._source:
            self.cells[(self._source, a["data-split"])] = int(a["data-samples"])
        if tag == "figure":
            self.cards.append(a)


def parse(text: str) -> PageParser:
    p = PageParser()
    p.feed(text)
    return p


def write_report(shards: Path, out: Path, *extra: str) -> tuple[Path, str]:
    res = CliRunner().invoke(hodata_main, ["inspect", str(shards), "--html", str(out), *extra])
    assert out.exists(), res.output
    return out, res.output


# ------------------------------------------------------------------------------------------ the page as text


def test_page_is_self_contained_with_counts_provenance_and_gallery(two_sources, tmp_path):
    html_path, output = write_report(two_sources, tmp_path / "report.html", "--samples", str(GALLERY))
    assert f"html report: {html_path}" in output and "no problems found" in output
    text = html_path.read_text()
    page = parse(text)
    assert page.urls and all(u.startswith(("data:", "#")) for u in page.urls), [u[:40] for u in page.urls
                                                                               if not u.startswith(("data:", "#"))]
    assert not {"link", "iframe", "object", "embed"} & page.tags
    assert "@import" not in text and not re.search(r"url\((?!data:)", text)
    assert not re.search(r"<script[^>]+src=", text)
    assert page.cells == KNOWN_COUNTS
    assert page.body["data-problems"] == "0" and page.body["data-ready"] == "0"  # the script sets it to 1
    # gallery: every source and split drawn, each card a JPEG photo with a PNG overlay layer over it
    assert len(page.cards) == GALLERY
    assert {c["data-source"] for c in page.cards} == {"egohos", "ho3d"}
    assert len({(c["data-source"], c["data-split"]) for c in page.cards}) == len(KNOWN_COUNTS)
    imgs = [u for u in page.urls if u.startswith("data:image")]
    assert sum(u.startswith("data:image/jpeg") for u in imgs) == GALLERY
    assert sum(u.startswith("data:image/png") for u in imgs) == GALLERY
    assert {c["data-hands"] for c in page.cards if c["data-source"] == "ho3d"} == {"right"}
    # provenance: commands, commit and checksums of both builds; mask agreement of HO3D
    manifest = json.loads((two_sources / "manifest.json").read_text())["builds"]
    for source, rec in manifest.items():
        assert " ".join(rec["command"]).replace("&", "&amp;") in text
        for shard in rec["shards"]:
            assert shard["sha256"] in text
    assert manifest["ho3d"]["source"]["mano_sha256"] in text and "hand_iou" in text and "object_iou" in text
    assert text.count("shard sha256 verified") == 2
    assert len(text) < 600_000  # light: thumbnails at most 320x240
    assert not list(tmp_path.glob(".report.html*"))  # written through a temporary name


def test_page_lists_problems_skips_licence_and_worst_frames(two_sources, tmp_path):
    shards = tmp_path / "shards"
    shutil.copytree(two_sources, shards)
    manifest = shards / "manifest.json"
    data = json.loads(manifest.read_text())
    ho3d = data["builds"]["ho3d"]
    ho3d["source"]["licence"] = "HO-3D licence: research only"
    ho3d["skipped"] = [{"split": "train", "sequence": "MC1", "frame": "0007", "reason": "rgb <does not decode>",
                        "file": "train/MC1/rgb/0007.jpg", "index": 7}]
    ho3d["totals"]["quality"]["hand_iou"]["worst"] = [{"frame": "ho3d/val/ABF10/0003", "value": 0.4797}]
    manifest.write_text(json.dumps(data))
    victim = shards / "egohos-val-000000.tar"
    victim.write_bytes(victim.read_bytes()[:3000])  # cut inside a member: unreadable, sha256 and count differ
    res = CliRunner().invoke(hodata_main, ["inspect", str(shards), "--html", str(tmp_path / "r.html")])
    assert res.exit_code == 1
    text = (tmp_path / "r.html").read_text()
    page = parse(text)
    assert int(page.body["data-problems"]) >= 3
    for kind in ("unreadable_tar", "sha256_mismatch", "sample_count_mismatch"):
        assert f'<td class="kind">{kind}</td>' in text
    assert "HO-3D licence: research only" in text
    assert "rgb &lt;does not decode&gt;" in text and "train/MC1/rgb/0007.jpg" in text  # escaped, not markup
    assert "ho3d/val/ABF10/0003" in text and "0.480" in text
    assert "1 sha256 mismatch" in text


# ------------------------------------------------------------------------------------------ in a browser


def find_chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)


def install_chromium() -> str:
    """Install Debian's chromium with apt-get; return why not where it cannot be done."""
    if os.environ.get("HODATA_TEST_NO_INSTALL"):
        return "HODATA_TEST_NO_INSTALL is set"
    if shutil.which("apt-get") is None:
        return "no apt-get to install Debian's chromium with"
    if os.geteuid() != 0:
        return "not root, so it cannot be installed here (apt-get install -y chromium)"
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    deadline = time.monotonic() + INSTALL_DEADLINE_S
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    last = ""
    for cmd in (install, ["apt-get", "update"], install):
        left = deadline - time.monotonic()
        if left <= 0:
            return f"apt-get ran past {INSTALL_DEADLINE_S} s"
        try:
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=left)
        except subprocess.TimeoutExpired:
            return f"apt-get ran past {INSTALL_DEADLINE_S} s"
        last = (res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1]
        if cmd is install and res.returncode == 0:
            return ""
    return f"apt-get install chromium failed ({last})"


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        why = install_chromium()
        path = find_chromium()
        if path is None:
            pytest.skip(f"headless Chromium not available: {why or 'not found after installing'}")
    try:
        subprocess.run([path, "--version"], capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        pytest.skip(f"chromium does not start: {e}")
    return path


def run_browser(chromium: str, profile: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium on ``url`` with no network at all; console messages go to stderr."""
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
           "--enable-logging=stderr", "--v=0", *args, url]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=BROWSER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {BROWSER_TIMEOUT_S} s on {url}")


def console_lines(stderr: str) -> list[str]:
    """What the page wrote to the console (a script error included); the page itself writes nothing."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_page_loads_in_headless_chromium(two_sources, tmp_path, chromium):
    html_path, _ = write_report(two_sources, tmp_path / "report.html", "--samples", str(GALLERY))
    url = html_path.resolve().as_uri()
    profile = tmp_path / "chromium-profile"

    res = run_browser(chromium, profile, url, "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert console_lines(res.stderr) == []
    dom = parse(res.stdout)
    assert dom.body.get("data-ready") == "1" and "data-js-error" not in dom.body  # the script ran to its end
    assert dom.cells == KNOWN_COUNTS
    assert dom.by_id["gallery-shown"]["data-shown"] == str(GALLERY)  # set by the gallery script

    static = parse(html_path.read_text())
    n_ho3d_val = sum(c["data-source"] == "ho3d" and c["data-split"] == "val" for c in static.cards)
    res = run_browser(chromium, profile, url + "?source=ho3d&split=val", "--dump-dom")
    assert console_lines(res.stderr) == []
    dom = parse(res.stdout)
    assert dom.by_id["gallery-shown"]["data-shown"] == str(n_ho3d_val) != "0"
    shown = [c for c in dom.cards if "hidden" not in c]
    assert {(c["data-source"], c["data-split"]) for c in shown} == {("ho3d", "val")}

    shot = tmp_path / "report.png"
    res = run_browser(chromium, profile, url, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.exists(), res.stderr[-2000:]
    assert console_lines(res.stderr) == []
    img = np.asarray(Image.open(shot).convert("RGB"))
    assert img.shape == (2000, 1280, 3) and img.std() > 20  # a page was drawn, not a blank window
    print(f"screenshot of the HTML report: {shot}")


def test_page_for_hodata1_shards_without_manifest(tmp_path):
    from test_inspect import raw_sample, write_tar

    folder = tmp_path / "loose"
    folder.mkdir()
    write_tar(folder / "raw-train-000000.tar", [raw_sample("0000"), raw_sample("0001")])
    html_path, output = write_report(folder, tmp_path / "r.html")
    assert "no problems found" not in output and "no_manifest" in output
    text = html_path.read_text()
    page = parse(text)
    assert page.body["data-problems"] == "0" and page.body["data-warnings"] == "1"
    assert '<td class="kind">no_manifest</td>' in text and "nothing records how they were built" in text
    assert page.cells == {("raw", "train"): 2}
    assert [c["data-hands"] for c in page.cards] == ["unknown", "unknown"]  # hodata/1: hands without a side
    assert text.count("hand (side unknown)") == 2


def decode_data_uri(uri: str) -> np.ndarray:
    import base64
    import io

    head, _, data = uri.partition(",")
    assert head.endswith(";base64")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))


def test_gallery_layers_colour_sides_and_outline_amodal(tmp_path):
    from test_inspect import H, W, raw2_sample, write_tar

    from hodata.contact_sheet import AMODAL_HAND_RGB, LEFT_HAND_RGB, OBJECT_RGB, RIGHT_HAND_RGB

    amodal = np.zeros((H, W), np.uint8)
    amodal[: H // 2 + 4, : W // 2] |= 1
    write_tar(tmp_path / "raw-train-000000.tar", [raw2_sample("0000", amodal=amodal), raw2_sample("0001")])
    html_path, _ = write_report(tmp_path, tmp_path / "r.html")
    page = parse(html_path.read_text())
    images = [u for u in page.urls if u.startswith("data:image")]
    assert len(images) == 5  # photo + overlay for both samples, an outline layer for the one with amodal.png
    photo, overlay, outline = (decode_data_uri(u) for u in images[:3])
    s = 10  # 32x24 shown at 320x240
    assert photo.shape == overlay.shape == outline.shape == (24 * s, 32 * s, 4)
    assert (overlay[5 * s, 3 * s] == (*LEFT_HAND_RGB, 255)).all()
    assert (overlay[5 * s, 12 * s] == (*RIGHT_HAND_RGB, 255)).all()
    assert (overlay[5 * s, 28 * s] == (*OBJECT_RGB, 255)).all()
    assert overlay[5 * s, 20 * s, 3] == 0  # background: transparent
    assert (outline[16 * s - 1, 5 * s] == (*AMODAL_HAND_RGB, 255)).all()  # bottom edge of the hand's silhouette
    assert outline[8 * s, 8 * s, 3] == 0  # inside it: nothing drawn
    assert html_path.read_text().count("&middot; amodal</div>") == 1  # the caption says which sample has it
