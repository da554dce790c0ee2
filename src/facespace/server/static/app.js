// facespace web app: People, Verify, Identify, Albums, Attendance. Plain JS, no build step.
//
// The API key never goes into a URL (URLs are written to access logs): it is typed once into the
// password field, kept in the tab's sessionStorage, and sent as the X-API-Key header on every call;
// pictures the API serves (thumbnails, face crops, demo photos) are fetched with it and shown from
// blob URLs. Every error shown is the API's JSON error message.
"use strict";
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const PAGES = ["people", "verify", "identify", "albums", "attendance"];
const KEY_SLOT = "facespace-api-key";
const BOX = "#00ff00", OTHER = "#ff9800", UNKNOWN = "#ff1744";
const params = new URLSearchParams(location.search);

// -- the API ------------------------------------------------------------------------------------
$("key").value = sessionStorage.getItem(KEY_SLOT) || "";
$("key").addEventListener("input", () => sessionStorage.setItem(KEY_SLOT, $("key").value));
$("key").addEventListener("change", () => show(currentPage(), false));
if (!CONFIG.requiresKey) $("keybox").hidden = true;
if (!CONFIG.hasGallery) $("nogallery").hidden = false;

function headers() { const k = $("key").value; return k ? {"X-API-Key": k} : {}; }

class ApiFailure extends Error {
  constructor(status, type, message) { super(message); this.status = status; this.type = type; }
}
async function failure(response) {
  let body = {}; try { body = await response.json(); } catch (e) { /* not JSON: say the status */ }
  const e = body && body.error;
  return new ApiFailure(response.status, e ? e.type : "http", e ? e.message : "HTTP " + response.status);
}
async function send(method, url, body) {
  const init = {method, headers: headers()};
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const response = await fetch(url, init);
  if (!response.ok) throw await failure(response);
  return response;
}
async function api(method, url, body) { return (await send(method, url, body)).json(); }
async function fetchBlob(url) { return (await send("GET", url)).blob(); }

function status(el, text, state) { el.textContent = text; el.dataset.status = state; }
function showError(el, e) {
  const hint = e.status === 401 ? " Enter the API key at the top of the page." : "";
  status(el, "Error: " + e.message + hint, "error");
}

// Pictures from the API, shown from blob URLs that are released when their list is drawn again.
const owned = {};
function release(group) { for (const url of owned[group] || []) URL.revokeObjectURL(url); owned[group] = []; }
function picture(group, url, alt) {
  const img = document.createElement("img");
  img.alt = alt; img.width = 72; img.height = 72;
  fetchBlob(url).then((b) => { const u = URL.createObjectURL(b); (owned[group] = owned[group] || []).push(u); img.src = u; })
    .catch(() => { img.alt = alt + " (no picture)"; });
  return img;
}
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const c of children) node.append(c);
  return node;
}
// Each list keeps only its latest load: an answer that arrives after a newer request began is dropped.
const latest = {};
function begin(list) { latest[list] = (latest[list] || 0) + 1; const mine = latest[list]; return () => latest[list] === mine; }
function plural(n, word) { return n + " " + (n === 1 ? word : word === "person" ? "people" : word + "s"); }

// -- pages ---------------------------------------------------------------------------------------
const onShow = {people: loadPeople, albums: loadFolders, attendance: startAttendance};
function currentPage() {
  const page = location.hash.slice(1);
  return PAGES.includes(page) ? page : (CONFIG.hasGallery ? "people" : "verify");
}
function show(page, focus) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.dataset.page !== page;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === page) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (page !== "attendance") stopAttendance();
  if (focus) $("h-" + page).focus();
  if (onShow[page]) onShow[page]();
}
window.addEventListener("hashchange", () => show(currentPage(), true));

function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), {once: true});
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

