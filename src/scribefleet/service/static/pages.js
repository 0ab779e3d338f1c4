/* scribefleet web UI, part 2 of 2: what each page does (body[data-page]).
 *
 * login: posts the token, keeps the CSRF token it gets back. home: drop zone,
 * file picker and options; one batch per submit, each file uploaded and its
 * job created (also at the top of the job list on its first page of all jobs), then followed over the batch's
 * event stream; the list's status counts are read again as jobs are made and change status. job: follows the
 * job, cancel button, reloads once when the job ends. batch: follows its
 * jobs. runtime: re-fetches its server-rendered fragment every few seconds.
 * Uses app.js (loaded first).
 */
"use strict";

// the jobs one page of the home page's list shows (service/ui.py RECENT_JOBS asks the API for as many)
const RECENT_ROWS = 20;
// how long after a job was made or changed status the home page's counts are read again (one read for many changes)
const COUNTS_DELAY_MS = 1000;

// the target after login, if it stays on this site (the server checked it too; this is the second lock)
function sameSite(target) {
  if (!target || !target.startsWith("/") || /[\\\s\x00-\x1f\x7f]/.test(target)) return null;
  try {
    const url = new URL(target, location.origin);
    return url.origin === location.origin ? url.pathname + url.search + url.hash : null;
  } catch (_) {
    return null;
  }
}

function initLogin() {
  const form = document.getElementById("login-form");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    flash("");
    try {
      const body = await api("POST", "/api/session", { token: form.token.value });
      if (body && body.csrfToken) sessionStorage.setItem(CSRF_KEY, body.csrfToken);
      location.assign(sameSite(form.dataset.next) || "/ui/");
    } catch (err) {
      flash(err.status === 401 || err.status === 403 ? "That token was not accepted." : err.message);
    }
  });
}

function initLogout() {
  const button = document.getElementById("logout");
  if (!button) return;
  button.addEventListener("click", async () => {
    try { await api("DELETE", "/api/session"); } catch (_) { /* gone already */ }
    sessionStorage.removeItem(CSRF_KEY);
    location.assign("/ui/login");
  });
}

function formOptions(form) {
  const options = { model: form.model.value.trim() || "tiny.en" };
  const language = form.language.value.trim();
  if (language) options.language = language;
  options.formats = [...form.querySelectorAll('input[name="formats"]:checked')].map((i) => i.value);
  options.word_timestamps = form.word_timestamps.checked;
  if (form.diarize && form.diarize.checked) options.diarize = true;
  return options;
}

