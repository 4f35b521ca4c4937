// finq's page: plain JavaScript, no build step, nothing loaded from elsewhere.
// The token lives in sessionStorage: it lasts as long as the browser tab.
"use strict";

const API = "/api/v1";
const FINAL = new Set(["SUCCESS", "FAILED", "CANCELLED"]);
const $ = (sel) => document.querySelector(sel);
const SETTLED = new Set(["delivered", "failed", "refused", "skipped"]);
const state = { types: [], uploads: [], cursors: [null], page: 0, streams: new Map(), taskStream: null,
                deliveryTimer: null, me: null };
const VIEWS = ["login", "submit", "tasks", "task", "uploads", "schedules", "accounts"];
const USERNAME = /^[A-Za-z0-9_.-]{3,64}$/;
const TASK_ROUTE = /^#\/tasks\/([0-9a-f-]{36})$/;

function token() { return sessionStorage.getItem("finq-token"); }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401 && !path.endsWith("/auth/token")) { logout("Your session ended; log in again."); }
  return resp;
}

async function errorText(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((e) => `${e.loc.join(".")}: ${e.msg}`).join("; ");
  } catch (_) { /* not JSON */ }
  return `${resp.status} ${resp.statusText}`;
}

function flash(text) {
  const el = $("#flash");
  el.textContent = text;
  el.hidden = !text;
}

