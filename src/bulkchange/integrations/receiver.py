"""A minimal webhook receiver (ASGI): verifies the signature, drops duplicates by event id + page.

Used by ``bulkchange demo``; also a working reference for a receiver (see docs/webhooks.md).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bulkchange.integrations.webhooks import EVENT_ID_HEADER, PAGE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclass
class WebhookInbox:
    secret: str
    documents: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self, path: str = "/webhooks/bulkchange") -> FastAPI:
        app = FastAPI(title="bulkchange webhook receiver", docs_url=None, redoc_url=None, openapi_url=None)

        @app.post(path)
        async def receive(request: Request) -> JSONResponse:
            body = await request.body()
            h = request.headers
            if not verify(self.secret, h.get(TIMESTAMP_HEADER, ""), body, h.get(SIGNATURE_HEADER, "")):
                with self._lock:
                    self.refused += 1
                return JSONResponse({"ok": False, "error": "bad signature"}, status_code=401)
            key = (h.get(EVENT_ID_HEADER, ""), int(h.get(PAGE_HEADER, "1")))
            with self._lock:
                if key in self.documents:
                    self.duplicates += 1  # at-least-once delivery: already processed, acknowledge again
                else:
                    self.documents[key] = json.loads(body)
            return JSONResponse({"ok": True})

        return app

    def devices(self, bulk_change_id: int) -> list[dict[str, Any]]:
        with self._lock:
            return [
                d
                for doc in self.documents.values()
                if doc.get("BulkChange", {}).get("Id") == bulk_change_id
                for d in doc.get("Devices", [])
            ]
