"""A user's FastAPI app, set up as the README shows."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from vwo_heap_middleware import Config, FlagEngine, requires_flag
from vwo_heap_middleware.starlette import HeapFlagsMiddleware, flags_context

engine = FlagEngine(Config.from_env())
app = FastAPI()
app.add_middleware(HeapFlagsMiddleware, engine=engine)
templates = Jinja2Templates(
    directory=Path(__file__).parent / "templates", context_processors=[flags_context]
)


@app.get("/premium", response_class=HTMLResponse)
@requires_flag("premium_checkout")
async def premium(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "premium.html")
