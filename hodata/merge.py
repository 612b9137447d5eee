"""``hodata merge OUT``: join the parts of a build (``--part i/N``) into one record of ``manifest.json``.

For every source with part manifests in the folder, merge checks, and refuses in one line when one fails:

- the parts are all cut into the same N, and every part 1..N is there and complete (no gap);
- they were built with the same options, data and hodata version (one fingerprint);
- no group and no shard name is in two parts, and the parts' frames add up to the whole build's (no overlap);
- every shard file is there with the size and sha256 its part recorded (streamed, every byte read).

The merged record is what a single build's record is (shards, skipped frames, splits, totals), plus ``parts``:
per part its command, runs, times and groups. Shards keep their part names; nothing is moved or rewritten,
so a merge is cheap and can be repeated. The part manifests stay as the parts' resume journals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hodata import __version__
from hodata.errors import DataError
from hodata.interrupt import terminate_as_interrupt
from hodata.lock import writer_lock
from hodata.manifest import MANIFEST_NAME, Manifest, file_digest, git_commit, shard_path, utc_now
from hodata.outdir import prepare_out
from hodata.parts import part_manifests


class MergeRefused(DataError):
    """The parts cannot be joined (a gap, an overlap, mixed options, a damaged shard)."""


def find_parts(out: Path) -> dict[str, dict[tuple[int, int], tuple[Manifest, dict]]]:
    """source -> {(i, N): (its part manifest, its record)} for every part manifest in ``out``."""
    found: dict[str, dict[tuple[int, int], tuple[Manifest, dict]]] = {}
    for part, path in part_manifests(out).items():
        m = Manifest(out, path.name)
        for source, rec in m.builds().items():
            found.setdefault(source, {})[part] = (m, rec)
    return found


def merge(out: Path, sources: list[str] | None = None, wait: bool = False,
          command: list[str] | None = None) -> dict[str, dict]:
    """Join the parts of every source (or of ``sources``) in ``out``; return the merged records by source."""
    if not Path(out).is_dir():
        raise MergeRefused("no such folder (nothing to merge)", out)
    out = prepare_out(out)
    found = find_parts(out)
    if sources:
        missing = sorted(set(sources) - set(found))
        if missing:
            raise MergeRefused(f"no parts of {', '.join(missing)} in {out} (no manifest.part-*-of-*.json lists it)")
        found = {s: found[s] for s in sources}
    if not found:
        raise MergeRefused(f"nothing to merge in {out}: no manifest.part-*-of-*.json (build with --part i/N first)")
    merged = {}
    for source in sorted(found):
        with writer_lock(out, source, merging=True, wait=wait, command=command), terminate_as_interrupt():
            parts = find_parts(out).get(source, {})  # read again under the lock: a part may have just finished
            merged[source] = _merge_source(out, source, parts, command)
    return merged


def _merge_source(out: Path, source: str, parts: dict[tuple[int, int], tuple[Manifest, dict]],
                  command: list[str] | None) -> dict[str, Any]:
    counts = sorted({n for _, n in parts})
    if len(counts) > 1:
        raise MergeRefused(f"{source}: parts of different counts in {out} ({', '.join(f'of {n}' for n in counts)}); "
                           "keep one count and move the others away")
    n = counts[0]
    missing = [i for i in range(1, n + 1) if (i, n) not in parts]
    if missing:
        raise MergeRefused(f"{source}: part(s) {', '.join(f'{i}/{n}' for i in missing)} missing in {out} "
                           f"(no record in manifest.part-{missing[0]}-of-{n}.json): build them, then merge")
    ordered = [parts[(i, n)] for i in range(1, n + 1)]
    for i, (m, rec) in enumerate(ordered, 1):
        if rec.get("status") != "complete":
            raise MergeRefused(f"{source}: part {i}/{n} is {rec.get('status', 'unknown')}, not complete: rerun its "
                               "build command to finish it", m.path)
        info = rec.get("part")
        if not isinstance(info, dict) or (info.get("index"), info.get("count")) != (i, n):
            raise MergeRefused(f"{source}: the record says it is part {info and info.get('index')}/"
                               f"{info and info.get('count')}, its file name says {i}/{n}", m.path)
    fingerprints = {rec.get("fingerprint") for _, rec in ordered}
    if len(fingerprints) > 1:
        first = ordered[0][1].get("fingerprint")
        odd = next(i for i, (_, rec) in enumerate(ordered, 1) if rec.get("fingerprint") != first)
        raise MergeRefused(f"{source}: part {odd}/{n} was built with other options, data or hodata version than "
                           f"part 1/{n}: rebuild it with the same command (and --overwrite)", ordered[odd - 1][0].path)
    _check_disjoint(source, ordered, n)
    whole = Manifest(out)
    current = whole.builds().get(source)
    if current is not None and not current.get("parts"):
        raise MergeRefused(f"{source}: {out / MANIFEST_NAME} holds a whole build of {source} as well; remove one "
                           "of the two (a build with --overwrite replaces the other)", whole.path)
    _verify_shards(out, source, ordered)
    record = _joined_record(source, ordered, n, command)
    whole.remove_stale_tmp()
    whole.update(source, record)
    return record


def _check_disjoint(source: str, ordered: list[tuple[Manifest, dict]], n: int) -> None:
    """No group and no shard in two parts; the parts' frames add up to the whole build's, split by split."""
    owner: dict[str, int] = {}
    names: dict[str, int] = {}
    total = ordered[0][1].get("frames_total") or {}
    got: dict[str, int] = {}
    for i, (m, rec) in enumerate(ordered, 1):
        for g in rec["part"].get("groups", []):
            if g in owner:
                raise MergeRefused(f"{source}: group {g!r} is in part {owner[g]}/{n} and part {i}/{n}", m.path)
            owner[g] = i
        for sh in rec.get("shards", []):
            if sh["name"] in names:
                raise MergeRefused(f"{source}: shard {sh['name']} is listed by part {names[sh['name']]}/{n} and part "
                                   f"{i}/{n}", m.path)
            names[sh["name"]] = i
        if (rec.get("frames_total") or {}) != total:
            raise MergeRefused(f"{source}: part {i}/{n} saw another frame list than part 1/{n}", m.path)
        for split, k in (rec["part"].get("frames") or {}).items():
            got[split] = got.get(split, 0) + int(k)
    if got != {k: v for k, v in total.items() if v}:
        diff = ", ".join(f"{s}: {got.get(s, 0)} of {total.get(s, 0)}" for s in sorted(set(got) | set(total))
                         if got.get(s, 0) != total.get(s, 0))
        raise MergeRefused(f"{source}: the parts' frames do not add up to the build's ({diff})")


def _verify_shards(out: Path, source: str, ordered: list[tuple[Manifest, dict]]) -> None:
    """Every shard there, with its recorded size and sha256 (streamed: every byte is read)."""
    for i, (m, rec) in enumerate(ordered, 1):
        for sh in rec.get("shards", []):
            path = shard_path(out, sh["name"])
            if not path.is_file():
                raise MergeRefused(f"{source}: shard of part {i} is missing", path)
            digest = file_digest(path)
            if digest["sha256"] != sh["sha256"] or ("bytes" in sh and digest["bytes"] != sh["bytes"]):
                raise MergeRefused(f"{source}: shard of part {i} does not match its record (sha256 "
                                   f"{digest['sha256'][:16]}..., recorded {sh['sha256'][:16]}...): rerun that "
                                   "part's build command to rebuild it", path)


def _joined_record(source: str, ordered: list[tuple[Manifest, dict]], n: int,
                   command: list[str] | None) -> dict[str, Any]:
    from hodata.shards import _split_summary, _totals

    first = ordered[0][1]
    split_order: list[str] = []
    for split in first.get("frames_total") or {}:
        split_order.append(split)
    for _, rec in ordered:
        for sh in rec.get("shards", []):
            if sh["split"] not in split_order:
                split_order.append(sh["split"])
    rank = {s: k for k, s in enumerate(split_order)}
    shards = [dict(sh, part=i) for i, (_, rec) in enumerate(ordered, 1) for sh in rec.get("shards", [])]
    shards.sort(key=lambda sh: (rank[sh["split"]], sh["part"], sh["name"]))
    skipped = [dict(s, part=i) for i, (_, rec) in enumerate(ordered, 1) for s in rec.get("skipped", [])]
    record: dict[str, Any] = {
        "status": "complete",
        "fingerprint": first.get("fingerprint"),
        "command": list(command or ["hodata", "merge"]),
        "options": {k: v for k, v in (first.get("options") or {}).items() if k != "workers"},
        "hodata_version": first.get("hodata_version"),
        "git_commit": first.get("git_commit"),
        "merged_by": {"hodata_version": __version__, "git_commit": git_commit()},
        "schema": first.get("schema"),
        "source": first.get("source"),
        "started": min(str(rec.get("started")) for _, rec in ordered),
        "finished": utc_now(),
        "runs": sum(int(rec.get("runs", 1)) for _, rec in ordered),
        "parts": [{"index": i, "count": n, "manifest": m.path.name, "command": rec.get("command"),
                   "runs": rec.get("runs"), "started": rec.get("started"), "finished": rec.get("finished"),
                   "git_commit": rec.get("git_commit"), "workers": (rec.get("options") or {}).get("workers"),
                   "groups": rec["part"].get("groups", []), "frames": rec["part"].get("frames", {}),
                   "samples": (rec.get("totals") or {}).get("samples")}
                  for i, (m, rec) in enumerate(ordered, 1)],
        "shards": shards,
        "skipped": skipped,
        "splits": {},
    }
    for split in split_order:
        frames = (first.get("frames_total") or {}).get(split, 0)
        record["splits"][split] = _split_summary(record, split, frames)
    record["totals"] = _totals(record)
    return record
