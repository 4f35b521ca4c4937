// The uploads screen (CSV files of daily prices) and the upload pickers of the submit form.
import { $, deleteButton, el, flash } from "./dom.js";
import { API, api, errorText, state } from "./session.js";

export async function loadUploadList() {
  const resp = await api(`${API}/uploads`);
  if (resp.ok) state.uploads = await resp.json();
  return state.uploads;
}

export function fillUploadSelect(select, selected) {
  const keep = selected ?? select.value;
  // Only price tables: an upload of batch items is run from the Batches screen.
  const prices = state.uploads.filter((u) => u.kind === "prices");
  if (!prices.length) {
    select.replaceChildren(el("option", { value: "" }, "No uploads yet: add a CSV under Uploads"));
    return;
  }
  select.replaceChildren(
    ...prices.map((u) =>
      el(
        "option",
        { value: u.id },
        `${u.filename} · ${u.assets.length} assets · ${u.first_date} to ${u.last_date}`,
      ),
    ),
  );
  if (keep && prices.some((u) => u.id === keep)) select.value = keep;
}

// A price table's assets, or the parameter names of batch items.
function uploadColumns(u) {
  const names = u.kind === "prices" ? u.assets : u.columns;
  return `${names.length}: ${names.slice(0, 6).join(", ")}${names.length > 6 ? ", …" : ""}`;
}

export async function showUploads() {
  await loadUploadList();
  const body = $("#upload-table tbody");
  body.replaceChildren(
    ...state.uploads.map((u) =>
      el(
        "tr",
        { "data-upload": u.id },
        el("td", { class: "wrap" }, u.filename),
        el("td", { class: "wrap" }, uploadColumns(u)),
        el("td", { class: "num" }, String(u.rows)),
        el("td", {}, u.kind === "prices" ? `${u.first_date} to ${u.last_date}` : "batch items"),
        el("td", {}, el("code", {}, u.id)),
        el(
          "td",
          {},
          el(
            "div",
            { class: "actions" },
            u.kind === "prices"
              ? el(
                  "a",
                  {
                    href: `#/submit?type=csv_portfolio_analytics&upload=${u.id}`,
                    class: "button",
                    "data-action": "analyse",
                  },
                  "Analyse",
                )
              : "",
            deleteButton(`Delete ${u.filename}`, async () => {
              const r = await api(`${API}/uploads/${u.id}`, { method: "DELETE" });
              flash(r.ok ? `Deleted ${u.filename}.` : await errorText(r));
              await showUploads();
            }),
          ),
        ),
      ),
    ),
  );
  $("#uploads-empty").hidden = state.uploads.length > 0;
}

export async function uploadFile(event) {
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
