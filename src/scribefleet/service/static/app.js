/* scribefleet web UI, part 1 of 2: the API, and jobs drawn and followed on a page.
 *
 * It talks to the controller's HTTP API (docs/api.md) with the session cookie;
 * every state-changing request carries X-CSRF-Token. It never builds markup
 * from data: names, stages and messages are set as textContent only.
 *
 * Jobs are followed live by a Tracker: the batch's or the job's server-sent
 * events, and a light poll for unfinished jobs no open stream covers (the
 * recent-jobs table; browsers allow only ~6 connections per host, so there is
 * one stream per batch, not per job). pages.js, loaded after this file, wires
 * it all into each page.
 */
"use strict";

const TERMINAL = new Set(["complete", "failed", "canceled", "skipped"]);
const POLL_MS = 2500;       // jobs without a stream are re-read this often
const RUNTIME_REFRESH_MS = 3000;
const CSRF_KEY = "scribefleet.csrfToken";

/* ---- API ------------------------------------------------------------------ */

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return (meta && meta.content) || sessionStorage.getItem(CSRF_KEY) || "";
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function errorFrom(resp) {
  let code = "HTTP_" + resp.status, message = "The controller answered HTTP " + resp.status + ".";
  try {
    const body = await resp.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch (_) { /* not JSON */ }
  return new ApiError(resp.status, code, message);
}

function toLogin() {
  const next = location.pathname + location.search;
  location.assign("/ui/login?next=" + encodeURIComponent(next));
}

async function api(method, url, body) {
  const headers = { "Accept": "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken();
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url, init);
  if (resp.status === 401 && document.body.dataset.page !== "login") {
    toLogin();
    throw new ApiError(401, "UNAUTHORIZED", "Your session ended; log in again.");
  }
  if (!resp.ok) throw await errorFrom(resp);
  return resp.status === 204 ? null : resp.json();
}

/* Upload with progress events (fetch has none for request bodies). */
function uploadFile(file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/uploads");
    xhr.setRequestHeader("X-CSRF-Token", csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(100 * e.loaded / e.total); };
    xhr.onerror = () => reject(new ApiError(0, "UPLOAD_FAILED", "The upload of " + file.name + " was interrupted."));
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status >= 200 && xhr.status < 300) return resolve(body);
      if (xhr.status === 401) toLogin();
      const err = (body && body.error) || {};
      reject(new ApiError(xhr.status, err.code || "HTTP_" + xhr.status,
        err.message || "The upload of " + file.name + " failed (HTTP " + xhr.status + ")."));
    };
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
}

function flash(message) {
  const box = document.getElementById("flash");
  if (!box) return;
  box.textContent = message;
  box.hidden = !message;
}

/* ---- jobs on the page ------------------------------------------------------ */

function jobOf(raw) {
  const progress = raw.progress || {};
  const status = raw.status || "unknown";
  let percent = Math.round(Number(progress.percent) || 0);
  if (status === "complete") percent = 100;
  return {
    id: raw.id || raw.jobId,
    name: raw.filename || raw.name || raw.key || raw.id || raw.jobId,
    status,
    stage: progress.stage || raw.stage || "",
    percent: Math.max(0, Math.min(100, percent)),
    errorCode: raw.lastErrorCode || "",
    errorMessage: raw.lastErrorMessage || "",
    elapsedS: progress.elapsedS ?? null,
    etaS: progress.etaS ?? null,
  };
}

/* 1h02m, 3m05s, 42s (jobs/eta.py clock) */
function clockText(s) {
  if (s === null || s === undefined) return "?";
  s = Math.round(Number(s));
  const two = (n) => String(n).padStart(2, "0");
  if (s >= 3600) return Math.floor(s / 3600) + "h" + two(Math.floor((s % 3600) / 60)) + "m";
  return s >= 60 ? Math.floor(s / 60) + "m" + two(s % 60) + "s" : s + "s";
}

/* A job's or batch's elapsed time and ETA (ui_views.times_text writes the same). */
function timesText(elapsedS, etaS, finished) {
  if (elapsedS === null || elapsedS === undefined) return "";
  if (finished) return "took " + clockText(elapsedS);
  return "elapsed " + clockText(elapsedS) + " · ETA " + clockText(etaS);
}

