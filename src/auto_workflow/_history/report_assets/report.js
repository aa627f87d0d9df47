/* auto_workflow run report: draws the page from the JSON document in #run-data.
 *
 * Every piece of user text (task names, params, errors) reaches the DOM through
 * textContent, setAttribute or canvas fillText, never through innerHTML.
 *
 * Served by `auto-workflow ui` (D.ui), the page links back to the runs list; for a run
 * still running it is live: it polls the run's summary and, when it changed, fetches
 * the data again and redraws everything (listeners of the last drawing are dropped
 * through an AbortSignal). It stops polling once the run has ended.
 */
(function () {
  "use strict";

  function renderAll(D, signal) {
    var S = D.s, T = D.t, R = D.run, N = T.name.length;
    /* "waiting": a task of a live run that is declared but has not started (the history
     * reads it as running, with no start time); it is told apart here. */
    var STATUS = D.statuses.concat(["waiting"]);
    var COLOR = {
      succeeded: "#16a34a", failed: "#dc2626", skipped: "#9ca3af", cached: "#2563eb",
      running: "#d97706", cancelled: "#64748b", waiting: "#94a3b8"
    };
    var TINT = {
      succeeded: "#dcfce7", failed: "#fee2e2", skipped: "#f3f4f6", cached: "#dbeafe",
      running: "#fef3c7", cancelled: "#e2e8f0", waiting: "#f1f5f9"
    };
    var RETRY = "#f59e0b", CRIT = "#7c3aed";
    var ORDER = ["failed", "running", "waiting", "cancelled", "succeeded", "cached", "skipped"];

    /* ---------- small helpers ---------- */

    function el(tag, cls, text) {
      var node = document.createElement(tag);
      if (cls) node.className = cls;
      if (text !== undefined && text !== null) node.textContent = String(text);
      return node;
    }
    function svg(tag, attrs) {
      var node = document.createElementNS("http://www.w3.org/2000/svg", tag);
      for (var k in attrs) node.setAttribute(k, String(attrs[k]));
      return node;
    }
    function add(parent) {
      for (var i = 1; i < arguments.length; i++) if (arguments[i]) parent.appendChild(arguments[i]);
      return parent;
    }
    function fmtDur(ms) {
      if (ms === null || ms === undefined) return "—";
      if (ms < 1000) return Math.round(ms) + " ms";
      var s = ms / 1000;
      if (s < 60) return (s < 10 ? s.toFixed(2) : s.toFixed(1)) + " s";
      var m = Math.floor(s / 60);
      if (m < 60) return m + "m " + String(Math.round(s - m * 60)).padStart(2, "0") + "s";
      var h = Math.floor(m / 60);
      return h + "h " + String(m - h * 60).padStart(2, "0") + "m";
    }
    function fmtOffset(ms) {
      return ms === null || ms === undefined ? "—" : "+" + fmtDur(ms);
    }
    function pad(n) { return String(n).padStart(2, "0"); }
    function fmtDate(ms) {
      var d = new Date(ms), off = -d.getTimezoneOffset();
      var sign = off >= 0 ? "+" : "-", a = Math.abs(off);
      return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) +
        " UTC" + sign + pad(Math.floor(a / 60)) + ":" + pad(a % 60);
    }
    function short(text, max) {
      return text.length > max ? text.slice(0, max - 1) + "…" : text;
    }
    function json(value) {
      return typeof value === "string" ? JSON.stringify(value) : JSON.stringify(value);
    }
    function dot(status) {
      var d = el("span", "dot");
      d.style.background = COLOR[status];
      return d;
    }
    function pill(status) {
      var p = el("span", "pill", status);
      p.style.background = COLOR[status] || "#6b7280";
      return p;
    }

    /* ---------- the records ---------- */

    var isBarrier = new Uint8Array(N);
    T.barrier.forEach(function (i) { isBarrier[i] = 1; });
    var attempts = new Map(D.att.map(function (row) { return [row[0], row[1]]; }));
    var critical = new Uint8Array(N);
    D.cp.forEach(function (i) { critical[i] = 1; });
    var tasks = [];
    for (var i0 = 0; i0 < N; i0++) if (!isBarrier[i0]) tasks.push(i0);

    function statusOf(i) {
      var s = STATUS[T.st[i]];
      return s === "running" && T.s[i] === null ? "waiting" : s;
    }
    function nameOf(i) { return S[T.name[i]]; }
    // A summary row stands for T.w[i] successful calls that were counted, not itemised.
    function weightOf(i) { return T.w[String(i)] || 1; }
    function weightOfAll(list) {
      var n = 0;
      list.forEach(function (i) { n += weightOf(i); });
      return n;
    }
    function labelOf(i) {
      if (T.w[String(i)]) return nodeIdOf(i);
      var it = T.it[i];
      return it === null || it === undefined ? nameOf(i) : nameOf(i) + "[" + it + "]";
    }
    function nodeIdOf(i) {
      var id = T.node[String(i)];
      return id === undefined ? nameOf(i) + ":" + T.idx[i] : id;
    }
    function durOf(i) { return T.s[i] === null ? null : T.e[i] - T.s[i]; }
    function errorOf(i) {
      var e = T.err[i];
      return e ? { type: S[e[0]], message: S[e[1]], traceback: S[e[2]] } : null;
    }
    function retried(i) { return T.n[i] > 1; }

    var counts = {};
    STATUS.forEach(function (s) { counts[s] = 0; });
    var busyTotal = 0;
    // A summary row stands for many successful calls that were not itemised (T.w: how many).
    tasks.forEach(function (i) {
      counts[statusOf(i)] += weightOf(i);
      busyTotal += T.busy[i];
    });

    /* ---------- header ---------- */

    function metaItem(label, value, mono) {
      var span = el("span");
      add(span, el("span", "k", label), el("span", mono ? "mono" : null, value));
      return span;
    }
    function paramChips() {
      var chips = el("div", "chips");
      var entries = Object.entries(R.params || {});
      if (!entries.length && R.args.length) entries = [["args", R.args]];
      entries.forEach(function (kv) {
        var text = kv[0] + " = " + json(kv[1]);
        var chip = el("span", "chip", short(text, 90));
        chip.title = text;
        chips.appendChild(chip);
      });
      return entries.length ? chips : null;
    }
    function backLink() {
      var a = el("a", "back", "← all runs");
      a.setAttribute("href", D.ui.runs);
      return add(el("nav", "crumbs"), a);
    }
    function liveBadge() {
      if (!D.ui || !D.ui.poll || R.status !== "running") return null;
      var badge = el("span", "live", "live · updates every " + fmtDur(D.ui.every));
      badge.id = "live-badge";
      badge.setAttribute("data-state", "on");
      badge.title = "this page redraws itself as the run's tasks finish";
      return badge;
    }
    function renderHeader() {
      var h = document.getElementById("run-header");
      document.title = R.flow + " · " + R.status + " · run report";
      if (D.ui) h.appendChild(backLink());
      var row = add(el("div", "title-row"), el("h1", null, R.flow), pill(R.status), liveBadge());
      var meta = el("div", "meta");
      add(meta,
        metaItem("run", R.id, true),
        metaItem("started", fmtDate(R.started)),
        metaItem(R.ended ? "duration" : "running for", fmtDur(R.wall)),
        R.host ? metaItem("host", R.host + (R.pid ? " (pid " + R.pid + ")" : "")) : null,
        R.target ? metaItem("target", R.target, true) : null,
        R.durable ? metaItem("durable", "yes") : null);
      add(h, row, meta, paramChips());
      if (R.error) {
        h.appendChild(el("div", "run-error", "Run error — " + R.error[0] + ": " + R.error[1]));
      }
    }

    /* ---------- totals ---------- */

    function tile(num, label, color, status) {
      var t = el("div", "tile");
      t.style.borderLeftColor = color;
      if (status) t.setAttribute("data-status", status);
      if (status && !num) t.classList.add("zero");
      add(t, el("div", "num", num), el("div", "lbl", label));
      return t;
    }
    function renderTotals() {
      var box = document.getElementById("totals");
      box.appendChild(tile(weightOfAll(tasks).toLocaleString("en-US"), "tasks", "#111827", null));
      STATUS.forEach(function (s) {
        if (counts[s] || s === "succeeded" || s === "failed") {
          box.appendChild(tile(counts[s].toLocaleString("en-US"), s, COLOR[s], s));
        }
      });
      box.appendChild(el("div", "tile-sep"));
      var wall = R.wall || 0;
      box.appendChild(tile(fmtDur(wall), "wall time", "#111827", null));
      box.appendChild(tile(fmtDur(busyTotal), "summed task time", "#111827", null));
      var par = wall > 0 ? (busyTotal / wall).toFixed(2) + "×" : "—";
      var p = tile(par, "achieved parallelism", CRIT, null);
      p.id = "parallelism";
      p.title = "summed task time ÷ wall time";
      box.appendChild(p);
      var cpTime = D.cp.length ? pathTime() : 0;
      box.appendChild(tile(fmtDur(cpTime), "critical path (" + cpLength() + " tasks)", CRIT, null));
    }
    function cpLength() {
      return D.cp.filter(function (i) { return !isBarrier[i]; }).length;
    }
    function pathTime() {
      var ends = D.cp.map(function (i) { return T.e[i]; }).filter(function (e) { return e !== null; });
      var starts = D.cp.map(function (i) { return T.s[i]; }).filter(function (s) { return s !== null; });
      return ends.length && starts.length ? Math.max.apply(null, ends) - Math.min.apply(null, starts) : 0;
    }

    /* ---------- failures ---------- */

    function tracebackBlock(text, open) {
      if (!text) return null;
      var d = el("details");
      if (open) d.open = true;
      add(d, el("summary", null, "Traceback"), el("pre", "tb", text));
      return d;
    }
    function failureLine(i) {
      var e = errorOf(i) || { type: "failed", message: "", traceback: "" };
      var line = el("div", "failure-line");
      line.setAttribute("data-task", nodeIdOf(i));
      var who = el("button", "link who", labelOf(i));
      who.addEventListener("click", function () { selectTask(i, true); });
      var tries = T.n[i] > 1 ? " after " + T.n[i] + " attempts" : "";
      add(line, who, el("span", "what", " " + e.message), el("span", "count", tries));
      return line;
    }
    /* Failures of one task with one error type: 1,000 identical ones read as one line. */
    function failureGroups(failed) {
      var groups = new Map();
      failed.forEach(function (i) {
        var e = errorOf(i), key = nameOf(i) + "\u0000" + (e ? e.type : "");
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(i);
      });
      return Array.from(groups.values());
    }
    function failureGroup(list) {
      var first = list[0], e = errorOf(first) || { type: "failed", message: "", traceback: "" };
      var box = el("div", "failure");
      var head = add(el("div", "failure-head"), el("span", "who", nameOf(first)),
        el("span", "etype", e.type), el("span", "count", list.length === 1 ? "1 call" :
          list.length.toLocaleString("en-US") + " calls"));
      add(box, head);
      list.slice(0, 3).forEach(function (i) { box.appendChild(failureLine(i)); });
      if (list.length > 3) {
        box.appendChild(linkButton("… and " + (list.length - 3).toLocaleString("en-US") +
          " more: show them in the table", function () { table.onlyFailures(nameOf(first)); }));
      }
      add(box, tracebackBlock(e.traceback, false));  // none when no traceback was kept
      return box;
    }
    function renderFailures() {
      var failed = tasks.filter(function (i) { return statusOf(i) === "failed"; });
      if (!failed.length && !R.error) return;
      var box = document.getElementById("failures");
      box.hidden = false;
      var groups = failureGroups(failed);
      var title = "Failures: " + failed.length.toLocaleString("en-US") +
        (groups.length > 1 ? " in " + groups.length + " kinds" : "");
      box.appendChild(add(el("div", "card-head"), el("h2", null, title)));
      if (R.error && R.traceback) box.appendChild(tracebackBlock(R.traceback, false));
      groups.slice(0, 8).forEach(function (list) { box.appendChild(failureGroup(list)); });
      if (groups.length > 8) {
        box.appendChild(linkButton("and " + (groups.length - 8) + " more kinds: show all failures " +
          "in the table", function () { table.onlyStatus("failed"); }));
      }
    }

    /* ---------- legends ---------- */

    function legendItem(color, label, kind) {
      var item = el("span");
      var sw = el("span", "swatch" + (kind ? " " + kind : ""));
      if (kind !== "dash" && kind !== "ring") sw.style.background = color;
      add(item, sw, document.createTextNode(label));
      return item;
    }
    function statusLegend(box) {
      ORDER.forEach(function (s) { if (counts[s]) box.appendChild(legendItem(COLOR[s], s)); });
    }
    function renderLegends() {
      var g = document.getElementById("graph-legend");
      statusLegend(g);
      g.appendChild(legendItem(RETRY, "retried", null));
      g.appendChild(legendItem(CRIT, "critical path", "ring"));
      var t = document.getElementById("timeline-legend");
      statusLegend(t);
      t.appendChild(legendItem(RETRY, "backoff between attempts", "dash"));
      t.appendChild(legendItem(CRIT, "critical path (outlined; band under the axis)", "ring"));
      t.appendChild(el("span", "hint", "drag: pan · ctrl+wheel: zoom · double-click: fit"));
    }

    /* ---------- graph ---------- */

    var GN = D.graph.nodes, GE = D.graph.edges;
    var members = GN.map(function () { return []; });
    tasks.forEach(function (i) { members[T.g[i]].push(i); });
    var expanded = new Set();
    var selectedGraphKey = null;
    var EXPAND_MAX = 40;

    function groupCounts(list) {
      var c = {};
      list.forEach(function (i) { var s = statusOf(i); c[s] = (c[s] || 0) + weightOf(i); });
      return c;
    }
    function mainStatus(c) {
      for (var k = 0; k < ORDER.length; k++) if (c[ORDER[k]]) {
        if (ORDER[k] === "failed" || ORDER[k] === "running" || ORDER[k] === "waiting" ||
          ORDER[k] === "cancelled") return ORDER[k];
      }
      var best = "skipped", n = -1;
      ORDER.forEach(function (s) { if ((c[s] || 0) > n) { n = c[s] || 0; best = s; } });
      return best;
    }
    function breakdownText(c) {
      return ORDER.filter(function (s) { return c[s]; }).map(function (s) {
        return c[s].toLocaleString("en-US") + " " + s;
      }).join(" · ");
    }
    var measureCtx = document.createElement("canvas").getContext("2d");
    function textWidth(text, px) {
      measureCtx.font = px + "px system-ui, 'DejaVu Sans', sans-serif";
      return measureCtx.measureText(text).width;
    }

    /* A drawn node: a task (its position) or a group (a graph node index). */
    function graphItems() {
      var items = [], keyOf = new Map();
      GN.forEach(function (n, g) {
        if (n[0] !== 0 && expanded.has(g)) {
          members[g].forEach(function (i) { keyOf.set("t" + i, items.length); items.push(taskItem(i, g)); });
          return;
        }
        keyOf.set("g" + g, items.length);
        items.push(n[0] === 0 ? taskItem(n[2], g) : groupItem(g));
      });
      return { items: items, keyOf: keyOf };
    }
    function taskItem(i, g) {
      var label = labelOf(i), sub = fmtDur(durOf(i));
      if (retried(i)) sub += " · " + T.n[i] + " attempts";
      var w = Math.max(textWidth(label, 12.5), textWidth(sub, 11)) + 28;
      return { key: "t" + i, g: g, task: i, label: label, sub: sub, status: statusOf(i),
        counts: null, crit: critical[i] === 1, retried: retried(i),
        width: Math.min(Math.max(w, 96), 280), height: 42 };
    }
    function groupItem(g) {
      var list = members[g], c = groupCounts(list);
      var label = S[GN[g][1]] + " ×" + weightOfAll(list).toLocaleString("en-US");
      var sub = breakdownText(c) || "no calls";
      var crit = list.some(function (i) { return critical[i]; }) || (GN[g][2] >= 0 && critical[GN[g][2]] === 1);
      var w = Math.max(textWidth(label, 12.5), textWidth(sub, 11)) + 28;
      return { key: "g" + g, g: g, task: null, label: label, sub: sub, status: mainStatus(c),
        counts: c, crit: crit, retried: list.some(retried), total: weightOfAll(list),
        width: Math.min(Math.max(w, 120), 320), height: 58 };
    }
    function itemKeysFor(g, keyOf) {
      if (keyOf.has("g" + g)) return [keyOf.get("g" + g)];
      return members[g].map(function (i) { return keyOf.get("t" + i); });
    }
    function graphEdges(keyOf) {
      var seen = new Set(), out = [];
      for (var k = 0; k < GE.length; k += 2) {
        var from = itemKeysFor(GE[k], keyOf), to = itemKeysFor(GE[k + 1], keyOf);
        from.forEach(function (a) {
          to.forEach(function (b) {
            var id = a + ">" + b;
            if (a !== b && !seen.has(id)) { seen.add(id); out.push([a, b]); }
          });
        });
      }
      return out;
    }
    function critItemsKey(item) { return item.task !== null ? "t" + item.task : "g" + item.g; }
    function critEdges(keyOf) {
      var keys = [], set = new Set();
      D.cp.forEach(function (i) {
        var k = keyOf.has("t" + i) ? keyOf.get("t" + i) : keyOf.get("g" + T.g[i]);
        if (k !== undefined && keys[keys.length - 1] !== k) keys.push(k);
      });
      for (var j = 1; j < keys.length; j++) set.add(keys[j - 1] + ">" + keys[j]);
      return set;
    }
    function layoutGraph(items, edges) {
      var g = new dagre.graphlib.Graph();
      g.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 46, marginx: 14, marginy: 14 });
      g.setDefaultEdgeLabel(function () { return {}; });
      items.forEach(function (it, k) { g.setNode(String(k), { width: it.width, height: it.height }); });
      edges.forEach(function (e) { g.setEdge(String(e[0]), String(e[1])); });
      dagre.layout(g);
      return g;
    }
    function edgePath(points) {
      var d = "M" + points[0].x + "," + points[0].y;
      for (var k = 1; k < points.length - 1; k++) {
        var mx = (points[k].x + points[k + 1].x) / 2, my = (points[k].y + points[k + 1].y) / 2;
        d += " Q" + points[k].x + "," + points[k].y + " " + mx + "," + my;
      }
      var last = points[points.length - 1];
      return d + " L" + last.x + "," + last.y;
    }
    function arrowDefs() {
      var defs = svg("defs", {});
      [["arrow", "#9ca3af"], ["arrow-crit", CRIT]].forEach(function (a) {
        var m = svg("marker", { id: a[0], viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7,
          markerHeight: 7, orient: "auto-start-reverse" });
        m.appendChild(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: a[1] }));
        defs.appendChild(m);
      });
      return defs;
    }
    function drawBreakdown(group, it, x, y) {
      var w = it.width - 20, off = 0;
      ORDER.forEach(function (s) {
        var n = it.counts[s] || 0;
        if (!n) return;
        var bw = Math.max(2, (n / it.total) * w);
        group.appendChild(svg("rect", { x: x + off, y: y, width: Math.min(bw, w - off), height: 6, fill: COLOR[s] }));
        off += bw;
      });
    }
    function drawNode(root, it, pos) {
      var x = pos.x - it.width / 2, y = pos.y - it.height / 2;
      var group = svg("g", { "class": "node", "data-key": it.key, "data-status": it.status });
      group.setAttribute("data-label", it.label);
      if (it.crit) group.appendChild(svg("rect", { x: x - 4, y: y - 4, width: it.width + 8,
        height: it.height + 8, rx: 10, fill: "none", stroke: CRIT, "stroke-width": 2.5 }));
      group.appendChild(svg("rect", { "class": "box", x: x, y: y, width: it.width, height: it.height, rx: 7,
        fill: TINT[it.status], stroke: COLOR[it.status] }));
      group.appendChild(svg("rect", { x: x, y: y, width: 5, height: it.height, rx: 2, fill: COLOR[it.status] }));
      var title = svg("text", { x: x + 13, y: y + 17 });
      title.textContent = it.label;
      var sub = svg("text", { "class": "sub", x: x + 13, y: y + 33 });
      sub.textContent = it.sub;
      add(group, title, sub);
      if (it.counts) drawBreakdown(group, it, x + 12, y + it.height - 15);
      if (it.retried) group.appendChild(svg("circle", { cx: x + it.width - 9, cy: y + 9, r: 4, fill: RETRY }));
      var tip = svg("title", {});
      tip.textContent = it.task !== null ? nodeIdOf(it.task) + " — " + it.status : it.label + " — " + it.sub;
      group.appendChild(tip);
      group.addEventListener("click", function () { onGraphClick(it); });
      root.appendChild(group);
    }
    function renderGraph() {
      var box = document.getElementById("graph");
      box.textContent = "";
      var built = graphItems(), items = built.items, edges = graphEdges(built.keyOf);
      if (!items.length) { box.appendChild(el("div", "hint", "This run has no tasks yet.")); return; }
      var g = layoutGraph(items, edges), crit = critEdges(built.keyOf);
      var size = g.graph();
      var root = svg("svg", { width: Math.ceil(size.width), height: Math.ceil(size.height),
        viewBox: "0 0 " + Math.ceil(size.width) + " " + Math.ceil(size.height), role: "img" });
      root.appendChild(arrowDefs());
      edges.forEach(function (e) {
        var on = crit.has(e[0] + ">" + e[1]);
        var pts = g.edge(String(e[0]), String(e[1])).points;
        root.appendChild(svg("path", { "class": on ? "edge crit" : "edge", d: edgePath(pts),
          "marker-end": on ? "url(#arrow-crit)" : "url(#arrow)" }));
      });
      items.forEach(function (it, k) { drawNode(root, it, g.node(String(k))); });
      box.appendChild(root);
      markSelectedNode();
    }
    function markSelectedNode() {
      document.querySelectorAll("#graph .node").forEach(function (n) {
        n.classList.toggle("selected", n.getAttribute("data-key") === selectedGraphKey);
      });
    }
    function onGraphClick(it) {
      selectedGraphKey = it.key;
      if (it.task !== null) { selectTask(it.task, false); markSelectedNode(); return; }
      var canExpand = it.total > 0 && it.total <= EXPAND_MAX;
      if (canExpand) { expanded.add(it.g); renderGraph(); }
      else markSelectedNode();
      showGroupPanel(it.g);
    }

    function panelRow(k, v) {
      return add(el("div", "row"), el("span", "count", k), el("span", null, v));
    }
    function showGroupPanel(g) {
      var panel = document.getElementById("graph-panel"), list = members[g], c = groupCounts(list);
      panel.textContent = "";
      add(panel, el("h3", null, S[GN[g][1]] + " ×" + weightOfAll(list).toLocaleString("en-US")),
        el("div", "count", GN[g][0] === 1 ? "dynamic fan-out" : "all calls of this task"));
      var bar = el("div", "bar");
      ORDER.forEach(function (s) {
        if (!c[s]) return;
        var seg = el("span");
        seg.style.background = COLOR[s];
        seg.style.width = (100 * c[s] / list.length) + "%";
        bar.appendChild(seg);
      });
      panel.appendChild(bar);
      ORDER.forEach(function (s) { if (c[s]) panel.appendChild(panelRow(s, c[s].toLocaleString("en-US"))); });
      var actions = el("div");
      if (expanded.has(g)) actions.appendChild(linkButton("collapse the group", function () {
        expanded.delete(g); renderGraph(); showGroupPanel(g);
      }));
      actions.appendChild(el("span", null, " "));
      actions.appendChild(linkButton("show them in the table", function () { table.onlyGroup(g); }));
      panel.appendChild(actions);
      panel.appendChild(memberList(list));
    }
    function linkButton(text, fn) {
      var b = el("button", "link", text);
      b.addEventListener("click", fn);
      return b;
    }
    function memberList(list) {
      var rank = {};
      ORDER.forEach(function (s, k) { rank[s] = k; });
      var sorted = list.slice().sort(function (a, b) { return rank[statusOf(a)] - rank[statusOf(b)] || a - b; });
      var ul = el("ul");
      sorted.slice(0, 200).forEach(function (i) {
        var li = add(el("li"), dot(statusOf(i)), el("span", null, labelOf(i)),
          el("span", "count", fmtDur(durOf(i))));
        li.addEventListener("click", function () { selectTask(i, true); });
        ul.appendChild(li);
      });
      if (sorted.length > 200) ul.appendChild(el("li", "more", "… " + (sorted.length - 200) + " more in the table"));
      return ul;
    }
    function showTaskPanel(i) {
      var panel = document.getElementById("graph-panel");
      panel.textContent = "";
      add(panel, el("h3", null, labelOf(i)), el("div", "mono count", nodeIdOf(i)));
      add(panel, panelRow("status", statusOf(i)), panelRow("start", fmtOffset(T.s[i])),
        panelRow("duration", fmtDur(durOf(i))), panelRow("attempts", T.n[i]),
        panelRow("on critical path", critical[i] ? "yes" : "no"));
      var e = errorOf(i);
      if (e) add(panel, el("div", "failure what", e.type + ": " + e.message));
    }
    function emptyPanel() {
      var panel = document.getElementById("graph-panel");
      add(panel, el("h3", null, "Select a node"),
        el("div", "count", "Click a task for its details, or a group (×N) to expand it or list its calls."));
    }

    /* ---------- timeline ---------- */

    var gantt = (function () {
      var lanes = [], laneCount = 0, rowH = 18, wall = Math.max(R.wall || 0, 1);
      var view = [0, wall * 1.02], body, axis, scroll, spacer, tip, width = 800, height = 0;
      var AXIS_H = 26, selected = null;

      function buildLanes() {
        tasks.forEach(function (i) { if (T.ln[i] >= 0) laneCount = Math.max(laneCount, T.ln[i] + 1); });
        for (var l = 0; l < laneCount; l++) lanes.push([]);
        tasks.forEach(function (i) { if (T.ln[i] >= 0) lanes[T.ln[i]].push(i); });
        lanes.forEach(function (lane) { lane.sort(function (a, b) { return T.s[a] - T.s[b]; }); });
        rowH = laneCount > 200 ? 6 : laneCount > 40 ? 10 : laneCount > 12 ? 16 : 22;
      }
      function x(ms) { return (ms - view[0]) / (view[1] - view[0]) * width; }
      function msAt(px) { return view[0] + px / width * (view[1] - view[0]); }
      function setup(canvas, w, h) {
        var dpr = window.devicePixelRatio || 1;
        canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr);
        canvas.style.width = w + "px"; canvas.style.height = h + "px";
        var ctx = canvas.getContext("2d");
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        return ctx;
      }
      function niceStep(span, target) {
        var raw = span / target, p = Math.pow(10, Math.floor(Math.log10(raw)));
        var f = raw / p;
        return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
      }
      function ticks() {
        var step = niceStep(view[1] - view[0], Math.max(2, width / 110)), out = [];
        for (var t = Math.ceil(view[0] / step) * step; t <= view[1]; t += step) out.push(t);
        return out;
      }
      function drawAxis() {
        var ctx = setup(axis, width, AXIS_H);
        ctx.fillStyle = "#f9fafb"; ctx.fillRect(0, 0, width, AXIS_H);
        ctx.fillStyle = "#6b7280"; ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
        ctx.strokeStyle = "#d1d5db";
        ticks().forEach(function (t) {
          var px = Math.round(x(t)) + 0.5;
          ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, 6); ctx.stroke();
          ctx.fillText(fmtDur(t), px + 3, 15);
        });
        ctx.beginPath(); ctx.moveTo(0, AXIS_H - 0.5); ctx.lineTo(width, AXIS_H - 0.5); ctx.stroke();
        drawCriticalBand(ctx);
      }
      function firstVisible(lane) {
        var lo = 0, hi = lane.length;
        while (lo < hi) { var mid = (lo + hi) >> 1; if (T.e[lane[mid]] < view[0]) lo = mid + 1; else hi = mid; }
        return lo;
      }
      function drawAttempts(ctx, i, y, h) {
        var rows = attempts.get(i), prevEnd = null;
        rows.forEach(function (a) {
          var x0 = x(a[0]), x1 = Math.max(x(a[1]), x0 + 1.5);
          if (prevEnd !== null) {
            ctx.strokeStyle = RETRY; ctx.setLineDash([3, 2]); ctx.lineWidth = 1.5;
            ctx.beginPath(); ctx.moveTo(prevEnd, y + h / 2); ctx.lineTo(x0, y + h / 2); ctx.stroke();
            ctx.setLineDash([]);
          }
          ctx.fillStyle = a[2] !== null ? COLOR.failed : COLOR[statusOf(i)];
          ctx.fillRect(x0, y, x1 - x0, h);
          if (a[2] !== null && x1 - x0 > 5) {
            ctx.strokeStyle = "#7f1d1d"; ctx.lineWidth = 1.5;
            ctx.beginPath(); ctx.moveTo(x1 - 0.75, y); ctx.lineTo(x1 - 0.75, y + h); ctx.stroke();
          }
          prevEnd = x1;
        });
      }
      function drawBar(ctx, i, y, h) {
        if (attempts.has(i)) { drawAttempts(ctx, i, y, h); return; }
        var x0 = x(T.s[i]), x1 = Math.max(x(T.e[i]), x0 + 1.5);
        ctx.fillStyle = COLOR[statusOf(i)];
        ctx.fillRect(x0, y, x1 - x0, h);
      }
      function drawLabel(ctx, i, y, h) {
        var x0 = Math.max(x(T.s[i]), 0), x1 = Math.min(x(T.e[i]), width);
        if (x1 - x0 < 44 || h < 12) return;
        ctx.save();
        ctx.beginPath(); ctx.rect(x0, y, x1 - x0 - 3, h); ctx.clip();
        ctx.fillStyle = "#fff"; ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
        ctx.fillText(labelOf(i), x0 + 4, y + h - 4);
        ctx.restore();
      }
      function drawLane(ctx, lane, y, h) {
        var lastPx = -1;
        for (var k = firstVisible(lane); k < lane.length; k++) {
          var i = lane[k];
          if (T.s[i] > view[1]) break;
          var px = Math.floor(x(T.s[i]));
          if (px === lastPx && x(T.e[i]) - px < 1) continue;
          lastPx = px;
          drawBar(ctx, i, y, h);
          drawLabel(ctx, i, y, h);
        }
      }
      function barBox(i, top) {
        var y = T.ln[i] * rowH - top + 2, h = rowH - 4;
        return { x0: x(T.s[i]), x1: Math.max(x(T.e[i]), x(T.s[i]) + 1.5), y: y, h: h };
      }
      function drawCritical(ctx, top) {
        ctx.strokeStyle = CRIT; ctx.lineWidth = 2;
        D.cp.forEach(function (i) {
          if (isBarrier[i] || T.ln[i] < 0) return;
          var b = barBox(i, top);
          ctx.strokeRect(b.x0 - 1, b.y - 1, b.x1 - b.x0 + 2, b.h + 2);
        });
      }
      /* The critical path's stretches of time, as a band under the axis. */
      function drawCriticalBand(ctx) {
        ctx.fillStyle = CRIT;
        D.cp.forEach(function (i) {
          if (isBarrier[i] || T.s[i] === null) return;
          var x0 = x(T.s[i]), x1 = Math.max(x(T.e[i]), x0 + 1.5);
          ctx.fillRect(x0, AXIS_H - 5, x1 - x0, 4);
        });
      }
      function drawGrid(ctx) {
        ctx.strokeStyle = "#f0f1f3"; ctx.lineWidth = 1;
        ticks().forEach(function (t) {
          var px = Math.round(x(t)) + 0.5;
          ctx.beginPath(); ctx.moveTo(px, 0); ctx.lineTo(px, height); ctx.stroke();
        });
      }
      function draw() {
        var ctx = setup(body, width, height), top = scroll.scrollTop;
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, width, height);
        drawGrid(ctx);
        var first = Math.floor(top / rowH), last = Math.min(laneCount, Math.ceil((top + height) / rowH));
        for (var l = first; l < last; l++) drawLane(ctx, lanes[l], l * rowH - top + 2, rowH - 4);
        drawCritical(ctx, top);
        if (selected !== null && T.ln[selected] >= 0) {
          var b = barBox(selected, top);
          ctx.strokeStyle = "#111827"; ctx.lineWidth = 2;
          ctx.strokeRect(b.x0 - 2, b.y - 2, b.x1 - b.x0 + 4, b.h + 4);
        }
        drawAxis();
      }
      function hit(ev) {
        var rect = body.getBoundingClientRect(), px = ev.clientX - rect.left;
        var lane = lanes[Math.floor((ev.clientY - rect.top + scroll.scrollTop) / rowH)];
        if (!lane) return null;
        var t = msAt(px), slack = (view[1] - view[0]) / width * 3;
        for (var k = firstVisible(lane); k < lane.length; k++) {
          var i = lane[k];
          if (T.s[i] - slack > t) break;
          if (T.e[i] + slack >= t) return i;
        }
        return null;
      }
      function tipText(i) {
        var lines = [labelOf(i) + "  (" + statusOf(i) + ")", "start " + fmtOffset(T.s[i]) +
          " · duration " + fmtDur(durOf(i)) + " · ran " + fmtDur(T.busy[i])];
        if (retried(i)) lines.push(T.n[i] + " attempts");
        var e = errorOf(i);
        if (e) lines.push(e.type + ": " + short(e.message, 200));
        if (critical[i]) lines.push("on the critical path");
        return lines.join("\n");
      }
      function onMove(ev) {
        if (drag) { pan(ev); return; }
        var i = hit(ev);
        if (i === null) { tip.hidden = true; return; }
        tip.textContent = tipText(i);
        tip.hidden = false;
        tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 430) + "px";
        tip.style.top = (ev.clientY + 14) + "px";
      }
      var drag = null;
      function pan(ev) {
        var dms = (ev.clientX - drag.x) / width * (drag.v[1] - drag.v[0]);
        view = [drag.v[0] - dms, drag.v[1] - dms];
        if (Math.abs(ev.clientX - drag.x) > 3) drag.moved = true;
        draw();
      }
      function onWheel(ev) {
        if (!ev.ctrlKey && !ev.metaKey) return;
        ev.preventDefault();
        var rect = body.getBoundingClientRect(), t = msAt(ev.clientX - rect.left);
        var f = Math.exp(ev.deltaY * 0.002), span = (view[1] - view[0]) * f;
        span = Math.min(Math.max(span, 0.5), wall * 4);
        var ratio = (t - view[0]) / (view[1] - view[0]);
        view = [t - ratio * span, t - ratio * span + span];
        draw();
      }
      function listen() {
        scroll.addEventListener("scroll", draw, { passive: true });
        body.addEventListener("mousemove", onMove);
        body.addEventListener("mouseleave", function () { tip.hidden = true; });
        body.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX, v: view.slice(), moved: false }; });
        window.addEventListener("mouseup", function (ev) {
          var was = drag; drag = null;
          if (was && !was.moved && ev.target === body) { var i = hit(ev); if (i !== null) selectTask(i, true); }
        }, { signal: signal });
        body.addEventListener("dblclick", function () { view = [0, wall * 1.02]; draw(); });
        body.addEventListener("wheel", onWheel, { passive: false });
        window.addEventListener("resize", function () { resize(); draw(); }, { signal: signal });
      }
      function resize() { width = Math.max(200, scroll.clientWidth); }
      function render() {
        buildLanes();
        var box = document.getElementById("timeline");
        if (!laneCount) { box.appendChild(el("div", "hint", "No task ran, so there is nothing to draw.")); return; }
        axis = el("canvas"); scroll = el("div", "gantt-scroll"); body = el("canvas"); spacer = el("div");
        tip = el("div", "tooltip"); tip.hidden = true;
        height = Math.min(laneCount * rowH + 4, 380);
        scroll.style.height = height + "px";
        spacer.style.height = Math.max(0, laneCount * rowH + 4 - height) + "px";
        add(scroll, body, spacer); add(box, axis, scroll);
        document.body.appendChild(tip);
        box.appendChild(el("div", "hint", " " + laneCount.toLocaleString("en-US") + (laneCount === 1 ? " lane" : " lanes") + " · tasks that ran at once get a lane each; a task keeps one lane across its retries"));
        resize(); listen(); draw();
      }
      function focus(i) {
        selected = i;
        if (!laneCount) return;
        if (T.ln[i] < 0) { draw(); return; }
        scroll.scrollTop = Math.max(0, T.ln[i] * rowH - height / 2);
        draw();
      }
      return { render: render, focus: focus, laneCount: function () { return laneCount; } };
    })();

    /* ---------- table ---------- */

    var table = (function () {
      var ROW_H = 28, shown = tasks.slice(), sortKey = "idx", desc = false;
      var statusOn = {}, text = "", group = null, body, inner, filtersBox, countLabel, selected = null;
      STATUS.forEach(function (s) { statusOn[s] = true; });
      var COLUMNS = [
        ["idx", "#"], ["name", "Task"], ["status", "Status"], ["start", "Start"],
        ["dur", "Duration"], ["att", "Attempts"], ["err", "Error"]
      ];
      function errText(i) { var e = errorOf(i); return e ? e.type + ": " + e.message : ""; }
      var KEYS = {
        idx: function (i) { return T.idx[i]; },
        name: function (i) { return labelOf(i).toLowerCase(); },
        status: function (i) { return ORDER.indexOf(statusOf(i)); },
        start: function (i) { return T.s[i] === null ? Infinity : T.s[i]; },
        dur: function (i) { var d = durOf(i); return d === null ? -1 : d; },
        att: function (i) { return T.n[i]; },
        err: function (i) { return errText(i).toLowerCase(); }
      };
      function compare(fn) {
        return function (a, b) {
          var x = fn(a), y = fn(b);
          var c = x < y ? -1 : x > y ? 1 : T.idx[a] - T.idx[b];
          return desc ? -c : c;
        };
      }
      function matches(i) {
        if (!statusOn[statusOf(i)]) return false;
        if (group !== null && T.g[i] !== group) return false;
        if (!text) return true;
        return labelOf(i).toLowerCase().indexOf(text) >= 0 || nodeIdOf(i).toLowerCase().indexOf(text) >= 0;
      }
      function refresh() {
        shown = tasks.filter(matches);
        var fn = KEYS[sortKey], keyed = new Map();
        shown.forEach(function (i) { keyed.set(i, fn(i)); });
        shown.sort(compare(function (i) { return keyed.get(i); }));
        inner.style.height = shown.length * ROW_H + "px";
        body.style.height = Math.min(Math.max(shown.length, 3) * ROW_H + 2, 392) + "px";
        countLabel.textContent = shown.length.toLocaleString("en-US") + " of " + tasks.length.toLocaleString("en-US");
        markHeader();
        draw();
      }
      function cell(text, cls) { var c = el("div", cls, text); c.title = String(text); return c; }
      function row(i, k) {
        var r = el("div", "trow" + (i === selected ? " selected" : ""));
        r.style.top = k * ROW_H + "px";
        r.setAttribute("data-task", nodeIdOf(i));
        var st = add(el("div", "status"), dot(statusOf(i)), el("span", null, statusOf(i)));
        var att = T.n[i] > 1 ? T.n[i] + " ↻" : String(T.n[i]);
        add(r, cell(T.idx[i], "num"), cell(labelOf(i)), st, cell(fmtOffset(T.s[i]), "num"),
          cell(fmtDur(durOf(i)), "num"), cell(att, "num"), cell(errText(i), "errc"));
        r.addEventListener("click", function () { selectTask(i, false); });
        return r;
      }
      function draw() {
        var top = body.scrollTop, first = Math.max(0, Math.floor(top / ROW_H) - 5);
        var last = Math.min(shown.length, Math.ceil((top + body.clientHeight) / ROW_H) + 5);
        var frag = document.createDocumentFragment();
        for (var k = first; k < last; k++) frag.appendChild(row(shown[k], k));
        inner.textContent = "";
        inner.appendChild(frag);
      }
      function markHeader() {
        document.querySelectorAll("#table .thead div").forEach(function (h) {
          var on = h.getAttribute("data-key") === sortKey;
          h.classList.toggle("sorted", on);
          h.classList.toggle("desc", on && desc);
        });
      }
      function header() {
        var head = el("div", "thead");
        COLUMNS.forEach(function (c) {
          var h = el("div", null, c[1]);
          h.setAttribute("data-key", c[0]);
          h.addEventListener("click", function () {
            desc = sortKey === c[0] ? !desc : false;
            sortKey = c[0];
            refresh();
          });
          head.appendChild(h);
        });
        return head;
      }
      function statusToggle(s) {
        var b = add(el("button", "toggle"), dot(s), el("span", null, s + " " + counts[s].toLocaleString("en-US")));
        b.setAttribute("data-status", s);
        b.addEventListener("click", function () {
          statusOn[s] = !statusOn[s];
          b.classList.toggle("off", !statusOn[s]);
          refresh();
        });
        return b;
      }
      function filters() {
        filtersBox = document.getElementById("table-filters");
        ORDER.forEach(function (s) { if (counts[s]) filtersBox.appendChild(statusToggle(s)); });
        var input = el("input");
        input.type = "search"; input.placeholder = "filter by name…"; input.id = "task-search";
        var timer = null;
        input.addEventListener("input", function () {
          clearTimeout(timer);
          timer = setTimeout(function () { text = input.value.trim().toLowerCase(); refresh(); }, 120);
        });
        countLabel = el("span", "count");
        add(filtersBox, input, countLabel);
      }
      function render() {
        filters();
        var box = document.getElementById("table");
        body = el("div", "tbody"); inner = el("div");
        inner.style.position = "relative";
        add(body, inner); add(box, header(), body);
        body.addEventListener("scroll", draw, { passive: true });
        refresh();
      }
      function setStatuses(only) {
        STATUS.forEach(function (s) { statusOn[s] = only === null || s === only; });
        filtersBox.querySelectorAll(".toggle").forEach(function (b) {
          b.classList.toggle("off", !statusOn[b.getAttribute("data-status")]);
        });
      }
      function onlyStatus(s) { setStatuses(s); group = null; refresh(); scrollTo(); }
      function onlyFailures(name) {
        var input = document.getElementById("task-search");
        input.value = name; text = name.toLowerCase();
        onlyStatus("failed");
      }
      function onlyGroup(g) { setStatuses(null); group = g; refresh(); scrollTo(); }
      function scrollTo() { document.getElementById("tasks-card").scrollIntoView({ behavior: "auto" }); }
      function select(i) {
        selected = i;
        var k = shown.indexOf(i);
        if (k >= 0 && (k * ROW_H < body.scrollTop || k * ROW_H > body.scrollTop + body.clientHeight - ROW_H)) {
          body.scrollTop = Math.max(0, k * ROW_H - body.clientHeight / 2);
        }
        draw();
      }
      return { render: render, onlyStatus: onlyStatus, onlyFailures: onlyFailures, onlyGroup: onlyGroup, select: select,
        shown: function () { return shown; } };
    })();

    /* ---------- the selected task ---------- */

    function kv(box, k, v) { add(box, el("div", "k", k), el("div", null, v)); }
    function attemptList(i) {
      var rows = attempts.get(i);
      if (!rows) return null;
      var ol = el("ol", "attempts");
      rows.forEach(function (a, k) {
        var text = "+" + fmtDur(a[0]) + " for " + fmtDur(a[1] - a[0]);
        if (a[2] !== null) text += " — failed: " + S[a[2]] + ": " + S[a[3]];
        if (k > 0) text = "after " + fmtDur(a[0] - rows[k - 1][1]) + " backoff, " + text;
        ol.appendChild(el("li", a[2] !== null ? "run-error" : null, text));
      });
      return ol;
    }
    function renderDetail(i) {
      var box = document.getElementById("task-detail");
      box.textContent = "";
      var card = el("div", "box");
      add(card, add(el("div", "title-row"), el("h2", null, labelOf(i)), pill(statusOf(i))));
      var grid = el("div", "kv");
      kv(grid, "node", nodeIdOf(i));
      kv(grid, "started", fmtOffset(T.s[i]) + " after the run started");
      kv(grid, "duration", fmtDur(durOf(i)) + " (ran " + fmtDur(T.busy[i]) + ")");
      kv(grid, "attempts", T.n[i]);
      kv(grid, "critical path", critical[i] ? "yes" : "no");
      card.appendChild(grid);
      add(card, attemptList(i));
      var e = errorOf(i);
      if (e) add(card, el("div", "failure what", e.type + ": " + e.message), tracebackBlock(e.traceback, true));
      box.appendChild(card);
    }
    function selectTask(i, scroll) {
      renderDetail(i);
      table.select(i);
      showTaskPanel(i);
      gantt.focus(i);
      if (scroll) document.getElementById("task-detail").scrollIntoView({ block: "nearest" });
    }

    /* ---------- start ---------- */

    function footer() {
      var f = document.getElementById("page-footer");
      f.textContent = "auto_workflow run report · " + N.toLocaleString("en-US") + " records · graph layout by dagre (MIT)";
    }
    var started = performance.now();
    renderHeader();
    renderTotals();
    renderFailures();
    renderLegends();
    emptyPanel();
    renderGraph();
    gantt.render();
    table.render();
    footer();
    window.__report = {
      ready: true, renderMs: performance.now() - started, readyAt: performance.now(), tasks: tasks.length,
      lanes: gantt.laneCount(), shownRows: function () { return table.shown().length; }
    };
  }
  /* ---------- drawing, and drawing again (live) ---------- */

  var CONTAINERS = ["run-header", "totals", "failures", "graph-legend", "graph", "graph-panel",
    "timeline-legend", "timeline", "table-filters", "table", "task-detail", "page-footer"];
  var controller = null, draws = 0, polls = 0;

  function clearPage() {
    CONTAINERS.forEach(function (id) { document.getElementById(id).textContent = ""; });
    document.getElementById("failures").hidden = true;
    document.querySelectorAll("body > .tooltip").forEach(function (t) { t.remove(); });
  }
  function show(D) {
    if (controller) controller.abort();
    controller = new AbortController();
    var y = window.scrollY;
    if (draws) clearPage();
    renderAll(D, controller.signal);
    draws++;
    window.scrollTo(0, y);
    window.__report.draws = draws;
    window.__report.polls = polls;
  }
  function clock() {
    var d = new Date();
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map(function (n) {
      return String(n).padStart(2, "0");
    }).join(":");
  }
  function setBadge(text, state) {
    var badge = document.getElementById("live-badge");
    if (!badge) return;
    badge.textContent = text;
    badge.setAttribute("data-state", state);
  }
  function getJSON(url) {
    return fetch(url, { cache: "no-store", credentials: "same-origin" }).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
  }
  function live(ui) {
    function redraw(summary) {
      if (summary.sig === ui.sig) return summary;
      return getJSON(ui.data).then(function (d) { ui = d.ui; show(d); return summary; });
    }
    function tick() {
      getJSON(ui.poll).then(redraw).then(function (summary) {
        polls++;
        window.__report.polls = polls;
        if (summary.status !== "running") return;  // the last drawing is the final report
        setBadge("live · updated " + clock(), "on");
        setTimeout(tick, ui.every);
      }, function (err) {
        setBadge("live · cannot reach the server (" + err.message + "); retrying", "lost");
        setTimeout(tick, Math.min(ui.every * 5, 10000));
      });
    }
    setTimeout(tick, ui.every);
  }

  var first = JSON.parse(document.getElementById("run-data").textContent);
  show(first);
  if (first.ui && first.ui.poll && first.run.status === "running") live(first.ui);
})();
