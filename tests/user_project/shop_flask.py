"""A user's Flask app factory, set up as the README shows."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, render_template

from vwo_heap_middleware import requires_flag
from vwo_heap_middleware.flask import HeapFlags


def create_app() -> Flask:
    app = Flask(__name__, template_folder=str(Path(__file__).parent / "templates"))
    HeapFlags(app)

    @app.get("/premium")
    @requires_flag("premium_checkout")
    def premium() -> str:
        return render_template("premium.html")

    return app