/* Draws a job into every element that shows it (rows of tables, the job page's card). */
function drawJob(el, job) {
  el.dataset.status = job.status;
  const set = (sel, text) => { const n = el.querySelector(sel); if (n) n.textContent = text; };
  set(".status", job.status);
  set(".stage", job.stage);
  set(".percent", job.percent + "%");
  if (job.elapsedS !== undefined) set(".times", timesText(job.elapsedS, job.etaS, TERMINAL.has(job.status)));
  const bar = el.querySelector("progress");
  if (bar) bar.value = job.percent;
  const err = el.querySelector("td.error");
  if (err) {
    err.textContent = "";
    if (job.errorCode) {
      const code = document.createElement("code");
      code.textContent = job.errorCode;
      err.append(code, " " + job.errorMessage);
    }
  }
  const box = el.querySelector(".error-box");
  if (box) {
    box.hidden = !job.errorCode;
    set(".error-code", job.errorCode);
    set(".error-message", job.errorMessage);
  }
}

function newRow(job) {
  const tpl = document.getElementById("job-row-template");
  const row = tpl.content.firstElementChild.cloneNode(true);
  row.dataset.jobId = job.id;
  const link = row.querySelector(".name a");
  link.href = "/ui/jobs/" + encodeURIComponent(job.id);
  link.textContent = job.name;
  drawJob(row, job);
  return row;
}

/* Follows jobs: server-sent events of a batch or a job (docs/api.md), a light poll for
 * unfinished jobs no open stream covers (the recent-jobs table, a stream that broke). */
class Tracker {
  constructor(onChange) {
    this.jobs = new Map();      // id -> latest job as drawn
    this.streams = new Map();   // url -> {es, covers(id)}
    this.onChange = onChange || (() => {});
    this.onBatch = null;  // (data) of each `batch` event of a batch stream
    this.timer = setInterval(() => this.poll(), POLL_MS);
  }

  elements(id) {
    return document.querySelectorAll('[data-job-id="' + CSS.escape(id) + '"]');
  }

  update(job) {
    const before = this.jobs.get(job.id);
    this.jobs.set(job.id, job);
    this.elements(job.id).forEach((el) => drawJob(el, job));
    this.onChange(job, before);
  }

  merge(id, patch) {
    const old = this.jobs.get(id);
    if (!old) return;
    const job = Object.assign({}, old);
    if (patch.status) job.status = patch.status;
    if (patch.stage !== undefined && patch.stage !== null) job.stage = patch.stage;
    if (patch.percent !== undefined && patch.percent !== null) {
      job.percent = Math.max(0, Math.min(100, Math.round(Number(patch.percent) || 0)));
    }
    if (patch.elapsedS !== undefined) { job.elapsedS = patch.elapsedS; job.etaS = patch.etaS; }
    if (job.status === "complete") job.percent = 100;
    this.update(job);
  }

  /* Opens `url` (a job's or a batch's event stream) unless it is open; covers(id) says
   * which jobs it reports, so the poll leaves those alone. */
  stream(url, covers, onEnd) {
    if (this.streams.has(url)) return;
    const es = new EventSource(url);
    this.streams.set(url, { es, covers });
    const parse = (ev) => { try { return JSON.parse(ev.data); } catch (_) { return null; } };
    es.addEventListener("job", (ev) => {
      const raw = parse(ev);
      if (raw && (raw.id || raw.jobId)) this.update(Object.assign(jobOf(raw), this.keepName(raw)));
    });
    es.addEventListener("progress", (ev) => {
      const data = parse(ev);
      if (data && data.id) {
        this.merge(data.id, { status: data.status, stage: data.stage, percent: data.percent,
          elapsedS: data.elapsedS, etaS: data.etaS });
      }
    });
    es.addEventListener("batch", (ev) => {
      // the whole batch's elapsed time and ETA, into its summary line(s); the rest to onBatch (the batch page)
      const data = parse(ev);
      if (!data || !data.id) return;
      const finished = data.files > 0 && data.filesDone === data.files;
      document.querySelectorAll('.batch-summary[data-batch-id="' + CSS.escape(data.id) + '"] .batch-times')
        .forEach((n) => { n.textContent = timesText(data.elapsedS, data.etaS, finished); });
      if (this.onBatch) this.onBatch(data);
    });
    es.addEventListener("end", () => {
      // the server closes the stream now; without close() the browser would reconnect
      es.close();
      this.streams.delete(url);
      if (onEnd) onEnd();
    });
    es.onerror = () => {
      // a stream the server refused (401, 404) is CLOSED; a dropped one reconnects by itself
      if (es.readyState === EventSource.CLOSED) this.streams.delete(url);
    };
  }

