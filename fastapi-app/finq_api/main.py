"""The FastAPI application: `gunicorn finq_api.main:app` (see fastapi-app/gunicorn.conf.py)."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError

from finq_api import API_PREFIX, errors, hub
from finq_api.guard import largest_body
from finq_api.middleware import EdgeMiddleware
from finq_api.ratelimit import global_limit
from finq_api.routes import (
    auth,
    batches,
    health,
    monitoring,
    schedules,
    stream,
    task_types,
    tasks,
    uploads,
    users,
)
from finq_api.security import hash_password
from finq_core import broker, heap, metrics
from finq_core.config import Settings, get_api_server_settings, get_settings
from finq_core.db import background_checkpoints, session_scope
from finq_core.logs import configure_logging
from finq_core.models import Role, User
from finq_engine import TASK_TYPES

log = logging.getLogger("finq.api")
STATIC_DIR = Path(__file__).parent / "static"


def ensure_admin(settings: Settings) -> None:
    """Create the first admin from ADMIN_USERNAME/ADMIN_PASSWORD if absent. Every replica
    tries at start-up; the unique username makes all but one a no-op."""
    if not (settings.admin_username and settings.admin_password):
        return
    try:
        with session_scope() as session:
            exists = session.scalars(
                select(User.id).where(User.username == settings.admin_username)
            ).first()
            if exists is None:
                session.add(
                    User(
                        username=settings.admin_username,
                        role=Role.ADMIN.value,
                        password_hash=hash_password(settings.admin_password),
                    )
                )
                log.info("created admin account %r", settings.admin_username)
    except IntegrityError:
        pass
    except OperationalError as exc:
        log.error("could not ensure the admin account (database not migrated?): %s", exc)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with background_checkpoints():  # first: before any connection opens
        ensure_admin(get_settings())
        metrics.zero_task_counters(TASK_TYPES, api=True)
        broker.warm_up()
        heap.freeze_startup()  # last: what start-up built stays out of every later collection
        yield
        await hub.close()


def custom_openapi(app: FastAPI) -> dict[str, Any]:
    """Publish every task type's parameter schema in /docs, as `params` alternatives."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    refs = []
    for task_type in TASK_TYPES.values():
        model_schema = task_type.params_model.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        for name, sub in model_schema.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components[task_type.params_model.__name__] = model_schema
        refs.append({"$ref": f"#/components/schemas/{task_type.params_model.__name__}"})
    create = components.get("TaskCreate")
    if create:
        create["properties"]["params"] = {
            "description": "Parameters of the chosen type (one of these schemas).",
            "oneOf": refs,
        }
        create["examples"] = [{"type": t.name, "params": t.example} for t in TASK_TYPES.values()]
    app.openapi_schema = schema
    return schema


NO_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    app = FastAPI(
        title="finq",
        version="0.1.0",
        description="Financial calculations as background tasks: submit, follow, fetch.",
        lifespan=lifespan,
        docs_url=None,  # served below from vendored assets: no CDN, works offline
        redoc_url=None,
        # FastAPI's native OpenTelemetry: finq exports Prometheus metrics, not OTel, and the
        # per-request check for a configured provider cost ~5% of a submit's CPU (py-spy).
        telemetry=NO_TELEMETRY,
    )
    errors.install(app)
    app.include_router(health.router)
    for module in (
        auth,
        users,
        task_types,
        stream,
        tasks,
        batches,
        uploads,
        schedules,
        monitoring,
    ):
        app.include_router(module.router, prefix=API_PREFIX, dependencies=[Depends(global_limit)])
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
        )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="finq API",
            swagger_js_url="/static/vendor/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui/swagger-ui.css",
            swagger_favicon_url="/static/vendor/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters={"persistAuthorization": False},
        )

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The web page (static files, no external assets)."""
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.add_middleware(
        EdgeMiddleware,
        max_body=settings.max_body_bytes,
        ceiling=largest_body(settings),
        max_in_flight=get_api_server_settings().api_max_in_flight,
    )
    app.openapi = lambda: custom_openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
