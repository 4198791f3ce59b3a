"""Every error of the HTTP surface as RFC 9457 problem details (``application/problem+json``; the body is
``domain/problem_details.py``'s).

One body shape whoever answers: a handler raising ``HTTPException`` or ``ApiProblem``, FastAPI's request
validation, the security middleware (401, 403, 413, 503) and the callback receiver. Members:

* ``type`` — a URI naming the kind of problem (``about:blank`` when the status says it all);
* ``title`` — that kind in words (the same for every problem of the type); ``status`` — the HTTP status;
* ``detail`` — this occurrence in words;
* ``errors`` — the individual problems, each with ``row`` (the spreadsheet line; for JSON the object's
  position from 1; 0 = the whole request), ``field`` and ``message``: a refused file's rows, or the
  request's invalid parameters.

Extension members (``rows``, ``errors_omitted``, ``login``) are added where they say more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bulkchange.domain.problem_details import (
    CONFLICT,
    INVALID_REQUEST,
    MEDIA_TYPE,
    REFUSED,
    TOO_LARGE,
    UNREADABLE_FILE,
    problem_body,
    problem_bytes,
)

__all__ = [
    "CONFLICT",
    "INVALID_REQUEST",
    "MEDIA_TYPE",
    "REFUSED",
    "TOO_LARGE",
    "UNREADABLE_FILE",
    "ApiProblem",
    "install",
    "problem_body",
    "problem_bytes",
    "problem_response",
]


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


class ApiProblem(Exception):
    """Raised by a handler: answered as a problem (see the module doc)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type: str = "about:blank",  # the RFC's member name
        errors: Sequence[Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.type = type
        self.errors = list(errors)
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    *,
    type: str = "about:blank",
    errors: Sequence[Mapping[str, Any]] = (),
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = problem_body(status, detail, type=type, errors=errors, **extensions)
    return ProblemResponse(body, status_code=status, headers=dict(headers) if headers else None)


def _type_for_status(status: int) -> str:
    return {413: TOO_LARGE, 409: CONFLICT}.get(status, "about:blank")


def validation_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """FastAPI's validation errors as ``errors`` entries: ``field`` the dotted location, ``row`` the position
    (from 1) of a JSON body's row the error is in, else 0."""
    out = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        row = 0
        if len(loc) >= 3 and loc[0] == "body" and loc[1] == "rows" and loc[2].isdigit():
            row = int(loc[2]) + 1
        out.append({"row": row, "field": ".".join(loc), "message": str(error.get("msg", "invalid"))})
    return out


async def _on_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail, default=str)
    return problem_response(exc.status_code, detail, type=_type_for_status(exc.status_code), headers=exc.headers)


async def _on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = validation_errors(exc.errors())
    first = errors[0] if errors else {"field": "request", "message": "invalid"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    detail = f"{first['field']}: {first['message']}{more}"
    return problem_response(422, detail, type=INVALID_REQUEST, errors=errors)


async def _on_api_problem(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.status, exc.detail, type=exc.type, errors=exc.errors, headers=exc.headers, **exc.extensions
    )


def install(app: FastAPI) -> None:
    """The application's one set of exception handlers."""
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(ApiProblem, _on_api_problem)


def document_problems(spec: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as answered: every 4xx/5xx response is ``application/problem+json`` with the
    ``Problem`` schema (or its own, e.g. ``Refused``), and FastAPI's own validation schema is not used."""
    for path in spec.get("paths", {}).values():
        for operation in path.values():
            for code, response in operation.get("responses", {}).items():
                if str(code)[:1] not in ("4", "5"):
                    continue
                content = response.get("content", {})
                schema = content.pop("application/json", {}).get("schema") or {"$ref": "#/components/schemas/Problem"}
                if schema.get("$ref", "").endswith("/HTTPValidationError"):
                    schema = {"$ref": "#/components/schemas/Problem"}
                response["content"] = {MEDIA_TYPE: {"schema": schema}}
    schemas = spec.get("components", {}).get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return spec