function show(view) {
  for (const id of VIEWS) $(`#view-${id}`).hidden = id !== view;
  $("#nav").hidden = view === "login";
  for (const link of $("#nav").querySelectorAll("a")) {
    if (link.id === `nav-${view === "task" ? "tasks" : view}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function isAdmin() { return Boolean(state.me && state.me.role === "admin"); }

function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : "—"; }
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

// ---- login -------------------------------------------------------------------------------
async function login(event) {
  event.preventDefault();
  const form = new URLSearchParams(new FormData($("#login-form")));
  const resp = await api(`${API}/auth/token`, { method: "POST", body: form });
  const err = $("#login-error");
  if (!resp.ok) { err.textContent = await errorText(resp); err.hidden = false; return; }
  err.hidden = true;
  sessionStorage.setItem("finq-token", (await resp.json()).access_token);
  $("#login-password").value = "";
  await start();
}

function logout(message) {
  sessionStorage.removeItem("finq-token");
  state.me = null;
  $("#whoami").textContent = "";
  $("#nav-accounts").hidden = true;
  // Nothing of this user stays on the page for the next one to log in in this tab.
  for (const body of document.querySelectorAll("main table tbody")) body.replaceChildren();
  closeStreams();
  flash(message || "");
  location.hash = "#/login";
  show("login");
}

// ---- submit form generated from the task types' JSON schemas ---------------------------------
function resolve(schema, root) {
  if (schema && schema.$ref) return root.$defs[schema.$ref.split("/").pop()];
  return schema;
}

function fieldKind(prop) {
  if (prop.enum) return "enum";
  if (prop.format === "uuid") return "upload";
  const types = (prop.anyOf || [prop]).map((s) => s.type).filter(Boolean);
  if (types.includes("array")) {
    const arr = (prop.anyOf || [prop]).find((s) => s.type === "array");
    if (arr && arr.items && (arr.items.type === "array" || arr.items.anyOf)) return "json";
    return types.includes("number") || types.includes("integer") ? "number-or-list" : "list";
  }
  if (types.includes("integer")) return "integer";
  if (types.includes("number")) return "number";
  if (types.includes("boolean")) return "boolean";
  return "text";
}

function bounds(prop) {
  const s = (prop.anyOf || [prop]).find((x) => x.type === "number" || x.type === "integer") || prop;
  return { min: s.minimum ?? s.exclusiveMinimum, max: s.maximum ?? s.exclusiveMaximum };
}

function buildForm() {
  const type = state.types.find((t) => t.name === $("#task-type").value);
  const box = $("#param-fields");
  box.replaceChildren(el("legend", {}, "Parameters"));
  if (!type) return;
  $("#task-type-help").textContent = type.description || type.title;
  const schema = type.params_schema;
  const required = new Set(schema.required || []);
  for (const [name, raw] of Object.entries(schema.properties || {})) {
    const prop = resolve(raw, schema);
    const id = `param-${name}`;
    const kind = fieldKind(prop);
    const example = type.example[name] ?? prop.default;
    let input;
    if (kind === "upload") {
      input = el("select", { id, name, "aria-describedby": `${id}-help` });
      fillUploadSelect(input, null);
    } else if (kind === "enum") {
      input = el("select", { id, name });
      for (const v of prop.enum) input.append(el("option", { value: v }, v));
      if (example !== undefined) input.value = example;
    } else if (kind === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = Boolean(example);
    } else if (kind === "json") {
      input = el("textarea", { id, name, "aria-describedby": `${id}-help` });
      if (example !== undefined) input.value = JSON.stringify(example);
    } else if (kind === "number" || kind === "integer") {
      const b = bounds(prop);
      input = el("input", { id, name, type: "number", step: kind === "integer" ? "1" : "any",
                            min: b.min, max: b.max, "aria-describedby": `${id}-help` });
      if (example !== undefined && example !== null) input.value = example;
    } else {
      input = el("input", { id, name, "aria-describedby": `${id}-help` });
      if (example !== undefined && example !== null) input.value = Array.isArray(example) ? example.join(", ") : example;
    }
    input.dataset.kind = kind;
    if (required.has(name)) input.required = true;
    const hint = [prop.description, kind === "number-or-list" || kind === "list" ? "A number or a comma-separated list." : "",
                  kind === "json" ? "JSON." : "",
                  kind === "upload" ? "Add CSV files under Uploads." : ""].filter(Boolean).join(" ");
    box.append(el("label", { for: id }, prop.title || name, required.has(name) ? " *" : ""), input,
               el("p", { id: `${id}-help`, class: "muted" }, hint),
               el("p", { class: "error", "data-error-for": name, hidden: "" }));
  }
}

function readParams() {
  const params = {};
  const problems = [];
  for (const input of $("#param-fields").querySelectorAll("input, select, textarea")) {
    const { name } = input;
    const kind = input.dataset.kind;
    const raw = input.type === "checkbox" ? input.checked : input.value.trim();
    if (raw === "" || raw === null) {
      if (input.required) problems.push([name, "required"]);
      continue;
    }
    if (kind === "number" || kind === "integer") {
      if (!input.checkValidity()) { problems.push([name, input.validationMessage || "invalid number"]); continue; }
      params[name] = Number(raw);
    } else if (kind === "number-or-list" || kind === "list") {
      const parts = String(raw).split(",").map((p) => p.trim()).filter(Boolean);
      const nums = parts.map(Number);
      if (nums.some((n) => Number.isNaN(n))) { problems.push([name, "numbers separated by commas"]); continue; }
      params[name] = kind === "list" || nums.length > 1 ? nums : nums[0];
    } else if (kind === "json") {
      try { params[name] = JSON.parse(raw); } catch (_) { problems.push([name, "not valid JSON"]); }
    } else if (kind === "boolean") {
      params[name] = raw;
    } else {
      params[name] = raw;
    }
  }
  return { params, problems };
}

function clearErrors(form = $("#submit-form")) {
  for (const p of form.querySelectorAll("[data-error-for]")) { p.hidden = true; p.textContent = ""; }
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  for (const p of form.querySelectorAll(".error[role=alert]")) p.hidden = true;
}

function fieldError(name, message) {
  const p = document.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
  const input = document.getElementById(`param-${name}`) || document.querySelector(`[data-field="${CSS.escape(name)}"]`)
    || document.getElementById(name.replace("_", "-"));
  if (input) input.setAttribute("aria-invalid", "true");
  if (p) { p.textContent = message; p.hidden = false; return true; }
  return false;
}

// A 422's errors beside their fields (`fieldOf` maps an error's loc to a field name); returns
// the messages that have no field on the page.
function showFieldErrors(detail, fieldOf) {
  const general = [];
  for (const e of detail) if (!fieldError(String(fieldOf(e.loc)), e.msg)) general.push(`${e.loc.join(".")}: ${e.msg}`);
  return general;
}

function formError(box, text) { box.textContent = text; box.hidden = !text; }

// "Repeat: on a cron schedule" turns the submit form into a schedule's form.
function repeating() { return $("#repeat").value === "cron"; }

function toggleRepeat() {
  const cron = repeating();
  $("#repeat-fields").hidden = !cron;
  $("#run-at-box").hidden = cron;
  $("#submit-button").textContent = cron ? "Create schedule" : "Submit";
}

function readSchedule() {
  const problems = [];
  const name = $("#schedule-name").value.trim();
  const cron = $("#schedule-cron").value.trim().split(/\s+/).filter(Boolean);
  if (!name) problems.push(["schedule.name", "required"]);
  if (!cron.length) problems.push(["schedule.cron", "required"]);
  else if (cron.length !== 5 && cron.length !== 6) {
    problems.push(["schedule.cron", `${cron.length} fields: give 5 (minute hour day month weekday) or 6 (… seconds)`]);
  }
  return { name, cron: cron.join(" "), problems };
}

async function submitTask(event) {
  event.preventDefault();
  clearErrors();
  const repeat = repeating();
  const { params, problems } = readParams();
  const schedule = repeat ? readSchedule() : null;
  if (schedule) problems.push(...schedule.problems);
  for (const [name, msg] of problems) fieldError(name, msg);
  if (problems.length) return;
  const body = { type: $("#task-type").value, params, priority: $("#priority").value };
  if (schedule) { body.name = schedule.name; body.cron = schedule.cron; }
  else if ($("#run-at").value) body.run_at = new Date($("#run-at").value).toISOString();
  const notify = {};
  if ($("#notify-webhook").value.trim()) notify.webhook_url = $("#notify-webhook").value.trim();
  if ($("#notify-email").value.trim()) notify.email = $("#notify-email").value.trim();
  if (Object.keys(notify).length) body.notify = notify;
  const resp = await api(`${API}/${repeat ? "schedules" : "tasks"}`, { method: "POST", json: body });
  if (repeat && resp.status === 201) {
    const created = await resp.json();
    flash(`Schedule “${created.name}” created; next run ${fmtTime(created.next_run_at)}.`);
    $("#schedule-name").value = "";
    $("#repeat").value = "once";  // the next visit submits a single task again
    toggleRepeat();
    location.hash = "#/schedules";
    return;
  }
  if (!repeat && (resp.status === 202 || resp.status === 200)) {
    const task = await resp.json();
    flash(`Task ${task.id} submitted.`);
    location.hash = `#/tasks/${task.id}`;
    return;
  }
  if (resp.status === 422) {
    const general = showFieldErrors((await resp.json()).detail, (loc) => {
      if (loc[0] === "body" && loc[1] === "params") return loc[2];
      if (loc[1] === "notify" && loc.length > 2) return `notify.${loc[2]}`;
      if (repeat && (loc[1] === "name" || loc[1] === "cron")) return `schedule.${loc[1]}`;
      return loc[1];
    });
    if (general.length) formError($("#submit-error"), general.join("; "));
    return;
  }
  $("#submit-error").textContent = await errorText(resp);
  $("#submit-error").hidden = false;
}

// ---- live updates (Server-Sent Events) -----------------------------------------------------------
function stream(taskId, onChange) {
  const source = new EventSource(`${API}/tasks/${taskId}/events?access_token=${encodeURIComponent(token())}`);
  source.addEventListener("task", (ev) => {
    const data = JSON.parse(ev.data);
    onChange(data);
    if (FINAL.has(data.status)) source.close();
  });
  source.onerror = () => { if (source.readyState === EventSource.CLOSED) return; };
  return source;
}

function closeStreams() {
  for (const s of state.streams.values()) s.close();
  state.streams.clear();
  if (state.taskStream) { state.taskStream.close(); state.taskStream = null; }
  if (state.deliveryTimer) { clearTimeout(state.deliveryTimer); state.deliveryTimer = null; }
}

// ---- task list -------------------------------------------------------------------------------------
function actions(task, refresh) {
  const box = el("div", { class: "actions" });
  if (!FINAL.has(task.status)) {
    box.append(el("button", { type: "button", class: "secondary", "data-action": "cancel",
      onclick: async () => { const r = await api(`${API}/tasks/${task.id}/cancel`, { method: "POST" });
        flash(r.ok ? `Cancel requested for ${task.id}.` : await errorText(r)); refresh(); } }, "Cancel"));
  }
  if (task.status === "FAILED" || task.status === "CANCELLED") {
    box.append(el("button", { type: "button", class: "secondary", "data-action": "retry",
      onclick: async () => { const r = await api(`${API}/tasks/${task.id}/retry`, { method: "POST" });
        flash(r.ok ? `Task ${task.id} queued again.` : await errorText(r)); refresh(); } }, "Retry"));
  }
  if (FINAL.has(task.status)) {
    box.append(el("button", { type: "button", class: "secondary", "data-action": "delete",
      "aria-label": `Delete task ${task.id}`,
      onclick: async () => { if (await deleteTask(task.id) !== null) refresh(); } }, "Delete"));
  }
  return box;
}

// Deletes a finished task after asking; true when deleted, false when the API refused (its
// reason is in the flash), null when the user changed their mind.
async function deleteTask(id) {
  if (!window.confirm(`Delete task ${id}? Its record, timeline, result and chart are removed for good.`)) return null;
  const r = await api(`${API}/tasks/${id}`, { method: "DELETE" });
  flash(r.ok ? `Task ${id} deleted.` : await errorText(r));
  return r.ok;
}

async function loadTasks() {
  closeStreams();
  const q = new URLSearchParams({ limit: "20" });
  for (const [key, id] of [["status", "#filter-status"], ["type", "#filter-type"]]) if ($(id).value) q.set(key, $(id).value);
  if ($("#filter-after").value) q.set("created_after", new Date($("#filter-after").value).toISOString());
  if ($("#filter-before").value) q.set("created_before", new Date($("#filter-before").value).toISOString());
  const cursor = state.cursors[state.page];
  if (cursor) q.set("cursor", cursor);
  const resp = await api(`${API}/tasks?${q}`);
  if (!resp.ok) { flash(await errorText(resp)); return; }
  const page = await resp.json();
  const body = $("#task-table tbody");
  body.replaceChildren();
  for (const task of page.items) {
    const bar = el("progress", { max: "1", value: String(task.progress), "aria-label": `progress of ${task.id}` });
    const badge = el("span", { class: `badge s-${task.status}` }, task.status);
    const acts = el("td", {}, actions(task, loadTasks));
    const row = el("tr", { "data-task": task.id },
      el("td", {}, el("a", { href: `#/tasks/${task.id}` }, fmtTime(task.created_at))),
      el("td", {}, task.type), el("td", {}, task.priority), el("td", {}, badge), el("td", {}, bar), acts);
    body.append(row);
    if (!FINAL.has(task.status)) {
      state.streams.set(task.id, stream(task.id, (d) => {
        badge.textContent = d.status; badge.className = `badge s-${d.status}`;
        bar.value = d.progress ?? bar.value;
        if (FINAL.has(d.status)) acts.replaceChildren(actions({ ...task, status: d.status }, loadTasks));
      }));
    }
  }
  $("#tasks-empty").hidden = page.items.length > 0;
  state.cursors[state.page + 1] = page.next_cursor;
  $("#page-next").disabled = !page.next_cursor;
  $("#page-prev").disabled = state.page === 0;
}

// ---- one task ---------------------------------------------------------------------------------------
function valueCell(v) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toPrecision(8).replace(/\.?0+$/, "");
  if (Array.isArray(v)) return v.length > 12 ? `${v.slice(0, 12).map(valueCell).join(", ")}, … (${v.length})` : v.map(valueCell).join(", ");
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function kvTable(obj) {
  const table = el("table");
  for (const [k, v] of Object.entries(obj || {})) {
    if (Array.isArray(v) && v.length && typeof v[0] === "object" && v[0] !== null && !Array.isArray(v[0])) continue;
    table.append(el("tr", {}, el("th", { scope: "row" }, k), el("td", { class: typeof v === "number" ? "num" : "" }, valueCell(v))));
  }
  return table;
}

function rowsTable(name, rows) {
  const cols = Object.keys(rows[0]);
  const shown = rows.slice(0, 500);
  return el("div", {}, el("h4", {}, `${name} (${rows.length} rows${rows.length > shown.length ? ", first 500 shown" : ""})`),
    el("table", {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { scope: "col" }, c)))),
      el("tbody", {}, ...shown.map((r) => el("tr", {}, ...cols.map((c) => el("td", { class: "num" }, valueCell(r[c]))))))));
}

