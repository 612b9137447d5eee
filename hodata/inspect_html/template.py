"""The page template (Jinja2, autoescaped) with its inline CSS and JavaScript.

Kept in Python so it ships with the package like any module. The script only filters and sorts what the
server-side HTML already shows: the page reads fine with scripts off. It sets ``data-ready="1"`` on
``<body>`` once it ran, and ``data-js-error`` with the message if anything in it failed.
"""

CSS = r"""
:root { --fg: #1d232b; --muted: #5d6875; --line: #d9dee4; --bg: #f5f7f9; --card: #fff; --accent: #2858b8;
        --bad: #b3261e; --bad-bg: #fdecea; --warn: #8a5a00; --warn-bg: #fff4dc; --ok: #1e7a3c; --ok-bg: #e6f4ea;
        --overlay-opacity: 0.5; }
* { box-sizing: border-box; }
html { background: var(--bg); }
body { margin: 0; color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", sans-serif; }
header.top { background: #1f2a37; color: #f2f5f8; padding: 18px 28px 14px; }
header.top h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header.top .sub { color: #b9c3cf; font-size: 13px; }
header.top .sub code { color: #dfe6ee; }
nav.toc { display: flex; flex-wrap: wrap; gap: 4px 16px; padding: 8px 28px; background: #e9edf1; border-bottom: 1px solid var(--line); font-size: 13px; }
nav.toc a { color: var(--accent); text-decoration: none; }
main { max-width: 1240px; margin: 0 auto; padding: 8px 28px 40px; }
section { margin-top: 26px; }
h2 { font-size: 17px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px; margin-top: 16px; }
.stat { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.stat .v { font-size: 22px; font-weight: 600; }
.stat .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.stat.bad { background: var(--bad-bg); border-color: #f1b5b0; } .stat.bad .v { color: var(--bad); }
.stat.warn { background: var(--warn-bg); border-color: #f0d49a; } .stat.warn .v { color: var(--warn); }
.stat.ok .v { color: var(--ok); }
table { border-collapse: collapse; background: var(--card); border: 1px solid var(--line); font-size: 13px; }
table.wide { width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: #eef1f4; font-weight: 600; white-space: nowrap; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \2195"; color: #a3acb7; font-size: 11px; }
table.sortable th[aria-sort=ascending]::after { content: " \2191"; color: var(--fg); }
table.sortable th[aria-sort=descending]::after { content: " \2193"; color: var(--fg); }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; background: #f7f9fa; }
td.muted, .muted { color: var(--muted); }
code, pre, .mono { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", monospace; font-size: 12px; }
code.cmd { display: block; white-space: pre-wrap; word-break: break-all; background: #f0f3f6; padding: 6px 8px; border-radius: 4px; }
pre { background: #f0f3f6; padding: 8px; border-radius: 4px; overflow: auto; max-height: 360px; margin: 4px 0; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--accent); }
.scroll { overflow-x: auto; }
.bar { display: flex; height: 16px; min-width: 160px; border-radius: 3px; overflow: hidden; background: #e3e7eb; }
.bar span { display: block; height: 100%; }
.chips { display: flex; flex-wrap: wrap; gap: 6px 14px; margin: 6px 0 10px; font-size: 12px; color: var(--muted); }
.chip::before { content: ""; display: inline-block; width: 11px; height: 11px; margin-right: 5px; vertical-align: -1px; border-radius: 2px; background: var(--c); border: 1px solid rgba(0,0,0,.25); }
.chip.line::before { height: 3px; vertical-align: 3px; border: 0; box-shadow: 0 0 0 1px #555; }
.build { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin-bottom: 14px; }
.build > h3:first-child { margin-top: 0; }
.kv { display: grid; grid-template-columns: 150px 1fr; gap: 3px 12px; font-size: 13px; }
.kv > div:nth-child(odd) { color: var(--muted); }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px; font-weight: 600; }
.badge.ok { background: var(--ok-bg); color: var(--ok); } .badge.bad { background: var(--bad-bg); color: var(--bad); }
.badge.warn { background: var(--warn-bg); color: var(--warn); } .badge.plain { background: #e8ecf0; color: var(--muted); }
.grid2 { display: flex; flex-wrap: wrap; gap: 14px 28px; align-items: flex-start; }
.findings td.kind { white-space: nowrap; }
tr.problem td.kind { color: var(--bad); font-weight: 600; } tr.warning td.kind { color: var(--warn); font-weight: 600; }
.none { color: var(--ok); font-weight: 600; }
input[type=search], select { font: inherit; padding: 3px 6px; border: 1px solid #b9c1ca; border-radius: 4px; background: #fff; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 8px 12px; font-size: 13px; }
.controls label { display: inline-flex; gap: 6px; align-items: center; }
#gallery-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(228px, 1fr)); gap: 12px; margin-top: 10px; }
figure.card { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 8px; overflow: hidden; }
figure.card[hidden] { display: none; }
.thumb { position: relative; width: 100%; }
.thumb img { position: absolute; inset: 0; width: 100%; height: 100%; display: block; }
.thumb img.overlay { opacity: var(--overlay-opacity); }
#gallery-grid.no-outlines img.outline { display: none; }
.thumb .err { position: absolute; inset: 0; color: #eee; padding: 10px; font-size: 12px; }
figcaption { padding: 6px 8px 8px; font-size: 12px; }
figcaption .key { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 11px; word-break: break-all; color: var(--fg); }
figcaption .meta { color: var(--muted); margin-top: 2px; }
.side-left { color: #b35f00; font-weight: 600; } .side-right { color: #0062b8; font-weight: 600; } .side-unknown { color: #2c8a2c; font-weight: 600; }
#js-error { background: var(--bad-bg); color: var(--bad); padding: 8px 28px; font-weight: 600; }
.note { margin-top: 10px; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 20px; }
"""

