// Face Analytics console: plain JavaScript, no build step, nothing loaded from elsewhere.
// Pages are hash routes (#/analyze, #/people, #/person/<id>, #/dashboard) over the same REST
// API as every other client. The API key (when the server has keys on) is asked for once
// and kept in sessionStorage; crops are fetched with the key and shown as blob URLs.
"use strict";

const BASE = location.pathname.replace(/\/ui(\/.*)?$/, "");  // the API's root, also behind a path prefix
const KEY_STORE = "faceAnalytics.apiKey";
const PAGE = 20;

// ---------------------------------------------------------------- DOM helpers
const nodes = (...xs) => xs.flat().filter((x) => x !== null && x !== undefined && x !== false);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "style") el.style.cssText = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const $ = (sel, root = document) => root.querySelector(sel);
const view = () => $("#view");

const pct = (x) => `${Math.round(x * 100)}%`;
const when = (s) => (s ? new Date(s.endsWith("Z") || s.includes("+") ? s : s + "Z").toLocaleString() : "–");
const label = (p) => p.person_name || p.person_id;

// ---------------------------------------------------------------- messages
let noticeTimer = 0, noticeAt = 0;
function showError(err) {
  const text = err instanceof ApiError ? err.describe() : `Something went wrong: ${err && err.message || err}`;
  $("#error-text").textContent = text;
  $("#error").hidden = false;
}
function clearError() { $("#error").hidden = true; }
function notice(text) {
  const n = $("#notice");
  n.textContent = text;
  n.hidden = false;
  noticeAt = Date.now();
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { n.hidden = true; }, 6000);
}

// ---------------------------------------------------------------- the API
class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  describe() {
    if (this.status === 0) return `Cannot reach the API (${this.message}). Is the server running?`;
    const hints = {
      401: " Enter a valid API key (button at the top right).",
      413: " Choose a smaller photo.",
      429: " Too many requests: wait a moment and try again.",
      503: " A part of the service (Triton or the database) is down; it recovers by itself, try again shortly.",
    };
    return `${this.message} (${this.code}, HTTP ${this.status}).${hints[this.status] || ""}`;
  }
}

async function api(path, { method = "GET", json, file, raw = false, okStatuses = [] } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers["X-API-Key"] = key;
  let body;
  if (json !== undefined) { headers["Content-Type"] = "application/json"; body = JSON.stringify(json); }
  if (file) {  // the photo as the body itself: no multipart for the server to parse
    headers["Content-Type"] = file.type.startsWith("image/") ? file.type : "application/octet-stream";
    body = file;
  }
  let r;
  try {
    r = await fetch(BASE + path, { method, headers, body });
  } catch (e) {
    throw new ApiError(0, "network", e.message || "network error");
  }
  if (!r.ok && !okStatuses.includes(r.status)) {
    let code = "http_error", message = `${r.status} ${r.statusText}`;
    try {
      const b = await r.json();
      code = b.error || code;
      message = b.message || b.detail || message;
    } catch (_) { /* not JSON: keep the status line */ }
    const err = new ApiError(r.status, code, message);
    if (r.status === 401) askKey();
    throw err;
  }
  return raw ? r : r.json();
}

const cropUrls = new Map();  // path -> blob URL, so a page does not fetch a crop twice
async function cropImage(path, alt) {
  try {
    let url = cropUrls.get(path);
    if (!url) {
      const r = await api(path, { raw: true });
      url = URL.createObjectURL(await r.blob());
      cropUrls.set(path, url);
    }
    return h("img", { class: "crop", alt, src: url, width: 56, height: 56 });
  } catch (e) {
    return h("span", { class: "crop missing", title: e.message }, "no crop");
  }
}
function crop(path, alt) {  // a placeholder now, the image once it arrives
  const slot = h("span", { class: "crop-slot" });
  cropImage(path, alt).then((el) => slot.replaceChildren(el));
  return slot;
}

// ---------------------------------------------------------------- API key dialog
function askKey() {
  const d = $("#key-dialog");
  if (d.open) return;
  $("#key-input").value = sessionStorage.getItem(KEY_STORE) || "";
  d.showModal();
}
function setupKeyDialog() {
  $("#key-button").addEventListener("click", askKey);
  $("#key-form").addEventListener("submit", () => {
    sessionStorage.setItem(KEY_STORE, $("#key-input").value.trim());
    cropUrls.clear();
    clearError();
    route();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    $("#key-dialog").close();
    notice("API key forgotten.");
  });
  $("#key-cancel").addEventListener("click", () => $("#key-dialog").close());
}

