// RxVision web page: pick or take one or two photos, POST /v1/identify, show the answer.
// Server text is only ever inserted with textContent (never innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { front: null, back: null, explain: false, topk: 5, pill: 0 };
const KEY_STORE = "rxvision-api-key";

function headers() {
  const key = $("api-key").value || sessionStorage.getItem(KEY_STORE) || "";
  return key ? { "X-API-Key": key } : {};
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function showPreview(img, file) {
  if (img.src) URL.revokeObjectURL(img.src);
  if (!file) { img.hidden = true; img.removeAttribute("src"); return; }
  img.src = URL.createObjectURL(file);
  img.hidden = false;
}

function pick(side, file) {
  state[side] = file || null;
  showPreview($(side === "front" ? "preview-front" : "preview-back"), state[side]);
  $("clear-back").hidden = !state.back;
  $("identify").disabled = !state.front;
  $("results").hidden = true;
  setStatus(state.front ? "" : "Take or choose a photo of the pill.");
}

for (const [id, side] of [["photo", "front"], ["photo-pick", "front"],
                          ["photo-back", "back"], ["photo-back-pick", "back"]]) {
  $(id).addEventListener("change", (e) => pick(side, e.target.files[0]));
}
$("clear-back").addEventListener("click", () => {
  $("photo-back").value = ""; $("photo-back-pick").value = ""; pick("back", null);
});

async function errorText(resp) {
  try {
    const body = await resp.json();
    return body.detail || `error ${resp.status}`;
  } catch (_) {
    return `error ${resp.status}`;
  }
}

async function loadModel() {
  const resp = await fetch("/v1/model", { headers: headers() });
  if (resp.status === 401) {
    $("key-row").hidden = false;
    setStatus("This server needs an API key.");
    return false;
  }
  if (!resp.ok) { setStatus(await errorText(resp), true); return false; }
  const info = await resp.json();
  state.explain = info.capabilities.explain;
  state.topk = Math.min(5, info.num_labels);
  $("model-id").textContent = `model ${info.id} (${info.backend}, ${info.num_labels} pills)`;
  return true;
}

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
}

const RETAKE_HINTS = {
  "no pill found in the photo": "Put the pill on a plain surface and fill most of the " +
    "frame with it.",
  "photo too dark": "Use more light (or the flash) and hold the phone steady.",
  "overexposed": "Move away from direct light or turn the flash off.",
  "too blurred": "Hold the phone steady and tap the pill on the screen to focus.",
  "pill too small": "Move closer: the pill should fill a good part of the photo.",
};

function renderVerdict(result, pair) {
  const top = result.candidates[0];
  const v = $("verdict");
  v.replaceChildren();
  const note = document.createElement("small");
  if (result.retake) {  // the photo check found no pill (or an unusable photo): no guess
    v.className = "verdict retake";
    v.append(`Please retake the photo: ${result.retake}.`);
    note.textContent = RETAKE_HINTS[result.retake.replace(/^(front|back): /, "")] ||
      "Photograph one pill, close up, sharp and well lit, on a plain background.";
  } else if (result.unknown) {
    v.className = "verdict unknown";
    v.append("Unknown pill: this does not look like any pill the model knows.");
    note.textContent = "The closest matches are listed below, but none of them is likely.";
  } else if (result.abstain) {
    v.className = "verdict unsure";
    v.append("Not sure: no candidate is confident enough.");
    note.textContent = pair ? "Try sharper photos on a plain background."
                            : "Try a sharper photo on a plain background, or add the other side.";
  } else {
    v.className = "verdict ok";
    const name = top.facts ? (top.facts.drug || top.label) : top.label;
    v.append(`Most likely ${name} (${percent(top.probability)})`);
    note.textContent = "Confirm with the imprint, colour and shape before relying on it.";
  }
  v.append(note);
  if (result.imprint && !result.retake) {  // what the OCR read off this pill
    const read = document.createElement("small");
    read.id = "imprint-read";
    const who = result.imprint.changed ? "the imprint changed the answer"
      : `the ${result.imprint.decided_by} decided`;
    read.textContent = result.imprint.read ? `Imprint read: ${result.imprint.read} (${who}).`
      : "No imprint could be read: the answer rests on the pill's appearance.";
    const others = result.imprint.also_fits || [];
    if (others.length) {  // the read left the part that tells them apart unread
      read.textContent += " The read also fits " + others.map(
        (o) => `${o.label} (${o.imprint.replaceAll(";", " ")})`).join(", ") +
        ": check the whole imprint.";
    }
    v.append(read);
  }
  if (result.same_photo && !result.retake) {  // weighed with the photo's other pill
    const same = document.createElement("small");
    same.className = "same-photo";
    const p = result.same_photo.same_pill_probability;
    same.textContent = `Weighed with the other pill in the photo: ${percent(p)} likely the ` +
      "same pill seen twice" + (p < 0.5 ? " (so this answer rests mostly on its own look)." : ".");
    v.append(same);
  }
  const zoomed = (result.zoomed_to || []).filter(Boolean).length;
  if (zoomed) {
    const z = document.createElement("small");
    z.id = "zoom-note";
    z.textContent = "The pill was small in the photo: the model looked at a square crop " +
      "around it" + (zoomed > 1 ? " in both photos." : ".");
    v.append(z);
  }
}