JS = r"""
(function () {
  "use strict";
  var body = document.body;
  window.addEventListener("error", function (e) {
    body.setAttribute("data-js-error", String(e.message));
    var b = document.getElementById("js-error");
    if (b) { b.hidden = false; b.textContent = "Page script error: " + e.message; }
  });
  function each(list, fn) { Array.prototype.forEach.call(list, fn); }
  function sortKey(cell) {
    var v = cell.getAttribute("data-sort");
    if (v === null) { v = cell.textContent.trim(); }
    var n = Number(v);
    return (v !== "" && !isNaN(n)) ? n : v.toLowerCase();
  }
  function compare(x, y) {
    if (typeof x === "number" && typeof y === "number") { return x - y; }
    return String(x).localeCompare(String(y), undefined, {numeric: true});
  }
  each(document.querySelectorAll("table.sortable"), function (table) {
    if (!table.tHead || !table.tBodies.length) { return; }
    var heads = table.tHead.rows[0].cells;
    each(heads, function (th, col) {
      th.tabIndex = 0;
      function sort() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        each(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var tbody = table.tBodies[0];
        var rows = Array.prototype.slice.call(tbody.rows).filter(function (r) { return !r.classList.contains("total"); });
        var totals = Array.prototype.slice.call(tbody.rows).filter(function (r) { return r.classList.contains("total"); });
        rows.sort(function (a, b) { return compare(sortKey(a.cells[col]), sortKey(b.cells[col])) * (asc ? 1 : -1); });
        rows.concat(totals).forEach(function (r) { tbody.appendChild(r); });
      }
      th.addEventListener("click", sort);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") { sort(); } });
    });
  });
  each(document.querySelectorAll("input.table-filter"), function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      each(table.tBodies[0].rows, function (r) { r.hidden = q !== "" && r.textContent.toLowerCase().indexOf(q) < 0; });
    });
  });

  var grid = document.getElementById("gallery-grid");
  if (grid) {
    var cards = Array.prototype.slice.call(grid.querySelectorAll("figure.card"));
    var ctl = {source: document.getElementById("f-source"), split: document.getElementById("f-split"),
               hands: document.getElementById("f-hands"), text: document.getElementById("f-text"),
               sort: document.getElementById("f-sort")};
    var shown = document.getElementById("gallery-shown");
    var apply = function () {
      var n = 0, q = ctl.text.value.trim().toLowerCase();
      cards.forEach(function (c) {
        var ok = (!ctl.source.value || c.getAttribute("data-source") === ctl.source.value) &&
                 (!ctl.split.value || c.getAttribute("data-split") === ctl.split.value) &&
                 (!ctl.hands.value || (" " + c.getAttribute("data-hands") + " ").indexOf(" " + ctl.hands.value + " ") >= 0) &&
                 (!q || c.getAttribute("data-key").toLowerCase().indexOf(q) >= 0);
        c.hidden = !ok;
        n += ok ? 1 : 0;
      });
      var by = ctl.sort.value.split(",");
      cards.slice().sort(function (a, b) {
        for (var i = 0; i < by.length; i++) {
          var d = compare(a.getAttribute("data-" + by[i]), b.getAttribute("data-" + by[i]));
          if (d) { return d; }
        }
        return 0;
      }).forEach(function (c) { grid.appendChild(c); });
      shown.textContent = "showing " + n + " of " + cards.length + " samples";
      shown.setAttribute("data-shown", String(n));
    };
    var params = new URLSearchParams(window.location.search);  // report.html?source=ho3d&split=val: a filtered view
    ["source", "split", "hands", "sort"].forEach(function (k) {
      if (params.has(k)) { ctl[k].value = params.get(k); }
      ctl[k].addEventListener("change", apply);
    });
    if (params.has("key")) { ctl.text.value = params.get("key"); }
    ctl.text.addEventListener("input", apply);
    var opacity = document.getElementById("f-opacity");
    opacity.addEventListener("input", function () { grid.style.setProperty("--overlay-opacity", String(opacity.value / 100)); });
    var outlines = document.getElementById("f-outlines");
    outlines.addEventListener("change", function () { grid.classList.toggle("no-outlines", !outlines.checked); });
    apply();
  }
  body.setAttribute("data-ready", "1");
})();
"""

