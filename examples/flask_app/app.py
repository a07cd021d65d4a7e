"""The Heap Shop on Flask.

Run: ``gunicorn examples.flask_app.app:app`` or ``python -m examples.flask_app``.
"""

from __future__ import annotations

from flask import Flask, Response, g, jsonify, render_template, request

from examples.demo_setup import TEMPLATES, flags_payload, load_config
from vwo_heap_middleware import FlagEngine, requires_flag
from vwo_heap_middleware.flask import HeapFlags

config = load_config()
engine = FlagEngine(config)
app = Flask(__name__, template_folder=str(TEMPLATES))
HeapFlags(app, engine=engine)


@app.get("/")
def index() -> str:
    return render_template("index.html")


@app.get("/premium")
@requires_flag("premium_checkout")
def premium() -> str:
    return render_template("premium.html")


@app.post("/purchase")
def purchase() -> Response:
    """The experiment's conversion: ``purchase`` is a metric of ``premium_checkout``."""
    return jsonify(conversion=g.flags.track("purchase", {"revenue": 49.0}).status.value)


@app.get("/api/flags")
def api_flags() -> Response:
    details = request.args.get("details") == "1"
    return jsonify(flags_payload(g.flags, config.flags, details))


@app.get("/healthz")
def healthz() -> tuple[Response, int]:
    return jsonify(engine.readiness()), 200 if engine.ready else 503