async function showTask(id) {
  closeStreams();
  const resp = await api(`${API}/tasks/${id}`);
  if (!resp.ok) { flash(await errorText(resp)); location.hash = "#/tasks"; return; }
  const task = await resp.json();
  $("#task-title").textContent = `${task.type} · ${task.id}`;
  const render = async (t) => {
    $("#task-status").textContent = t.status;
    $("#task-status").className = `badge s-${t.status}`;
    $("#task-attempts").textContent = `attempt ${t.attempts}, priority ${t.priority}`;
    $("#task-progress").value = t.progress ?? 0;
    $("#task-progress-text").textContent = `${Math.round((t.progress ?? 0) * 100)}%${t.progress_message ? ` · ${t.progress_message}` : ""}`;
    $("#task-cancel").hidden = FINAL.has(t.status);
    $("#task-retry").hidden = !(t.status === "FAILED" || t.status === "CANCELLED");
    $("#task-delete").hidden = !FINAL.has(t.status);
    const err = $("#task-error");
    err.hidden = !t.error;
    err.textContent = t.error ? `${t.error.type}: ${t.error.message}` : "";
    const hist = await (await api(`${API}/tasks/${id}/history`)).json();
    $("#task-timeline").replaceChildren(...hist.map((e) => el("li", {}, `${fmtTime(e.at)} — ${e.status}${e.message ? ` (${e.message})` : ""}`)));
  };
  await render(task);
  renderDeliveries(task);
  $("#task-deliveries-refresh").onclick = async () => {
    const r = await api(`${API}/tasks/${id}`);
    if (r.ok) renderDeliveries(await r.json());
  };
  if (FINAL.has(task.status)) watchDeliveries(id, task);
  $("#task-params").replaceChildren(...kvTable(task.params).childNodes);
  const showResult = async (t) => {
    const box = $("#task-result");
    if (!t.result) { box.replaceChildren(el("p", { class: "muted" }, "No result yet.")); return; }
    const parts = [kvTable(t.result)];
    for (const [k, v] of Object.entries(t.result)) {
      if (Array.isArray(v) && v.length && typeof v[0] === "object" && v[0] !== null && !Array.isArray(v[0])) parts.push(rowsTable(k, v));
    }
    box.replaceChildren(...parts);
    // A worker draws the chart when it is first asked for (202 until then): ask again with a
    // growing pause until it exists, for as long as this task is on screen. 404: none.
    if (t.status !== "SUCCESS") return;
    for (let attempt = 0, pause = 300; attempt < 40; attempt += 1, pause = Math.min(pause * 1.5, 5000)) {
      if (location.hash !== `#/tasks/${id}`) return;
      const chart = await api(`${API}/tasks/${id}/chart.png`);
      if (chart.status === 200) {
        $("#task-chart").src = URL.createObjectURL(await chart.blob());
        $("#task-chart-card").hidden = false;
        return;
      }
      if (chart.status !== 202) return;
      await new Promise((resolve) => { setTimeout(resolve, pause); });
    }
  };
  $("#task-chart-card").hidden = true;
  await showResult(task);
  $("#task-cancel").onclick = async () => {
    const r = await api(`${API}/tasks/${id}/cancel`, { method: "POST" });
    flash(r.ok ? "Cancel requested." : await errorText(r));
    if (r.ok) await render(await r.json());
  };
  $("#task-retry").onclick = async () => {
    const r = await api(`${API}/tasks/${id}/retry`, { method: "POST" });
    flash(r.ok ? "Queued again." : await errorText(r));
    if (r.ok) showTask(id);
  };
  if (!FINAL.has(task.status)) {
    state.taskStream = stream(id, async (d) => {
      $("#task-progress").value = d.progress ?? 0;
      $("#task-progress-text").textContent = `${Math.round((d.progress ?? 0) * 100)}%`;
      $("#task-status").textContent = d.status;
      $("#task-status").className = `badge s-${d.status}`;
      if (FINAL.has(d.status)) {
        const fresh = await (await api(`${API}/tasks/${id}`)).json();
        await render(fresh);
        await showResult(fresh);
        renderDeliveries(fresh);
        watchDeliveries(id, fresh);
      }
    });
  }
}