// -- People ---------------------------------------------------------------------------------------
async function loadPeople() {
  const out = $("people-status");
  if (!CONFIG.hasGallery) { status(out, "No gallery on this server.", "error"); return; }
  status(out, "Loading...", "busy");
  const current = begin("people");
  try {
    const r = await api("GET", "/api/people");
    if (!current()) return;
    renderPeople(r.people);
    status(out, r.people.length ? plural(r.people.length, "person") + " enrolled" : "Nobody is enrolled yet.", "done");
  } catch (e) { showError(out, e); }
  loadTracks();
}
function renderPeople(people) {
  release("people");
  const ul = $("people-list"); ul.innerHTML = "";
  for (const p of people) {
    const who = el("div", {className: "who"}, el("div", {className: "name", textContent: p.name}),
                   el("div", {className: "count", textContent: plural(p.embeddings, "photo")}));
    const rename = el("button", {type: "button", textContent: "Rename", onclick: () => renameForm(who, p.name)});
    rename.setAttribute("aria-label", "Rename " + p.name);
    const remove = el("button", {type: "button", className: "danger", textContent: "Remove",
                                 onclick: () => removePerson(p)});
    remove.setAttribute("aria-label", "Remove " + p.name);
    who.append(el("div", {}, rename, remove));
    const face = p.thumbnail_url ? picture("people", p.thumbnail_url, p.name) : el("div", {className: "noimg"});
    const li = el("li", {className: "person"}, face, who);
    li.dataset.name = p.name; li.dataset.count = p.embeddings;
    ul.append(li);
  }
}
function renameForm(who, name) {
  const input = el("input", {value: name, required: true, maxLength: 200});
  input.setAttribute("aria-label", "New name for " + name);
  const form = el("form", {}, input, el("button", {type: "submit", textContent: "Save"}),
                  el("button", {type: "button", textContent: "Cancel", onclick: loadPeople}));
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      await api("PATCH", "/api/identities/" + encodeURIComponent(name), {name: input.value.trim()});
      await loadPeople(); status($("people-status"), "Renamed " + name + " to " + input.value.trim() + ".", "done");
    } catch (e) { showError($("people-status"), e); }
  };
  input.addEventListener("keydown", (event) => { if (event.key === "Escape") loadPeople(); });
  who.append(form); input.focus(); input.select();
}
async function removePerson(p) {
  if (!await confirmDialog("Remove " + p.name + " and " + plural(p.embeddings, "photo") + " from the gallery?")) return;
  try {
    await api("DELETE", "/api/identities/" + encodeURIComponent(p.name));
    await loadPeople(); status($("people-status"), "Removed " + p.name + ".", "done");
  } catch (e) { showError($("people-status"), e); }
}
$("enrol-form").onsubmit = async (event) => {
  event.preventDefault();
  const out = $("people-status"), name = $("enrol-name").value.trim(), files = $("enrol-files").files;
  if (!name || !files.length) { status(out, "Give a name and choose photos first.", "error"); return; }
  const form = new FormData(); form.append("name", name);
  for (const f of files) form.append("images", f, f.name);
  status(out, "Enrolling " + name + "...", "busy");
  try {
    const r = await api("POST", "/api/identities", form);
    const skipped = r.skipped.length ? "; skipped " + r.skipped.map((s) => s.source + " (" + s.reason + ")").join(", ") : "";
    $("enrol-form").reset();
    await loadPeople();
    status(out, "Enrolled " + r.name + ": " + plural(r.added, "photo") + " added" +
           (r.duplicates ? ", " + r.duplicates + " already there" : "") + skipped + ".", "done");
  } catch (e) { showError(out, e); }
};

async function loadTracks() {
  const out = $("tracks-status"), ul = $("tracks-list"), current = begin("tracks");
  try {
    const r = await api("GET", "/api/attendance/tracks");
    if (!current()) return;
    release("tracks"); ul.innerHTML = "";
    for (const t of r.tracks) ul.append(trackItem(t));
    status(out, r.tracks.length ? plural(r.tracks.length, "unknown track") + ": name one to enrol it."
                                : "No unknown people seen.", "done");
  } catch (e) {
    if (e.status === 404 && ["no_attendance", "http_error"].includes(e.type)) status(out, "Attendance is not on: start the server with --attendance attendance.db.", "idle");
    else showError(out, e);
  }
}
function trackItem(t) {
  const input = el("input", {required: true, maxLength: 200, placeholder: "name"});
  input.setAttribute("aria-label", "Name for track " + t.id);
  const form = el("form", {}, input, el("button", {type: "submit", textContent: "Enrol"}));
  form.onsubmit = async (event) => {
    event.preventDefault();
    try {
      await api("POST", "/api/attendance/tracks/" + encodeURIComponent(t.id) + "/enrol", {name: input.value.trim()});
      await loadPeople(); status($("people-status"), "Enrolled track " + t.id + " as " + input.value.trim() + ".", "done");
    } catch (e) { showError($("tracks-status"), e); }
  };
  const who = el("div", {className: "who"}, el("div", {className: "name", textContent: "Track " + t.id}),
                 el("div", {className: "count", textContent: plural(t.frames, "frame") + ", " + when(t.first_seen) + " to " + when(t.last_seen)}), form);
  const face = t.thumbnail_url ? picture("tracks", t.thumbnail_url, "Track " + t.id) : el("div", {className: "noimg"});
  const li = el("li", {className: "person"}, face, who); li.dataset.track = t.id;
  return li;
}

