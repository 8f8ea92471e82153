"""Every JSON and problem+json answer is built here."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import json_codec
from service.errors import ProblemError

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json_codec.dumps(data), status=status, headers=headers, content_type=JSON
    )


def json_bytes_response(body: bytes, *, headers: dict[str, str] | None = None) -> web.Response:
    """A 200 whose JSON body is already serialised."""
    return web.Response(body=body, headers=headers, content_type=JSON)


def problem_response(error: ProblemError, instance: str) -> web.Response:
    return web.Response(
        body=json_codec.dumps(error.as_problem(instance)),
        status=error.status,
        headers=error.headers,
        content_type=PROBLEM_JSON,
    )
