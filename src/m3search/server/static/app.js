// m3search web UI: plain JavaScript over the server's JSON API (same origin, no external resources).
"use strict";

const $ = (sel) => document.querySelector(sel);
const MODES = ["dense", "sparse", "colbert", "hybrid"];

// ---- API ------------------------------------------------------------------------------------------------

const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("m3search-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("m3search-api-key", keyInput.value);
  refreshStatus();
});

async function api(method, path, body) {
  const headers = {};
  if (keyInput.value) headers["Authorization"] = "Bearer " + keyInput.value;
  const init = { method, headers };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const message = (data.error && data.error.message) || response.statusText;
    throw new Error(`${response.status}: ${message}`);
  }
  return data;
}

function showError(err) {
  const box = $("#error");
  box.textContent = err ? String(err.message || err) : "";
  box.hidden = !err;
}

async function guarded(fn) {
  showError(null);
  try {
    await fn();
  } catch (err) {
    showError(err);
  }
}

// ---- helpers --------------------------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

// A labelled horizontal bar; `max` sets the scale (scores of a mode can exceed 1, e.g. BM25).
function bar(label, value, max = 1) {
  const pct = Math.max(0, Math.min(100, (100 * value) / (max || 1)));
  return el("div", { class: "bar", "data-mode": label },
    el("span", { class: "bar-label" }, label),
    el("span", { class: "bar-track" }, el("span", { class: `bar-fill mode-${label}`, style: `width:${pct}%` })),
    el("span", { class: "bar-value" }, value.toFixed(3)));
}

// An <img> of a thumbnail URL; with an API key the image is fetched with it (an <img src> sends no header).
function thumbImage(url, alt) {
  const img = el("img", { class: "thumb", alt, loading: "lazy" });
  if (!keyInput.value) {
    img.src = url;
    return img;
  }
  fetch(url, { headers: { Authorization: "Bearer " + keyInput.value } })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(r.statusText))))
    .then((blob) => { img.src = URL.createObjectURL(blob); })
    .catch(() => { img.alt = `${alt} (thumbnail unavailable)`; });
  return img;
}

function humanBytes(n) {
  if (n == null) return "";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// ---- navigation -----------------------------------------------------------------------------------------

function showPage() {
  const page = (location.hash || "#similarity").slice(1);
  document.querySelectorAll(".page").forEach((s) => { s.hidden = s.id !== `page-${page}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  if (page === "search" || page === "collections") guarded(loadCollections);
}
window.addEventListener("hashchange", showPage);

async function refreshStatus() {
  const status = $("#status");
  try {
    const response = await fetch("/readyz");
    const data = await response.json();
    status.textContent = data.ready ? `model: ${data.model}` : (data.detail || "model loading…");
    status.className = "status " + (data.ready ? "ok" : "wait");
    if (!data.ready) setTimeout(refreshStatus, 2000);
  } catch (err) {
    status.textContent = "server unreachable";
    status.className = "status bad";
  }
}

// ---- similarity -----------------------------------------------------------------------------------------

// Text B holds one candidate, or one per non-empty line: then the API scores each and the page ranks them by
// the hybrid score (the level of each still comes from its dense score).
function simTargets() {
  const text = $("#sim-b").value;
  if (!$("#sim-lines").checked) return [text];
  const lines = text.split(/\r?\n/).filter((line) => line.trim());
  return lines.length ? lines : [text];
}

function levelBadge(level) {
  return el("span", { class: "level level-" + level.replace(" ", "-") }, level);
}

function showSimilarity(data) {
  const ranked = [...data.results].sort((a, b) => b.scores.hybrid - a.scores.hybrid);
  const best = ranked[0];
  const level = $("#sim-level");
  level.textContent = best.level;
  level.className = "level level-" + best.level.replace(" ", "-");
  $("#sim-bars").replaceChildren(...MODES.filter((m) => m in best.scores).map((m) => bar(m, best.scores[m])));
  const list = $("#sim-list");
  list.hidden = ranked.length < 2;
  list.replaceChildren(...(ranked.length < 2 ? [] : ranked.map((item) =>
    el("li", { class: "candidate-item", "data-index": String(item.index) },
      el("div", { class: "candidate" }, levelBadge(item.level),
        el("span", { class: "candidate-text" }, item.text)),
      el("div", { class: "bars small" },
        ...MODES.filter((m) => m in item.scores).map((m) => bar(m, item.scores[m])))))));
  $("#sim-hint").textContent =
    (ranked.length > 1 ? `${ranked.length} candidates ranked by hybrid score; the bars above are the best one's. ` : "") +
    `${data.model}: level from the dense score; very similar > ${data.thresholds.very_similar}, ` +
    `related > ${data.thresholds.related}. Hybrid: weighted mean with ` +
    data.modes.map((m) => `${m} ${data.weights[m]}`).join(", ") + ".";
  $("#sim-result").hidden = false;
}

// ---- similarity history (this browser's localStorage only) -----------------------------------------------

const HISTORY_KEY = "m3search-similarity-history";
const HISTORY_SIZE = 20;

function loadHistory() {
  try {
    const items = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(items) ? items : [];
  } catch (err) {
    return [];
  }
}

function remember(a, b, lines, data) {
  const best = [...data.results].sort((x, y) => y.scores.hybrid - x.scores.hybrid)[0];
  const entry = { a, b, lines, level: best.level, hybrid: best.scores.hybrid, count: data.results.length,
                  at: new Date().toISOString() };
  const items = loadHistory().filter((h) => !(h.a === a && h.b === b && h.lines === lines));
  localStorage.setItem(HISTORY_KEY, JSON.stringify([entry, ...items].slice(0, HISTORY_SIZE)));
  renderHistory();
}

function shorten(text, n = 60) {
  const flat = text.replace(/\s+/g, " ").trim();
  return flat.length > n ? flat.slice(0, n - 1) + "…" : flat;
}

function renderHistory() {
  const items = loadHistory();
  $("#sim-history").hidden = !items.length;
  $("#sim-history-list").replaceChildren(...items.map((h) => {
    const label = `${shorten(h.a, 40)} ↔ ${h.count > 1 ? `${h.count} candidates` : shorten(h.b, 40)}`;
    const button = el("button", { type: "button", class: "history-item", title: h.at }, label);
    button.addEventListener("click", () => {
      $("#sim-a").value = h.a;
      $("#sim-b").value = h.b;
      $("#sim-lines").checked = h.lines;
      $("#similarity-form").requestSubmit();
    });
    return el("li", {}, button, " ", levelBadge(h.level), ` ${h.hybrid.toFixed(3)}`);
  }));
}

$("#sim-history-clear").addEventListener("click", () => {
  localStorage.removeItem(HISTORY_KEY);
  renderHistory();
});

$("#similarity-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const a = $("#sim-a").value;
    const b = $("#sim-b").value;
    const lines = $("#sim-lines").checked;
    const targets = simTargets();
    const data = await api("POST", "/similarity", { source: a, targets: targets.length === 1 ? targets[0] : targets });
    showSimilarity(data);
    remember(a, b, lines, data);
  });
});
renderHistory();

