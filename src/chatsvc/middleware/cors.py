"""Starlette's CORS, with a refused preflight answered in the error envelope like every answer."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from chatsvc.errors import ApiError, ErrorCode, error_response


class Cors(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        # Starlette says which part was refused in plain text ("Disallowed CORS origin, method").
        reason = bytes(response.body).decode("utf-8", "replace").strip()
        headers = {name: value for name, value in response.headers.items()
                   if name.lower() not in ("content-length", "content-type")}
        return error_response(ApiError(ErrorCode.INVALID_REQUEST,
                                       f"CORS preflight refused: {reason[:200]}", headers))