function confirmAction(text, verb = "Delete") {
  const d = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  $("#confirm-yes").textContent = verb;
  d.returnValue = "";
  d.showModal();
  $("#confirm-no").focus();
  return new Promise((resolve) => d.addEventListener("close", () => resolve(d.returnValue === "yes"), { once: true }));
}

// ---------------------------------------------------------------- person picker (merge)
async function findPeople(query, exclude) {
  const page = await api(`/persons?limit=${PAGE}&search=${encodeURIComponent(query)}`);
  return page.persons.filter((p) => p.person_id !== exclude);
}
function renderPicklist(list, people, onPick) {
  list.replaceChildren(...(people.length ? people.map((p) => h("li", {},
    h("button", { type: "button", class: "pick", "data-person": p.person_id, onclick: () => onPick(p) },
      `${label(p)}${p.person_name ? ` (${p.person_id})` : ""} · ${p.detection_count} detections`)))
    : [h("li", { class: "muted" }, "Nobody matches.")]));
}
// The answer names the person that remains: a known person survives whichever side it was on.
async function mergePerson(from, into) {
  const body = await api(`/persons/${encodeURIComponent(from)}/merge`, { method: "POST", json: { into: into.person_id } });
  const remains = body.person_id || into.person_id;
  notice(body.message || `Merged ${from} into ${label(into)}.`);
  return { person_id: remains, identity: body.identity || into.identity,
    person_name: remains === into.person_id ? into.person_name : null };
}

// ---------------------------------------------------------------- Analyze
const analyzeState = { faces: null, image: null, url: null, name: "", mode: "track" };

// quality is an object ({overall, passed, ...}) when the API sends it: with include=quality, and
// always for a face below the quality gate, which then has no person_id (it was not remembered)
const qualityOf = (f) => (f.quality === null || f.quality === undefined ? null
  : Number(typeof f.quality === "object" ? f.quality.overall : f.quality));

function faceText(f) {
  const parts = [shortName(f),
    `age ${Math.round(f.age)}`, `${f.gender} ${pct(f.gender_confidence)}`];
  parts.push(f.similarity === null || f.similarity === undefined ? "new" : `sim ${f.similarity.toFixed(2)}`);
  if (qualityOf(f) !== null) parts.push(`quality ${qualityOf(f).toFixed(2)}`);
  return parts;
}

const shortName = (f) => f.person_name || (!f.person_id ? (f.quality && f.quality.passed === false ? "low quality, not remembered"
  : f.identity ? "nobody known" : "face")
  : f.identity === "unknown" ? `unknown …${f.person_id.slice(-4)}` : f.person_id);

function renderAnalyze() {
  const input = h("input", { type: "file", id: "photo", accept: "image/*", class: "visually-hidden",
    onchange: (e) => e.target.files[0] && analyzeFile(e.target.files[0]) });
  const drop = h("div", { class: "dropzone", id: "dropzone", tabindex: "0", role: "button",
    "aria-describedby": "drop-help",
    onclick: () => input.click(),
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } },
    ondragover: (e) => { e.preventDefault(); e.currentTarget.classList.add("over"); },
    ondragleave: (e) => e.currentTarget.classList.remove("over"),
    ondrop: (e) => {
      e.preventDefault();
      e.currentTarget.classList.remove("over");
      const f = e.dataTransfer.files[0];
      if (f) analyzeFile(f);
    } },
  h("strong", {}, "Choose a photo"), h("span", { id: "drop-help" }, " or drop one here (JPEG, PNG, WebP, BMP, TIFF, GIF)"));
  const mode = h("select", { id: "mode", onchange: (e) => { analyzeState.mode = e.target.value; } },
    [["track", "remember faces (track)"], ["search", "only look people up (search)"], ["detect", "faces only (detect)"]]
      .map(([v, t]) => h("option", { value: v, selected: analyzeState.mode === v }, t)));
  view().replaceChildren(
    h("h1", {}, "Analyze a photo"),
    h("div", { class: "filters" }, h("label", { for: "mode" }, "Mode"), mode,
      h("span", { class: "muted" }, "search and detect write nothing")),
    h("label", { for: "photo", class: "visually-hidden" }, "Photo to analyse"), input, drop,
    h("div", { id: "result", "aria-live": "polite" }));
  if (analyzeState.faces) showAnalysis();
}

