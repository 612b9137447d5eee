"""``hodata inspect --html``: the report as one self-contained HTML page.

Everything is inline (CSS, a little plain JavaScript, images as ``data:`` URIs), so the page opens from a
file, mailed or copied, with no network. It shows per-source and per-split counts, class and side balance,
provenance (command, version, git commit, checksums, licence), mask agreement, skipped frames, problems and
warnings, and a gallery of samples with their overlays that can be filtered and sorted by source, split and
hands. The page is written to a temporary name and renamed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import jinja2

from hodata import __version__
from hodata.atomic import write_bytes_atomic
from hodata.contact_sheet import (AMODAL_LEGEND, BACKDROP_RGB, HAND_RGB, IGNORE_RGB, LEFT_HAND_RGB, OBJECT_RGB,
                                  RIGHT_HAND_RGB)
from hodata.errors import DataError
from hodata.inspect_html.gallery import Card, make_cards
from hodata.inspect_html.template import CSS, JS, PAGE

CLASS_COLOURS = {"background": (200, 206, 212), "hand": HAND_RGB, "object": OBJECT_RGB, "ignore": IGNORE_RGB,
                 "other": (220, 30, 30)}
SIDE_COLOURS = {"left": LEFT_HAND_RGB, "right": RIGHT_HAND_RGB, "unknown": HAND_RGB}
GALLERY_LEGEND = [("hand, side unknown", HAND_RGB), ("left hand", LEFT_HAND_RGB), ("right hand", RIGHT_HAND_RGB),
                  ("object", OBJECT_RGB), ("ignore", IGNORE_RGB), *AMODAL_LEGEND]


def hex_colour(rgb: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def render_html(report: dict[str, Any], candidates: Sequence[Any], generated: str | None = None) -> str:
    """The page for a ``hodata inspect`` report and the samples picked for its gallery."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=format_number, pct=lambda v: f"{100 * v:.2f}%", mb=lambda b: f"{b / 1e6:.1f} MB",
                       colour=hex_colour, short=lambda s, n=16: (s[:n] + "…") if s and len(s) > n + 1 else (s or ""))
    cards = make_cards(candidates)
    return env.from_string(PAGE).render(
        r=report, generated=generated or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        version=__version__, matrix=split_matrix(report), balance=balance_rows(report),
        instances=instance_rows(report), builds=[build_view(p) for p in report["provenance"]],
        cards=cards, gallery=gallery_filters(cards), legend=GALLERY_LEGEND, backdrop=BACKDROP_RGB,
        class_colours=CLASS_COLOURS, side_colours=SIDE_COLOURS, folders=input_folders(report), css=CSS, js=JS,
    )


def write_html_report(report: dict[str, Any], candidates: Sequence[Any], path: Path) -> None:
    """Write the page to ``path`` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    text = render_html(report, candidates)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, text.encode("utf-8"))
    except OSError as e:
        raise DataError(f"cannot write the HTML report ({e.strerror or e})", path) from None


# ------------------------------------------------------------------------------------------ view models


def format_number(v: Any) -> str:
    """Integers with thousands separators; floats to 3 decimals; anything else as is."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def input_folders(report: dict[str, Any]) -> list[str]:
    folders = {str(Path(p).parent) for p in report["inputs"]["shards"] + report["inputs"]["partials"]}
    return sorted(folders | {str(Path(m).parent) for m in report["inputs"]["manifests"]})


def split_matrix(report: dict[str, Any]) -> dict[str, Any]:
    """Samples (and shards) per source x split, with totals: the first table of the page."""
    splits = sorted({r["split"] for r in report["splits"]}, key=split_order)
    sources = sorted({r["source"] for r in report["splits"]})
    cell = {(r["source"], r["split"]): r for r in report["splits"]}
    rows = []
    for s in sources:
        cells = [cell.get((s, sp)) for sp in splits]
        rows.append({"source": s, "cells": cells, "samples": sum(c["samples"] for c in cells if c),
                     "shards": sum(c["shards"] for c in cells if c)})
    totals = [sum(cell[(s, sp)]["samples"] for s in sources if (s, sp) in cell) for sp in splits]
    return {"splits": splits, "rows": rows, "totals": totals}


def split_order(split: str) -> tuple[int, str]:
    order = {"train": 0, "val": 1, "test": 2}
    return (order.get(split, 3 if split.startswith("test") else 4), split)


def balance_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for source, b in report["class_balance"].items():
        fr = b["fractions"]
        segments = [(c, fr.get(c, 0.0)) for c in ("background", "hand", "object", "ignore", "other") if fr.get(c)]
        labels = report["labels"].get(source, {})
        rows.append({"source": source, "fractions": fr, "pixels": b["pixels"], "segments": segments,
                     "labels": labels})
    return rows


def instance_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for source, v in report.get("instances", {}).items():
        sides = v["hand_sides"]
        total = sum(sides.values())
        rows.append(v | {"source": source, "side_segments": [(k, n / total) for k, n in sides.items() if n and total]})
    return rows


def build_view(p: dict[str, Any]) -> dict[str, Any]:
    """A provenance entry with what the template needs precomputed (agreement tables, split counts)."""
    assignment = p.get("split_assignment") if isinstance(p.get("split_assignment"), dict) else None
    shards = p.get("shards") or []
    return p | {
        "options_rows": [(k, v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v))
                         for k, v in sorted((p.get("options") or {}).items())],
        "agreement": [agreement_view(k, q) for k, q in sorted((p.get("mask_agreement") or {}).items())],
        "assignment": assignment,
        "assignment_counts": sorted(Counter(map(str, assignment.values())).items(), key=lambda kv: split_order(kv[0]))
        if assignment else [],
        "verified": Counter("ok" if s["verified"] else "bad" if s["verified"] is False else "unread" for s in shards),
        "source_json": json.dumps(p.get("source_record") or {}, indent=1, sort_keys=True, default=str),
    }


def agreement_view(metric: str, q: Any) -> dict[str, Any]:
    """One mask agreement summary: its numbers (mean, p01, min, frames, ...) and its lists (worst frames)."""
    if not isinstance(q, dict):
        return {"metric": metric, "stats": [("value", format_number(q))], "lists": []}
    first = [k for k in ("mean", "p01", "min", "max", "frames") if k in q]
    stats = [(k, format_number(q[k])) for k in first + sorted(k for k in q if k not in first)
             if isinstance(q[k], (int, float, str)) or q[k] is None]
    lists = []
    for k, v in sorted(q.items()):
        if isinstance(v, list):
            if v and all(isinstance(i, dict) for i in v):
                cols = list(dict.fromkeys(c for i in v for c in i))
                lists.append({"name": k, "columns": cols, "rows": [[format_number(i.get(c)) for c in cols] for i in v]})
            else:
                lists.append({"name": k, "columns": [k], "rows": [[format_number(i)] for i in v]})
    return {"metric": metric, "stats": stats, "lists": lists}


def gallery_filters(cards: list[Card]) -> dict[str, list[tuple[str, int]]]:
    """Options of the gallery's filters, each with how many cards it matches."""
    hands = Counter(tag for c in cards for tag in c.hands_filter.split())
    return {"sources": sorted(Counter(c.source for c in cards).items()),
            "splits": sorted(Counter(c.split for c in cards).items(), key=lambda kv: split_order(kv[0])),
            "hands": [(k, hands[k]) for k in ("left", "right", "both", "unknown", "none") if hands[k]]}
