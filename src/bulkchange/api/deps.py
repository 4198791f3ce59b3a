"""FastAPI dependencies shared by the routers: what a route needs from the application, not from a closure.

``create_app`` keeps the process's one ``Runtime`` on ``app.state.runtime``; routes declared at module level
take it as a parameter (``rt: RuntimeDep``) instead of being defined inside a function that holds it.
"""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from bulkchange.runtime import Runtime


async def runtime(request: Request) -> Runtime:
    """The runtime of the application serving ``request`` (set by ``create_app``). Async: a plain attribute
    read needs no thread of the pool that sync dependencies run in."""
    return cast(Runtime, request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(runtime)]