function initHome(tracker) {
  const form = document.getElementById("submit-form");
  const input = document.getElementById("file-input");
  const zone = document.getElementById("dropzone");
  const list = document.getElementById("file-list");
  const button = document.getElementById("submit-button");
  const panel = document.getElementById("batch-panel");
  const urlBox = document.getElementById("url-input");
  let files = [];
  // every word of the box counts: one that is not an http(s) URL is said, never dropped without a word
  const words = () => urlBox.value.split(/\s+/).filter(Boolean);
  const urls = () => words().filter((u) => /^https?:\/\/\S+$/.test(u));

  const drawFiles = () => {
    list.textContent = "";
    for (const f of files) {
      const li = document.createElement("li");
      li.textContent = f.name + " (" + (f.size / 1048576).toFixed(1) + " MB)";
      list.append(li);
    }
    button.disabled = files.length === 0 && words().length === 0;
  };
  urlBox.addEventListener("input", () => { button.disabled = files.length === 0 && words().length === 0; });
  const addFiles = (picked) => { files = files.concat([...picked]); drawFiles(); };

  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files) addFiles(e.dataTransfer.files);
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    flash("");
    const options = formOptions(form);
    const remote = Boolean(form.remote && form.remote.checked);
    if (!options.formats.length) return flash("Pick at least one output format.");
    const notUrls = words().filter((w) => !urls().includes(w));
    if (notUrls.length) {
      return flash("Not a media URL: " + notUrls.slice(0, 3).join(", ") + (notUrls.length > 3 ? "..." : "") +
        ". Give each as a full https:// (or http://) address, one per line.");
    }
    // a file is uploaded first; a URL is fetched by the controller (a {url} job)
    const todo = files.concat(urls().map((url) => ({ url, name: url })));
    files = [];
    urlBox.value = "";
    drawFiles();
    button.disabled = true;
    try {
      const name = todo.length === 1 ? todo[0].name : todo[0].name + " and " + (todo.length - 1) + " more";
      const batch = await api("POST", "/api/batches", { name });
      const batchId = batch.batchId || batch.id;
      panel.hidden = false;
      panel.querySelector(".batch-summary").dataset.batchId = batchId;
      const link = document.getElementById("batch-link");
      link.textContent = batchId;
      link.href = "/ui/batches/" + encodeURIComponent(batchId);
      panel.dataset.total = String(todo.length);
      const tbody = panel.querySelector("tbody");
      const events = "/api/batches/" + encodeURIComponent(batchId) + "/events";
      for (const file of todo) {
        await submitOne(file, options, batchId, tbody, tracker, remote);
        drawBatch(tracker, panel);
        // (re)opened after each job: the stream ends whenever all jobs so far are done
        tracker.stream(events, inPanel(panel));
      }
    } catch (err) {
      flash(err.message);
    }
    button.disabled = files.length === 0;
  });
}

async function submitOne(file, options, batchId, tbody, tracker, remote) {
  const pending = newRow({ id: "", name: file.name, status: "uploading", stage: "upload", percent: 0 });
  pending.querySelector(".name a").removeAttribute("href");
  tbody.append(pending);
  try {
    if (file.url) {
      const job = jobOf(await api("POST", "/api/jobs", { url: file.url, options, batchId }));
      pending.replaceWith(newRow(job));
      tracker.update(job);
      addRecent(job);
      return;
    }
    const up = await uploadFile(file, (pct) => drawJob(pending, {
      status: "uploading", stage: "upload", percent: Math.round(pct), errorCode: "", errorMessage: "" }));
    const body = { uploadId: up.uploadId, options, batchId };
    if (remote) body.remote = true;
    const job = jobOf(await api("POST", "/api/jobs", body));
    if (!job.name || job.name === job.id) job.name = up.filename || file.name;
    pending.replaceWith(newRow(job));
    tracker.update(job);
    addRecent(job);
  } catch (err) {
    drawJob(pending, { status: "failed", stage: "upload", percent: 0, errorCode: err.code, errorMessage: err.message });
  }
}

/* A job this page made, at the top of the job list when it shows the newest of all jobs (the first page,
 * no status chosen; the tracker draws every row of a job alike); the counts are read again either way. */
function addRecent(job) {
  countsSoon();
  const card = document.getElementById("jobs-card");
  const table = document.getElementById("recent-jobs");
  if (!table || !card || card.dataset.live !== "true") return;
  const body = table.tBodies[0];
  body.prepend(newRow(job));
  while (body.rows.length > RECENT_ROWS) body.lastElementChild.remove();
  document.getElementById("recent-box").hidden = false;
  document.getElementById("no-jobs").hidden = true;
}

/* The count of each status in the filter, and the page's "21-40 of 48", read again from the API
 * (GET /api/jobs?status=S&limit=1 answers the total) a moment after jobs were made or changed status. */
let countsTimer = null;
function countsSoon() {
  if (countsTimer === null) countsTimer = setTimeout(() => { countsTimer = null; refreshCounts(); }, COUNTS_DELAY_MS);
}