// ---- notifications of one task ----------------------------------------------------------------------
function deliveriesSettled(t) {
  if (!t.notify || !FINAL.has(t.status)) return true;
  const channels = [["webhook", "webhook_url"], ["email", "email"]].filter(([, key]) => t.notify[key]);
  return channels.every(([channel]) => (t.deliveries || []).some(
    (d) => d.channel === channel && d.task_status === t.status && SETTLED.has(d.status)));
}

function renderDeliveries(t) {
  $("#task-deliveries-card").hidden = !t.notify;
  const rows = (t.deliveries || []).map((d) => el("tr", { "data-delivery": d.status },
    el("td", {}, d.channel), el("td", { class: "wrap" }, d.target), el("td", {}, d.task_status),
    el("td", { class: "num" }, String(d.attempt)),
    el("td", {}, el("span", { class: `badge d-${d.status}` }, d.status)),
    el("td", { class: "wrap" }, [d.http_status ? `HTTP ${d.http_status}` : "", d.error || ""].filter(Boolean).join(" · ") || "—"),
    el("td", {}, fmtTime(d.at))));
  $("#task-deliveries tbody").replaceChildren(...rows);
  $("#task-deliveries-empty").hidden = rows.length > 0;
}

// Deliveries happen after the final status (and retry with backoff): follow them for a while.
function watchDeliveries(id, t, polls = 60) {
  if (state.deliveryTimer) clearTimeout(state.deliveryTimer);
  if (deliveriesSettled(t) || polls <= 0) return;
  state.deliveryTimer = setTimeout(async () => {
    state.deliveryTimer = null;
    if (location.hash !== `#/tasks/${id}`) return;
    const r = await api(`${API}/tasks/${id}`);
    if (!r.ok) return;
    const fresh = await r.json();
    renderDeliveries(fresh);
    watchDeliveries(id, fresh, polls - 1);
  }, 1500);
}