// -- Verify and Identify --------------------------------------------------------------------------
function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const img = new Image(); img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image")); img.src = URL.createObjectURL(blob);
  });
}
async function draw(canvas, blob, boxes) {
  const img = await loadImage(blob);
  const scale = Math.min(1, 460 / img.naturalWidth, 460 / img.naturalHeight);
  canvas.width = Math.round(img.naturalWidth * scale); canvas.height = Math.round(img.naturalHeight * scale);
  const ctx = canvas.getContext("2d"); ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  URL.revokeObjectURL(img.src);
  ctx.lineWidth = 4; ctx.font = "bold 15px sans-serif";
  const placed = [];  // labels go above their box, or below it where another label is already
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.box.map((v) => Math.round(v * scale));
    ctx.strokeStyle = b.colour; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (!b.label) continue;
    const w = ctx.measureText(b.label).width + 8, x = Math.max(0, Math.min(x1, canvas.width - w));
    let y = Math.max(y1 - 20, 0);
    const overlaps = (y) => placed.some((r) => x < r.x + r.w && r.x < x + w && y < r.y + 20 && r.y < y + 20);
    if (overlaps(y)) y = Math.min(y2 + 2, canvas.height - 20);
    placed.push({x, y, w});
    ctx.fillStyle = b.colour; ctx.fillRect(x, y, w, 20); ctx.fillStyle = "#000"; ctx.fillText(b.label, x + 4, y + 15);
  }
}
function number(v) { return typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : String(v); }
function described(v) {  // a number, or an object of numbers: {yaw: 3.2, pitch: ...}
  if (v === null || typeof v !== "object") return number(v);
  return Object.entries(v).filter(([, x]) => typeof x !== "object").map(([k, x]) => k + " " + number(x)).join(", ");
}
function faceDetails(f) {  // quality and pose appear when the API gives them
  let text = "detector score " + number(f.score);
  if (f.quality !== undefined && f.quality !== null) text += "; quality " + described(f.quality);
  if (f.pose !== undefined && f.pose !== null) text += "; pose " + described(f.pose);
  return text;
}
function listFaces(ul, lines) {
  ul.innerHTML = "";
  for (const line of lines) ul.append(el("li", {textContent: line}));
}
const same = (f, g) => JSON.stringify(f.box) === JSON.stringify(g.box);
async function verify(blobA, blobB) {
  const out = $("result");
  status(out, "Verifying...", "busy");
  const form = new FormData(); form.append("a", blobA, blobA.name || "a"); form.append("b", blobB, blobB.name || "b");
  try {
    const r = await api("POST", "/api/verify", form);
    const mark = (side) => r.faces[side].all.map((f) => ({box: f.box, colour: same(f, r.faces[side].chosen) ? BOX : OTHER,
      label: same(f, r.faces[side].chosen) ? side.toUpperCase() : ""}));
    await draw($("canvasA"), blobA, mark("a")); await draw($("canvasB"), blobB, mark("b"));
    const p = r.probability !== undefined ? ", p(same) " + r.probability.toFixed(3) : "";
    status(out, (r.same ? "Same person" : "Different people") + " (distance " + r.distance.toFixed(3) +
           ", threshold " + r.threshold.toFixed(3) + p + ")", "done");
    out.dataset.decision = r.decision;
    listFaces($("verify-faces"), ["a", "b"].map((side) => side.toUpperCase() + ": " + plural(r.faces[side].all.length, "face") +
      "; chosen: " + faceDetails(r.faces[side].chosen)));
  } catch (e) { showError(out, e); }
}
async function identify(blob) {
  const out = $("identify-status");
  status(out, "Identifying...", "busy");
  const form = new FormData(); form.append("image", blob, blob.name || "photo");
  try {
    const r = await api("POST", "/api/identify", form);
    await draw($("canvasI"), blob, r.faces.map((f) => ({box: f.box, colour: f.known ? BOX : UNKNOWN,
      label: f.identity + (f.known ? " " + (100 * f.probability).toFixed(0) + "%" : "")})));
    status(out, r.faces.length ? "Found " + r.faces.map((f) => f.identity).join(", ") : "No face found", "done");
    out.dataset.names = r.faces.map((f) => f.identity).join(",");
    listFaces($("identify-faces"), r.faces.map((f) => f.identity + ": distance " + (f.distance === null ? "-" : f.distance.toFixed(3)) +
      "; " + faceDetails(f) + "; candidates " + f.candidates.map((c) => c.name + " " + c.distance.toFixed(2)).join(", ")));
  } catch (e) { showError(out, e); }
}
$("verify-form").onsubmit = (event) => {
  event.preventDefault();
  const a = $("fileA").files[0], b = $("fileB").files[0];
  if (!a || !b) { status($("result"), "Choose two photos first.", "error"); return; }
  verify(a, b);
};
$("identify-form").onsubmit = (event) => {
  event.preventDefault();
  const f = $("fileI").files[0];
  if (!f) { status($("identify-status"), "Choose a photo first.", "error"); return; }
  identify(f);
};
async function demo(mode) {  // ?demo=verify or ?demo=identify: the server's demo photos, no clicking
  const out = mode === "verify" ? $("result") : $("identify-status");
  try {
    if (mode === "verify") await verify(await fetchBlob("/demo/0"), await fetchBlob("/demo/1"));
    else if (mode === "identify") await identify(await fetchBlob("/demo/0"));
  } catch (e) { showError(out, e); }
}

