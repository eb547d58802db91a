// The weir web UI: a thin client of the REST API (/v1, see /v1/openapi.json). The token stays
// in this browser's local storage and travels only in the Authorization header.
"use strict";

const $ = (id) => document.getElementById(id);
// A link may carry the token in its fragment (`/#token=...`, never sent to the server): it is
// kept in this browser and removed from the address bar.
const linked = new URLSearchParams(location.hash.slice(1)).get("token");
if (linked) {
  localStorage.setItem("weir-token", linked);
  history.replaceState(null, "", location.pathname);
}
let token = localStorage.getItem("weir-token") || "";
let selected = null;

async function api(method, path, body, contentType) {
  const headers = { Authorization: `Bearer ${token}` };
  let payload = body;
  if (body !== undefined && !(body instanceof FormData) && contentType === undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    // The server's error body: {"error": {"code", "message"}}.
    const e = answer.error || {};
    const error = new Error(`${e.message || response.statusText || "request failed"} (${response.status}${e.code ? ` ${e.code}` : ""})`);
    error.status = response.status;
    error.code = e.code;
    throw error;
  }
  return answer;
}

// Two kinds of errors: one from something the user did (an upload, a submit, a button) stays
// until the user dismisses it or a later action succeeds; one from the background refresh is
// shown only while refreshing keeps failing. An action's error wins.
let actionError = null;
let refreshError = null;

function renderError() {
  const e = actionError || refreshError;
  $("error").hidden = !e;
  $("error").dataset.kind = actionError ? "action" : refreshError ? "refresh" : "";
  $("error-message").textContent = e ? String(e.message || e) : "";
}

function showError(e) {
  actionError = e || null;
  renderError();
}

function notice(text) {
  $("notice").textContent = text || "";
}