PAGE = r"""<!DOCTYPE html>
{% macro bar(segments, colours) %}<div class="bar">{% for name, f in segments %}<span style="width: {{ '%.3f' % (100 * f) }}%; background: {{ colours[name] | colour }}" title="{{ name }} {{ f | pct }}"></span>{% endfor %}</div>{% endmacro %}
{% macro chips(items) %}<div class="chips">{% for name, rgb in items %}<span class="chip" style="--c: {{ rgb | colour }}">{{ name }}</span>{% endfor %}</div>{% endmacro %}
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>hodata inspect: {{ r.totals.samples | num }} samples, {{ r.problem_count }} problem(s)</title>
<style>{{ css | safe }}</style>
</head>
<body data-ready="0" data-problems="{{ r.problem_count }}" data-warnings="{{ r.warning_count }}">
<header class="top">
  <h1>hodata inspect report</h1>
  <div class="sub">{% for f in folders %}<code>{{ f }}</code>{% if not loop.last %}, {% endif %}{% endfor %}
    &middot; generated {{ generated }} by hodata {{ version }}</div>
</header>
<div id="js-error" hidden></div>
<nav class="toc"><a href="#findings">Problems &amp; warnings</a><a href="#counts">Counts</a><a href="#balance">Class balance</a>
  <a href="#sides">Instances &amp; sides</a><a href="#gallery">Gallery</a><a href="#provenance">Provenance</a></nav>
<main>
<div class="cards">
  <div class="stat"><div class="v" id="total-samples">{{ r.totals.samples | num }}</div><div class="k">samples</div></div>
  <div class="stat"><div class="v">{{ r.totals.shards | num }}</div><div class="k">shards &middot; {{ r.totals.bytes | mb }}</div></div>
  <div class="stat"><div class="v">{{ matrix.rows | length }}</div><div class="k">source(s)</div></div>
  <div class="stat {{ 'bad' if r.problem_count else 'ok' }}"><div class="v" id="problem-count">{{ r.problem_count | num }}</div><div class="k">problems</div></div>
  <div class="stat {{ 'warn' if r.warning_count else 'ok' }}"><div class="v" id="warning-count">{{ r.warning_count | num }}</div><div class="k">warnings</div></div>
</div>

<section id="findings">
  <h2>Problems and warnings</h2>
  {% if not r.problems and not r.warnings %}
    <p class="none" id="no-findings">No problems and no warnings found.</p>
  {% else %}
    <p>{{ r.problem_count | num }} problem(s) (exit code 1 when any), {{ r.warning_count | num }} warning(s).
    {% if r.problem_count > r.problems | length or r.warning_count > r.warnings | length %}The first {{ r.problems | length }} problems and {{ r.warnings | length }} warnings are listed.{% endif %}
    <input type="search" class="table-filter" data-table="findings-table" placeholder="filter rows" aria-label="filter problems and warnings"></p>
    <table class="sortable wide findings" id="findings-table">
      <thead><tr><th>level</th><th>kind</th><th>where</th><th>sample</th><th>message</th></tr></thead>
      <tbody>
      {% for f in r.problems %}<tr class="problem"><td>problem</td><td class="kind">{{ f.kind }}</td><td class="mono">{{ f.where }}</td><td class="mono">{{ f.key or "" }}</td><td>{{ f.message }}</td></tr>{% endfor %}
      {% for f in r.warnings %}<tr class="warning"><td>warning</td><td class="kind">{{ f.kind }}</td><td class="mono">{{ f.where }}</td><td class="mono">{{ f.key or "" }}</td><td>{{ f.message }}</td></tr>{% endfor %}
      </tbody>
    </table>
  {% endif %}
</section>

<section id="counts">
  <h2>Samples per source and split</h2>
  <div class="scroll"><table class="sortable" id="split-table">
    <thead><tr><th>source</th>{% for sp in matrix.splits %}<th class="n">{{ sp }}</th>{% endfor %}<th class="n">samples</th><th class="n">shards</th></tr></thead>
    <tbody>
    {% for row in matrix.rows %}
      <tr data-source="{{ row.source }}"><td>{{ row.source }}</td>
      {% for c in row.cells %}{% if c %}<td class="n" data-split="{{ c.split }}" data-samples="{{ c.samples }}" data-sort="{{ c.samples }}">{{ c.samples | num }} <span class="muted">({{ c.shards }})</span></td>{% else %}<td class="n muted" data-sort="0">&ndash;</td>{% endif %}{% endfor %}
      <td class="n" data-sort="{{ row.samples }}">{{ row.samples | num }}</td><td class="n">{{ row.shards }}</td></tr>
    {% endfor %}
    {% if matrix.rows | length > 1 %}
      <tr class="total"><td>all</td>{% for t in matrix.totals %}<td class="n">{{ t | num }}</td>{% endfor %}<td class="n">{{ r.totals.samples | num }}</td><td class="n">{{ r.totals.shards }}</td></tr>
    {% endif %}
    </tbody>
  </table></div>
  <p class="muted">Cells: samples (shards). Image sizes:
  {% for source, sizes in r.image_sizes.items() %}{{ source }} {% for size, n in sizes.items() %}{{ size }} &times; {{ n | num }}{% if not loop.last %}, {% endif %}{% endfor %}{% if not loop.last %}; {% endif %}{% endfor %}.</p>
</section>

<section id="balance">
  <h2>Class balance</h2>
  {{ chips([("background", class_colours.background), ("hand", class_colours.hand), ("object", class_colours.object), ("ignore", class_colours.ignore), ("invalid", class_colours.other)]) }}
  <div class="scroll"><table class="sortable wide" id="balance-table">
    <thead><tr><th>source</th><th>pixels</th><th class="n">background</th><th class="n">hand</th><th class="n">object</th><th class="n">ignore</th><th class="n">invalid</th><th class="n">labels.hand</th><th class="n">labels.object</th><th class="n">labels.sides</th></tr></thead>
    <tbody>
    {% for b in balance %}
      <tr><td>{{ b.source }}</td><td>{{ bar(b.segments, class_colours) }}</td>
      {% for c in ["background", "hand", "object", "ignore", "other"] %}<td class="n" data-sort="{{ b.fractions.get(c, 0) }}" title="{{ b.pixels.get(c, 0) | num }} px">{{ b.fractions.get(c, 0) | pct }}</td>{% endfor %}
      {% for c in ["hand", "object", "sides"] %}<td class="n" data-sort="{{ b.labels.get(c, 0) }}">{{ b.labels.get(c, 0) | num }}/{{ b.labels.get("samples", 0) | num }}</td>{% endfor %}</tr>
    {% endfor %}
    </tbody>
  </table></div>
  <p class="muted">labels.*: samples whose json says the class is annotated (a source without object labels says nothing about objects).</p>
</section>

<section id="sides">
  <h2>Instances and hand sides</h2>
  {{ chips([("left", side_colours.left), ("right", side_colours.right), ("side unknown", side_colours.unknown)]) }}
  <div class="scroll"><table class="sortable wide" id="sides-table">
    <thead><tr><th>source</th><th>hand instances by side</th><th class="n">left</th><th class="n">right</th><th class="n">unknown</th><th class="n">frames: left</th><th class="n">right</th><th class="n">both</th><th class="n">objects</th><th class="n">inst.png</th><th class="n">amodal.png</th></tr></thead>
    <tbody>
    {% for v in instances %}
      <tr><td>{{ v.source }}</td><td>{{ bar(v.side_segments, side_colours) }}</td>
      {% for k in ["left", "right", "unknown"] %}<td class="n">{{ v.hand_sides[k] | num }}</td>{% endfor %}
      {% for k in ["left", "right", "both"] %}<td class="n">{{ v.frames_with_hand[k] | num }}</td>{% endfor %}
      <td class="n">{{ v.instances.object | num }}</td>
      <td class="n" data-sort="{{ v.with_inst_png }}">{{ v.with_inst_png | num }}/{{ v.samples | num }}</td>
      <td class="n" data-sort="{{ v.with_amodal_png }}">{{ v.with_amodal_png | num }}/{{ v.samples | num }}</td></tr>
    {% endfor %}
    </tbody>
  </table></div>
  <p class="muted">From each sample's json <code>instances</code> (schema hodata/2); hodata/1 samples list none.</p>
</section>



<section id="gallery">
  <h2>Samples ({{ cards | length }}, drawn per source and split)</h2>
  {{ chips(legend[:5]) }}
  {% if cards %}
  <div class="controls">
    <label>source <select id="f-source"><option value="">all</option>{% for s, n in gallery.sources %}<option value="{{ s }}">{{ s }} ({{ n }})</option>{% endfor %}</select></label>
    <label>split <select id="f-split"><option value="">all</option>{% for s, n in gallery.splits %}<option value="{{ s }}">{{ s }} ({{ n }})</option>{% endfor %}</select></label>
    <label>hands <select id="f-hands"><option value="">any</option>{% for s, n in gallery.hands %}<option value="{{ s }}">{{ s }} ({{ n }})</option>{% endfor %}</select></label>
    <label>key <input type="search" id="f-text" placeholder="part of a key"></label>
    <label>sort <select id="f-sort"><option value="source,split,key">source, split, key</option><option value="split,source,key">split, source, key</option><option value="key">key</option></select></label>
    <label>overlay <input type="range" id="f-opacity" min="0" max="100" value="50"></label>
    <label><input type="checkbox" id="f-outlines" checked> amodal outlines</label>
    <span id="gallery-shown" class="muted">showing {{ cards | length }} of {{ cards | length }} samples</span>
  </div>
  <div id="gallery-grid">
  {% for c in cards %}
    <figure class="card" data-source="{{ c.source }}" data-split="{{ c.split }}" data-key="{{ c.key }}" data-hands="{{ c.hands_filter }}">
      <div class="thumb" style="aspect-ratio: {{ c.width }} / {{ c.height }}; background: {{ backdrop | colour }}">
      {% if c.error %}<div class="err">cannot draw: {{ c.error }}</div>{% else %}
        <img src="{{ c.image_uri }}" width="{{ c.width }}" height="{{ c.height }}" alt="{{ c.key }}">
        <img class="overlay" src="{{ c.overlay_uri }}" width="{{ c.width }}" height="{{ c.height }}" alt="">
        {% if c.outline_uri %}<img class="outline" src="{{ c.outline_uri }}" width="{{ c.width }}" height="{{ c.height }}" alt="">{% endif %}
      {% endif %}
      </div>
      <figcaption><div class="key">{{ c.key }}</div>
        <div class="meta">{{ c.source }} &middot; {{ c.split }}
          {%- if c.hands %} &middot; {% for h in c.hands %}<span class="side-{{ h }}">{{ "hand (side unknown)" if h == "unknown" else h ~ " hand" }}</span>{% if not loop.last %} + {% endif %}{% endfor %}{% endif %}
          {%- if c.objects %} &middot; {{ c.objects_text }}{% endif %}
          {%- if c.outline_uri %} &middot; amodal{% endif %}</div></figcaption>
    </figure>
  {% endfor %}
  </div>
  {% else %}
  <p class="muted">No readable sample to show.</p>
  {% endif %}
  <div class="muted note">Overlay: hands by side where the sample's inst.png says it (hodata/2), else one hand colour; objects magenta; ignore grey and hatched.
    Amodal outlines (full silhouettes, occluded parts included): {{ chips(legend[5:]) }}</div>
</section>

<section id="provenance">
  <h2>Provenance</h2>
  {% if not builds %}<p class="muted">No manifest.json beside these shards: nothing records how they were built.</p>{% endif %}
  {% for b in builds %}
  <div class="build" data-source="{{ b.source }}">
    <h3>{{ b.source }} <span class="badge {{ 'ok' if b.status == 'complete' else 'warn' }}">{{ b.status }}</span>
      {% if b.verified.ok %}<span class="badge ok">{{ b.verified.ok }} shard sha256 verified</span>{% endif %}
      {% if b.verified.bad %}<span class="badge bad">{{ b.verified.bad }} sha256 mismatch</span>{% endif %}
      {% if b.verified.unread %}<span class="badge plain">{{ b.verified.unread }} not read</span>{% endif %}</h3>
    <div class="kv">
      <div>command</div><div><code class="cmd">{{ b.command }}</code></div>
      <div>licence</div><div>{% if b.licence %}{{ b.licence }}{% else %}<span class="muted">not recorded</span>{% endif %}</div>
      <div>hodata version</div><div>{{ b.hodata_version }} &middot; schema {{ b.schema }}</div>
      <div>git commit</div><div class="mono">{{ b.git_commit or "unknown" }}</div>
      <div>root</div><div class="mono">{{ b.root }}</div>
      <div>built</div><div>{{ b.started }} &rarr; {{ b.finished or "not finished" }}</div>
      <div>manifest</div><div class="mono">{{ b.manifest }}</div>
      <div>skipped frames</div><div>{{ b.skipped | num }}</div>
    </div>
    {% if b.agreement %}
    <h3>Mask agreement</h3>
    <div class="grid2">
    {% for a in b.agreement %}
      <div><table class="agreement"><thead><tr><th colspan="2">{{ a.metric }}</th></tr></thead><tbody>
        {% for k, v in a.stats %}<tr><td>{{ k }}</td><td class="n">{{ v }}</td></tr>{% endfor %}</tbody></table>
        {% for l in a.lists %}<details {{ 'open' if l.rows | length <= 20 }}><summary>{{ l.name }} ({{ l.rows | length }})</summary>
          <table class="sortable"><thead><tr>{% for c in l.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead><tbody>
          {% for row in l.rows %}<tr>{% for v in row %}<td>{{ v }}</td>{% endfor %}</tr>{% endfor %}</tbody></table></details>{% endfor %}
      </div>
    {% endfor %}
    </div>
    {% endif %}
    {% if b.skips %}
    <details {{ 'open' if b.skips | length <= 10 }}><summary>Skipped frames ({{ b.skipped | num }}{% if b.skipped > b.skips | length %}, first {{ b.skips | length }} listed{% endif %})</summary>
      <table class="sortable wide"><thead><tr><th>split</th><th>sequence</th><th>frame</th><th>reason</th><th>file</th></tr></thead><tbody>
      {% for s in b.skips %}<tr><td>{{ s.split }}</td><td>{{ s.sequence }}</td><td>{{ s.frame }}</td><td>{{ s.reason }}</td><td class="mono">{{ s.file or "" }}</td></tr>{% endfor %}
      </tbody></table></details>
    {% endif %}
    {% if b.checksums %}
    <details><summary>Annotation checksums ({{ b.checksums | length }})</summary>
      <table><thead><tr><th>file</th><th>sha256</th><th class="n">bytes</th></tr></thead><tbody>
      {% for c in b.checksums %}<tr><td class="mono">{{ c.file }}</td><td class="mono">{{ c.sha256 }}</td><td class="n">{{ c.bytes | num }}</td></tr>{% endfor %}
      </tbody></table></details>
    {% endif %}
    {% if b.assignment %}
    <details><summary>Split assignment ({{ b.assignment | length }} groups: {% for sp, n in b.assignment_counts %}{{ sp }} {{ n }}{% if not loop.last %}, {% endif %}{% endfor %})</summary>
      <table class="sortable"><thead><tr><th>group</th><th>split</th></tr></thead><tbody>
      {% for g, sp in b.assignment.items() %}<tr><td class="mono">{{ g }}</td><td>{{ sp }}</td></tr>{% endfor %}
      </tbody></table></details>
    {% endif %}
    <details><summary>Shards ({{ b.shards | length }})</summary>
      <table class="sortable wide"><thead><tr><th>shard</th><th>split</th><th class="n">samples</th><th class="n">bytes</th><th>sha256</th><th>read</th></tr></thead><tbody>
      {% for s in b.shards %}<tr><td class="mono">{{ s.name }}</td><td>{{ s.split }}</td><td class="n">{{ s.samples | num }}</td><td class="n" data-sort="{{ s.bytes or 0 }}">{{ s.bytes | num }}</td>
        <td class="mono" title="{{ s.sha256 or '' }}">{{ s.sha256 | short }}</td>
        <td>{% if s.verified %}<span class="badge ok">sha256 ok</span>{% elif s.verified is sameas false %}<span class="badge bad">mismatch</span>{% else %}<span class="badge plain">not read</span>{% endif %}</td></tr>{% endfor %}
      </tbody></table></details>
    <details><summary>Options</summary>
      <table><tbody>{% for k, v in b.options_rows %}<tr><td class="mono">{{ k }}</td><td class="mono">{{ v }}</td></tr>{% endfor %}</tbody></table></details>
    <details><summary>Source record, as the manifest holds it</summary><pre>{{ b.source_json }}</pre></details>
  </div>
  {% endfor %}
</section>
</main>
<footer>hodata {{ version }} &middot; report schema {{ r.schema }}</footer>
<script>{{ js | safe }}</script>
</body>
</html>
"""