// ---- uploads ---------------------------------------------------------------------------------------
async function loadUploadList() {
  const resp = await api(`${API}/uploads`);
  if (resp.ok) state.uploads = await resp.json();
  return state.uploads;
}

function fillUploadSelect(select, selected) {
  const keep = selected ?? select.value;
  if (!state.uploads.length) {
    select.replaceChildren(el("option", { value: "" }, "No uploads yet: add a CSV under Uploads"));
    return;
  }
  select.replaceChildren(...state.uploads.map((u) => el("option", { value: u.id },
    `${u.filename} · ${u.assets.length} assets · ${u.first_date} to ${u.last_date}`)));
  if (keep && state.uploads.some((u) => u.id === keep)) select.value = keep;
}

async function showUploads() {
  await loadUploadList();
  const body = $("#upload-table tbody");
  body.replaceChildren(...state.uploads.map((u) => el("tr", { "data-upload": u.id },
    el("td", { class: "wrap" }, u.filename),
    el("td", { class: "wrap" }, `${u.assets.length}: ${u.assets.slice(0, 6).join(", ")}${u.assets.length > 6 ? ", …" : ""}`),
    el("td", { class: "num" }, String(u.rows)),
    el("td", {}, `${u.first_date} to ${u.last_date}`),
    el("td", {}, el("code", {}, u.id)),
    el("td", {}, el("div", { class: "actions" },
      el("a", { href: `#/submit?type=csv_portfolio_analytics&upload=${u.id}`, class: "button", "data-action": "analyse" }, "Analyse"),
      el("button", { type: "button", class: "secondary", "data-action": "delete", "aria-label": `Delete ${u.filename}`,
        onclick: async () => {
          const r = await api(`${API}/uploads/${u.id}`, { method: "DELETE" });
          flash(r.ok ? `Deleted ${u.filename}.` : await errorText(r));
          await showUploads();
        } }, "Delete"))))));
  $("#uploads-empty").hidden = state.uploads.length > 0;
}