async function analyzeFile(file) {
  clearError();
  const result = $("#result");
  result.replaceChildren(h("p", { class: "muted" }, `Analysing ${file.name}…`));
  try {
    // quality of every face, not only of those below the gate; track is the default mode
    const query = new URLSearchParams({ include: "quality" });
    if (analyzeState.mode !== "track") query.set("mode", analyzeState.mode);
    const body = await api(`/analyze?${query}`, { method: "POST", file });
    if (analyzeState.url) URL.revokeObjectURL(analyzeState.url);
    Object.assign(analyzeState, { faces: body.faces, image: body.image, url: URL.createObjectURL(file),
      name: file.name, message: body.message });
    showAnalysis();
  } catch (e) {
    result.replaceChildren();
    showError(e);
  }
}

function showAnalysis() {
  const { faces, image, url } = analyzeState;
  const stage = h("div", { class: "stage", id: "stage" });
  const img = h("img", { src: url, alt: `The photo ${analyzeState.name}`, id: "analyzed-image" });
  stage.append(img);
  const place = (w, hgt) => {
    faces.forEach((f, i) => {
      const b = f.bbox;
      const box = h("button", { type: "button", class: `face ${f.identity}`, "data-index": i, "data-person": f.person_id,
        "aria-label": `Face ${i + 1}: ${faceText(f).join(", ")}.${f.person_id ? " Name or merge this person." : ""}`,
        style: `left:${(100 * b.x) / w}%;top:${(100 * b.y) / hgt}%;width:${(100 * b.width) / w}%;height:${(100 * b.height) / hgt}%`,
        onclick: () => { if (f.person_id) openFace(i); } },
      h("span", { class: "tag" }, h("b", {}, i + 1), h("span", { class: "who" }, ` ${shortName(f)}`),
        h("span", { class: "detail" }, h("br"), faceText(f).slice(1).join(" · "))));
      if ((b.x + b.width / 2) / w > 0.6) box.classList.add("right");  // keep the tag inside the photo
      stage.append(box);
    });
  };
  // the API reports the upright size; fall back to the decoded size for older servers
  if (image && image.width) place(image.width, image.height);
  else img.addEventListener("load", () => place(img.naturalWidth, img.naturalHeight), { once: true });
  const rows = faces.map((f, i) => h("tr", {},
    h("td", {}, i + 1), h("td", {}, f.person_name || f.identity || "–"), h("td", { class: "id" }, f.person_id || "–"),
    h("td", {}, Math.round(f.age)), h("td", {}, `${f.gender} ${pct(f.gender_confidence)}`),
    h("td", {}, f.similarity === null || f.similarity === undefined ? "new" : f.similarity.toFixed(3)),
    h("td", {}, qualityOf(f) === null ? "–" : qualityOf(f).toFixed(2)),
    h("td", {}, f.person_id ? h("button", { type: "button", onclick: () => openFace(i) }, "Name / merge…") : null)));
  $("#result").replaceChildren(...nodes(
    h("p", { id: "analyze-message" }, analyzeState.message || `${faces.length} face(s)`),
    stage,
    faces.length ? h("div", { class: "table-wrap" }, h("table", { id: "faces-table" },
      h("caption", { class: "visually-hidden" }, "Faces found"),
      h("thead", {}, h("tr", {}, ["#", "who", "person id", "age", "gender", "similarity", "quality", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))) : null));
}

function openFace(i) {
  const f = analyzeState.faces[i];
  if (!f.person_id) {
    notice("This face is nobody the service remembers: analyse the photo in track mode to name it.");
    return;
  }
  const d = $("#face-dialog");
  $("#face-title").textContent = `Face ${i + 1}`;
  $("#face-summary").textContent = `${faceText(f).join(", ")} — ${f.person_id}`;
  $("#name-input").value = f.person_name || "";
  $("#merge-search").value = "";
  $("#merge-results").replaceChildren();
  d.dataset.index = i;
  d.showModal();
  $("#name-input").focus();
}

function setupFaceDialog() {
  const d = $("#face-dialog");
  $("#face-close").addEventListener("click", () => d.close());
  $("#name-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = analyzeState.faces[Number(d.dataset.index)];
    const name = $("#name-input").value.trim();
    try {
      const body = await api(`/persons/${encodeURIComponent(f.person_id)}`, { method: "PATCH", json: { person_name: name } });
      // every face of this person in the photo now carries the name and the known id
      const old = f.person_id;
      for (const g of analyzeState.faces) {
        if (g.person_id === old) Object.assign(g, { person_id: body.person_id, person_name: name, identity: "known" });
      }
      d.close();
      showAnalysis();
      notice(`${old} is now ${name} (${body.person_id}).`);
    } catch (err) { showError(err); }
  });
  $("#merge-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = analyzeState.faces[Number(d.dataset.index)];
    try {
      const people = await findPeople($("#merge-search").value.trim(), f.person_id);
      renderPicklist($("#merge-results"), people, async (into) => {
        if (!await confirmAction(`Merge ${f.person_id} into ${label(into)}? Its samples and sightings move there.`, "Merge")) return;
        try {
          const kept = await mergePerson(f.person_id, into);
          const olds = [f.person_id, into.person_id];
          const name = kept.person_name ?? (kept.person_id === f.person_id ? f.person_name : null);
          for (const g of analyzeState.faces) {
            if (olds.includes(g.person_id)) Object.assign(g, { person_id: kept.person_id, person_name: name, identity: kept.identity });
          }
          d.close();
          showAnalysis();
        } catch (err) { showError(err); }
      });
    } catch (err) { showError(err); }
  });
}