async function refreshCounts() {
  const card = document.getElementById("jobs-card");
  if (!card) return;
  const total = async (status) => {
    const body = await api("GET", "/api/jobs?limit=1" + (status ? "&status=" + encodeURIComponent(status) : ""));
    return Number(body.total) || 0;
  };
  try {
    // every total read first, then drawn at once: the counts and the page's range never disagree on screen
    const links = [...card.querySelectorAll(".status-filter a[data-status]")];
    const [all, ...counts] = await Promise.all([card.dataset.status || "", ...links.map((l) => l.dataset.status)].map(total));
    links.forEach((link, i) => { link.querySelector(".count").textContent = String(counts[i]); });
    const shown = card.querySelectorAll("#recent-jobs tbody tr.job").length;
    const offset = Number(card.dataset.offset) || 0;
    card.querySelector(".page-range").textContent = shown ? (offset + 1) + "\u2013" + (offset + shown) + " of " + all : "";
    const pager = card.querySelector(".pager");
    if (offset + RECENT_ROWS < all && !pager.querySelector("a.older")) {
      const older = document.createElement("a");
      older.className = "older";
      older.rel = "next";
      const query = new URLSearchParams(card.dataset.status ? { status: card.dataset.status } : {});
      query.set("offset", String(offset + RECENT_ROWS));
      older.href = "/ui/?" + query.toString();
      older.textContent = "Older \u2192";
      pager.append(older);
    }
  } catch (err) {
    if (err.status !== 401) flash(err.message);
  }
}

function initJob(tracker) {
  const card = document.querySelector(".job-detail");
  const id = card.dataset.jobId;
  const button = document.getElementById("cancel-button");
  const startedTerminal = TERMINAL.has(card.dataset.status);
  tracker.onChange = (job) => {
    if (job.id !== id) return;
    button.hidden = TERMINAL.has(job.status);
    // a job that ends while watched: reload once to show its downloads and transcript
    if (!startedTerminal && TERMINAL.has(job.status) && !card.dataset.reloading) {
      card.dataset.reloading = "1";
      location.reload();
    }
  };
  adoptRows(tracker, document);
  if (!startedTerminal) {
    tracker.stream("/api/jobs/" + encodeURIComponent(id) + "/events", (j) => j === id, () => tracker.refresh(id));
  }
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      const job = await api("POST", "/api/jobs/" + encodeURIComponent(id) + "/cancel");
      if (job && job.status) tracker.update(jobOf(job));
      else await tracker.refresh(id);
    } catch (err) {
      flash(err.message);
    }
    button.disabled = false;
  });
}

function initRuntime() {
  const box = document.getElementById("runtime");
  setInterval(async () => {
    try {
      const resp = await fetch(box.dataset.refreshUrl, { credentials: "same-origin" });
      if (resp.status === 401) return toLogin();
      if (resp.ok) box.innerHTML = await resp.text();  // server-rendered, autoescaped HTML
    } catch (_) { /* the next refresh tries again */ }
  }, RUNTIME_REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  initLogout();
  if (page === "login") return initLogin();
  if (page === "runtime") return initRuntime();
  if (page === "job") return initJob(new Tracker());
  if (page === "home" || page === "batch") {
    const panel = document.getElementById(page === "home" ? "batch-panel" : "batch-page");
    const tracker = new Tracker((job, before) => {
      // the home page's panel sums its own rows (files this page sent, refused ones too); a batch page's
      // summary is of every job of the batch, from its stream's `batch` events (a page shows 200 rows)
      if (page === "home" && !panel.hidden) drawBatch(tracker, panel);
      if (page === "home" && before && before.status !== job.status) countsSoon();
    });
    adoptRows(tracker, document);
    if (page === "home") return initHome(tracker);
    const summary = panel.querySelector(".batch-summary");
    tracker.onBatch = (data) => drawBatchSums(summary, data);
    if (summary.dataset.state !== "done") {
      tracker.stream("/api/batches/" + encodeURIComponent(panel.dataset.batchId) + "/events", inPanel(panel));
    }
  }
});