  keepName(raw) {
    const old = this.jobs.get(raw.id || raw.jobId);
    return !raw.filename && old ? { name: old.name } : {};
  }

  covered(id) {
    for (const { covers } of this.streams.values()) if (covers(id)) return true;
    return false;
  }

  async refresh(id) {
    try {
      const raw = await api("GET", "/api/jobs/" + encodeURIComponent(id));
      this.update(jobOf(raw));
    } catch (err) {
      if (err.status !== 401) flash(err.message);
    }
  }

  poll() {
    const due = [...this.jobs.values()].filter((j) => !TERMINAL.has(j.status) && !this.covered(j.id));
    due.slice(0, 10).forEach((j) => this.refresh(j.id));
  }
}

/* A job answer (cancel, SSE `job`) as a patch of what the page shows. */
function eventPatch(raw) {
  const job = jobOf(raw);
  return { status: job.status, stage: job.stage, percent: job.percent };
}

/* Reads the rows the server drew, so the tracker follows them. */
function adoptRows(tracker, root) {
  root.querySelectorAll("[data-job-id]").forEach((el) => {
    if (!el.dataset.jobId || tracker.jobs.has(el.dataset.jobId)) return;
    const text = (sel) => { const n = el.querySelector(sel); return n ? n.textContent.trim() : ""; };
    tracker.jobs.set(el.dataset.jobId, {
      id: el.dataset.jobId, name: text(".name, .job-name"), status: el.dataset.status,
      stage: text(".stage"), percent: parseInt(text(".percent"), 10) || 0,
      errorCode: text(".error-code, td.error code"), errorMessage: text(".error-message"),
    });
  });
}

function inPanel(panel) {
  return (id) => !!panel.querySelector('tr[data-job-id="' + CSS.escape(id) + '"]');
}

function drawBatch(tracker, panel) {
  const ids = [...panel.querySelectorAll("tr[data-job-id]")].map((r) => r.dataset.jobId);
  // a file whose upload or job was refused has a failed row and no job: it is done too, or the batch never ends
  const refused = [...panel.querySelectorAll('tr.job[data-job-id=""][data-status="failed"]')]
    .map(() => ({ status: "failed", percent: 100 }));
  const jobs = ids.map((id) => tracker.jobs.get(id)).filter(Boolean).concat(refused);
  const done = jobs.filter((j) => TERMINAL.has(j.status)).length;
  const total = Math.max(jobs.length, Number(panel.dataset.total || 0));
  const pct = total ? Math.round(jobs.reduce((s, j) => s + (TERMINAL.has(j.status) ? 100 : j.percent), 0) / total) : 0;
  const summary = panel.querySelector(".batch-summary");
  const failed = jobs.filter((j) => j.status === "failed").length;
  drawSummary(summary, done, total, failed, pct);
}

/* A batch page's summary from its stream's `batch` event: the counts and progress of every job of the batch,
 * this page's rows or not (ui_views.batch_view draws the same at first). */
function drawBatchSums(summary, data) {
  const counts = data.counts || {};
  const total = Object.values(counts).reduce((s, n) => s + n, 0);
  const done = Object.entries(counts).filter(([s]) => TERMINAL.has(s)).reduce((s, [, n]) => s + n, 0);
  drawSummary(summary, done, total, counts.failed || 0, batchPercent(data, done, total));
}

/* How far a batch is (ui_views.batch_percent): of the audio of its files that can still complete, else of
 * those files; every file ended when none can. */
function batchPercent(progress, done, total) {
  if (!progress.files) return total && done === total ? 100 : 0;
  const part = progress.audioS ? (progress.audioDoneS || 0) / progress.audioS : (progress.filesDone || 0) / progress.files;
  return Math.max(0, Math.min(100, Math.round(100 * part)));
}

function drawSummary(summary, done, total, failed, pct) {
  const state = !total ? "empty" : done === total ? "done" : "running";
  summary.querySelector(".batch-progress").value = pct;
  summary.querySelector(".batch-counts").textContent = done + " of " + total + " done";
  summary.querySelector(".batch-state").textContent = state === "done" && failed ? "done, " + failed + " failed" : state;
  summary.dataset.state = state;
}
