"""Rendering of a ``hodata inspect`` report: rich tables on a terminal, aligned plain text otherwise, or JSON."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from hodata.inspect import Finding


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]


def report_tables(report: dict[str, Any]) -> list[Table]:
    """The human-readable view of a report, as plain tables (rendered by rich or as text)."""
    t = report["totals"]
    tables = [Table(f"Samples per source/split ({t['samples']} in {t['shards']} shard(s), {t['bytes'] / 1e6:.1f} MB)",
                    ["source", "split", "shards", "samples"],
                    [[r["source"], r["split"], str(r["shards"]), str(r["samples"])] for r in report["splits"]])]
    classes = ["background", "hand", "object", "ignore"]
    rows = []
    for source, b in report["class_balance"].items():
        fr = b["fractions"]
        rows.append([source] + [f"{fr.get(c, 0.0):.2%}" for c in classes]
                    + ([f"{fr['other']:.2%}"] if fr.get("other") else [""]))
    tables.append(Table("Class pixel balance", ["source"] + classes + ["invalid"], rows))
    tables.append(Table("Label availability (samples whose json says the class is annotated)",
                        ["source", "samples", "labels.hand", "labels.object", "labels.sides"],
                        [[s, str(v["samples"]), str(v["hand"]), str(v["object"]), str(v.get("sides", 0))]
                         for s, v in report["labels"].items()]))
    instances = report.get("instances", {})
    tables.append(Table("Instances (json instances; hodata/1 samples have none)",
                        ["source", "samples with inst.png", "hands", "objects", "samples with amodal.png"],
                        [[s, f"{v['with_inst_png']}/{v['samples']}", str(v["instances"]["hand"]),
                          str(v["instances"]["object"]), f"{v['with_amodal_png']}/{v['samples']}"]
                         for s, v in instances.items()]))
    tables.append(Table("Hand sides (hand instances by side; frames with a left, a right, both hands)",
                        ["source", "left", "right", "unknown", "frames: left", "right", "both"],
                        [[s] + [str(v["hand_sides"][k]) for k in ("left", "right", "unknown")]
                         + [str(v["frames_with_hand"][k]) for k in ("left", "right", "both")]
                         for s, v in instances.items()]))
    tables.append(Table("Image sizes", ["source", "size", "samples"],
                        [[s, size, str(n)] for s, d in report["image_sizes"].items() for size, n in d.items()]))
    for p in report["provenance"]:  # one narrow field/value table per build: commands and paths are long
        rows = [["status", str(p["status"])], ["command", p["command"]], ["hodata version", str(p["hodata_version"])],
                ["git commit", str(p["git_commit"])], ["root", str(p["root"])], ["started", str(p["started"])],
                ["finished", str(p["finished"])], ["skipped frames", str(p["skipped"])]]
        rows += [["  skip reason", s] for s in p["first_skips"]]
        if p.get("licence"):
            rows.insert(1, ["licence", str(p["licence"])])
        if p.get("checksums"):
            rows.append(["checksums", f"{len(p['checksums'])} file(s) (sha256 in --json and --html)"])
        for metric, q in (p.get("mask_agreement") or {}).items():
            rows.append([f"mask agreement {metric}", agreement_text(q)])
        tables.append(Table(f"Provenance of {p['source']} ({p['manifest']})", ["field", "value"], rows))
    return tables


def agreement_text(q: Any) -> str:
    """``mean 0.762, p01 0.510, min 0.480 over 24 frames; worst ho3d/val/ABF10/0003`` from a summary dict (the
    other worst frames are left to --json and --html)."""
    if not isinstance(q, dict):
        return str(q)
    parts = [f"{k} {q[k]:.3f}" for k in ("mean", "p01", "min") if isinstance(q.get(k), (int, float))]
    text = ", ".join(parts) + (f" over {q['frames']} frames" if q.get("frames") is not None else "")
    worst = q.get("worst")
    if isinstance(worst, list) and worst and isinstance(worst[0], dict) and "frame" in worst[0]:
        text += f"; worst {worst[0]['frame']}"
    return text


def findings_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for label, items, count in (("WARNING", report["warnings"], report["warning_count"]),
                                ("PROBLEM", report["problems"], report["problem_count"])):
        for f in items:
            lines.append(f"{label} [{f['kind']}] {Finding(f['kind'], f['where'], f['message'], f['key']).line()}")
        if count > len(items):
            lines.append(f"{label} ... and {count - len(items)} more")
    n = report["problem_count"]
    lines.append(f"{n} problem(s), {report['warning_count']} warning(s)" if n or report["warning_count"]
                 else "no problems found")
    if report["contact_sheet"]:
        lines.append(f"contact sheet: {report['contact_sheet']}")
    if report.get("html_report"):
        lines.append(f"html report: {report['html_report']}")
    return lines


def print_report(report: dict[str, Any], as_json: bool, stream=None) -> None:
    stream = stream or sys.stdout
    if as_json:
        json.dump(report, stream, indent=1, sort_keys=True)
        stream.write("\n")
        return
    tables, lines = report_tables(report), findings_lines(report)
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table as RichTable

        console = Console(file=stream)
        for t in tables:
            rt = RichTable(title=t.title, title_justify="left")
            for c in t.columns:
                rt.add_column(c, overflow="fold")
            for r in t.rows:
                rt.add_row(*r)
            console.print(rt)
        for line in lines:
            style = "red" if line.startswith("PROBLEM") else "yellow" if line.startswith("WARNING") else "bold"
            console.print(line, style=style, markup=False, highlight=False)
    else:
        for t in tables:
            stream.write(format_plain_table(t) + "\n")
        stream.write("\n".join(lines) + "\n")


def format_plain_table(t: Table) -> str:
    """Columns aligned with spaces; multi-line cells continue on indented lines."""
    cells = [[c.split("\n") for c in row] for row in t.rows]
    widths = [max([len(col)] + [len(r[i][0]) for r in cells]) for i, col in enumerate(t.columns)]
    out = [f"== {t.title}", "  ".join(c.ljust(w) for c, w in zip(t.columns, widths)).rstrip()]
    for row in cells:
        out.append("  ".join(c[0].ljust(w) for c, w in zip(row, widths)).rstrip())
        for c in row:
            out.extend(f"    {extra}" for extra in c[1:])
    return "\n".join(out) + "\n"
