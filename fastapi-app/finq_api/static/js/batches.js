// The batches screen: run a CSV of items as one batch, watch its progress bar and counts,
// page through its items, download its results as CSV; and the caller's batches. A file
// over UPLOAD_ABOVE bytes is uploaded (kind items) and named by `upload_id` instead of being
// pasted into the text area and sent inline.
import { $, actionButton, el, fmtTime } from "./dom.js";
import { API, api, errorText, state } from "./session.js";

const FINAL = new Set(["SUCCESS", "FAILED", "CANCELLED"]);
const POLL_MS = 500;
const PAGE = 50;
const UPLOAD_ABOVE = 1024 * 1024;
let timer = null;
let current = null;
let after = null;
// The items upload that stands in for the text area: { id, filename, rows }.
let itemsUpload = null;

export function stopBatchPolling() {
  if (timer) clearTimeout(timer);
  timer = null;
}

export async function showBatches() {
  const select = $("#batch-type");
  if (!select.options.length) {
    // A type that reads an upload cannot run in a batch.
    const types = state.types.filter((t) => !("upload_id" in (t.params_schema.properties || {})));
    select.replaceChildren(...types.map((t) => el("option", { value: t.name }, t.title)));
  }
  const resp = await api(`${API}/batches?limit=20`);
  if (!resp.ok) return;
  const rows = (await resp.json()).items.map((b) =>
    el(
      "tr",
      { "data-batch": b.id },
      el("td", {}, b.type),
      el("td", {}, b.status),
      el("td", { class: "num" }, `${Math.round(b.progress * 100)}%`),
      el("td", { class: "num" }, String(b.total)),
      el("td", {}, fmtTime(b.created_at)),
      el(
        "td",
        {},
        actionButton("open", "Open", () => follow(b.id), `Open batch ${b.id}`),
      ),
    ),
  );
  $("#batch-table tbody").replaceChildren(...rows);
  $("#batches-empty").hidden = rows.length > 0;
}

export async function submitBatch(event) {
  event.preventDefault();
  const err = $("#batch-error");
  err.hidden = true;
  let base = {};
  try {
    base = JSON.parse($("#batch-base").value.trim() || "{}");
  } catch (_) {
    err.textContent = "Shared parameters: not valid JSON";
    err.hidden = false;
    return;
  }
  const body = { type: $("#batch-type").value, base };
  if (itemsUpload) body.upload_id = itemsUpload.id;
  else body.csv = $("#batch-csv").value;
  const resp = await api(`${API}/batches`, { method: "POST", json: body });
  if (resp.status !== 202 && resp.status !== 200) {
    err.textContent = await errorText(resp);
    err.hidden = false;
    return;
  }
  // The batch holds its items now: the upload has served.
  await forgetUpload();
  await follow((await resp.json()).id);
}

// Deletes the items upload the form was using, if any (uploads are limited per user); also
// when the text area is typed into: the typed CSV is what runs then.
export async function forgetUpload() {
  if (!itemsUpload) return;
  const id = itemsUpload.id;
  itemsUpload = null;
  $("#batch-csv").required = true;
  $("#batch-upload-note").hidden = true;
  await api(`${API}/uploads/${id}`, { method: "DELETE" });
}

export async function readCsvFile() {
  const file = $("#batch-file").files[0];
  if (!file) return;
  await forgetUpload();
  if (file.size <= UPLOAD_ABOVE) {
    $("#batch-csv").value = await file.text();
    return;
  }
  const err = $("#batch-error");
  err.hidden = true;
  const form = new FormData();
  form.append("kind", "items");
  form.append("file", file);
  const resp = await api(`${API}/uploads`, { method: "POST", body: form });
  if (resp.status !== 201) {
    err.textContent = await errorText(resp);
    err.hidden = false;
    return;
  }
  const u = await resp.json();
  itemsUpload = { id: u.id, filename: u.filename, rows: u.rows };
  $("#batch-csv").value = "";
  $("#batch-csv").required = false;
  const note = $("#batch-upload-note");
  note.textContent = `Using ${u.filename}: ${u.rows} items, columns ${u.columns.join(", ")}.`;
  note.hidden = false;
}

async function follow(id) {
  stopBatchPolling();
  current = id;
  after = null;
  $("#batch-current").hidden = false;
  $("#batch-download").disabled = true;
  await poll();
}

async function poll() {
  const resp = await api(`${API}/batches/${current}`);
  if (!resp.ok) return;
  const b = await resp.json();
  $("#batch-id").textContent = b.id;
  $("#batch-status").textContent = b.status;
  $("#batch-progress").value = b.progress;
  $("#batch-counts").textContent = Object.entries(b.counts)
    .filter(([, n]) => n)
    .map(([s, n]) => `${n} ${s}`)
    .join(", ");
  $("#batch-rate").textContent = b.items_per_second ? `${b.items_per_second} items/s` : "";
  $("#batch-cancel").disabled = FINAL.has(b.status);
  $("#batch-retry").disabled = !FINAL.has(b.status) || !(b.counts.FAILED || b.counts.CANCELLED);
  if (FINAL.has(b.status)) {
    $("#batch-download").disabled = false;
    await loadItems(true);
    await showBatches();
    return;
  }
  timer = setTimeout(poll, POLL_MS);
}

export async function loadItems(first) {
  if (first) after = null;
  const query = new URLSearchParams({ limit: String(PAGE) });
  if (after !== null) query.set("after", String(after));
  const resp = await api(`${API}/batches/${current}/items?${query}`);
  if (!resp.ok) return;
  const page = await resp.json();
  $("#batch-items tbody").replaceChildren(
    ...page.items.map((i) =>
      el(
        "tr",
        {},
        el("td", { class: "num" }, String(i.index)),
        el("td", {}, i.status),
        el("td", { class: "wrap" }, JSON.stringify(i.params)),
        el("td", { class: "wrap" }, i.error ? i.error.message : summary(i.result)),
      ),
    ),
  );
  after = page.next_after;
  $("#batch-more").hidden = after === null;
}

function summary(result) {
  if (!result) return "";
  return Object.entries(result)
    .filter(([, v]) => typeof v !== "object")
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
}

export async function downloadResults() {
  const resp = await api(`${API}/batches/${current}/results?format=csv`);
  if (!resp.ok) return;
  const link = $("#batch-link");
  link.href = URL.createObjectURL(await resp.blob());
  link.download = `batch-${current}.csv`;
  link.hidden = false;
  link.click();
}

export async function batchAction(action) {
  const resp = await api(`${API}/batches/${current}/${action}`, { method: "POST" });
  if (!resp.ok) {
    $("#batch-error").textContent = await errorText(resp);
    $("#batch-error").hidden = false;
    return;
  }
  await follow(current);
}