// ---- collections ----------------------------------------------------------------------------------------

// What each collection's searches use by default (mode, weights per fusion): the sliders start there.
let collectionInfo = {};

// The server's warm-up of a collection's search files (`serve --warm`): until it is done, the first queries may
// wait on the disk. Empty when the server started none.
function warmCell(w) {
  if (!w) return el("td", {}, "");
  if (w.state === "done") return el("td", { title: `${humanBytes(w.read_bytes)} read into memory` }, "warm");
  if (w.state === "waiting") return el("td", { title: "after another collection's warm-up" }, "waiting to warm");
  const pct = w.planned_bytes ? Math.floor((100 * w.read_bytes) / w.planned_bytes) : 0;
  return el("td", { title: `${humanBytes(w.read_bytes)} of ${humanBytes(w.planned_bytes)}` }, `warming ${pct}%`);
}

async function loadCollections() {
  const data = await api("GET", "/collections");
  collectionInfo = Object.fromEntries(data.collections.map((c) => [c.name, c]));
  const names = data.collections.map((c) => c.name);
  for (const select of [$("#search-collection"), $("#upload-collection")]) {
    const current = select.value;
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (names.includes(current)) select.value = current;
  }
  const rows = data.collections.map((c) => {
    const del = el("button", { class: "danger", type: "button" }, "Delete");
    del.addEventListener("click", () => guarded(async () => {
      if (!confirm(`Delete collection ${c.name} and all its documents?`)) return;
      await api("DELETE", `/collections/${encodeURIComponent(c.name)}`);
      await loadCollections();
    }));
    return el("tr", {}, el("td", {}, c.name), el("td", {}, String(c.count)), el("td", {}, c.model || ""),
      el("td", {}, (c.outputs || []).join(", ")), el("td", {}, c.images ? "yes" : ""),
      el("td", {}, humanBytes(c.size_bytes)), warmCell(c.warm_up), el("td", {}, del));
  });
  $("#collections-table tbody").replaceChildren(...rows);
  showDefaultWeights();
}

$("#create-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    await api("POST", "/collections", { name: $("#create-name").value, images: $("#create-images").checked });
    $("#create-name").value = "";
    $("#create-images").checked = false;
    await loadCollections();
  });
});

$("#upload-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const name = $("#upload-collection").value;
    const form = new FormData();
    form.append("file", $("#upload-file").files[0]);
    $("#upload-result").textContent = "uploading and encoding…";
    const data = await api("POST", `/collections/${encodeURIComponent(name)}/documents/upload`, form);
    $("#upload-result").textContent = `${data.upserted} documents upserted into ${name} (now ${data.count}).`;
    await loadCollections();
  });
});

// ---- search ---------------------------------------------------------------------------------------------

