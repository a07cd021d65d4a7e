"""FastAPI: ``Depends(requires_flag_dependency("key"))`` on a path operation or a router (and
``@requires_flag``, the decorator every adapter offers).

The path operation runs only when the flag is on; the dependency's value is the decision.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import Request

from .decision import FlagDecision
from .guards import refusal
from .guards import requires_flag as requires_flag  # the decorator, from each adapter
from .request_flags import RequestFlags


@functools.cache
def requires_flag_dependency(
    key: str, *, status: int = 404, redirect_to: str | None = None
) -> Callable[[Request], Awaitable[FlagDecision]]:
    """A dependency that refuses the request unless flag ``key`` is on (fails closed).

    The same arguments give the same callable, so ``app.dependency_overrides`` can replace it.
    """
    location = refusal(status, redirect_to)

    async def flag_dependency(request: Request) -> FlagDecision:
        flags: RequestFlags | None = getattr(request.state, "flags", None)
        if flags is not None:
            await flags.load_async([key])
            decision = flags[key]
            if decision.enabled:
                return decision
        if location is not None:
            raise HTTPException(status_code=302, headers={"Location": location})
        raise HTTPException(status_code=status)

    return flag_dependency
