// The facenet web page: identify the faces of a photo, enrol a face by clicking it, manage
// the gallery's subjects, compare two photos. Plain JavaScript over the JSON API; the key
// stays in this browser (localStorage).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { key: localStorage.getItem("facenet-key") || "", image: null, blob: null, faces: [] };

function status(text, error) {
  const s = $("status");
  s.textContent = text || "";
  s.className = error ? "error" : "";
}

async function api(method, path, body) {
  const headers = { "x-api-key": state.key };
  let payload = body;
  if (body && !(body instanceof FormData)) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch("/api/v1" + path, { method, headers, body: payload });
  const data = await r.json().catch(() => ({ error: "bad_response", detail: r.statusText }));
  if (!r.ok) throw new Error(data.detail || data.error || r.statusText);
  return data;
}

function form(blob, name) {
  const f = new FormData();
  f.append("file", blob, name || "photo.jpg");
  return f;
}

// ---- key ----
$("key").value = state.key;
$("key-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  state.key = $("key").value.trim();
  localStorage.setItem("facenet-key", state.key);
  try {
    await loadSubjects();
    $("key-status").textContent = "key accepted";
    status("");
    loadPeople().catch((err) => status(err.message, true));
  } catch (err) {
    $("key-status").textContent = "";
    status(err.message, true);
  }
});

// ---- photo in: file, drop, camera ----
$("photo").addEventListener("change", () => {
  const f = $("photo").files[0];
  if (f) identify(f, f.name);
});
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  const f = e.dataTransfer.files[0];
  if (f) identify(f, f.name);
});
if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
  $("camera").hidden = false;
  $("camera").addEventListener("click", async () => {
    try {
      $("video").srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
      $("video").hidden = false;
      $("snap").hidden = false;
    } catch (err) {
      status("camera: " + err.message, true);
    }
  });
  $("snap").addEventListener("click", () => {
    const v = $("video");
    const c = document.createElement("canvas");
    c.width = v.videoWidth;
    c.height = v.videoHeight;
    c.getContext("2d").drawImage(v, 0, 0);
    c.toBlob((b) => identify(b, "camera.jpg"), "image/jpeg", 0.92);
    v.srcObject.getTracks().forEach((t) => t.stop());
    v.hidden = true;
    $("snap").hidden = true;
  });
}

function loadImage(blob) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this image"));
    img.src = URL.createObjectURL(blob);
  });
}

async function identify(blob, name) {
  status("identifying…");
  $("enrol-form").hidden = true;
  try {
    const data = await api("POST", "/identify?top_k=3", form(blob, name));
    state.blob = blob;
    state.image = await loadImage(blob).catch(() => null);
    state.faces = data.images[0].faces;
    $("threshold").textContent = `threshold ${data.threshold.toFixed(3)} (${data.threshold_detail}); ${data.unit}`;
    draw();
    list();
    status(`${state.faces.length} face(s) found`);
  } catch (err) {
    status(err.message, true);
  }
}

function label(f) {
  return f.distance == null ? f.subject : `${f.subject} (${f.distance.toFixed(3)})`;
}

function draw() {
  const c = $("canvas");
  const img = state.image;
  if (!img) { c.width = c.height = 0; return; }
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const g = c.getContext("2d");
  g.drawImage(img, 0, 0);
  const lw = Math.max(2, Math.round(c.width / 300));
  g.font = `${Math.max(14, Math.round(c.width / 40))}px system-ui, sans-serif`;
  state.faces.forEach((f) => {
    const [x1, y1, x2, y2] = f.box;
    const colour = f.known ? "#1b7f3b" : "#b3261e";
    g.lineWidth = lw;
    g.strokeStyle = colour;
    g.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = label(f);
    const h = parseInt(g.font, 10) + 6;
    const w = g.measureText(text).width + 8;
    const ty = y1 > h ? y1 - h : y2;
    g.fillStyle = colour;
    g.fillRect(x1, ty, w, h);
    g.fillStyle = "#fff";
    g.fillText(text, x1 + 4, ty + h - 6);
  });
}

