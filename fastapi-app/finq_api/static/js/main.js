// finq's page: plain JavaScript modules, no build step, nothing loaded from elsewhere.
// This one logs in, routes the URL's hash to a screen, and wires the page's controls.
import { createAccount, showAccounts } from "./accounts.js";
import {
  batchAction,
  downloadResults,
  forgetUpload,
  loadItems,
  readCsvFile,
  showBatches,
  stopBatchPolling,
  submitBatch,
} from "./batches.js";
import { $, el, flash, show } from "./dom.js";
import { clearErrors } from "./form-errors.js";
import { showSchedules } from "./schedules.js";
import { buildForm } from "./schema-form.js";
import { API, api, closeStreams, errorText, isAdmin, logout, state, token } from "./session.js";
import { showSubmit, submitTask, toggleRepeat } from "./submit.js";
import { showTask } from "./task-page.js";
import { deleteTask, loadTasks } from "./tasks.js";
import { loadUploadList, showUploads, uploadFile } from "./uploads.js";

const TASK_ROUTE = /^#\/tasks\/([0-9a-f-]{36})$/;

async function login(event) {
  event.preventDefault();
  const form = new URLSearchParams(new FormData($("#login-form")));
  const resp = await api(`${API}/auth/token`, { method: "POST", body: form });
  const err = $("#login-error");
  if (!resp.ok) {
    err.textContent = await errorText(resp);
    err.hidden = false;
    return;
  }
  err.hidden = true;
  sessionStorage.setItem("finq-token", (await resp.json()).access_token);
  $("#login-password").value = "";
  await start();
}

async function route() {
  if (!token()) {
    show("login");
    return;
  }
  stopBatchPolling();
  const hash = location.hash || "#/tasks";
  const m = hash.match(TASK_ROUTE);
  if (m) {
    show("task");
    await showTask(m[1]);
    return;
  }
  if (hash.startsWith("#/submit")) {
    closeStreams();
    await showSubmit(new URLSearchParams(hash.split("?")[1] || ""));
    return;
  }
  if (hash.startsWith("#/batches")) {
    closeStreams();
    show("batches");
    await showBatches();
    return;
  }
  if (hash.startsWith("#/uploads")) {
    closeStreams();
    show("uploads");
    await showUploads();
    return;
  }
  if (hash.startsWith("#/schedules")) {
    closeStreams();
    show("schedules");
    await showSchedules();
    return;
  }
  if (hash.startsWith("#/accounts")) {
    if (!isAdmin()) {
      flash("Accounts are for admins only.");
      location.hash = "#/tasks";
      return;
    }
    closeStreams();
    show("accounts");
    await showAccounts();
    return;
  }
  show("tasks");
  await loadTasks();
}

// Only the priorities this account may submit (`high` is a role's right: HIGH_PRIORITY_ROLES).
function offerPriorities(allowed) {
  for (const option of $("#priority").options) {
    const offered = allowed.includes(option.value);
    option.hidden = !offered;
    option.disabled = !offered;
  }
}

async function start() {
  const me = await api(`${API}/auth/me`);
  if (!me.ok) {
    logout();
    return;
  }
  state.me = await me.json();
  offerPriorities(state.me.priorities);
  $("#nav-accounts").hidden = !isAdmin();
  $("#schedules-all-box").hidden = !isAdmin();
  const resp = await api(`${API}/task-types`);
  state.types = await resp.json();
  await loadUploadList();
  const select = $("#task-type");
  select.replaceChildren(
    ...state.types.map((t) => el("option", { value: t.name }, `${t.title} (${t.name})`)),
  );
  $("#filter-type").replaceChildren(
    el("option", { value: "" }, "any"),
    ...state.types.map((t) => el("option", { value: t.name }, t.name)),
  );
  buildForm();
  // Replaced, not assigned: a hashchange would route a second time, racing this one.
  if (!location.hash || location.hash === "#/login") history.replaceState(null, "", "#/tasks");
  await route();
  $("#whoami").textContent = state.me.username; // last: the page is ready for this user
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => logout("Logged out."));
  $("#task-type").addEventListener("change", () => {
    clearErrors();
    buildForm();
  });
  $("#submit-form").addEventListener("submit", submitTask);
  $("#repeat").addEventListener("change", () => {
    clearErrors();
    toggleRepeat();
  });
  $("#task-delete").addEventListener("click", async () => {
    const m = location.hash.match(TASK_ROUTE);
    if (m && (await deleteTask(m[1]))) location.hash = "#/tasks";
  });
  $("#schedules-all").addEventListener("change", showSchedules);
  $("#batch-form").addEventListener("submit", submitBatch);
  $("#batch-file").addEventListener("change", readCsvFile);
  $("#batch-csv").addEventListener("input", forgetUpload);
  $("#batch-download").addEventListener("click", downloadResults);
  $("#batch-cancel").addEventListener("click", () => batchAction("cancel"));
  $("#batch-retry").addEventListener("click", () => batchAction("retry"));
  $("#batch-more").addEventListener("click", () => loadItems(false));
  $("#account-form").addEventListener("submit", createAccount);
  $("#upload-form").addEventListener("submit", uploadFile);
  $("#filters").addEventListener("submit", (e) => {
    e.preventDefault();
    state.cursors = [null];
    state.page = 0;
    loadTasks();
  });
  $("#page-next").addEventListener("click", () => {
    state.page += 1;
    loadTasks();
  });
  $("#page-prev").addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    loadTasks();
  });
  window.addEventListener("hashchange", route);
  if (token()) start();
  else show("login");
});
