"""``python -m vwo_heap_middleware``: the ``vwo-heap`` command line."""

from .cli import main

raise SystemExit(main())
