// The submit screen: one task now or later, or a schedule that submits it on a cron expression.
import { $, flash, fmtTime, show } from "./dom.js";
import { clearErrors, fieldError, formError, showFieldErrors } from "./form-errors.js";
import { buildForm, readParams } from "./schema-form.js";
import { API, api, errorText, state } from "./session.js";
import { fillUploadSelect, loadUploadList } from "./uploads.js";

// "Repeat: on a cron schedule" turns the submit form into a schedule's form.
function repeating() {
  return $("#repeat").value === "cron";
}

export function toggleRepeat() {
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
    problems.push([
      "schedule.cron",
      `${cron.length} fields: give 5 (minute hour day month weekday) or 6 (… seconds)`,
    ]);
  }
  return { name, cron: cron.join(" "), problems };
}

export async function submitTask(event) {
  event.preventDefault();
  clearErrors();
  const repeat = repeating();
  const { params, problems } = readParams();
  const schedule = repeat ? readSchedule() : null;
  if (schedule) problems.push(...schedule.problems);
  for (const [name, msg] of problems) fieldError(name, msg);
  if (problems.length) return;
  const body = { type: $("#task-type").value, params, priority: $("#priority").value };
  if (schedule) {
    body.name = schedule.name;
    body.cron = schedule.cron;
  } else if ($("#run-at").value) body.run_at = new Date($("#run-at").value).toISOString();
  const notify = {};
  if ($("#notify-webhook").value.trim()) notify.webhook_url = $("#notify-webhook").value.trim();
  if ($("#notify-email").value.trim()) notify.email = $("#notify-email").value.trim();
  if (Object.keys(notify).length) body.notify = notify;
  const resp = await api(`${API}/${repeat ? "schedules" : "tasks"}`, {
    method: "POST",
    json: body,
  });
  if (repeat && resp.status === 201) {
    const created = await resp.json();
    flash(`Schedule “${created.name}” created; next run ${fmtTime(created.next_run_at)}.`);
    $("#schedule-name").value = "";
    $("#repeat").value = "once"; // the next visit submits a single task again
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

export async function showSubmit(query) {
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
  if (query.get("repeat") === "cron" && !repeating()) {
    $("#repeat").value = "cron";
    toggleRepeat();
  }
}