function list() {
  const ol = $("faces");
  ol.replaceChildren();
  state.faces.forEach((f, i) => {
    const li = document.createElement("li");
    li.className = f.known ? "known" : "unknown";
    const name = document.createElement("span");
    name.className = "face-name";
    name.textContent = f.subject;
    li.append(name);
    const rest = f.candidates.map((c) => `${c.subject} ${c.distance.toFixed(3)}`).join(", ");
    const cohort = f.cohort_score == null ? "" : `, cohort score ${f.cohort_score.toFixed(3)}`;
    li.append(document.createTextNode(f.distance == null ? " (empty gallery)" : ` distance ${f.distance.toFixed(3)}${cohort}; nearest: ${rest}`));
    li.dataset.index = i;
    li.addEventListener("click", () => startEnrol(i));
    ol.append(li);
  });
}

$("canvas").addEventListener("click", (e) => {
  const c = $("canvas");
  const r = c.getBoundingClientRect();
  const x = (e.clientX - r.left) * (c.width / r.width);
  const y = (e.clientY - r.top) * (c.height / r.height);
  const i = state.faces.findIndex((f) => x >= f.box[0] && x <= f.box[2] && y >= f.box[1] && y <= f.box[3]);
  if (i >= 0) startEnrol(i);
});

// ---- enrol a clicked face: its region (with a margin) is cropped here and sent ----
function startEnrol(i) {
  state.enrol = i;
  $("enrol-index").textContent = `${i + 1}`;
  $("enrol-name").value = state.faces[i].known ? state.faces[i].subject : "";
  $("enrol-form").hidden = false;
  $("enrol-name").focus();
}

function cropFace(f) {
  const img = state.image;
  const [x1, y1, x2, y2] = f.box;
  const m = 0.6 * Math.max(x2 - x1, y2 - y1);
  const sx = Math.max(0, Math.floor(x1 - m)), sy = Math.max(0, Math.floor(y1 - m));
  const ex = Math.min(img.naturalWidth, Math.ceil(x2 + m)), ey = Math.min(img.naturalHeight, Math.ceil(y2 + m));
  const c = document.createElement("canvas");
  c.width = ex - sx;
  c.height = ey - sy;
  c.getContext("2d").drawImage(img, sx, sy, c.width, c.height, 0, 0, c.width, c.height);
  return new Promise((resolve) => c.toBlob(resolve, "image/jpeg", 0.95));
}

$("enrol-cancel").addEventListener("click", () => { $("enrol-form").hidden = true; });
$("enrol-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("enrol-name").value.trim();
  const f = state.faces[state.enrol];
  if (!name || !f) return;
  try {
    const blob = state.image ? await cropFace(f) : state.blob;
    const r = await api("POST", `/subjects/${encodeURIComponent(name)}/faces`, form(blob, "face.jpg"));
    $("enrol-form").hidden = true;
    await loadSubjects();
    await identify(state.blob, "photo.jpg");
    status(`enrolled ${r.enrolled} face as ${r.subject}`);
  } catch (err) {
    status(err.message, true);
  }
});

// ---- gallery ----
async function loadSubjects() {
  const data = await api("GET", "/subjects?per_page=1000");
  const body = $("subjects").querySelector("tbody");
  body.replaceChildren();
  data.subjects.forEach((s) => {
    const tr = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = s.name;
    const n = document.createElement("td");
    n.textContent = s.faces;
    const del = document.createElement("button");
    del.className = "link";
    del.textContent = "delete";
    del.title = `delete ${s.name} and their faces`;
    del.addEventListener("click", async () => {
      if (!confirm(`Delete ${s.name} and their ${s.faces} face(s)?`)) return;
      try {
        await api("DELETE", `/subjects/${encodeURIComponent(s.name)}`);
        await loadSubjects();
      } catch (err) {
        status(err.message, true);
      }
    });
    const act = document.createElement("td");
    act.append(del);
    tr.append(name, n, act);
    body.append(tr);
  });
  const id = data.identification;
  $("capability").textContent = `${data.total} subject(s). Identification: threshold ${id.threshold.toFixed(3)}, ${id.detail}.`;
  return data;
}
$("refresh").addEventListener("click", () => loadSubjects().catch((e) => status(e.message, true)));

// ---- people of the photo library ----
// An image of the API (thumbnails, photos) as an object URL: the key goes in a header.
async function apiImage(path) {
  const r = await fetch("/api/v1" + path, { headers: { "x-api-key": state.key } });
  if (!r.ok) {
    const data = await r.json().catch(() => ({ detail: r.statusText }));
    throw new Error(data.detail || r.statusText);
  }
  return URL.createObjectURL(await r.blob());
}