// -- Albums ----------------------------------------------------------------------------------------
async function loadFolders() {
  if (!CONFIG.albums) return;
  const select = $("album-folders");
  $("album-folder").hidden = false;
  try {
    const r = await api("GET", "/api/albums/folders");
    const chosen = select.value; select.innerHTML = "";
    for (const f of r.folders) {
      select.append(el("option", {value: f.folder, textContent: (f.folder || "(the albums folder)") + " - " + plural(f.images, "photo")}));
    }
    if (chosen) select.value = chosen;
  } catch (e) { showError($("albums-status"), e); }
}
async function cluster(request, what) {
  const out = $("albums-status");
  status(out, "Finding and grouping the faces of " + what + "...", "busy");
  try { renderAlbum(await request()); } catch (e) { showError(out, e); }
}
$("album-upload").onsubmit = (event) => {
  event.preventDefault();
  const files = $("album-files").files;
  if (!files.length) { status($("albums-status"), "Choose photos first.", "error"); return; }
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  cluster(() => api("POST", "/api/albums", form), plural(files.length, "photo"));
};
$("album-folder").onsubmit = (event) => {
  event.preventDefault();
  const folder = $("album-folders").value;
  cluster(() => api("POST", "/api/albums/folder", {folder}), "folder " + (folder || "."));
};
function renderAlbum(album) {
  release("clusters");
  const box = $("clusters"); box.innerHTML = "";
  const skipped = album.skipped.length ? " Not read: " + album.skipped.map((s) => s.filename + " (" + s.reason + ")").join(", ") + "." : "";
  status($("albums-status"), plural(album.faces, "face") + " in " + plural(album.clusters.length, "group") + "." + skipped, "done");
  album.clusters.forEach((faces, i) => {
    const grid = el("div", {className: "grid"});
    for (const f of faces) grid.append(picture("clusters", f.crop_url, f.filename));
    const input = el("input", {required: true, maxLength: 200, placeholder: "name"});
    input.setAttribute("aria-label", "Name for group " + (i + 1));
    const done = el("div", {className: "status", role: "status"}); done.dataset.status = "idle";
    const form = el("form", {}, input, el("button", {type: "submit", textContent: "Enrol this group"}));
    form.onsubmit = async (event) => {
      event.preventDefault();
      const name = input.value.trim();
      try {
        const r = await api("POST", "/api/albums/" + album.album + "/clusters/" + i + "/enrol", {name});
        status(done, "Enrolled as " + r.name + ": " + plural(r.added, "face") + " added" +
               (r.duplicates ? ", " + r.duplicates + " already there" : "") + ".", "done");
      } catch (e) { showError(done, e); }
    };
    const card = el("section", {className: "cluster"}, el("h3", {textContent: "Group " + (i + 1) + ": " + plural(faces.length, "face")}),
                    grid, form, done);
    card.dataset.cluster = i; card.setAttribute("aria-label", "Group " + (i + 1));
    box.append(card);
  });
}

