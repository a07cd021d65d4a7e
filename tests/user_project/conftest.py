"""As the README says: the apps build their engine from the environment; tests go offline."""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.environ["VWO_HEAP_OFFLINE_FLAGS"] = str(HERE / "flags.toml")
os.environ["VWO_HEAP_OFFLINE_SEGMENTS"] = str(HERE / "segments.json")
os.environ["VWO_HEAP_FLAGS"] = "premium_checkout"