// Runs a user action: its error stays shown; its success clears the last action's error.
async function act(what) {
  try {
    const done = await what();
    showError(null);
    return done;
  } catch (e) {
    notice("");
    showError(e);
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

async function refresh() {
  if (!token) return;
  try {
    await load();
    refreshError = null;
  } catch (e) {
    refreshError = e;
  }
  renderError();
}

// Reads the overview, the jobs, the components and the selected job into the page.
async function load() {
  const overview = await api("GET", "/v1/overview");
  $("cluster").textContent = `v${overview.version} · ${overview.slots_free}/${overview.slots_total} slots free · tenants: ${overview.tenants.join(", ")}`;
  const { jobs } = await api("GET", "/v1/jobs");
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const j of jobs) {
    const row = body.insertRow();
    row.className = "clickable";
    row.dataset.id = j.id;
    row.title = j.id;
    row.onclick = () => { selected = j.id; refresh(); };
    cell(row, j.id.slice(0, 12));
    cell(row, j.name);
    cell(row, j.state, `state-${j.state}`);
    cell(row, j.tenant);
    cell(row, j.slots);
    cell(row, j.restarts);
    cell(row, time(j.start_ms));
  }
  const { components } = await api("GET", "/v1/components");
  const cbody = $("components").tBodies[0];
  cbody.replaceChildren();
  const select = $("component");
  const previous = select.value;
  select.replaceChildren();
  for (const c of components) {
    const row = cbody.insertRow();
    row.dataset.id = c.id;
    cell(row, c.id);
    cell(row, c.name);
    cell(row, c.plan ? c.plan.job : c.plan_note);
    cell(row, c.size);
    const del = document.createElement("button");
    del.textContent = "Delete";
    del.type = "button";
    del.onclick = () => act(async () => {
      await api("DELETE", `/v1/components/${c.id}`);
      notice(`Deleted component ${c.id}`);
      await refresh();
    });
    row.insertCell().append(del);
    select.add(new Option(`${c.name || c.id} (${c.id})`, c.id));
  }
  if ([...select.options].some((o) => o.value === previous)) select.value = previous;
  if (selected) await showJob(selected);
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function showJob(id) {
  const j = await api("GET", `/v1/jobs/${id}`);
  $("job").hidden = false;
  $("job").dataset.id = j.id;
  $("job").dataset.state = j.state;
  $("job-title").textContent = `${j.name} (${j.id})`;
  $("job-summary").textContent = `${j.state} · tenant ${j.tenant} · ${j.slots} slots · ${j.restarts} restarts` +
    (j.failure ? ` · failure: ${j.failure}` : "") + (j.savepoint ? ` · savepoint: ${j.savepoint}` : "");
  const body = $("operators").tBodies[0];
  body.replaceChildren();
  for (const o of j.operators) {
    const row = body.insertRow();
    cell(row, o.uid);
    cell(row, o.parallelism);
    cell(row, o.records_in);
    cell(row, o.records_out);
    cell(row, Math.round(o.records_in_per_second));
    cell(row, Math.round(o.records_out_per_second));
    cell(row, o.watermark === null ? "" : new Date(o.watermark).toISOString());
  }
  const c = await api("GET", `/v1/jobs/${id}/checkpoints`);
  $("checkpoints").textContent = `${c.completed} completed, ${c.failed} failed` +
    (c.latest ? ` · latest ${c.latest.id}: ${c.latest.duration_ms} ms, ${c.latest.state_bytes} bytes, ${c.latest.location}` : "") +
    (c.latest_savepoint ? ` · latest savepoint: ${c.latest_savepoint.location}` : "");
  const { exceptions } = await api("GET", `/v1/jobs/${id}/exceptions`);
  const list = $("exceptions");
  list.replaceChildren();
  for (const e of exceptions) {
    const li = document.createElement("li");
    li.textContent = `${time(e.at_ms)} attempt ${e.attempt}${e.restarted ? " (restarted)" : ""}: ${e.message}`;
    list.append(li);
  }
}

async function trigger(path, body) {
  const { trigger_id } = await api("POST", path, body);
  $("trigger").textContent = "savepoint in progress…";
  for (;;) {
    const s = await api("GET", `/v1/jobs/${selected}/savepoints/${trigger_id}`);
    if (s.status !== "IN_PROGRESS") {
      $("trigger").textContent = s.status === "COMPLETED" ? `savepoint: ${s.location}` : `savepoint failed: ${s.failure}`;
      return refresh();
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

$("login").onsubmit = (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  localStorage.setItem("weir-token", token);
  $("token").value = "";
  showError(null);
  refresh();
};
$("error-dismiss").onclick = () => {
  actionError = null;
  refreshError = null;
  renderError();
};
$("savepoint").onclick = () => act(() => trigger(`/v1/jobs/${selected}/savepoints`));
$("stop").onclick = () => act(() => trigger(`/v1/jobs/${selected}/stop`, { drain: false }));
$("cancel").onclick = () => act(async () => {
  await api("POST", `/v1/jobs/${selected}/cancel`);
  await refresh();
});
$("upload").onsubmit = (e) => {
  e.preventDefault();
  const file = $("file").files[0];
  if (!file) return showError(new Error("choose a .wasm file to upload"));
  notice(`Uploading ${file.name}…`);
  return act(async () => {
    const form = new FormData();
    form.append("file", file);
    const c = await api("POST", "/v1/components", form);
    notice(`Uploaded ${c.name || file.name} as component ${c.id}`);
    await refresh();
    // The new component is the one to submit next.
    if ([...$("component").options].some((o) => o.value === c.id)) $("component").value = c.id;
  });
};
$("submit").onsubmit = (e) => {
  e.preventDefault();
  const args = {};
  for (const line of $("args").value.split("\n")) {
    const at = line.indexOf("=");
    if (at > 0) args[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  const request = { component: $("component").value, parallelism: Number($("parallelism").value), args, state_backend: $("backend").value };
  if ($("interval").value) request.checkpoint_interval_ms = Number($("interval").value);
  if ($("from").value) request.from_savepoint = $("from").value;
  return act(async () => {
    const j = await api("POST", "/v1/jobs", request);
    selected = j.id;
    notice(`Submitted job ${j.id}`);
    await refresh();
  });
};

refresh();
setInterval(refresh, 2000);
