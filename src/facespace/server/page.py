"""The service's one HTML page: upload two photos to verify, or one to identify.

Faces are drawn as boxes on a canvas over each photo, with names (identify)
or the chosen face (verify). ``/?demo=verify`` and ``/?demo=identify`` run
the page on the server's demo images without any clicking (used by the
headless-browser test).

The API key never goes into a URL (URLs are written to access logs): it is typed
into the page's password field, kept in the tab's ``sessionStorage``, and sent as
the ``X-API-Key`` header, the demo images' requests included (fetched, then shown
from blob URLs).
"""

from __future__ import annotations

import json

_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facespace</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
 header{background:#1d2733;color:#fff;padding:.8em 1.5em}header h1{margin:0;font-size:1.3em}
 main{padding:1em 1.5em}fieldset{border:1px solid #ccd;border-radius:6px;margin:0 0 1em;background:#fff}
 legend{font-weight:600}label{margin-right:1em}button{padding:.4em 1.2em;margin-top:.5em}
 #result{font-size:1.2em;margin:.6em 0;min-height:1.5em}#result[data-status=error]{color:#b00020}
 .photos{display:flex;flex-wrap:wrap;gap:12px}canvas{background:#ddd;border-radius:4px;max-width:100%}
 ul#faces{font-family:monospace}
</style></head><body>
<header><h1>facespace</h1></header>
<main>
 <fieldset id="keybox"><legend>API key</legend><input id="key" type="password" size="32" placeholder="X-API-Key" autocomplete="off"></fieldset>
 <fieldset><legend>Verify: are these the same person?</legend>
  <label>Photo A <input id="fileA" type="file" accept="image/*"></label>
  <label>Photo B <input id="fileB" type="file" accept="image/*"></label><br>
  <button id="verify">Verify</button></fieldset>
 <fieldset id="identifybox"><legend>Identify: who is in this photo?</legend>
  <label>Photo <input id="fileI" type="file" accept="image/*"></label><br>
  <button id="identify">Identify</button></fieldset>
 <div id="result" data-status="idle" role="status"></div>
 <div class="photos"><canvas id="canvasA" width="1" height="1"></canvas><canvas id="canvasB" width="1" height="1"></canvas></div>
 <ul id="faces"></ul>
</main>
<script>
const CONFIG = __CONFIG__;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
if (!CONFIG.requiresKey) $("keybox").style.display = "none";
if (!CONFIG.hasGallery) $("identifybox").style.display = "none";
const KEY_SLOT = "facespace-api-key";
$("key").value = sessionStorage.getItem(KEY_SLOT) || "";
$("key").addEventListener("input", () => sessionStorage.setItem(KEY_SLOT, $("key").value));
const BOX = "#00ff00", OTHER = "#ff9800", UNKNOWN = "#ff1744";

function headers() { const k = $("key").value; return k ? {"X-API-Key": k} : {}; }
function status(text, state) { const r = $("result"); r.textContent = text; r.dataset.status = state; }
async function post(url, form) {
  const response = await fetch(url, {method: "POST", body: form, headers: headers()});
  let body; try { body = await response.json(); } catch (e) { body = {}; }
  if (!response.ok) throw new Error((body.error && body.error.message) || ("HTTP " + response.status));
  return body;
}
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
  ctx.lineWidth = 4; ctx.font = "bold 15px sans-serif";
  for (const b of boxes) {
    const [x1, y1, x2, y2] = b.box.map((v) => Math.round(v * scale));
    ctx.strokeStyle = b.colour; ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    if (b.label) {
      const w = ctx.measureText(b.label).width + 8, y = Math.max(y1 - 20, 0);
      ctx.fillStyle = b.colour; ctx.fillRect(x1, y, w, 20); ctx.fillStyle = "#000"; ctx.fillText(b.label, x1 + 4, y + 15);
    }
  }
}
function listFaces(lines) {
  const ul = $("faces"); ul.innerHTML = "";
  for (const line of lines) { const li = document.createElement("li"); li.textContent = line; ul.appendChild(li); }
}
async function verify(blobA, blobB) {
  status("Verifying...", "busy");
  const form = new FormData(); form.append("a", blobA, "a"); form.append("b", blobB, "b");
  try {
    const r = await post("/api/verify", form);
    const mark = (side) => r.faces[side].all.map((f) => ({box: f.box,
      colour: JSON.stringify(f.box) === JSON.stringify(r.faces[side].chosen.box) ? BOX : OTHER,
      label: JSON.stringify(f.box) === JSON.stringify(r.faces[side].chosen.box) ? side.toUpperCase() : ""}));
    await draw($("canvasA"), blobA, mark("a")); await draw($("canvasB"), blobB, mark("b"));
    const p = r.probability !== undefined ? ", p(same) " + r.probability.toFixed(3) : "";
    status((r.same ? "Same person" : "Different people") + " (distance " + r.distance.toFixed(3) +
           ", threshold " + r.threshold.toFixed(3) + p + ")", "done");
    $("result").dataset.decision = r.decision;
    listFaces(["A: " + r.faces.a.all.length + " face(s)", "B: " + r.faces.b.all.length + " face(s)"]);
  } catch (e) { status("Error: " + e.message, "error"); }
}
async function identify(blob) {
  status("Identifying...", "busy");
  const form = new FormData(); form.append("image", blob, "photo");
  try {
    const r = await post("/api/identify", form);
    await draw($("canvasA"), blob, r.faces.map((f) => ({box: f.box, colour: f.known ? BOX : UNKNOWN,
      label: f.identity + (f.known ? " " + (100 * f.probability).toFixed(0) + "%" : "")})));
    $("canvasB").width = 1; $("canvasB").height = 1;
    status(r.faces.length ? "Found " + r.faces.map((f) => f.identity).join(", ") : "No face found", "done");
    $("result").dataset.names = r.faces.map((f) => f.identity).join(",");
    listFaces(r.faces.map((f) => f.identity + "  distance " + (f.distance === null ? "-" : f.distance.toFixed(3)) +
      "  candidates: " + f.candidates.map((c) => c.name + " " + c.distance.toFixed(2)).join(", ")));
  } catch (e) { status("Error: " + e.message, "error"); }
}
$("verify").onclick = () => {
  const a = $("fileA").files[0], b = $("fileB").files[0];
  if (!a || !b) { status("Choose two photos first.", "error"); return; } verify(a, b);
};
$("identify").onclick = () => {
  const f = $("fileI").files[0]; if (!f) { status("Choose a photo first.", "error"); return; } identify(f);
};
async function demo(mode) {
  const get = async (i) => {
    const r = await fetch("/demo/" + i, {headers: headers()});
    if (!r.ok) throw new Error("demo image " + i + ": HTTP " + r.status); return r.blob();
  };
  try {
    if (mode === "verify") await verify(await get(0), await get(1));
    else if (mode === "identify") await identify(await get(0));
  } catch (e) { status("Error: " + e.message, "error"); }
}
if (params.get("demo") && CONFIG.demos) demo(params.get("demo"));
</script></body></html>
"""


def render_page(requires_key: bool, demos: int, has_gallery: bool) -> str:
    config = json.dumps({"requiresKey": requires_key, "demos": demos, "hasGallery": has_gallery})
    return _PAGE.replace("__CONFIG__", config)
