/* hotfolder dashboard: the live parts of the pages.
 *
 * Plain JavaScript, no build step, nothing from the internet. Data comes from the daemon's small
 * JSON endpoints and is put on the page with textContent only (never innerHTML), so a file
 * called <script>.mp4 stays a name. Polling is short and cheap: /api/queue answers 304 when
 * nothing changed, and nothing is polled while the tab is hidden.
 */
"use strict";
(() => {
  const OPEN = ["downloading", "generating", "submitting", "uploading", "queued", "waiting"];
  const STATES = ["waiting", "queued", "uploading", "submitting", "generating", "downloading", "done", "failed", "cancelled"];
  const ENDED = new Set(["done", "failed", "cancelled"]);
  const VIDEO_EXTS = ["mp4", "mov", "webm"];
  const DRIVER_EXTS = ["txt", "wav", "mp3", "m4a"];
  const POLL_MS = 2500;          // while jobs are moving
  const IDLE_POLL_MS = 10000;    // nothing in progress: a new job shows within 10 s
  const SVG = "http://www.w3.org/2000/svg";

  let csrf = "";
  let skew = 0;   // server clock minus this browser's, from the Date header

  // -- small helpers -------------------------------------------------------------------------
  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function svg(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    for (const child of children) el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return el;
  }

  const now = () => Date.now() + skew;

  function noteSkew(response) {
    const date = response.headers.get("Date");
    if (date) {
      const server = Date.parse(date);
      if (!Number.isNaN(server)) skew = server - Date.now();
    }
  }

  function span(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return `${seconds}s`;
    const m = Math.floor(seconds / 60);
    if (m < 60) return seconds % 60 && m < 10 ? `${m}m ${seconds % 60}s` : `${m}m`;
    const hrs = Math.floor(m / 60);
    if (hrs < 24) return m % 60 ? `${hrs}h ${m % 60}m` : `${hrs}h`;
    const days = Math.floor(hrs / 24);
    return hrs % 24 && days < 3 ? `${days}d ${hrs % 24}h` : `${days}d`;
  }

  function size(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1048576) return `${Math.round(bytes / 1024)} KB`;
    if (bytes < 1073741824) return `${(bytes / 1048576).toFixed(1)} MB`;
    return `${(bytes / 1073741824).toFixed(2)} GB`;
  }

  const secondsSince = (iso) => (now() - Date.parse(iso)) / 1000;
  const ago = (iso) => (iso ? `${span(secondsSince(iso))} ago` : "");
  const local = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const localTime = (iso) => (iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "");

  function shortId(id) {
    if (!id) return "";
    return id.length > 12 ? `${id.slice(0, 10)}…` : id;
  }

  /* Relative times tick every second without asking the server: each element with data-ago or
   * data-age holds its timestamp. */
  function tick() {
    for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(el.dataset.ago);
    for (const el of document.querySelectorAll("[data-age]")) el.textContent = span(secondsSince(el.dataset.age));
    for (const el of document.querySelectorAll("[data-until]")) {
      const left = (Date.parse(el.dataset.until) - now()) / 1000;
      el.textContent = left > 0 ? `in ${span(left)}` : "any moment now";
    }
  }

  function setLive(ok) {
    const live = $("#live");
    if (!live) return;
    live.hidden = false;
    live.classList.toggle("stale", !ok);
    $(".live-text", live).textContent = ok ? "live" : "reconnecting…";
  }

  /* Run fn now and then every `every` ms after it finishes; nothing while the tab is hidden. */
  function loop(fn, every) {
    let timer = null;
    let running = false;
    const run = async () => {
      clearTimeout(timer);
      if (running) return;
      running = true;
      try {
        await fn();
        setLive(true);
      } catch (err) {
        setLive(false);
      } finally {
        running = false;
        if (!document.hidden) timer = setTimeout(run, typeof every === "function" ? every() : every);
      }
    };
    document.addEventListener("visibilitychange", () => { if (!document.hidden) run(); });
    run();
    return run;
  }

  async function refreshCsrf() {
    const r = await fetch("/api/queue?page=0", { credentials: "same-origin", cache: "no-store" });
    if (r.ok) csrf = (await r.json()).csrf || csrf;
  }

  /* POST to the dashboard's API with the CSRF token; a token gone stale (the daemon restarted)
   * is fetched again and the request sent once more. */
  async function post(url) {
    for (let attempt = 0; attempt < 2; attempt++) {
      let r;
      try {
        r = await fetch(url, { method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf, Accept: "application/json" } });
      } catch (err) {
        return { ok: false, error: "the daemon did not answer; is it running?" };
      }
      if (r.status === 401) { location.reload(); return { ok: false, error: "please log in again" }; }
      const data = await r.json().catch(() => ({ ok: false, error: `HTTP ${r.status}` }));
      if (r.status === 403 && data.error === "csrf" && attempt === 0) { await refreshCsrf(); continue; }
      return data;
    }
    return { ok: false, error: "the page is out of date: reload it" };
  }

  function badge(state) {
    return h("span", { class: `badge state-${state}`, text: state });
  }

  function progressBar(job) {
    const bar = h("div", { class: `bar state-${job.state}` }, h("span", { class: "fill" }));
    const pct = h("span", { class: "pct" });
    const wrap = h("div", { class: "progress" }, bar, pct);
    updateProgress(wrap, job);
    return wrap;
  }

  function updateProgress(wrap, job) {
    const bar = $(".bar", wrap);
    const fill = $(".fill", wrap);
    const pct = $(".pct", wrap);
    bar.className = `bar state-${job.state}`;
    wrap.classList.toggle("idle", job.state === "waiting" || job.state === "queued");
    let width = 0;
    let text = "";
    if (job.state === "generating" || (job.state === "uploading" && job.progress > 0)) {
      // generating: the API's progress; uploading: how much of the inputs is sent
      width = Math.max(2, job.progress || 0);
      text = `${job.progress || 0}%`;
    } else if (job.state === "uploading" || job.state === "submitting" || job.state === "downloading") {
      bar.classList.add("indeterminate");
      text = job.state === "downloading" ? "100%" : "";
    } else if (job.state === "done") { width = 100; text = "100%"; }
    fill.style.width = `${width}%`;   // CSSOM: allowed by the page's Content-Security-Policy
    pct.textContent = text;
    wrap.dataset.progress = String(job.progress || 0);
  }

  function stateNote(job) {
    if (job.state === "waiting") return "needs its script (.txt) or audio";
    const parts = [];
    if (job.next_attempt_at && Date.parse(job.next_attempt_at) > now() + 1000) {
      parts.push(`next try at ${localTime(job.next_attempt_at)}`);
    }
    if (job.attempts > 1) parts.push(`attempt ${job.attempts}`);
    return parts.join(" · ");
  }

  function folderCell(job) {
    const cell = h("div", { class: "folder" });
    if (job.preset) cell.append(h("span", { class: "tag", title: "preset", text: job.preset }));
    const rest = job.preset ? job.folder.slice(job.preset.length).replace(/^\//, "") : job.folder;
    if (rest) cell.append(h("span", { class: "muted", text: rest }));
    if (!job.preset && !job.folder) cell.append(h("span", { class: "muted", text: "inbox" }));
    return cell;
  }

  /* Keep one element per job (by id), updating it in place so progress bars glide instead of
   * jumping, and put them in the order given. */
  function reconcile(container, jobs, make, update) {
    const existing = new Map([...container.children].map((el) => [el.dataset.id, el]));
    const wanted = new Set(jobs.map((j) => String(j.id)));
    for (const [id, el] of existing) if (!wanted.has(id)) el.remove();
    let previous = null;
    for (const job of jobs) {
      let el = existing.get(String(job.id));
      if (!el) { el = make(job); el.dataset.id = String(job.id); }
      update(el, job);
      const next = previous ? previous.nextSibling : container.firstChild;
      if (next !== el) container.insertBefore(el, next);
      previous = el;
    }
  }

  // -- the queue page --------------------------------------------------------------------------
  function initIndex() {
    let snap = JSON.parse($("#snapshot").textContent);
    csrf = snap.csrf;
    let show = snap.show;
    let page = snap.page;
    let etag = null;
    const flash = new Map();   // job id -> message shown in its row after an action

    function renderCounts() {
      const nav = $("#counts");
      nav.replaceChildren();
      for (const state of STATES) {
        const n = snap.counts[state];
        if (!n) continue;
        const item = h("a", { href: ENDED.has(state) ? `?show=${state}` : "#queue-card", title: `${n} ${state}`,
          onclick: ENDED.has(state) ? (e) => { e.preventDefault(); choose(state, 0); } : null },
        h("span", { class: `sw state-${state}` }), state, h("b", { text: n.toLocaleString() }));
        nav.append(item);
      }
    }

    function renderBanners() {
      const box = $("#banners");
      box.replaceChildren();
      if (snap.pause) {
        const resume = h("button", { class: "btn small", type: "button", id: "resume", text: "Resume now" });
        resume.addEventListener("click", async () => {
          resume.disabled = true;
          const res = await post("/api/resume");
          resume.disabled = false;
          if (res.ok) refresh();
        });
        box.append(h("div", { class: "banner pause", id: "pause-banner", role: "status" },
          h("div", { class: "text" },
            h("b", { text: "Submissions are paused: the account is out of balance or over its quota." }),
            snap.pause.reason ? h("div", { text: `The API said: ${snap.pause.reason}` }) : null,
            h("div", {}, "Next try at ", localTime(snap.pause.until), " (",
              h("span", { dataset: { until: snap.pause.until } }), "). Top up the account, then resume.")),
          resume));
      }
      if (snap.trouble) {
        box.append(h("div", { class: "banner trouble", id: "trouble-banner", role: "status" },
          h("div", { class: "text" },
            h("b", { text: `API trouble (${snap.trouble.kind.replaceAll("_", " ")}) since ${localTime(snap.trouble.since)}` }),
            h("div", { text: `${snap.trouble.message} Jobs wait and retry by themselves.` }))));
      }
    }

    function makeQueueRow(job) {
      const cancel = h("button", { class: "btn small danger cancel", type: "button", text: "Cancel" });
      cancel.addEventListener("click", () => act(cancel, job.id, "cancel"));
      return h("tr", { class: "job" },
        h("td", {}, h("a", { class: "name", href: job.links.page }), h("div", { class: "sub" })),
        h("td", { class: "where" }),
        h("td", { class: "state" }, h("span", { class: "badge" }), h("div", { class: "note" })),
        h("td", {}, progressBar(job)),
        h("td", { class: "age", dataset: { age: job.created_at } }),
        h("td", { class: "rid mono" }),
        h("td", {}, cancel));
    }

    function updateQueueRow(row, job) {
      row.dataset.state = job.state;
      const name = $(".name", row);
      name.textContent = job.file;
      name.title = job.name;
      $(".sub", row).textContent = flash.get(job.id) || (job.driver ? `${job.driver === "audio" ? "audio" : "script"}` : "");
      $(".where", row).replaceChildren(folderCell(job));
      const b = $(".badge", row);
      b.className = `badge state-${job.state}`;
      b.textContent = job.state;
      $(".note", row).textContent = stateNote(job);
      updateProgress($(".progress", row), job);
      const age = $(".age", row);
      age.dataset.age = job.created_at;
      age.textContent = span(secondsSince(job.created_at));
      age.title = `added ${local(job.created_at)}`;
      const rid = $(".rid", row);
      rid.textContent = shortId(job.remote_id);
      rid.title = job.remote_id || "";
    }

    function makeFinished(job) {
      return h("li", { class: "ended" });
    }

    function updateFinished(li, job) {
      const sig = JSON.stringify(job) + (flash.get(job.id) || "");
      if (li.dataset.sig === sig) return;
      li.dataset.sig = sig;
      li.dataset.state = job.state;
      let thumb;
      if (job.links.cover) {
        thumb = h("a", { href: job.links.page, tabindex: -1 },
          h("img", { class: "thumb", src: job.links.cover, alt: "", loading: "lazy" }));
      } else {
        const glyph = job.state === "failed" ? "!" : job.state === "cancelled" ? "×" : "▶";
        thumb = h("a", { href: job.links.page, tabindex: -1 }, h("div", { class: `thumb ${job.state}`, text: glyph }));
      }
      const meta = [];
      if (job.preset) meta.push(`preset ${job.preset}`);
      else if (job.folder) meta.push(job.folder);
      if (job.finished_at) {
        meta.push(h("span", {}, `${job.state === "done" ? "finished" : job.state} `,
          h("span", { dataset: { ago: job.finished_at }, title: local(job.finished_at), text: ago(job.finished_at) })));
      }
      if (job.finished_at && job.created_at) meta.push(`took ${span((Date.parse(job.finished_at) - Date.parse(job.created_at)) / 1000)}`);
      if (job.remote_id) meta.push(h("span", { title: job.remote_id, text: `remote ${shortId(job.remote_id)}` }));
      const middle = h("div", { class: "body" },
        h("div", { class: "title" }, h("a", { class: "name", href: job.links.page, title: job.name, text: job.file }),
          badge(job.state)),
        h("div", { class: "meta" }, meta.flatMap((part, i) => (i ? [" · ", part] : [part]))));
      if (job.error && job.state !== "done") {
        middle.append(h("div", { class: "error" },
          h("div", {}, job.error_code ? h("span", { class: "code", text: job.error_code }) : null, " ", job.error),
          job.hint ? h("div", { class: "hint", text: job.hint }) : null));
      }
      if (flash.has(job.id)) middle.append(h("div", { class: "alert bad", text: flash.get(job.id) }));
      const actions = h("div", { class: "actions" });
      if (job.links.video) actions.append(h("a", { class: "btn small", href: `${job.links.video}?download=1`, download: "", text: "⬇ MP4" }));
      if (job.links.cover) actions.append(h("a", { class: "btn small", href: `${job.links.cover}?download=1`, download: "", text: "Cover" }));
      if (job.can_retry) {
        const retry = h("button", { class: "btn small retry", type: "button", text: "Retry" });
        retry.addEventListener("click", () => act(retry, job.id, "retry"));
        actions.append(retry);
      }
      li.replaceChildren(thumb, middle, actions);
    }

    async function act(button, id, what) {
      if (what === "cancel" && button.dataset.armed !== "1") {
        // Two clicks to cancel: a slip of the mouse must not cost a job.
        button.dataset.armed = "1";
        button.textContent = "Sure?";
        setTimeout(() => { button.dataset.armed = ""; button.textContent = "Cancel"; }, 4000);
        return;
      }
      button.disabled = true;
      button.textContent = what === "retry" ? "Retrying…" : "Cancelling…";
      const res = await post(`/api/jobs/${id}/${what}`);
      if (res.ok) flash.delete(id);
      else flash.set(id, res.error || "that did not work");
      button.disabled = false;
      button.textContent = what === "retry" ? "Retry" : "Cancel";
      etag = null;
      await refresh();
    }

    function render() {
      renderCounts();
      renderBanners();
      const open = OPEN.reduce((sum, s) => sum + (snap.counts[s] || 0), 0);
      $("#open-count").textContent = open.toLocaleString();
      const tbody = $("#queue tbody");
      reconcile(tbody, snap.unfinished, makeQueueRow, updateQueueRow);
      $("#queue-empty").hidden = snap.unfinished.length > 0;
      $("#queue").hidden = snap.unfinished.length === 0;
      const more = $("#queue-more");
      more.hidden = !snap.unfinished_more;
      more.textContent = `… and ${snap.unfinished_more.toLocaleString()} more (see \`hotfolder status\`)`;
      reconcile($("#finished"), snap.finished, makeFinished, updateFinished);
      $("#finished-empty").hidden = snap.finished.length > 0;
      for (const tab of document.querySelectorAll("#tabs button")) {
        tab.classList.toggle("on", tab.dataset.show === snap.show);
        tab.setAttribute("aria-selected", tab.dataset.show === snap.show ? "true" : "false");
      }
      const first = snap.page * snap.page_size + 1;
      const last = snap.page * snap.page_size + snap.finished.length;
      $("#page-info").textContent = snap.finished.length
        ? `${first.toLocaleString()}–${last.toLocaleString()} of ${snap.finished_total.toLocaleString()}` : "";
      $("#newer").disabled = snap.page === 0;
      $("#older").disabled = !snap.has_more;
      $("#pager").hidden = snap.page === 0 && !snap.has_more;
      tick();
    }

    async function refresh() {
      const headers = { Accept: "application/json" };
      if (etag) headers["If-None-Match"] = etag;
      const r = await fetch(`/api/queue?page=${page}&show=${show}`, { credentials: "same-origin", cache: "no-store", headers });
      noteSkew(r);
      if (r.status === 304) return;
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      etag = r.headers.get("ETag");
      snap = await r.json();
      csrf = snap.csrf || csrf;
      render();
    }

    function choose(newShow, newPage) {
      show = newShow;
      page = newPage;
      etag = null;
      const query = new URLSearchParams();
      if (show !== "all") query.set("show", show);
      if (page) query.set("page", String(page));
      history.replaceState(null, "", query.toString() ? `?${query}` : "/");
      run();
    }

    for (const tab of document.querySelectorAll("#tabs button")) tab.addEventListener("click", () => choose(tab.dataset.show, 0));
    $("#newer").addEventListener("click", () => choose(show, Math.max(0, page - 1)));
    $("#older").addEventListener("click", () => choose(show, page + 1));

    let fastUntil = 0;   // after an upload: quick polls until its job shows up
    const busy = () => snap.unfinished.length > 0 || snap.pause || snap.trouble || Date.now() < fastUntil;

    render();
    const run = loop(refresh, () => (busy() ? POLL_MS : IDLE_POLL_MS));
    setInterval(tick, 1000);
    initUpload(() => { etag = null; fastUntil = Date.now() + 30000; run(); });
    loop(loadStats, 60000);
  }

  // -- upload ----------------------------------------------------------------------------------
  function initUpload(onDone) {
    const form = $("#upload");
    const drop = $("#drop");
    const pick = $("#pick");
    const msg = $("#upload-msg");
    const button = $("#upload-btn");
    const bar = $("#upload-progress");
    let video = null;
    let driver = null;

    const ext = (name) => (name.includes(".") ? name.split(".").pop().toLowerCase() : "");
    const say = (text, kind) => { msg.textContent = text; msg.className = `msg ${kind || ""}`; };

    function renderPicked() {
      const list = $("#picked");
      list.replaceChildren();
      for (const [role, file] of [["video", video], [ext(driver?.name || "") === "txt" ? "script" : "audio", driver]]) {
        if (!file) continue;
        const remove = h("button", { class: "x", type: "button", title: "remove", text: "×" });
        remove.addEventListener("click", () => {
          if (file === video) video = null; else driver = null;
          renderPicked();
        });
        list.append(h("li", {}, h("span", { class: "role", text: role }),
          h("span", { class: "fname", text: file.name }),
          h("span", { class: "muted", text: size(file.size) }), remove));
      }
      $("#script").disabled = Boolean(driver);
    }

    function add(files) {
      const refused = [];
      for (const file of files) {
        const e = ext(file.name);
        if (VIDEO_EXTS.includes(e)) video = file;
        else if (DRIVER_EXTS.includes(e)) driver = file;
        else refused.push(file.name);
      }
      renderPicked();
      if (refused.length) say(`${refused.join(", ")}: not a video (.mp4 .mov .webm) nor a script or audio (.txt .wav .mp3 .m4a)`, "bad");
      else say("", "");
    }

    for (const kind of ["dragenter", "dragover"]) {
      drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
    }
    for (const kind of ["dragleave", "drop"]) {
      drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.remove("over"); });
    }
    drop.addEventListener("drop", (e) => add(e.dataTransfer.files));
    // A file dropped beside the zone must not make the browser leave the page to show it.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => { if (!drop.contains(e.target)) e.preventDefault(); });
    pick.addEventListener("change", () => { add(pick.files); pick.value = ""; });

    function send(retried) {
      const data = new FormData();
      data.append("csrf", csrf);                         // the server reads the fields in this order:
      data.append("preset", $("#preset").value);         // csrf and preset before any file
      const script = $("#script").value;
      if (!driver && script.trim()) data.append("script", script);
      data.append("video", video, video.name);
      if (driver) data.append("driver", driver, driver.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/upload");
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.round((100 * e.loaded) / e.total);
        $(".fill", bar).style.width = `${pct}%`;
        $(".pct", bar).textContent = `${pct}%`;
      });
      xhr.addEventListener("load", async () => {
        let res;
        try { res = JSON.parse(xhr.responseText); } catch (err) { res = { ok: false, error: `HTTP ${xhr.status}` }; }
        if (xhr.status === 403 && res.error && /expired|csrf/.test(res.error) && !retried) {
          await refreshCsrf();
          send(true);
          return;
        }
        finish();
        if (res.ok) {
          say(`Added ${res.video} with ${res.driver}${res.renamed ? " (renamed: the name was taken)" : ""}. ` +
              "It joins the queue in a few seconds.", "good");
          video = null;
          driver = null;
          $("#script").value = "";
          renderPicked();
          onDone();
        } else {
          say(res.error || `the upload failed (HTTP ${xhr.status})`, "bad");
        }
      });
      xhr.addEventListener("error", () => { finish(); say("the upload was cut off: is the daemon running? Try again.", "bad"); });
      bar.hidden = false;
      button.disabled = true;
      say("Uploading…", "");
      xhr.send(data);
    }

    function finish() {
      bar.hidden = true;
      button.disabled = false;
      $(".fill", bar).style.width = "0%";
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!video) { say("Add a video (.mp4, .mov or .webm).", "bad"); return; }
      if (!driver && !$("#script").value.trim()) {
        say("Add its script (.txt) or audio (.wav, .mp3, .m4a), or type the script.", "bad");
        return;
      }
      send(false);
    });
  }

  // -- stats -------------------------------------------------------------------------------------
  async function loadStats() {
    const r = await fetch("/api/stats?days=14", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    renderStats(await r.json());
  }

  function renderStats(data) {
    const box = $("#stats");
    const t = data.totals;
    const minutes = data.video_seconds / 60;
    const nums = h("div", { class: "stat-nums" },
      h("div", {}, h("b", { text: t.done.toLocaleString() }), h("span", { text: "videos made" })),
      h("div", {}, h("b", { text: minutes >= 10 ? Math.round(minutes).toLocaleString() : minutes.toFixed(1) }),
        h("span", { text: "minutes of video" })),
      h("div", {}, h("b", { text: (t.failed + t.cancelled).toLocaleString() }), h("span", { text: "failed or cancelled" })));
    const days = Object.entries(data.per_day);
    const W = 320; const H = 120; const top = 8; const bottom = 18;
    const peak = Math.max(1, ...days.map(([, c]) => c.done + c.failed + c.cancelled));
    const step = W / Math.max(1, days.length);
    const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "jobs per day" });
    chart.append(svg("line", { class: "axis", x1: 0, x2: W, y1: H - bottom + 0.5, y2: H - bottom + 0.5 }));
    days.forEach(([day, c], i) => {
      const x = i * step + step * 0.15;
      const w = step * 0.7;
      let y = H - bottom;
      const g = svg("g", {}, svg("title", {}, `${day}: ${c.done} done, ${c.failed} failed, ${c.cancelled} cancelled`));
      for (const kind of ["done", "failed", "cancelled"]) {
        const hgt = ((H - bottom - top) * c[kind]) / peak;
        if (hgt <= 0) continue;
        y -= hgt;
        g.append(svg("rect", { class: kind, x: x.toFixed(1), y: y.toFixed(1), width: w.toFixed(1), height: hgt.toFixed(1), rx: 2 }));
      }
      chart.append(g);
      if (i % 2 === days.length % 2 || days.length <= 7) {
        chart.append(svg("text", { x: (x + w / 2).toFixed(1), y: H - 5, "text-anchor": "middle" }, day.slice(8)));
      }
    });
    const legend = h("div", { class: "legend" },
      h("span", {}, h("i", { class: "sw state-done" }), "done"),
      h("span", {}, h("i", { class: "sw state-failed" }), "failed"),
      h("span", {}, h("i", { class: "sw state-cancelled" }), "cancelled"));
    const parts = [nums, chart, legend];
    const codes = Object.entries(data.failures_by_code);
    if (codes.length) {
      parts.push(h("div", { class: "muted", text: "Failures by code" }),
        h("ul", { class: "codes" }, codes.map(([code, n]) => h("li", {}, h("span", { class: "mono", text: code }), h("b", { text: n })))));
    }
    const timing = [];
    for (const [stage, label] of [["generation", "generation"], ["total", "drop to result"]]) {
      const s = data.stage_seconds[stage];
      if (s && s.count) timing.push(`${label}: median ${span(s.median_s)}, p90 ${span(s.p90_s)}`);
    }
    if (timing.length) parts.push(h("div", { class: "timing", text: timing.join(" · ") }));
    box.replaceChildren(...parts);
  }

  // -- the job page ----------------------------------------------------------------------------
  function initJob() {
    let detail = JSON.parse($("#snapshot").textContent);
    csrf = detail.csrf;
    let message = "";
    let armedUntil = 0;

    function render() {
      const job = detail.job;
      const b = $("#job-state");
      b.className = `badge state-${job.state}`;
      b.textContent = job.state;
      const live = $("#job-live");
      const parts = [];
      if (!ENDED.has(job.state)) {
        parts.push(progressBar(job));
        const note = stateNote(job);
        if (note) parts.push(h("p", { class: "note", text: note }));
      }
      if (job.error && job.state !== "done") {
        parts.push(h("div", { class: "error", id: "job-error" },
          h("div", {}, job.error_code ? h("span", { class: "code", text: job.error_code }) : null, " ", job.error),
          job.hint ? h("div", { class: "hint", text: job.hint }) : null,
          detail.advice ? h("div", { class: "hint", text: detail.advice }) : null));
      }
      const facts = [["added", local(job.created_at)], ["updated", local(job.updated_at)],
        ["finished", local(job.finished_at)], ["remote id", job.remote_id], ["attempts", job.attempts || ""],
        ["driver", job.driver]];
      parts.push(h("dl", { class: "kv facts" }, facts.filter(([, v]) => v).flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })])));
      const actions = h("div", { class: "actions" });
      if (job.can_retry) {
        const retry = h("button", { class: "btn retry", type: "button", id: "retry", text: "Retry" });
        retry.addEventListener("click", () => act(retry, "retry"));
        actions.append(retry);
      }
      if (job.can_cancel) {
        const sure = Date.now() < armedUntil;
        const cancel = h("button", { class: "btn danger", type: "button", id: "cancel",
          text: sure ? "Sure? Cancel the job" : "Cancel" });
        cancel.addEventListener("click", () => act(cancel, "cancel"));
        actions.append(cancel);
      }
      if (actions.childNodes.length) parts.push(actions);
      if (message) parts.push(h("p", { class: "alert bad", text: message }));
      live.replaceChildren(...parts);

      const rows = detail.events.map((e) => h("tr", {},
        h("td", { class: "when", title: e.at, text: local(e.at) }),
        h("td", { text: e.kind }),
        h("td", {}, e.to && e.from !== e.to ? [e.from ? badge(e.from) : null, e.from ? " → " : null, badge(e.to)] : null),
        h("td", { class: "detail", text: e.detail })));
      $("#events tbody").replaceChildren(...rows);

      const out = $("#outputs");
      const shown = out.dataset.shown || "";
      if (job.links.video || job.links.cover) {
        if (shown === job.links.video + job.links.cover) return;   // keep the player as it is
        out.dataset.shown = job.links.video + job.links.cover;
        out.replaceChildren(...[
          job.links.video
            ? h("video", { class: "player", id: "player", src: job.links.video, poster: job.links.cover, controls: true,
              preload: "metadata", playsinline: true })
            : h("img", { class: "player", src: job.links.cover, alt: `cover of ${job.file}` }),
          h("div", { class: "downloads" },
            job.links.video ? h("a", { class: "btn primary", id: "download-video", href: `${job.links.video}?download=1`, download: "", text: "⬇ Download MP4" }) : null,
            job.links.cover ? h("a", { class: "btn", id: "download-cover", href: `${job.links.cover}?download=1`, download: "", text: "Cover (JPG)" }) : null),
          detail.duration_s ? h("p", { class: "muted", text: `${detail.duration_s.toFixed(1)} s of video` }) : null,
        ].filter(Boolean));
      } else {
        out.dataset.shown = "";
        out.replaceChildren(h("p", { class: "muted", text: job.state === "done"
          ? "The result is no longer in the outbox." : "The video and its cover appear here once the job is done." }));
      }
    }

    async function act(button, what) {
      if (what === "cancel" && Date.now() >= armedUntil) {
        // Two clicks to cancel; the page re-renders meanwhile, so the state lives here.
        armedUntil = Date.now() + 4000;
        render();
        setTimeout(render, 4100);
        return;
      }
      armedUntil = 0;
      button.disabled = true;
      const res = await post(`/api/jobs/${detail.job.id}/${what}`);
      message = res.ok ? "" : res.error || "that did not work";
      await refresh();
    }

    async function refresh() {
      const r = await fetch(`/api/jobs/${detail.job.id}`, { credentials: "same-origin", cache: "no-store" });
      noteSkew(r);
      if (r.status === 401) { location.reload(); return; }
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      detail = await r.json();
      csrf = detail.csrf || csrf;
      render();
    }

    render();
    loop(refresh, () => (ENDED.has(detail.job.state) ? 15000 : POLL_MS));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "index") initIndex();
    else if (page === "job") initJob();
  });
})();
