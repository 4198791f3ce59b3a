"""The ThingSpace CarrierService callback receiver: ThingSpace POSTs one JSON document per device here.

It records and applies each callback through ``Processor.apply_callback`` (the one engine function) and
answers 2xx quickly, so ThingSpace does not re-send (it retries up to ``maxCallbackThreshold`` times).
A body that is not a callback is refused with 400 and changes nothing.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request
from pydantic import ValidationError

from bulkchange.engine.processor import Processor

log = structlog.get_logger("bulkchange.callbacks")


def callback_router(processor: Processor) -> APIRouter:
    router = APIRouter()

    @router.post("/callbacks/thingspace/{service_provider_id}")
    async def receive(service_provider_id: int, request: Request) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError as exc:
            raise HTTPException(status_code=400, detail="body is not JSON") from exc
        if not isinstance(payload, dict):
            raise HTTPException(status_code=400, detail="body is not a JSON object")
        try:
            result = await _apply(processor, payload, service_provider_id)
        except ValidationError as exc:
            raise HTTPException(
                status_code=400, detail=f"not a CarrierService callback: {exc.error_count()} errors"
            ) from exc
        log.info(
            "callback", result=result, request_id=payload.get("requestId"), service_provider_id=service_provider_id
        )
        return {"result": result}

    return router


async def _apply(processor: Processor, payload: dict[str, Any], service_provider_id: int) -> str:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(processor.apply_callback, payload, service_provider_id=service_provider_id)


def callback_app(processor: Processor) -> FastAPI:
    """A minimal application serving only the callback receiver (used by the demo and tests)."""
    app = FastAPI(title="bulkchange callbacks", docs_url=None, redoc_url=None)
    app.include_router(callback_router(processor))
    return app
