// RxVision web page, drug library part: facts, look-alikes and identical pills in each
// candidate, the typed facts sent with a photo, and the library search box.
// Server text is only ever inserted with textContent (never innerHTML).
"use strict";

const rxLibrary = (() => {
  const $ = (id) => document.getElementById(id);
  const KEY_STORE = "rxvision-api-key";
  const TYPED = [["typed-imprint", "imprint"], ["typed-color", "color"], ["typed-shape", "shape"]];

  function headers() {
    const input = $("api-key");
    const key = (input && input.value) || sessionStorage.getItem(KEY_STORE) || "";
    return key ? { "X-API-Key": key } : {};
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function nameOf(facts) {
    const drug = facts.drug || `unnamed pill (${facts.ndc || facts.label})`;
    return facts.brand_name ? `${drug} (${facts.brand_name})` : drug;
  }

  function factsLine(facts) {
    const look = [facts.appearance, facts.size_mm ? `${facts.size_mm} mm` : ""]
      .filter(Boolean).join(" ");
    return [facts.labeler, look, facts.imprint_text ? `imprint ${facts.imprint_text}` : "no imprint",
            facts.ndc ? `NDC ${facts.ndc}` : "", facts.rxcui ? `RxCUI ${facts.rxcui}` : ""]
      .filter(Boolean).join(" · ");
  }

  // The drug in words, its facts, a controlled-substance flag and a DailyMed link.
  function factsBlock(facts) {
    const box = el("div", "facts");
    const title = el("div", "drug", nameOf(facts));
    if (facts.is_controlled) {
      title.append(" ", el("span", "controlled", `controlled ${facts.dea_schedule}`));
    }
    box.append(title, el("div", "meta", factsLine(facts)));
    if (facts.dailymed_url) {
      const link = el("a", "dailymed", "DailyMed label");
      link.href = facts.dailymed_url;
      link.target = "_blank";
      link.rel = "noopener";
      box.append(link);
    }
    return box;
  }

  // Called by app.js for each candidate of an answer.
  function decorate(li, cand) {
    if (!cand.facts) return;
    li.querySelector(".meta").replaceWith(factsBlock(cand.facts));
    if (cand.typed_match) {
      li.append(el("div", "typed-match", `typed facts: ${cand.typed_match.explanation.join("; ")}`));
    }
    if (cand.same_pill_note) li.append(el("div", "same-pill", cand.same_pill_note));
    if (cand.lookalikes && cand.lookalikes.length) {
      const details = el("details", "lookalikes");
      details.append(el("summary", "", `Looks like ${cand.lookalikes.length} other pill(s)`));
      const list = el("ul");
      for (const other of cand.lookalikes) list.append(el("li", "lookalike", other.note));
      details.append(list);
      li.append(details);
    }
  }

  // The imprint, colour and shape typed beside the photo, if any.
  function appendTyped(form) {
    for (const [id, field] of TYPED) {
      const value = $(id) ? $(id).value.trim() : "";
      if (value) form.append(field, value);
    }
  }

  // What the typed facts did: combined, or contradicting every likely pill.
  function renderTyped(result) {
    const box = $("typed-result");
    box.replaceChildren();
    box.hidden = !result.typed;
    if (!result.typed) return;
    box.className = result.typed.contradicted ? "typed-result contradicted" : "typed-result";
    box.append(el("p", "", result.typed.note));
    if (result.library_hits && result.library_hits.length) {
      const list = el("ol", "hits");
      for (const hit of result.library_hits) list.append(hitItem(hit));
      box.append(list);
    }
  }

  function hitItem(hit) {
    const li = el("li", "hit");
    li.append(factsBlock(hit.facts));
    li.append(el("div", "why", hit.explanation.join("; ")));
    if (hit.photo_url) {
      const img = el("img", "ref-photo");
      img.alt = `reference photograph of ${nameOf(hit.facts)}`;
      li.append(img);
      fetch(hit.photo_url, { headers: headers() })
        .then((r) => (r.ok ? r.blob() : null))
        .then((blob) => { if (blob) img.src = URL.createObjectURL(blob); });
    }
    return li;
  }

  async function search(event) {
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [id, field] of [["search-imprint", "imprint"], ["search-color", "color"],
                               ["search-shape", "shape"], ["search-size", "size"]]) {
      const value = $(id).value.trim();
      if (value) params.append(field, value);
    }
    params.append("limit", "10");
    const list = $("search-results");
    list.replaceChildren();
    $("search-status").textContent = "Searching…";
    $("search-status").classList.remove("error");
    try {
      const resp = await fetch(`/v1/library/search?${params}`, { headers: headers() });
      const body = await resp.json();
      if (!resp.ok) {
        $("search-status").textContent = body.detail || `error ${resp.status}`;
        $("search-status").classList.add("error");
        return;
      }
      for (const hit of body.hits) list.append(hitItem(hit));
      $("search-status").textContent = body.hits.length
        ? `${body.hits.length} pill(s), best match first.` : "No pill in the library matches.";
    } catch (err) {
      $("search-status").textContent = `Could not reach the server: ${err.message}`;
      $("search-status").classList.add("error");
    }
  }

  async function refresh() {
    const resp = await fetch("/v1/library", { headers: headers() });
    if (!resp.ok) return;
    const info = await resp.json();
    $("library-search").hidden = !info.available;
    $("typed-facts").hidden = !info.available;
    if (info.available) {
      $("library-info").textContent = `${info.labels} pills with their drug facts.`;
    }
  }

  function init() {
    const form = $("search-form");
    if (!form) return;
    form.addEventListener("submit", search);
    if ($("api-key")) $("api-key").addEventListener("change", refresh);
    refresh();
  }

  document.addEventListener("DOMContentLoaded", init);
  return { decorate, appendTyped, renderTyped, refresh };
})();
