"""The one door to ``vwo-fme-python-sdk``: no other part of the package imports ``vwo`` or
``wingify``, and nothing here imports from above it.

``client`` (``VwoSdk``: load, evaluate, release; the process's SDK state), ``patches`` (what makes
the released SDK usable in a web server), ``schema`` (settings checked with the SDK's schema).
"""

from __future__ import annotations

from .client import SettingsRejected, VwoSdk, installed, sdk_version
from .patches import PATCHES

__all__ = ["PATCHES", "SettingsRejected", "VwoSdk", "installed", "sdk_version"]