function renderCandidates(result) {
  const list = $("candidates");
  list.replaceChildren();
  $("candidates-heading").hidden = result.candidates.length === 0;
  list.classList.toggle("abstained", result.abstain);
  for (const cand of result.candidates) {
    const li = document.createElement("li");
    li.className = "candidate";
    const head = document.createElement("div");
    head.className = "cand-head";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = cand.label;
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = percent(cand.probability);
    head.append(label, pct);
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = Object.entries(cand.metadata).map(([k, v]) => `${k}: ${v}`).join(" · ");
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("role", "meter");
    bar.setAttribute("aria-valuemin", "0");
    bar.setAttribute("aria-valuemax", "100");
    bar.setAttribute("aria-valuenow", (100 * cand.probability).toFixed(1));
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * cand.probability).toFixed(1)}%`;
    bar.append(fill);
    li.append(head, meta, bar);
    rxLibrary.decorate(li, cand);  // drug facts, look-alikes, identical pills (library.js)
    list.append(li);
  }
}

function renderOverlay(result) {
  const views = result.explanations || {};
  const first = views.image || views.front;
  const shown = Boolean(first && first.attention && first.occlusion);
  $("overlay").hidden = !shown;
  // Explanations cost ~100 extra forward passes: computed only when asked for.
  $("show-why").hidden = shown || !state.explain || Boolean(result.retake);
  if (shown) {
    $("occlusion").src = first.occlusion;
    $("attention").src = first.attention;
  }
}

// A model that finds the pills first answers each one: draw the photo with a numbered
// box round every pill, and a button per pill that shows its answer.
function renderPills(body) {
  const boxed = (body.pills || []).filter((p) => p.box);
  const canvas = $("found"), tabs = $("pill-tabs"), img = $("preview-front");
  canvas.hidden = boxed.length === 0 || !img.naturalWidth;
  tabs.hidden = boxed.length < 2;
  tabs.replaceChildren();
  if (canvas.hidden) return;
  const scale = Math.min(1, 720 / img.naturalWidth);
  canvas.width = Math.round(img.naturalWidth * scale);
  canvas.height = Math.round(img.naturalHeight * scale);
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
  ctx.lineWidth = 3;
  ctx.font = "bold 18px sans-serif";
  boxed.forEach((pill, i) => {
    const [x0, y0, x1, y1] = pill.box.map((v) => v * scale);
    ctx.strokeStyle = ctx.fillStyle = i === state.pill ? "#d00" : "#f5b400";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.fillText(String(i + 1), x0 + 4, Math.max(18, y0 - 4));
    if (boxed.length < 2) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button secondary";
    button.textContent = `Pill ${i + 1}`;
    button.setAttribute("aria-pressed", String(i === state.pill));
    button.addEventListener("click", () => { state.pill = i; showAnswer(body); });
    tabs.append(button);
  });
  canvas.setAttribute("aria-label", `the photo with ${boxed.length} pill(s) boxed and numbered`);
}

function showAnswer(body) {
  const pills = body.pills || [];
  const result = pills.length ? pills[Math.min(state.pill, pills.length - 1)] : body.result;
  renderPills(body);
  renderVerdict(result, body.mode === "pair");
  renderCandidates(result);
  rxLibrary.renderTyped(result);
  renderOverlay(result);
}

function setBusy(busy) {
  $("progress").hidden = !busy;
  $("results").setAttribute("aria-busy", String(busy));
  $("identify").disabled = busy || !state.front;
  $("show-why").disabled = busy;
}

async function identify(explain) {
  if (!state.front) return;
  const key = $("api-key").value;
  if (key) sessionStorage.setItem(KEY_STORE, key);
  const form = new FormData();
  if (state.back) { form.append("front", state.front); form.append("back", state.back); }
  else form.append("image", state.front);
  form.append("topk", String(state.topk));
  form.append("explain", String(explain));
  rxLibrary.appendTyped(form);  // imprint, colour, shape typed beside the photo
  setBusy(true);
  setStatus(explain ? "Working out why… (a few seconds)" : "Identifying…");
  try {
    const resp = await fetch("/v1/identify", { method: "POST", body: form, headers: headers() });
    if (resp.status === 401) { $("key-row").hidden = false; }
    if (!resp.ok) { setStatus(await errorText(resp), true); return; }
    const body = await resp.json();
    state.pill = 0;
    showAnswer(body);
    $("results").hidden = false;
    $("results").scrollIntoView({ behavior: "smooth", block: "start" });
    const both = body.mode === "pair" ? " (both sides)" : "";
    const found = (body.pills || []).filter((p) => p.box).length;
    const many = found > 1 ? `; ${found} pills found: pick one below the photo` : "";
    setStatus(`Done in ${Math.round(body.timings_ms.total_ms)} ms${both}${many}.`);
  } catch (err) {
    setStatus(`Could not reach the server: ${err.message}`, true);
  } finally {
    setBusy(false);
  }
}

$("identify-form").addEventListener("submit", (e) => { e.preventDefault(); identify(false); });
$("show-why").addEventListener("click", () => identify(true));

$("api-key").addEventListener("change", () => loadModel());
$("api-key").value = sessionStorage.getItem(KEY_STORE) || "";
loadModel().then((ok) => { if (ok) setStatus("Take or choose a photo of the pill."); });
