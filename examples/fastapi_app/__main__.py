from __future__ import annotations

import os

import uvicorn

from examples.demo_setup import print_curl_lines
from examples.fastapi_app.app import app

port = int(os.environ.get("PORT", "8000"))
print_curl_lines(port)
uvicorn.run(app, host="127.0.0.1", port=port)
