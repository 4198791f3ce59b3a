"""The dashboard's Jinja2 environment: templates, the globals and filters they use, and partial rendering.

A live part of a page is a macro (``_parts.html``): the page renders it inside an element with an id and
a ``data-sig`` (a digest of what it shows); the live endpoints render the same macro and send it with its
digest, so the page's script replaces only the parts whose digest changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path as FsPath
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=str(FsPath(__file__).parent / "templates"))

STATUS_TONE = {
    "PROCESSED": "ok",
    "READY": "wait",
    "SENDING": "wait",
    "AWAITING_RESULT": "wait",
    "SCHEDULED": "wait",
    "NEW": "wait",
    "PROCESSING": "wait",
    "PENDING": "wait",
    "CANCELLED": "muted",
    "ERROR": "bad",
    "API_FAILED": "bad",
    "ACTIVATION_UNVERIFIED": "warn",
    "NEEDS_REVIEW": "warn",
    # Bulk outcomes beside the change statuses: PARTIAL is amber with "!" (some failed, some done).
    "PARTIAL": "warn",
    "PAUSED": "muted",
}
# Every colour comes with a sign, so a status never depends on telling colours apart.
TONE_ICON = {"ok": "✓", "bad": "✕", "warn": "!", "wait": "…", "muted": "–"}


def tone(status: object) -> str:
    return STATUS_TONE.get(str(status), "muted")


def sig(value: object) -> str:
    """A short digest of what a row or a part shows: equal digests, nothing to redraw."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        text = repr([(f.name, getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "logs"])
    else:
        text = str(value)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def thousands(value: int) -> str:
    return f"{value:,}"


TEMPLATES.env.globals["tone"] = tone
TEMPLATES.env.globals["tone_icon"] = lambda status: TONE_ICON[tone(status)]
TEMPLATES.env.globals["csrf_token"] = lambda request: str(getattr(request.state, "csrf_token", ""))
TEMPLATES.env.globals["sig"] = sig
TEMPLATES.env.filters["sig"] = sig
TEMPLATES.env.filters["thousands"] = thousands


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status_code)


class Parts:
    """The macros of ``_parts.html``, bound to one request (for its CSRF token)."""

    def __init__(self, request: Request) -> None:
        self._module = TEMPLATES.env.get_template("_parts.html").make_module({"request": request})

    def __call__(self, macro: str, *args: Any, **kwargs: Any) -> str:
        return str(getattr(self._module, macro)(*args, **kwargs))

    def region(self, macro: str, *args: Any, **kwargs: Any) -> dict[str, str]:
        """A live part as the page script takes it: its HTML and its digest."""
        html = self(macro, *args, **kwargs)
        return {"sig": sig(html), "html": html}
