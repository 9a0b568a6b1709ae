"use strict";
// The overlay's user units are the frame's pixels, so labels keep their
// shape; lanes are stored normalised (0–1).
const state = { config: null, cameras: [], selected: null, draft: null, w: 1000, h: 562 };
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// A change's answer: the agent's JSON, or the text of a refusal (a
// read-only token, another page's request) so the technician reads why.
async function answerOf(r) {
  const text = await r.text().catch(() => "");
  try { return JSON.parse(text); } catch (_) { return { ok: false, error: "HTTP " + r.status + ": " + text.trim() }; }
}

async function getJson(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function setStatus(text, ok) {
  const s = $("status");
  s.textContent = text;
  s.className = ok === undefined ? "" : ok ? "ok" : "bad";
}

async function loadConfig() {
  state.config = await getJson("/api/config");
  $("agent").textContent = state.config.agent_id + " · " + state.config.site;
  renderThresholds();
  drawLanes();
}

async function loadCameras() {
  state.cameras = await getJson("/api/cameras");
  const body = $("cameras").tBodies[0];
  body.replaceChildren();
  for (const c of state.cameras) {
    const tr = el("tr", undefined, "camera" + (c.camera === state.selected ? " selected" : ""));
    tr.dataset.camera = c.camera;
    const name = el("td");
    name.append(el("div", c.name || c.camera), el("div", c.camera, "muted"));
    if (c.last_error) name.append(el("div", c.last_error, "error"));
    tr.append(name, el("td", c.state, "state-" + c.state), el("td", c.fps !== undefined ? Number(c.fps).toFixed(1) : ""),
      el("td", c.reconnects ?? ""));
    tr.addEventListener("click", () => select(c.camera));
    body.append(tr);
  }
  if (!state.selected && state.cameras.length) select(state.cameras[0].camera);
}

async function loadEvents() {
  const events = await getJson("/api/events");
  const body = $("events").tBodies[0];
  body.replaceChildren();
  for (const e of events.slice(0, 20)) {
    const at = (e.updated_at || "").replace("T", " ").replace(/\.\d+Z$/, "Z");
    const tr = el("tr");
    body.append(tr);
    tr.append(el("td", at), el("td", e.kind), el("td", e.type), el("td", e.camera?.id ?? ""), el("td", e.zone ?? ""));
  }
  if (!events.length) {
    const tr = el("tr");
    tr.append(Object.assign(el("td", "no events yet", "muted"), { colSpan: 5 }));
    body.append(tr);
  }
}

function select(id) {
  state.selected = id;
  state.draft = null;
  updateButtons();
  for (const tr of document.querySelectorAll("tr.camera")) tr.classList.toggle("selected", tr.dataset.camera === id);
  const cam = state.cameras.find((c) => c.camera === id);
  $("camera-title").textContent = (cam?.name || id) + " (" + id + ")";
  refreshSnapshot();
  drawLanes();
  renderThresholds();
}

function refreshSnapshot() {
  if (!state.selected) return;
  $("snapshot").src = "/api/cameras/" + encodeURIComponent(state.selected) + "/snapshot.jpg?t=" + Date.now();
}

function cameraConfig() {
  return state.config?.cameras.find((c) => c.id === state.selected);
}

function points(poly) {
  return poly.map(([x, y]) => (x * state.w).toFixed(1) + "," + (y * state.h).toFixed(1)).join(" ");
}

function drawLanes() {
  const o = $("overlay");
  o.replaceChildren();
  const cam = cameraConfig();
  for (const lane of cam?.lanes ?? []) {
    o.append(svg("polygon", { points: points(lane.polygon), class: "lane", "vector-effect": "non-scaling-stroke" }));
    const [x, y] = lane.polygon[0];
    const label = svg("text", { x: x * state.w + 6, y: y * state.h + 16, class: "lane-label" });
    label.textContent = lane.name + " · " + lane.dwell_s + " s";
    o.append(label);
  }
  if (state.draft) {
    const shape = state.draft.length >= 3 ? "polygon" : "polyline";
    o.append(svg(shape, { points: points(state.draft), class: "draft", "vector-effect": "non-scaling-stroke" }));
    for (const [x, y] of state.draft) o.append(svg("circle", { cx: x * state.w, cy: y * state.h, r: 5, class: "vertex" }));
  }
}

function updateButtons() {
  const drawing = state.draft !== null;
  $("overlay").classList.toggle("drawing", drawing);
  $("undo").disabled = !drawing || !state.draft.length;
  $("clear").disabled = !drawing;
  $("save").disabled = !drawing || state.draft.length < 3;
  $("draw").disabled = drawing || !state.selected;
}

$("snapshot").addEventListener("load", () => {
  const img = $("snapshot");
  if (img.naturalWidth && (img.naturalWidth !== state.w || img.naturalHeight !== state.h)) {
    state.w = img.naturalWidth;
    state.h = img.naturalHeight;
    $("overlay").setAttribute("viewBox", "0 0 " + state.w + " " + state.h);
    drawLanes();
  }
});

$("draw").addEventListener("click", () => {
  state.draft = [];
  setStatus("Click the lane's corners on the picture.");
  updateButtons();
  drawLanes();
});
$("undo").addEventListener("click", () => { state.draft.pop(); updateButtons(); drawLanes(); });
$("clear").addEventListener("click", () => { state.draft = null; setStatus(""); updateButtons(); drawLanes(); });
$("overlay").addEventListener("click", (ev) => {
  if (state.draft === null) return;
  const r = $("overlay").getBoundingClientRect();
  const x = Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width));
  const y = Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height));
  state.draft.push([Math.round(x * 1000) / 1000, Math.round(y * 1000) / 1000]);
  setStatus(state.draft.length + " point(s)" + (state.draft.length < 3 ? "; at least 3 make a lane" : ""));
  updateButtons();
  drawLanes();
});
$("lane-form").addEventListener("submit", (ev) => ev.preventDefault());
$("save").addEventListener("click", async () => {
  const body = {
    name: $("lane-name").value.trim(),
    polygon: state.draft,
    classes: $("lane-classes").value.split(",").map((s) => s.trim()).filter(Boolean),
    dwell_s: Number($("lane-dwell").value),
    cue: $("lane-cue").value,
  };
  setStatus("saving…");
  try {
    const r = await fetch("/api/cameras/" + encodeURIComponent(state.selected) + "/lanes", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await answerOf(r);
    if (!answer.ok) { setStatus("not saved: " + answer.error, false); return; }
    state.draft = null;
    updateButtons();
    await loadConfig();
    setStatus("saved lane " + body.name + " (in force now, no stream restart)", true);
  } catch (e) {
    setStatus("not saved: " + e.message, false);
  }
});

async function setReference(camera, lane) {
  setStatus("taking the next frame as the clear " + lane + "…");
  try {
    const r = await fetch("/api/cameras/" + encodeURIComponent(camera) + "/lanes/" + encodeURIComponent(lane) + "/reference", { method: "POST" });
    const answer = await answerOf(r);
    if (!answer.ok) { setStatus("reference not set: " + answer.error, false); return; }
    setStatus("lane " + lane + " is clear now: its reference is the frame just taken", true);
  } catch (e) {
    setStatus("reference not set: " + e.message, false);
  }
}

function show(v) {
  if (typeof v === "number") return String(Number(v.toPrecision(4)));
  return typeof v === "object" ? JSON.stringify(v) : v;
}

function row(table, key, value) {
  const tr = el("tr");
  tr.append(el("td", key), el("td", show(value)));
  table.append(tr);
}

function renderThresholds() {
  const c = state.config;
  const div = $("thresholds");
  // Rebuilt every refresh: keep what the user opened or closed.
  const open = [...div.querySelectorAll("details")].map((d) => d.open);
  div.replaceChildren();
  if (!c) return;
  const t = el("table");
  row(t, "detector.score_threshold", c.detector.score_threshold);
  row(t, "detector.fps", c.detector.fps);
  const g = c.detector.motion_gate;
  row(t, "detector.motion_gate", g.enabled
    ? "on: runs when " + g.min_changed * 100 + " % of the frame changed by > " + g.pixel_delta +
      " levels, and every " + g.full_check_s + " s regardless"
    : "off: runs on every analysed frame");
  row(t, "detector model", c.detector.precision + " on " + c.detector.execution_provider + ", " +
    c.detector.sessions + " session(s) × " + c.detector.threads + " thread(s), batch " + c.detector.batch);
  for (const [k, v] of Object.entries(c.alerts)) row(t, "alerts." + k, v);
  div.append(t);
  const cam = cameraConfig();
  if (cam) row(t, "cameras." + cam.id + ".decode", cam.decode === "keyframes" ? "keyframes only" : "every frame");
  if (cam) {
    const lanes = el("details");
    lanes.open = true;
    lanes.append(el("summary", "lanes of " + cam.id));
    const lt = el("table");
    for (const l of cam.lanes) {
      row(lt, l.name, "dwell " + l.dwell_s + " s, clear " + l.clear_s + " s, cue " + l.cue +
        (l.cue === "objects" ? "" : " (min occupancy " + l.min_occupancy + ")") + ", classes " + l.classes.join(", "));
      if (l.cue !== "objects") {
        // "The lane is clear now": the next frame becomes its reference.
        const b = el("button", "Lane is clear now");
        b.type = "button";
        b.dataset.lane = l.name;
        b.addEventListener("click", () => setReference(cam.id, l.name));
        lt.lastChild.lastChild.append(" ", b);
      }
    }
    if (!cam.lanes.length) row(lt, "(none)", "");
    lanes.append(lt);
    div.append(lanes);
    const falls = el("details");
    falls.append(el("summary", "falls on " + cam.id + (cam.falls.enabled ? "" : " (off)")));
    const ft = el("table");
    for (const [k, v] of Object.entries(cam.falls)) row(ft, k, v);
    falls.append(ft);
    div.append(falls);
  }
  if (c.fire) {
    const fire = el("details");
    fire.append(el("summary", "fire and smoke"));
    const ft = el("table");
    for (const kind of ["fire", "smoke"]) for (const [k, v] of Object.entries(c.fire[kind])) row(ft, kind + "." + k, v);
    row(ft, "fps", c.fire.fps);
    fire.append(ft);
    div.append(fire);
  }
  if (open.length) div.querySelectorAll("details").forEach((d, i) => { if (i < open.length) d.open = open[i]; });
}

async function tick() {
  try {
    // The config too: a reload or a centre's `set` may change the lanes.
    await Promise.all([loadCameras(), loadEvents(), state.draft === null ? loadConfig() : null]);
    if (state.draft === null) refreshSnapshot();
  } catch (e) {
    setStatus("agent unreachable: " + e.message, false);
  }
}

loadConfig().then(tick).catch((e) => setStatus(e.message, false));
setInterval(tick, 2000);