// Weights are sent only once a slider moved: until then the collection's tuned or the fusion's defaults apply,
// and the sliders show them (per collection, fusion and mode: `fusion_weights` of the collection's listing).
let weightsTouched = false;
const SLIDERS = ["dense", "sparse", "colbert"];
for (const kind of SLIDERS) {
  const input = $("#w-" + kind);
  input.addEventListener("input", () => {
    weightsTouched = true;
    input.nextElementSibling.value = Number(input.value).toFixed(2);
  });
}

function showDefaultWeights() {
  const info = collectionInfo[$("#search-collection").value];
  const weights = info && info.fusion_weights[$("#search-fusion").value || "default"];
  if (weightsTouched || !weights) return;
  for (const kind of SLIDERS) {
    const input = $("#w-" + kind);
    input.value = weights[kind];
    input.nextElementSibling.value = Number(weights[kind]).toFixed(2);
  }
}
$("#search-collection").addEventListener("change", showDefaultWeights);
$("#search-fusion").addEventListener("change", showDefaultWeights);

// The result text with the query tokens that matched it (character spans from the server) highlighted, more
// strongly the more the token weighs in the query (so rare words stand out over "the" and "of").
function highlighted(text, matches) {
  const spans = [];
  const top = Math.max(...(matches || []).map((m) => m.weight), 1e-9);
  for (const m of matches || []) for (const [s, e] of m.spans || []) spans.push([s, e, m]);
  spans.sort((a, b) => a[0] - b[0]);
  const out = el("p", { class: "doc-text" });
  let pos = 0;
  for (const [s, e, m] of spans) {
    if (s < pos) continue;
    out.append(text.slice(pos, s));
    const alpha = (0.25 + 0.75 * m.weight / top).toFixed(2);
    out.append(el("mark", { title: `${m.token}: query weight ${m.weight.toFixed(3)}`,
                            style: `background: rgba(255, 208, 0, ${alpha})` }, text.slice(s, e)));
    pos = e;
  }
  out.append(text.slice(pos));
  return out;
}

const imageInput = $("#search-image");
imageInput.addEventListener("change", () => {
  const file = imageInput.files[0];
  const preview = $("#search-image-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = !file;
  $("#search-image-clear").hidden = !file;
  if (file) preview.src = URL.createObjectURL(file);
  else preview.removeAttribute("src"); // no image: no src, so never a broken-image icon
});
$("#search-image-clear").addEventListener("click", () => {
  imageInput.value = "";
  imageInput.dispatchEvent(new Event("change"));
});

$("#search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  guarded(async () => {
    const name = $("#search-collection").value;
    const query = $("#search-query").value.trim();
    const image = imageInput.files[0];
    if (!query && !image) throw new Error("type a query, choose an image, or both");
    const kinds = $("#search-kinds").value;
    const body = {
      query: query || null,
      kinds: kinds ? kinds.split(",") : null,
      k: Number($("#search-k").value),
      mode: $("#search-mode").value || null,
      fusion: $("#search-fusion").value || null,
      weights: weightsTouched
        ? { dense: Number($("#w-dense").value), sparse: Number($("#w-sparse").value),
            colbert: Number($("#w-colbert").value) }
        : null,
      highlight: Boolean(query),
    };
    const started = performance.now();
    const path = `/collections/${encodeURIComponent(name)}/search`;
    let data;
    if (image) {  // the image goes as a file; the other fields as JSON beside it
      const form = new FormData();
      form.append("image", image);
      form.append("request", JSON.stringify(body));
      data = await api("POST", path + "/upload", form);
    } else {
      data = await api("POST", path, body);
    }
    const ms = Math.round(performance.now() - started);
    const what = image ? (query ? "image+text query, " : "image query, ") : "";
    $("#search-summary").textContent =
      `${data.results.length} results from ${name} (${what}mode ${data.mode}, ${body.fusion || "default"} fusion) in ${ms} ms`;
    const top = Math.max(...data.results.map((r) => r.score), 1e-9);
    const perModeMax = {};
    for (const r of data.results) for (const [m, v] of Object.entries(r.scores || {})) {
      perModeMax[m] = Math.max(perModeMax[m] || 0, v);
    }
    const items = data.results.map((r) => {
      const modes = Object.entries(r.scores || {}).map(([m, v]) => bar(m, v, Math.max(1, perModeMax[m])));
      const tokens = (r.matched_tokens || []).map((t) => el("span", { class: "token" }, t.token));
      return el("li", { class: "hit" },
        el("div", { class: "hit-head" },
          el("span", {}, el("strong", {}, String(r.id)), el("span", { class: "kind" }, r.kind || "text")),
          bar("score", r.score, top)),
        r.thumbnail_url ? el("div", { class: "hit-image" }, thumbImage(r.thumbnail_url, String(r.id))) : "",
        r.text ? highlighted(r.text, r.matched_tokens) : "",
        tokens.length ? el("div", { class: "tokens" }, "matched query tokens: ", ...tokens) : "",
        el("div", { class: "bars small" }, ...modes),
        r.metadata && Object.keys(r.metadata).length
          ? el("pre", { class: "meta" }, JSON.stringify(r.metadata)) : "");
    });
    $("#search-results").replaceChildren(...items);
  });
});

refreshStatus();
showPage();