async function uploadFile(event) {
  event.preventDefault();
  const err = $("#upload-error");
  err.hidden = true;
  const input = $("#upload-file");
  input.removeAttribute("aria-invalid");
  if (!input.files.length) {
    err.textContent = "Choose a CSV file first.";
    err.hidden = false;
    input.setAttribute("aria-invalid", "true");
    input.focus();
    return;
  }
  const form = new FormData();
  form.append("file", input.files[0]);
  const resp = await api(`${API}/uploads`, { method: "POST", body: form });
  if (resp.status === 201) {
    const u = await resp.json();
    flash(`Uploaded ${u.filename}: ${u.assets.length} assets, ${u.rows} rows (${u.id}).`);
    input.value = "";
    await showUploads();
    return;
  }
  err.textContent = await errorText(resp);
  err.hidden = false;
  input.setAttribute("aria-invalid", "true");
}

async function showSubmit(query) {
  show("submit");
  await loadUploadList();
  const wanted = query.get("type");
  if (wanted && state.types.some((t) => t.name === wanted) && $("#task-type").value !== wanted) {
    $("#task-type").value = wanted;
    clearErrors();
    buildForm();
  }
  for (const select of $("#param-fields").querySelectorAll("select")) {
    if (select.dataset.kind === "upload") fillUploadSelect(select, query.get("upload"));
  }
  if (query.get("repeat") === "cron" && !repeating()) { $("#repeat").value = "cron"; toggleRepeat(); }
}

