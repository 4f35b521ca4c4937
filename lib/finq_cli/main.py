"""`finq`: the command-line client of the HTTP API (httpx, rich progress bars).

    finq login [--url URL] [--username NAME]         keep a token in ~/.config/finq/config.json
    finq submit TYPE --param k=v ... [--wait]        one task, a progress bar with --wait
    finq batch TYPE --csv items.csv [--base k=v ...] --out results.csv  (over 1 MiB: uploaded)
    finq status|cancel|retry ID                      a task's or a batch's

The URL and token come from FINQ_URL and FINQ_TOKEN, else from the config file (FINQ_CONFIG
names another). Errors say what went wrong: 401 (log in again), 422 (each wrong field), 429
(how long to wait), and exit with status 1.
"""

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

API = "/api/v1"
FINAL = {"SUCCESS", "FAILED", "CANCELLED"}
POLL_SECONDS = 0.5
# A batch's CSV file up to this size goes inline (`csv`); a larger one is uploaded first
# (kind items) and named by `upload_id`: sent as a file, not escaped into a JSON string.
INLINE_MAX_BYTES = 1024 * 1024
err = Console(stderr=True)
out = Console()


class CliError(Exception):
    """A failure to report in one line (and exit 1)."""


def config_path() -> Path:
    return Path(os.environ.get("FINQ_CONFIG") or Path.home() / ".config" / "finq" / "config.json")


def load_config() -> dict[str, str]:
    path = config_path()
    saved: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    url = os.environ.get("FINQ_URL") or saved.get("url") or "http://127.0.0.1:8080"
    token = os.environ.get("FINQ_TOKEN") or saved.get("token") or ""
    return {"url": url.rstrip("/"), "token": token}


def explain(resp: httpx.Response) -> str:
    """What the API said, in a line a person can act on."""
    try:
        detail: Any = resp.json().get("detail")
    except ValueError:
        detail = resp.text[:200]
    if resp.status_code == 401:
        return "not logged in, or the token expired: run `finq login`"
    if resp.status_code == 422 and isinstance(detail, list):
        return "invalid input: " + "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}" for d in detail
        )
    if resp.status_code == 429:
        wait = resp.headers.get("Retry-After")
        return f"refused (429): {detail}" + (f"; retry in {wait} s" if wait else "")
    return f"HTTP {resp.status_code}: {detail}"


class Api:
    def __init__(self, url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url, headers=headers, timeout=120)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.http.base_url}: {exc}") from None
        if resp.status_code >= 400:
            raise CliError(explain(resp))
        return resp.json() if resp.content else None

    def find(self, ident: str) -> tuple[str, dict[str, Any]]:
        """('tasks' or 'batches', the record) for an id of either."""
        for kind in ("tasks", "batches"):
            resp = self.http.get(f"{API}/{kind}/{ident}")
            if resp.status_code == 200:
                return kind, resp.json()
            if resp.status_code != 404:
                raise CliError(explain(resp))
        raise CliError(f"no task or batch {ident}")


def parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--param {pair!r}: expected key=value")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def bar() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )


def cmd_login(args: argparse.Namespace) -> None:
    url = (args.url or load_config()["url"]).rstrip("/")
    username = args.username or input("username: ")
    password = os.environ.get("FINQ_PASSWORD") or getpass.getpass("password: ")
    try:
        resp = httpx.post(
            f"{url}{API}/auth/token", data={"username": username, "password": password}
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from None
    if resp.status_code != 200:
        raise CliError(
            "login refused: wrong username or password"
            if resp.status_code == 401
            else explain(resp)
        )
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "token": resp.json()["access_token"]}))
    path.chmod(0o600)
    err.print(f"logged in to {url} as {username}; token saved in {path}")


def cmd_submit(api: Api, args: argparse.Namespace) -> None:
    body = {"type": args.type, "params": parse_params(args.param), "priority": args.priority}
    task = api.call("POST", "/tasks", json=body)
    if not args.wait:
        out.print_json(data=task)
        return
    with bar() as progress:
        step = progress.add_task(f"task {task['id'][:8]}", total=100)
        while task["status"] not in FINAL:
            time.sleep(POLL_SECONDS)
            # The status alone: params and result can be megabytes.
            task = api.call("GET", f"/tasks/{task['id']}", params={"include": ""})
            progress.update(step, completed=int(100 * (task.get("progress") or 0)))
    task = api.call("GET", f"/tasks/{task['id']}", params={"include": "result"})
    out.print_json(data={k: task[k] for k in ("id", "status", "result", "error")})
    if task["status"] != "SUCCESS":
        sys.exit(1)


