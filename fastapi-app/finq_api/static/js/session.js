// The API client and the logged-in session. The token lives in sessionStorage: it lasts as
// long as the browser tab.
import { $, flash, show } from "./dom.js";

export const API = "/api/v1";
// What the screens share: task types, uploads, the task list's pages, open live streams.
export const state = {
  types: [],
  uploads: [],
  cursors: [null],
  page: 0,
  streams: new Map(),
  taskStream: null,
  deliveryTimer: null,
  me: null,
};

export function token() {
  return sessionStorage.getItem("finq-token");
}

export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401 && !path.endsWith("/auth/token")) {
    logout("Your session ended; log in again.");
  }
  return resp;
}

export async function errorText(resp) {
  try {
    const body = await resp.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail))
      return body.detail.map((e) => `${e.loc.join(".")}: ${e.msg}`).join("; ");
  } catch (_) {
    /* not JSON */
  }
  return `${resp.status} ${resp.statusText}`;
}

export function isAdmin() {
  return Boolean(state.me && state.me.role === "admin");
}

export function closeStreams() {
  for (const s of state.streams.values()) s.close();
  state.streams.clear();
  if (state.taskStream) {
    state.taskStream.close();
    state.taskStream = null;
  }
  if (state.deliveryTimer) {
    clearTimeout(state.deliveryTimer);
    state.deliveryTimer = null;
  }
}

export function logout(message) {
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
