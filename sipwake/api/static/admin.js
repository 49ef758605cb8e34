// sipwake admin page: polls the JSON admin endpoints with the service token as a Bearer
// header. The token comes from the URL fragment (#token=…, which browsers never send to
// a server), from this tab's session storage, or from the form. Data is only ever put
// into the page as text (textContent), never as markup.
"use strict";

const POLL_MS = 1000;
const LIMIT = 50;
let token = "";
let selected = "";   // the call whose timeline is shown
let pinned = false;  // the operator picked it (else: the newest call)
let timer = 0;

const $ = (id) => document.getElementById(id);

function readFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const fromUrl = params.get("token");
  if (params.get("call")) { selected = params.get("call"); pinned = true; }
  if (fromUrl) {
    token = fromUrl;
    sessionStorage.setItem("sipwake-token", token);
    // out of the address bar and the history, now that the tab keeps it
    history.replaceState(null, "", location.pathname + location.search);
  } else {
    token = sessionStorage.getItem("sipwake-token") || "";
  }
}

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + token },
                                   cache: "no-store" });
  if (resp.status === 401) throw new Error("unauthorized");
  if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
  return resp.json();
}

function ago(now, at) {
  if (!at) return "never";
  const s = Math.max(0, now - at);
  if (s < 1) return "now";
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function fill(id, rows, columns, onRow) {
  const body = $(id).querySelector("tbody");
  const out = [];
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const col of columns) {
      const value = col(row);
      tr.appendChild(Array.isArray(value) ? cell(value[0], value[1]) : cell(value));
    }
    if (onRow) onRow(tr, row);
    out.push(tr);
  }
  if (!out.length) {
    const tr = document.createElement("tr");
    const td = cell("none", "empty");
    td.colSpan = columns.length;
    tr.appendChild(td);
    out.push(tr);
  }
  body.replaceChildren(...out);
  const count = $(id + "-count");
  if (count) count.textContent = rows.length >= LIMIT ? "(" + LIMIT + "+)" : "(" + rows.length + ")";
}

const answerClass = (a) => a === "delivered" ? "ok" : a === "retry" ? "warn" : "bad";

function render(o) {
  const now = o.now;
  $("clock").textContent = new Date(now * 1000).toLocaleTimeString() + " · " +
    o.registered_users + " users registered";
  fill("calls", o.calls, [
    (c) => [c.call_id, "mono"], (c) => c.callee, (c) => c.caller_name || c.caller,
    (c) => c.parked ? ["parked", "warn"] : ["ringing", "ok"], (c) => c.pushed,
    (c) => seconds(c.deadline - now),
  ], pick((c) => c.call_id));
  fill("recent-calls", o.recent_calls, [
    (c) => [c.call_id, "mono"], (c) => c.callee, (c) => c.caller,
    (c) => [c.state, c.state === "answered" ? "ok" : c.state === "parked" ? "warn" : "bad"],
    (c) => ago(now, c.started_at),
  ], pick((c) => c.call_id));
  fill("registrations", o.registrations, [
    (r) => r.user, (r) => [r.device_id || r.key, "mono"], (r) => r.received,
    (r) => seconds(r.expires_in), (r) => r.user_agent,
  ]);
  fill("devices", o.devices, [
    (d) => [d.device_id, "mono"], (d) => d.user, (d) => d.platform + " · " + d.provider,
    (d) => d.platform === "ios" ? d.call_mode : "data",
    (d) => [[d.token, d.voip_token && "voip " + d.voip_token].filter(Boolean).join("  "), "mono"],
    (d) => d.enabled ? ["enabled", "ok"] : ["disabled: " + d.disabled_reason, "bad"],
  ]);
  fill("pushes", o.pushes, [
    (p) => ago(now, p.at), (p) => p.type, (p) => p.user, (p) => [p.device, "mono"],
    (p) => p.provider,
    (p) => [p.answer + (p.status ? " " + p.status : "") + (p.reason ? " " + p.reason : ""),
            answerClass(p.answer)],
    (p) => p.ms.toFixed(1) + " ms", (p) => p.attempts,
  ]);
  fill("providers", o.providers, [
    (p) => p.name, (p) => p.delivered, (p) => [p.errors, p.errors ? "bad" : ""],
    (p) => ago(now, p.last_success_at),
    (p) => p.last_error ? [ago(now, p.last_error_at) + ": " + p.last_error, "bad"] : "–",
    (p) => p.auth_error ? [p.auth_error, "bad"] : seconds(p.token_age),
  ]);
  fill("inbox", o.inbox, [(i) => i.user, (i) => i.unread]);
  if (!pinned && o.recent_calls.length) selected = o.recent_calls[0].call_id;
  for (const tr of document.querySelectorAll("tr.pick")) {
    tr.classList.toggle("selected", tr.dataset.call === selected);
  }
}

function pick(key) {
  return (tr, row) => {
    tr.classList.add("pick");
    tr.dataset.call = key(row);
    tr.addEventListener("click", () => { selected = key(row); pinned = true; poll(); });
  };
}

function detail(fields) {
  const skip = new Set(["state"]);
  return Object.entries(fields).filter(([k, v]) => !skip.has(k) && v !== "" && v !== 0)
    .map(([k, v]) => k + "=" + v).join("  ");
}

function renderTimeline(t) {
  $("timeline-title").textContent = t ? t.key + " · " + (t.summary.callee || "") : "";
  const list = $("timeline");
  if (!t) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = selected ? "no longer kept" : "pick a call below";
    list.replaceChildren(li);
    return;
  }
  list.replaceChildren(...t.events.map((e) => {
    const li = document.createElement("li");
    li.className = "event";
    li.dataset.event = e.event;
    const ms = document.createElement("span");
    ms.className = "ms";
    ms.textContent = "+" + e.ms.toFixed(1) + " ms";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = e.event === "push" ? "push out · " + (e.fields.answer || "") : e.event;
    const more = document.createElement("span");
    more.className = "detail";
    more.textContent = detail(e.fields);
    li.append(ms, name, more);
    return li;
  }));
}

async function poll() {
  clearTimeout(timer);
  try {
    render(await api("/v1/admin/overview?limit=" + LIMIT));
    let t = null;
    if (selected) {
      try { t = await api("/v1/admin/calls/" + encodeURIComponent(selected)); }
      catch (e) { if (e.message === "unauthorized") throw e; }
    }
    renderTimeline(t);
    $("status").textContent = "live";
    $("status").className = "status live";
  } catch (e) {
    if (e.message === "unauthorized") { askForToken("token refused"); return; }
    $("status").textContent = "error: " + e.message;
    $("status").className = "status error";
  }
  timer = setTimeout(poll, POLL_MS);
}

function askForToken(why) {
  clearTimeout(timer);
  sessionStorage.removeItem("sipwake-token");
  $("board").hidden = true;
  $("login").hidden = false;
  $("status").textContent = why;
  $("status").className = "status error";
  $("token").focus();
}

function open() {
  $("login").hidden = true;
  $("board").hidden = false;
  poll();
}

function start() {
  readFragment();
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("sipwake-token", token);
    open();
  });
  // a token (or a call) pasted into the fragment of the open page
  window.addEventListener("hashchange", () => {
    const had = token;
    readFragment();
    if (token && token !== had) open(); else if (token) poll();
  });
  if (!token) { askForToken("no token"); return; }
  open();
}

document.addEventListener("DOMContentLoaded", start);