// ---- schedules ---------------------------------------------------------------------------------------
function notifyText(n) { return n ? [n.webhook_url, n.email].filter(Boolean).join(", ") : "—"; }

async function showSchedules() {
  const all = isAdmin() && $("#schedules-all").checked;
  const resp = await api(`${API}/schedules${all ? "?all=true" : ""}`);
  if (!resp.ok) { flash(await errorText(resp)); return; }
  const items = await resp.json();
  $("#schedule-table tbody").replaceChildren(...items.map((s) => el("tr", { "data-schedule": s.id },
    el("td", { class: "wrap" }, s.name, all ? el("span", { class: "muted" }, ` · ${s.owner}`) : ""),
    el("td", {}, el("code", {}, s.cron)),
    el("td", {}, s.type),
    el("td", {}, s.priority),
    el("td", { title: s.next_run_at }, fmtTime(s.next_run_at)),
    el("td", { title: s.last_run_at || "" }, fmtTime(s.last_run_at)),
    el("td", {}, fmtTime(s.created_at)),
    el("td", { class: "wrap" }, notifyText(s.notify)),
    el("td", {}, el("button", { type: "button", class: "secondary", "data-action": "delete",
      "aria-label": `Delete schedule ${s.name}`,
      onclick: async () => {
        if (!window.confirm(`Delete the schedule “${s.name}”? The tasks it already created are kept.`)) return;
        const r = await api(`${API}/schedules/${s.id}`, { method: "DELETE" });
        flash(r.ok ? `Deleted the schedule “${s.name}”.` : await errorText(r));
        await showSchedules();
      } }, "Delete")))));
  $("#schedules-empty").hidden = items.length > 0;
}

// ---- accounts (admins) -------------------------------------------------------------------------------
async function showAccounts() {
  const resp = await api(`${API}/users`);
  if (!resp.ok) { flash(await errorText(resp)); return; }
  const users = await resp.json();
  $("#account-table tbody").replaceChildren(...users.map((u) => el("tr", { "data-user": u.username },
    el("td", { class: "wrap" }, u.username, u.username === state.me.username ? el("span", { class: "muted" }, " (you)") : ""),
    el("td", {}, u.role),
    el("td", {}, fmtTime(u.created_at)),
    el("td", {}, el("button", { type: "button", class: "secondary", "data-action": "delete",
      "aria-label": `Delete account ${u.username}`,
      onclick: async () => {
        if (!window.confirm(`Delete the account “${u.username}”? They can no longer log in.`)) return;
        const r = await api(`${API}/users/${encodeURIComponent(u.username)}`, { method: "DELETE" });
        flash(r.ok ? `Deleted the account “${u.username}”.` : await errorText(r));
        await showAccounts();
      } }, "Delete")))));
}