// ---------------------------------------------------------------- People
const peopleState = { search: "", identity: "", offset: 0 };

async function renderPeople() {
  const search = h("input", { type: "search", id: "people-search", value: peopleState.search, placeholder: "name or id" });
  const kind = h("select", { id: "people-kind" },
    [["", "everyone"], ["known", "known"], ["unknown", "unknown"]].map(([v, t]) =>
      h("option", { value: v, selected: peopleState.identity === v }, t)));
  const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
    e.preventDefault();
    Object.assign(peopleState, { search: search.value.trim(), identity: kind.value, offset: 0 });
    loadPeople();
  } },
  h("label", { for: "people-search" }, "Search by name"), search,
  h("label", { for: "people-kind" }, "Show"), kind,
  h("button", { type: "submit", class: "primary" }, "Search"));
  view().replaceChildren(h("h1", {}, "People"), form, h("div", { id: "people", "aria-live": "polite" }));
  await loadPeople();
}

async function loadPeople() {
  const box = $("#people");
  const q = new URLSearchParams({ limit: PAGE, offset: peopleState.offset });
  if (peopleState.search) q.set("search", peopleState.search);
  if (peopleState.identity) q.set("identity", peopleState.identity);
  let page;
  try {
    page = await api(`/persons?${q}`);
  } catch (e) {
    box.replaceChildren(h("p", { class: "muted" }, "The list could not be loaded."));
    return showError(e);
  }
  const rows = page.persons.map((p) => h("tr", { "data-person": p.person_id },
    h("td", {}, crop(`/persons/${encodeURIComponent(p.person_id)}/crop`, `Face of ${label(p)}`)),
    h("td", {}, h("a", { href: `#/person/${encodeURIComponent(p.person_id)}`, class: "person-link" }, label(p))),
    h("td", {}, p.identity), h("td", {}, p.detection_count),
    h("td", {}, when(p.first_seen)), h("td", {}, when(p.last_seen))));
  const from = page.total ? page.offset + 1 : 0, to = page.offset + page.persons.length;
  box.replaceChildren(
    h("p", { id: "people-count" }, `${from}–${to} of ${page.total}`),
    page.persons.length ? h("div", { class: "table-wrap" }, h("table", { id: "people-table" },
      h("caption", { class: "visually-hidden" }, "People"),
      h("thead", {}, h("tr", {}, ["face", "name or id", "identity", "detections", "first seen", "last seen"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))) : h("p", { class: "muted" }, "Nobody here yet: analyse a photo first."),
    h("div", { class: "pager" },
      h("button", { type: "button", disabled: page.offset === 0, onclick: () => { peopleState.offset = Math.max(0, page.offset - PAGE); loadPeople(); } }, "← Previous"),
      h("button", { type: "button", disabled: to >= page.total, onclick: () => { peopleState.offset = page.offset + PAGE; loadPeople(); } }, "Next →")));
}

// ---------------------------------------------------------------- one person
const listOf = (body, ...keys) => (Array.isArray(body) ? body : keys.map((k) => body[k]).find(Array.isArray) || []);

async function renderPerson(id) {
  let p;
  try {
    p = await api(`/persons/${encodeURIComponent(id)}`);
  } catch (e) {
    view().replaceChildren(h("h1", {}, "Person"), h("p", {}, h("a", { href: "#/people" }, "← People")));
    return showError(e);
  }
  const path = `/persons/${encodeURIComponent(id)}`;
  const rename = h("form", { id: "rename-form", onsubmit: async (e) => {
    e.preventDefault();
    const name = $("#rename-input").value.trim();
    try {
      const body = await api(path, { method: "PATCH", json: { person_name: name } });
      notice(`${id} is now ${name}.`);
      location.hash = `#/person/${encodeURIComponent(body.person_id)}`;
      if (body.person_id === id) renderPerson(id);
    } catch (err) { showError(err); }
  } },
  h("label", { for: "rename-input" }, p.identity === "known" ? "Rename" : "Name this person"),
  h("div", { class: "row" }, h("input", { id: "rename-input", value: p.person_name || "", maxlength: "100", required: true }),
    h("button", { type: "submit", class: "primary" }, "Save")));
  const results = h("ul", { class: "picklist", "aria-label": "People to merge into" });
  const merge = h("form", { id: "person-merge-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      renderPicklist(results, await findPeople($("#person-merge-search").value.trim(), id), async (into) => {
        if (!await confirmAction(`Merge ${label(p)} into ${label(into)}? Its samples and sightings move there.`, "Merge")) return;
        try {
          const kept = await mergePerson(id, into);
          if (kept.person_id === id) renderPerson(id);
          else location.hash = `#/person/${encodeURIComponent(kept.person_id)}`;
        } catch (err) { showError(err); }
      });
    } catch (err) { showError(err); }
  } },
  h("label", { for: "person-merge-search" }, "Merge into another person"),
  h("div", { class: "row" }, h("input", { id: "person-merge-search", type: "search", placeholder: "name or id" }),
    h("button", { type: "submit" }, "Find")), results);
  const del = h("button", { type: "button", class: "danger", id: "delete-person", onclick: async () => {
    if (!await confirmAction(`Delete ${label(p)} with every sample, crop and sighting? This cannot be undone.`)) return;
    try {
      await api(path, { method: "DELETE" });
      notice(`Deleted ${label(p)}.`);
      location.hash = "#/people";
    } catch (err) { showError(err); }
  } }, "Delete person…");
  view().replaceChildren(
    h("p", {}, h("a", { href: "#/people" }, "← People")),
    h("div", { class: "person-head" }, crop(`${path}/crop`, `Face of ${label(p)}`),
      h("div", {}, h("h1", { id: "person-name" }, label(p)),
        h("p", { class: "muted" }, `${p.person_id} · ${p.identity} · ${p.detection_count} detections · first seen ${when(p.first_seen)} · last seen ${when(p.last_seen)}`))),
    h("div", { class: "cards" }, h("section", { class: "card" }, rename), h("section", { class: "card" }, merge),
      h("section", { class: "card" }, h("h2", {}, "Delete"), h("p", {}, "Erases the person's embeddings, crops and sightings."), del)),
    h("section", {}, h("h2", {}, "Samples"), h("div", { id: "samples" }, h("p", { class: "muted" }, "Loading…"))),
    h("section", {}, h("h2", {}, "Sightings"), h("div", { id: "sightings" }, h("p", { class: "muted" }, "Loading…"))));
  loadSamples(id);
  loadSightings(id, 0);
}

