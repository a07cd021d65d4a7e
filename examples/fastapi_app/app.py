"""The Heap Shop on FastAPI.

Run: ``uvicorn examples.fastapi_app.app:app`` or ``python -m examples.fastapi_app``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from examples.demo_setup import TEMPLATES, flags_payload, load_config
from vwo_heap_middleware import FlagEngine, requires_flag
from vwo_heap_middleware.browser import STATIC_DIR
from vwo_heap_middleware.starlette import HeapFlagsMiddleware, flags_context

config = load_config()
engine = FlagEngine(config)
app = FastAPI(title="Heap Shop")
app.add_middleware(HeapFlagsMiddleware, engine=engine)
app.mount("/vwo-heap", StaticFiles(directory=STATIC_DIR), name="vwo-heap")  # the browser module
templates = Jinja2Templates(directory=TEMPLATES, context_processors=[flags_context])


@app.get("/", response_class=HTMLResponse)
async def index(request: Request) -> Any:
    return templates.TemplateResponse(request, "index.html")


@app.get("/premium", response_class=HTMLResponse)
@requires_flag("premium_checkout")
async def premium(request: Request) -> Any:
    return templates.TemplateResponse(request, "premium.html")


@app.post("/purchase")
async def purchase(request: Request) -> dict[str, str]:
    """The experiment's conversion: ``purchase`` is a metric of ``premium_checkout``."""
    tracked = request.state.flags.track("purchase", {"revenue": 49.0})
    return {"conversion": tracked.status.value}


@app.get("/api/flags")
async def api_flags(request: Request) -> dict[str, Any]:
    details = request.query_params.get("details") == "1"
    return flags_payload(request.state.flags, config.flags, details)


@app.get("/healthz")
async def healthz() -> JSONResponse:
    return JSONResponse(engine.readiness(), status_code=200 if engine.ready else 503)
