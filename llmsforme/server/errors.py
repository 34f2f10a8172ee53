"""Errors in the shape OpenAI's API uses, so that its clients raise the right exception.

Every error the server sends is ``{"error": {"message", "type", "param",
"code"}}`` with the HTTP status OpenAI uses for it; the official client
turns the status into its exception class (400 ``BadRequestError``, 401
``AuthenticationError``, 404 ``NotFoundError``, 429 ``RateLimitError``...).
A server error says only that something failed: the traceback goes to the
server's log, never to the client.

Taught in: [Errors, retries and limits](../part-3/errors.ipynb).
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIError", "error_body", "SERVER_ERROR_MESSAGE"]

SERVER_ERROR_MESSAGE = "The server failed while handling this request. Its log has the details."


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response.

    Example:
        >>> error_body("temperature must be in [0, 2]", "invalid_request_error", "temperature")
        {'error': {'message': 'temperature must be in [0, 2]', 'type': 'invalid_request_error', \
'param': 'temperature', 'code': None}}
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class APIError(Exception):
    """An error to send to the client: an HTTP status and OpenAI's error fields.

    Example:
        >>> error = APIError.bad_request("n must be in [1, 8], got 9", param="n")
        >>> error.status, error.body()["error"]["type"]
        (400, 'invalid_request_error')
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)

    @classmethod
    def bad_request(cls, message: str, *, param: str | None = None, code: str | None = None) -> APIError:
        return cls(400, message, param=param, code=code)