def upload_items(api: Api, path: Path) -> str | None:
    """The id of `path` uploaded as batch items; None when it is over the server's upload
    limit (413), so that it goes inline instead (BATCH_BODY_MAX_BYTES is the larger)."""
    try:
        with path.open("rb") as fh:
            resp = api.http.post(
                API + "/uploads", data={"kind": "items"}, files={"file": (path.name, fh)}
            )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {api.http.base_url}: {exc}") from None
    if resp.status_code == 413:
        return None
    if resp.status_code != 201:
        raise CliError(explain(resp))
    upload_id: str = resp.json()["id"]
    return upload_id


def submit_batch(api: Api, path: Path, body: dict[str, Any]) -> dict[str, Any]:
    """Submit the items of a CSV file: inline up to INLINE_MAX_BYTES, else uploaded first and
    named by `upload_id`, the upload deleted once the batch holds its items."""
    try:
        upload_id = upload_items(api, path) if path.stat().st_size > INLINE_MAX_BYTES else None
        if upload_id is None:
            body = {**body, "csv": path.read_text()}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    if upload_id is None:
        batch: dict[str, Any] = api.call("POST", "/batches", json=body)
        return batch
    err.print(f"uploaded {path.name} as batch items ({upload_id})")
    try:
        batch = api.call("POST", "/batches", json={**body, "upload_id": upload_id})
    finally:
        with contextlib.suppress(httpx.HTTPError):
            api.http.delete(f"{API}/uploads/{upload_id}")
    return batch


def cmd_batch(api: Api, args: argparse.Namespace) -> None:
    body = {"type": args.type, "base": parse_params(args.base), "priority": args.priority}
    batch = submit_batch(api, Path(args.csv), body)
    started = time.monotonic()
    with bar() as progress:
        step = progress.add_task(f"batch {batch['id'][:8]}", total=batch["total"])
        while batch["status"] not in FINAL:
            time.sleep(POLL_SECONDS)
            batch = api.call("GET", f"/batches/{batch['id']}")
            progress.update(step, completed=round(batch["progress"] * batch["total"]))
    fmt = "ndjson" if args.out.endswith((".ndjson", ".jsonl")) else "csv"
    with api.http.stream(
        "GET", f"{API}/batches/{batch['id']}/results", params={"format": fmt}
    ) as resp:
        if resp.status_code != 200:
            resp.read()
            raise CliError(explain(resp))
        with open(args.out, "wb") as fh:
            for chunk in resp.iter_bytes():
                fh.write(chunk)
    counts = ", ".join(f"{n} {s}" for s, n in batch["counts"].items() if n)
    seconds = time.monotonic() - started
    err.print(
        f"batch {batch['id']} {batch['status']}: {counts} in {seconds:.1f} s; results in {args.out}"
    )
    if batch["status"] != "SUCCESS":
        sys.exit(1)


def cmd_status(api: Api, args: argparse.Namespace) -> None:
    out.print_json(data=api.find(args.id)[1])


def cmd_action(api: Api, args: argparse.Namespace) -> None:
    kind, _ = api.find(args.id)
    out.print_json(data=api.call("POST", f"/{kind}/{args.id}/{args.command}"))


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="finq", description="finq's command-line client")
    sub = top.add_subparsers(dest="command", required=True)
    login = sub.add_parser("login", help="log in and keep the token")
    login.add_argument("--url")
    login.add_argument("--username")
    submit = sub.add_parser("submit", help="submit one task")
    submit.add_argument("type")
    submit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE")
    submit.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    submit.add_argument("--wait", action="store_true", help="follow it with a progress bar")
    batch = sub.add_parser("batch", help="run a CSV of items as one batch")
    batch.add_argument("type")
    batch.add_argument("--csv", required=True, help="a header of parameter names, one item a row")
    batch.add_argument("--base", action="append", default=[], metavar="KEY=VALUE")
    batch.add_argument("--out", required=True, help="results file (.csv, or .ndjson)")
    batch.add_argument("--priority", default="normal", choices=["high", "normal", "low"])
    for name in ("status", "cancel", "retry"):
        sub.add_parser(name, help=f"{name} a task or a batch").add_argument("id")
    return top


def fail(message: str) -> NoReturn:
    err.print(f"[red]finq: {message}[/red]")
    sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        if args.command == "login":
            cmd_login(args)
            return
        config = load_config()
        api = Api(config["url"], config["token"])
        handlers = {
            "submit": cmd_submit,
            "batch": cmd_batch,
            "status": cmd_status,
            "cancel": cmd_action,
            "retry": cmd_action,
        }
        handlers[args.command](api, args)
    except CliError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")


if __name__ == "__main__":
    main()
