"""How service exceptions become HTTP answers.

* :class:`~sipbridge.store.service.NotFound` → 404 ``{"detail": "..."}``
* :class:`~sipbridge.store.service.AlreadyExists` → 409 ``{"detail": "..."}``
* :class:`~sipbridge.numbers.InvalidField` (``"field: message"``) from a service call → 422
  in FastAPI's validation error shape,
  ``{"detail": [{"loc": ["body", "field"], "msg": "message", "type": "value_error"}]}``
  (routes wrap service calls in :func:`service_errors`; a ``ValueError`` raised elsewhere
  stays a bug, i.e. a 500)
* anything else → 500 ``{"detail": "internal server error"}``, logged with its traceback
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from sipbridge.api.schemas import ErrorMessage
from sipbridge.numbers import InvalidField
from sipbridge.store.service import AlreadyExists, NotFound

__all__ = [
    "BAD_BODY",
    "JSON_ERROR",
    "Responses",
    "SafeJSONResponse",
    "error_responses",
    "field_error",
    "install_error_handlers",
    "service_errors",
]

logger = logging.getLogger("sipbridge.api")

Location = Literal["body", "query", "path"]
Responses = dict[int | str, dict[str, Any]]


def error_responses(**descriptions: str) -> Responses:
    """OpenAPI ``responses`` for error answers: ``error_responses(e404="No such agent")``."""
    return {
        int(key.removeprefix("e")): {"model": ErrorMessage, "description": text}
        for key, text in descriptions.items()
    }


# Routes with a JSON body: 400 for a body that is not UTF-8, 413 above the app's
# max_body_size (answered in plain text by Starlette's body limit, before any route runs).
BAD_BODY: Responses = {
    **error_responses(e400="The body could not be read"),
    413: {
        "description": "The body is too large",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}

# The CSV export's error answers are JSON although its 200 is text/csv: FastAPI would
# document a model-based response in the route's own media type, so refer to the schema.
JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorMessage"}}}

_FIELD_PREFIX = re.compile(r"([a-z_]+): (.+)", re.DOTALL)


def field_error(location: Location, field: str | None, message: str) -> RequestValidationError:
    """A 422 naming ``field`` in ``location``, in FastAPI's own validation error shape."""
    loc: tuple[str, ...] = (location,) if field is None else (location, field)
    return RequestValidationError([{"loc": loc, "msg": message, "type": "value_error"}])


@contextmanager
def service_errors(
    location: Location = "body", *, overrides: Mapping[str, Location] | None = None
) -> Iterator[None]:
    """Turn the service's input errors into 422 answers naming the field.

    :class:`~sipbridge.numbers.InvalidField` (``InvalidNumber`` included) names
    ``exc.field`` in ``location`` (or in ``overrides[field]``, e.g. ``{"number": "path"}``).
    A plain ``ValueError("field: message")`` is read the same way; any other ValueError is
    reported against the whole ``location``.
    """
    try:
        yield
    except (NotFound, AlreadyExists):
        raise
    except InvalidField as exc:
        where = (overrides or {}).get(exc.field, location)
        raise field_error(where, exc.field, exc.detail) from exc
    except ValueError as exc:
        message = str(exc)
        match = _FIELD_PREFIX.fullmatch(message)
        if match is None:
            raise field_error(location, None, message) from exc
        where = (overrides or {}).get(match[1], location)
        raise field_error(where, match[1], match[2]) from exc


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: strings the client sent back in a 422 may hold lone
    surrogates (valid JSON escapes, not encodable as UTF-8); those are written as escapes."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(
                content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
            ).encode("ascii")


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return SafeJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)


async def _not_found(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _already_exists(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(AlreadyExists, _already_exists)
    app.add_exception_handler(Exception, _internal_error)