async function loadSamples(id) {
  const box = $("#samples");
  const path = `/persons/${encodeURIComponent(id)}/samples`;
  let body;
  try { body = await api(path); } catch (e) {
    box.replaceChildren(h("p", { class: "muted" }, e.status === 404 && e.code === "http_error"
      ? "This server does not list samples." : `Samples could not be loaded: ${e.describe()}`));
    return;
  }
  const samples = listOf(body, "samples", "items");
  box.replaceChildren(samples.length ? h("ul", { class: "samples" }, samples.map((s) => {
    const sid = s.sample_id ?? s.id;
    return h("li", { "data-sample": sid }, s.has_crop === false ? h("span", { class: "crop missing" }, "no crop")
      : crop(`${path}/${encodeURIComponent(sid)}/crop`, `Sample ${sid}`),
      h("span", { class: "muted" }, when(s.created_at)),
      h("button", { type: "button", class: "danger small", "aria-label": `Delete sample ${sid}`, onclick: async () => {
        if (!await confirmAction(`Delete sample ${sid}? The person's template is recomputed from the others.`)) return;
        try {
          await api(`${path}/${encodeURIComponent(sid)}`, { method: "DELETE" });
          notice(`Deleted sample ${sid}.`);
          loadSamples(id);
        } catch (err) { showError(err); }
      } }, "Delete"));
  })) : h("p", { class: "muted" }, "No stored samples."));
}