async function createAccount(event) {
  event.preventDefault();
  const form = $("#account-form");
  clearErrors(form);
  const body = { username: $("#account-username").value.trim(), password: $("#account-password").value,
                 role: $("#account-role").value };
  const problems = [];
  if (!USERNAME.test(body.username)) problems.push(["account.username", "3 to 64 letters, digits, “_”, “.” or “-”"]);
  if (body.password.length < 12) problems.push(["account.password", "at least 12 characters"]);
  for (const [name, msg] of problems) fieldError(name, msg);
  if (problems.length) return;
  const resp = await api(`${API}/users`, { method: "POST", json: body });
  if (resp.status === 201) {
    flash(`Created the account “${body.username}” (${body.role}).`);
    form.reset();
    await showAccounts();
    return;
  }
  if (resp.status === 409) { fieldError("account.username", await errorText(resp)); return; }
  if (resp.status === 422) {
    const general = showFieldErrors((await resp.json()).detail, (loc) => `account.${loc[1]}`);
    if (general.length) formError($("#account-error"), general.join("; "));
    return;
  }
  formError($("#account-error"), await errorText(resp));
}

// ---- routing -------------------------------------------------------------------------------------
async function route() {
  if (!token()) { show("login"); return; }
  const hash = location.hash || "#/tasks";
  const m = hash.match(TASK_ROUTE);
  if (m) { show("task"); await showTask(m[1]); return; }
  if (hash.startsWith("#/submit")) {
    closeStreams();
    await showSubmit(new URLSearchParams(hash.split("?")[1] || ""));
    return;
  }
  if (hash.startsWith("#/uploads")) { closeStreams(); show("uploads"); await showUploads(); return; }
  if (hash.startsWith("#/schedules")) { closeStreams(); show("schedules"); await showSchedules(); return; }
  if (hash.startsWith("#/accounts")) {
    if (!isAdmin()) { flash("Accounts are for admins only."); location.hash = "#/tasks"; return; }
    closeStreams(); show("accounts"); await showAccounts(); return;
  }
  show("tasks");
  await loadTasks();
}

async function start() {
  const me = await api(`${API}/auth/me`);
  if (!me.ok) { logout(); return; }
  state.me = await me.json();
  $("#nav-accounts").hidden = !isAdmin();
  $("#schedules-all-box").hidden = !isAdmin();
  const resp = await api(`${API}/task-types`);
  state.types = await resp.json();
  await loadUploadList();
  const select = $("#task-type");
  select.replaceChildren(...state.types.map((t) => el("option", { value: t.name }, `${t.title} (${t.name})`)));
  $("#filter-type").replaceChildren(el("option", { value: "" }, "any"), ...state.types.map((t) => el("option", { value: t.name }, t.name)));
  buildForm();
  // Replaced, not assigned: a hashchange would route a second time, racing this one.
  if (!location.hash || location.hash === "#/login") history.replaceState(null, "", "#/tasks");
  await route();
  $("#whoami").textContent = state.me.username;  // last: the page is ready for this user
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout("Logged out."));
  $("#task-type").addEventListener("change", () => { clearErrors(); buildForm(); });
  $("#submit-form").addEventListener("submit", submitTask);
  $("#repeat").addEventListener("change", () => { clearErrors(); toggleRepeat(); });
  $("#task-delete").addEventListener("click", async () => {
    const m = location.hash.match(TASK_ROUTE);
    if (m && await deleteTask(m[1])) location.hash = "#/tasks";
  });
  $("#schedules-all").addEventListener("change", showSchedules);
  $("#account-form").addEventListener("submit", createAccount);
  $("#upload-form").addEventListener("submit", uploadFile);
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.cursors = [null]; state.page = 0; loadTasks(); });
  $("#page-next").addEventListener("click", () => { state.page += 1; loadTasks(); });
  $("#page-prev").addEventListener("click", () => { state.page = Math.max(0, state.page - 1); loadTasks(); });
  window.addEventListener("hashchange", route);
  if (token()) start(); else show("login");
});