// -- Attendance ----------------------------------------------------------------------------------
const attendance = {events: new Map(), last: 0, timer: null, current: () => false};
function today() {
  const d = new Date(), pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
}
function when(v) {  // seconds since 1970, or an ISO time: the time of day, in the browser's zone
  if (v === null || v === undefined) return "-";
  const d = typeof v === "number" ? new Date(v < 1e12 ? v * 1000 : v) : new Date(v);
  return isNaN(d) ? String(v) : d.toLocaleTimeString([], {hour12: false});
}
function attendanceQuery(extra) {
  const q = new URLSearchParams();
  const person = $("att-person").value.trim(), day = $("att-day").value;
  if (person) q.set("person", person);
  if (day) q.set("day", day);
  for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
  return q.toString();
}
function renderAttendance(fresh) {
  const body = $("attendance-table").tBodies[0]; body.innerHTML = "";
  const rows = [...attendance.events.values()].sort((a, b) => (a.first_seen < b.first_seen ? 1 : -1));
  for (const e of rows) {
    const tr = el("tr", {}, el("td", {textContent: e.person}), el("td", {textContent: when(e.first_seen)}),
                  el("td", {textContent: when(e.last_seen)}), el("td", {textContent: e.source || ""}),
                  el("td", {textContent: e.track_id === null || e.track_id === undefined ? "" : String(e.track_id)}));
    tr.dataset.id = e.id;
    if (fresh.has(e.id)) tr.className = "new";
    body.append(tr);
  }
  status($("attendance-status"), rows.length ? plural(rows.length, "event") : "No events for this choice.", "done");
}
function merge(events) {
  const fresh = new Set();
  for (const e of events) {
    if (!attendance.events.has(e.id)) fresh.add(e.id);
    attendance.events.set(e.id, e); attendance.last = Math.max(attendance.last, e.id);
  }
  return fresh;
}
async function loadAttendance() {
  stopAttendance();
  attendance.events = new Map(); attendance.last = 0;
  status($("attendance-status"), "Loading...", "busy");
  const current = attendance.current = begin("attendance");
  try {
    const r = await api("GET", "/api/attendance?" + attendanceQuery());
    if (!current()) return;
    merge(r.events);
    renderAttendance(new Set());
  } catch (e) {
    if (e.status === 404 && ["no_attendance", "http_error"].includes(e.type)) status($("attendance-status"), "Attendance is not on: start the server with --attendance attendance.db.", "error");
    else showError($("attendance-status"), e);
    return;
  }
  if ($("att-live").checked) attendance.timer = setInterval(poll, CONFIG.pollMs || 2000);
}
async function poll() {
  const current = attendance.current;
  try {
    const r = await api("GET", "/api/attendance?" + attendanceQuery({since_id: attendance.last}));
    if (!current()) return;
    const fresh = merge(r.events);
    if (fresh.size) renderAttendance(fresh);
  } catch (e) { showError($("attendance-status"), e); }
}
function stopAttendance() { if (attendance.timer) clearInterval(attendance.timer); attendance.timer = null; }
function startAttendance() {
  if (!$("att-day").value) $("att-day").value = today();
  if (CONFIG.hasGallery) {
    api("GET", "/api/people").then((r) => {
      const list = $("att-people"); list.innerHTML = "";
      for (const p of r.people) list.append(el("option", {value: p.name}));
    }).catch(() => {});
  }
  loadAttendance();
}
$("attendance-filter").onsubmit = (event) => { event.preventDefault(); loadAttendance(); };
$("att-live").onchange = () => { if ($("att-live").checked) loadAttendance(); else stopAttendance(); };
$("att-csv").onclick = async () => {
  try {
    const blob = await fetchBlob("/api/attendance.csv?" + attendanceQuery());
    const a = el("a", {href: URL.createObjectURL(blob), download: "attendance-" + ($("att-day").value || "all") + ".csv"});
    document.body.append(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    status($("attendance-status"), "CSV downloaded.", "done");
  } catch (e) { showError($("attendance-status"), e); }
};

// -- start -----------------------------------------------------------------------------------------
if (params.get("demo") && CONFIG.demos) {
  const mode = params.get("demo");
  show(mode === "verify" ? "verify" : "identify", false); demo(mode);
} else show(currentPage(), false);
