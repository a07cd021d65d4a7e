from __future__ import annotations

import os

from examples.demo_setup import print_curl_lines
from examples.flask_app.app import app

port = int(os.environ.get("PORT", "8000"))
print_curl_lines(port)
app.run(host="127.0.0.1", port=port)