const selected = new Set();
function label(p) { return p.name || `#${p.id}`; }

async function loadPeople() {
  const data = await api("GET", "/library/people");
  const grid = $("people");
  grid.replaceChildren();
  selected.clear();
  $("merge").disabled = true;
  if (!data.people.length) {
    grid.textContent = "No people yet: index photos with `facenet library add`.";
    return data;
  }
  for (const p of data.people) {
    const card = document.createElement("div");
    card.className = "person-card";
    card.dataset.id = p.id;
    const img = document.createElement("img");
    img.alt = label(p);
    img.title = `open ${label(p)}`;
    if (p.cover) apiImage(`/library/faces/${p.cover}/thumbnail`).then((u) => { img.src = u; }).catch(() => {});
    img.addEventListener("click", () => openPerson(p).catch((e) => status(e.message, true)));
    const name = document.createElement("input");
    name.className = "person-name";
    name.value = p.name || "";
    name.placeholder = `#${p.id}: name`;
    name.addEventListener("keydown", async (e) => {
      if (e.key !== "Enter" || !name.value.trim()) return;
      try {
        const r = await api("PUT", `/library/people/${p.id}/name`, { name: name.value.trim() });
        status(`#${r.id} is ${r.name}`);
        await loadPeople();
        await loadSubjects();
      } catch (err) {
        status(err.message, true);
      }
    });
    const meta = document.createElement("div");
    meta.className = "muted";
    const counts = document.createElement("span");
    counts.textContent = `${p.faces} faces, ${p.photos} photos`;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.className = "person-pick";
    pick.title = "select to merge";
    pick.addEventListener("change", () => {
      if (pick.checked) selected.add(p.id); else selected.delete(p.id);
      card.classList.toggle("selected", pick.checked);
      $("merge").disabled = selected.size < 2;
    });
    meta.append(counts, pick);
    card.append(img, name, meta);
    grid.append(card);
  }
  return data;
}

async function openPerson(p) {
  const photos = await api("GET", `/library/people/${p.id}/photos`);
  $("person").hidden = false;
  $("person-title").textContent = `${label(p)}: ${photos.length} photo(s)`;
  const box = $("person-photos");
  box.replaceChildren();
  for (const ph of photos) {
    const c = document.createElement("canvas");
    c.title = ph.path;
    box.append(c);
    const url = await apiImage(`/library/photos/${ph.id}`);
    const img = new Image();
    img.onload = () => {
      c.width = img.naturalWidth;
      c.height = img.naturalHeight;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      g.lineWidth = Math.max(2, img.naturalWidth / 150);
      g.strokeStyle = "#2a62d9";
      for (const f of ph.faces) g.strokeRect(f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1]);
    };
    img.src = url;
  }
}

$("merge").addEventListener("click", async () => {
  const ids = [...selected];
  if (ids.length < 2) return;
  try {
    const r = await api("POST", `/library/people/${ids[0]}/merge`, { people: ids.slice(1).map(String) });
    status(`merged into ${label(r)}: ${r.faces} faces`);
    await loadPeople();
  } catch (err) {
    status(err.message, true);
  }
});
$("people-refresh").addEventListener("click", () => loadPeople().catch((e) => status(e.message, true)));

// ---- verify two photos ----
for (const side of ["a", "b"]) {
  $(`verify-${side}`).addEventListener("change", () => {
    const f = $(`verify-${side}`).files[0];
    if (f) $(`preview-${side}`).src = URL.createObjectURL(f);
  });
}
$("verify-button").addEventListener("click", async () => {
  const a = $("verify-a").files[0], b = $("verify-b").files[0];
  const out = $("verify-result");
  if (!a || !b) { out.textContent = "choose two photos"; out.className = ""; return; }
  const f = new FormData();
  f.append("file", a, a.name);
  f.append("file", b, b.name);
  try {
    const r = await api("POST", "/verify", f);
    out.textContent = `${r.verified ? "Same person" : "Different people"}: distance ${r.distance.toFixed(3)}, threshold ${r.threshold.toFixed(3)} (${r.threshold_detail})`;
    out.className = r.verified ? "same" : "different";
  } catch (err) {
    out.textContent = err.message;
    out.className = "different";
  }
});

if (state.key) {
  loadSubjects().then(() => { $("key-status").textContent = "key accepted"; }).catch(() => {});
  loadPeople().catch(() => {});
}
