/* Live updates of the admin pages, by polling a small JSON endpoint.
 *
 * Every admin page: the pending-checkpoint badge (#pending-badge) follows the count,
 * polling the URL in this script tag's data-count-url. The checkpoint list
 * (table#checkpoint-list) polls its own data-live-url instead, and also re-renders
 * its rows and the page title (data-title, prefixed with "(N) " when N > 0).
 * Rows still listed are kept (focus and selection survive), new ones are added in
 * order, decided ones removed. Deadlines (time.countdown) tick every second, and the
 * list's "Select all" checks every row's box. Everything works without this file.
 */
(() => {
  "use strict";

  // "in 45 s", "in 12 min", "in 3 h 20 min", "in 2 d 4 h": as the server renders them.
  function remaining(deadline) {
    const seconds = Math.floor((deadline - Date.now()) / 1000);
    if (seconds <= 0) return "any moment now";
    const minutes = Math.floor(seconds / 60);
    const hours = Math.floor(seconds / 3600);
    const days = Math.floor(seconds / 86400);
    if (seconds < 60) return `in ${seconds} s`;
    if (minutes < 60) return `in ${minutes} min`;
    if (hours < 24) return `in ${hours} h ${minutes % 60} min`;
    return `in ${days} d ${hours % 24} h`;
  }

  function tick() {
    for (const time of document.querySelectorAll("time.countdown")) {
      time.textContent = remaining(Date.parse(time.dateTime));
    }
  }
  if (document.querySelector("time.countdown, #checkpoint-list")) setInterval(tick, 1000);

  const selectAll = document.getElementById("select-all");
  if (selectAll) {
    selectAll.addEventListener("change", () => {
      for (const box of document.querySelectorAll('#checkpoint-list input[name="id"]')) {
        box.checked = selectAll.checked;
      }
    });
  }

  const INTERVAL = 2000; // visible page: a new checkpoint shows within 3 s
  const HIDDEN_INTERVAL = 10000; // background tab: keep the badge roughly current
  const script = document.currentScript;
  const list = document.getElementById("checkpoint-list");
  const badge = document.getElementById("pending-badge");
  const url = list ? list.dataset.liveUrl : script && script.dataset.countUrl;
  if (!url || !(list || badge)) return;

  let timer = 0;
  let busy = false;
  let stopped = false;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function ageCell(c) {
    const td = el("td", "cp-age");
    const time = el("time", "", c.age);
    time.dateTime = c.createdAt;
    time.title = c.created;
    td.append(time);
    return td;
  }

  function checkCell(c) {
    const td = el("td", "cp-check");
    if (!c.mayDecide) return td;
    const box = el("input");
    box.type = "checkbox";
    box.name = "id";
    box.value = c.id;
    box.setAttribute("aria-label", `Select ${c.taskDescription}`);
    const version = el("input");
    version.type = "hidden";
    version.name = `version-${c.id}`;
    version.value = String(c.version);
    td.append(box, version);
    return td;
  }

  function votesCell(c) {
    const td = el("td", "cp-votes-cell");
    td.append(el("span", "cp-tally", c.votes));
    if (!c.mayDecide) td.append(" ", el("span", "muted small cp-not-yours", "not yours to decide"));
    return td;
  }

  function deadlineCell(c) {
    const td = el("td", "optional cp-deadline");
    if (!c.deadline) return td;
    const time = el("time", "countdown", c.deadline.left);
    time.dateTime = c.deadline.at;
    time.title = c.deadline.when;
    td.append(`${c.deadline.then} `, time);
    return td;
  }

  function makeRow(c) {
    const tr = el("tr", "is-new");
    tr.dataset.checkpointId = c.id;
    const task = el("td");
    const link = el("a", "cp-task", c.taskDescription);
    link.href = c.url;
    const title = el("span", "cp-title muted small", c.title);
    title.append(el("span", "cp-type-inline", ` · ${c.jobType}`));
    task.append(link, " ", title);
    const type = el("td", "optional");
    type.append(el("code", "", c.jobType));
    const prio = el("td");
    prio.append(el("span", c.priority >= 8 ? "prio prio-high" : "prio", String(c.priority)));
    tr.append(checkCell(c), task, type, el("td", "optional", c.owner), prio);
    tr.append(votesCell(c), deadlineCell(c), ageCell(c));
    return tr;
  }

  function emptyRow() {
    const tr = el("tr", "cp-empty");
    const td = el("td", "empty", "No pending checkpoints");
    td.colSpan = 8;
    tr.append(td);
    return tr;
  }

  function renderRows(checkpoints) {
    const body = list.tBodies[0];
    const kept = new Map();
    for (const tr of Array.from(body.rows)) {
      if (tr.dataset.checkpointId) kept.set(tr.dataset.checkpointId, tr);
      else if (checkpoints.length) tr.remove();
    }
    const wanted = checkpoints.map((c) => {
      const tr = kept.get(c.id);
      if (!tr) return makeRow(c);
      kept.delete(c.id);
      tr.querySelector(".cp-age").replaceWith(ageCell(c));
      tr.querySelector(".cp-votes-cell").replaceWith(votesCell(c));
      // Keep a ticked box; drop it once the admin may no longer decide (they voted).
      const box = tr.querySelector('.cp-check input[name="id"]');
      if (Boolean(box) !== c.mayDecide) tr.querySelector(".cp-check").replaceWith(checkCell(c));
      return tr;
    });
    for (const tr of kept.values()) tr.remove();
    // Move only rows out of place: moving a row would take the focus from its link.
    wanted.forEach((tr, i) => {
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
    });
    if (!wanted.length && !body.rows.length) body.append(emptyRow());
  }

  function update(body) {
    const count = body.count;
    if (badge) {
      badge.textContent = String(count);
      badge.classList.toggle("badge-zero", !count);
      badge.setAttribute("aria-label", `${count} pending`);
    }
    if (list) {
      document.title = (count ? `(${count}) ` : "") + list.dataset.title;
      if (Array.isArray(body.checkpoints)) renderRows(body.checkpoints);
    }
  }

  async function poll() {
    if (busy || stopped) return;
    clearTimeout(timer);
    busy = true;
    try {
      const response = await fetch(url, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        cache: "no-store",
        redirect: "manual", // to the login page: the session ended
      });
      stopped = response.type === "opaqueredirect" || [401, 403].includes(response.status);
      if (response.ok) update(await response.json());
    } catch (error) {
      // Offline or the server restarting: try again at the next tick.
    } finally {
      busy = false;
    }
    if (!stopped) timer = setTimeout(poll, document.hidden ? HIDDEN_INTERVAL : INTERVAL);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) poll();
  });
  timer = setTimeout(poll, INTERVAL);
})();