async function loadSightings(id, offset) {
  const box = $("#sightings");
  let body;
  try { body = await api(`/persons/${encodeURIComponent(id)}/sightings?limit=${PAGE}&offset=${offset}`); } catch (e) {
    box.replaceChildren(h("p", { class: "muted" }, e.status === 404 && e.code === "http_error"
      ? "This server does not list sightings." : `Sightings could not be loaded: ${e.describe()}`));
    return;
  }
  const rows = listOf(body, "sightings", "detections", "items");
  const total = body.total ?? rows.length;
  box.replaceChildren(...nodes(rows.length ? h("div", { class: "table-wrap" }, h("table", { id: "sightings-table" },
    h("thead", {}, h("tr", {}, ["when", "age", "gender", "similarity", "detection", "box"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((s) => {
      const b = s.bbox || { x: s.bbox_x, y: s.bbox_y, width: s.bbox_width, height: s.bbox_height };
      return h("tr", {}, h("td", {}, when(s.detected_at)), h("td", {}, s.age == null ? "–" : Math.round(s.age)),
        h("td", {}, s.gender ? `${s.gender}${s.gender_confidence != null ? " " + pct(s.gender_confidence) : ""}` : "–"),
        h("td", {}, s.similarity == null ? "–" : Number(s.similarity).toFixed(3)),
        h("td", {}, s.confidence == null ? "–" : Number(s.confidence).toFixed(2)),
        h("td", {}, b.x == null ? "–" : `${b.x},${b.y} ${b.width}×${b.height}`));
    })))) : h("p", { class: "muted" }, "No sightings."),
  total > PAGE ? h("div", { class: "pager" },
    h("button", { type: "button", disabled: offset === 0, onclick: () => loadSightings(id, Math.max(0, offset - PAGE)) }, "← Newer"),
    h("span", {}, `${offset + 1}–${offset + rows.length} of ${total}`),
    h("button", { type: "button", disabled: offset + rows.length >= total, onclick: () => loadSightings(id, offset + PAGE) }, "Older →")) : null));
}

// ---------------------------------------------------------------- Dashboard
function barChart(series, title, fmt) {
  const W = 720, H = 180, pad = 24, max = Math.max(1, ...series.buckets.map((b) => b.count));
  const bw = (W - pad) / series.buckets.length;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H + 20}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `${title}: ${series.buckets.reduce((s, b) => s + b.count, 0)} detections in all, at most ${max} in one ${series.bucket}`);
  svg.classList.add("chart");
  const el = (tag, attrs, text) => {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  el("text", { x: 0, y: 12, class: "axis" }, String(max));
  el("line", { x1: pad, y1: H, x2: W, y2: H, class: "base" });
  series.buckets.forEach((b, i) => {
    const bh = (b.count / max) * (H - 20);
    const r = el("rect", { x: pad + i * bw + 1, y: H - bh, width: Math.max(1, bw - 2), height: bh, class: "bar" });
    const t = document.createElementNS("http://www.w3.org/2000/svg", "title");
    t.textContent = `${fmt(b.start)}: ${b.count}`;
    r.append(t);
    if (i % Math.ceil(series.buckets.length / 8) === 0) el("text", { x: pad + i * bw, y: H + 16, class: "axis" }, fmt(b.start));
  });
  return h("figure", {}, h("figcaption", {}, title), svg);
}

async function renderDashboard() {
  view().replaceChildren(h("h1", {}, "Dashboard"),
    h("button", { type: "button", id: "refresh", onclick: () => renderDashboard() }, "Refresh"),
    h("div", { id: "dash" }, h("p", { class: "muted" }, "Loading…")));
  const [stats, day, month, health] = await Promise.allSettled([
    api("/stats"), api("/stats/detections?window=24h"), api("/stats/detections?window=30d"),
    api("/health", { okStatuses: [503] })]);
  const parts = [];
  for (const r of [stats, day, month, health]) if (r.status === "rejected") showError(r.reason);
  if (stats.status === "fulfilled") {
    const s = stats.value;
    parts.push(h("div", { class: "figures", id: "stats-figures" },
      [["known people", s.known_faces], ["unknown people", s.unknown_faces], ["detections", s.total_detections],
        ["detections, last 24 h", s.recent_detections_24h]].map(([k, v]) =>
        h("div", { class: "figure" }, h("span", { class: "value" }, v), h("span", { class: "what" }, k)))),
    h("p", { class: "muted" }, `as of ${when(s.last_updated)}`));
  }
  const hour = (s) => new Date(s + "Z").toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const date = (s) => new Date(s + "Z").toLocaleDateString([], { month: "short", day: "numeric" });
  const charts = h("div", { class: "charts" });
  if (day.status === "fulfilled") charts.append(barChart(day.value, "Detections per hour, last 24 h", hour));
  if (month.status === "fulfilled") charts.append(barChart(month.value, "Detections per day, last 30 days", date));
  parts.push(charts);
  if (stats.status === "fulfilled") {
    const top = stats.value.top_unknown_faces;
    parts.push(h("section", {}, h("h2", {}, "Top unknown people"), top.length ? h("div", { class: "table-wrap" },
      h("table", { id: "top-unknowns" }, h("thead", {}, h("tr", {}, ["face", "person", "detections", "last seen"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, top.map((u) => h("tr", {},
          h("td", {}, crop(`/persons/${encodeURIComponent(u.person_id)}/crop`, `Face of ${u.person_id}`)),
          h("td", {}, h("a", { href: `#/person/${encodeURIComponent(u.person_id)}` }, u.person_id)),
          h("td", {}, u.detection_count), h("td", {}, when(u.last_seen))))))) : h("p", { class: "muted" }, "None yet.")));
  }
  if (health.status === "fulfilled") {
    const hl = health.value;
    parts.push(h("section", { id: "health" }, h("h2", {}, "Health ", h("span", { class: `badge ${hl.status}`, id: "health-status" }, hl.status)),
      h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "service"), h("th", { scope: "col" }, "up"))),
        h("tbody", {}, Object.entries(hl.services).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", { class: v ? "ok" : "bad" }, v ? "yes" : "no")))))),
      h("h2", {}, "Models"),
      h("div", { class: "table-wrap" }, h("table", { id: "models" }, h("thead", {}, h("tr", {}, ["model", "ready", "Triton version", "MLflow version"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, Object.entries(hl.models || {}).map(([k, m]) => h("tr", {}, h("td", {}, k),
          h("td", { class: m.ready ? "ok" : "bad" }, m.ready ? "yes" : "no"), h("td", {}, m.version ?? "–"), h("td", {}, m.mlflow_version ?? "–"))))))));
  }
  $("#dash").replaceChildren(...parts);
}

// ---------------------------------------------------------------- routing
function route() {
  const hash = location.hash || "#/analyze";
  const [, page, arg] = hash.match(/^#\/([^/]*)\/?(.*)$/) || [null, "analyze", ""];
  for (const a of document.querySelectorAll("nav a")) {
    const active = a.dataset.page === page || (page === "person" && a.dataset.page === "people");
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  const pages = { analyze: renderAnalyze, people: renderPeople, dashboard: renderDashboard,
    person: () => renderPerson(decodeURIComponent(arg)) };
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · Face Analytics`;
  Promise.resolve((pages[page] || renderAnalyze)()).catch(showError);
}

window.addEventListener("hashchange", () => {
  clearError();
  if (Date.now() - noticeAt > 1500) $("#notice").hidden = true;  // keep a notice that led here
  route();
  view().focus({ preventScroll: true });
});
$("#error-close").addEventListener("click", clearError);
setupKeyDialog();
setupFaceDialog();
route();
