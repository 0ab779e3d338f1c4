/* scribefleet web UI: the job page's transcript reader (templates/job.html).
 *
 * The server renders every cue once (li.cue with data-start/data-end in
 * seconds, sorted by start, a speaker's colour class). This script never
 * rebuilds that list: on the media's timeupdate/seeked it finds the current
 * cue by binary search over the start times and moves one class (the cue is
 * scrolled into view); a click on a cue seeks the media to its start; the
 * search box hides the cues without the words and marks them in the others,
 * touching only the cues whose marks change. So 5,000 cues cost one render.
 * Text is set as text nodes only, never as markup.
 */
"use strict";

const SEARCH_DELAY_MS = 150;

function initTranscriptReader() {
  const list = document.getElementById("cues");
  if (!list) return;
  const media = document.getElementById("media");
  const cues = Array.from(list.querySelectorAll(":scope > li.cue"));
  const index = new Map(cues.map((cue, i) => [cue, i]));
  const starts = Float64Array.from(cues, (cue) => parseFloat(cue.dataset.start) || 0);
  const texts = cues.map((cue) => cue.querySelector(".text"));
  const plain = texts.map((el) => el.textContent);
  const lower = plain.map((t) => t.toLowerCase());
  const marked = new Uint8Array(cues.length);
  let current = -1;

  // the last cue that starts at or before t, or -1 before the first
  const cueAt = (t) => {
    let lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (starts[mid] <= t) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  };

  const show = (i, scroll) => {
    if (i === current) return;
    if (current >= 0) {
      cues[current].classList.remove("current");
      cues[current].removeAttribute("aria-current");
    }
    current = i;
    if (i < 0) return;
    cues[i].classList.add("current");
    cues[i].setAttribute("aria-current", "true");
    if (scroll && !cues[i].hidden) cues[i].scrollIntoView({ block: "nearest" });
  };

  if (media) {
    const follow = () => show(cueAt(media.currentTime + 0.0005), true);
    media.addEventListener("timeupdate", follow);
    media.addEventListener("seeked", follow);
  }

  list.addEventListener("click", (e) => {
    const cue = e.target.closest && e.target.closest("li.cue");
    if (!cue || !index.has(cue)) return;
    const i = index.get(cue);
    show(i, false);
    if (media) media.currentTime = starts[i];
  });

  const box = document.getElementById("transcript-search");
  const count = document.querySelector("#transcript .search-count");
  const mark = (i, q, at) => {
    const el = texts[i], text = plain[i];
    el.textContent = "";
    let from = 0;
    while (at >= 0) {
      el.append(text.slice(from, at));
      const hit = document.createElement("mark");
      hit.textContent = text.slice(at, at + q.length);
      el.append(hit);
      from = at + q.length;
      at = lower[i].indexOf(q, from);
    }
    el.append(text.slice(from));
  };
  const search = () => {
    const q = box.value.trim().toLowerCase();
    let hits = 0;
    for (let i = 0; i < cues.length; i++) {
      const at = q ? lower[i].indexOf(q) : -1;
      const keep = !q || at >= 0;
      if (cues[i].hidden === keep) cues[i].hidden = !keep;
      if (at >= 0) {
        hits++;
        mark(i, q, at);
        marked[i] = 1;
      } else if (marked[i]) {
        texts[i].textContent = plain[i];
        marked[i] = 0;
      }
    }
    list.classList.toggle("searching", Boolean(q));
    if (count) count.textContent = q ? hits + " of " + cues.length + " lines" : "";
  };
  if (box) {
    let timer = 0;
    box.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, SEARCH_DELAY_MS); });
    box.addEventListener("keydown", (e) => {  // Enter plays from the first line found
      if (e.key !== "Enter") return;
      clearTimeout(timer);
      search();
      const first = cues.findIndex((cue) => !cue.hidden);
      if (first >= 0 && box.value.trim()) {
        show(first, true);
        if (media) media.currentTime = starts[first];
      }
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  if (document.body.dataset.page === "job") initTranscriptReader();
});
