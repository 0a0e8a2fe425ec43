"""Errors raised by the SDK.

Every error the daemon answers (``{"error": {"code", "message", "details"}}``) is raised as a
:class:`PitboxError` subclass chosen by its ``code``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import Build, ExecResult

__all__ = [
    "PitboxError",
    "InvalidArgument",
    "Unauthenticated",
    "PermissionDenied",
    "NotFound",
    "Conflict",
    "ResourceExhausted",
    "Internal",
    "Unavailable",
    "PitboxConnectionError",
    "CommandError",
    "BuildError",
    "error_from_response",
]


class PitboxError(Exception):
    """An error answered by the pitbox API (or met on the way to it).

    ``code`` is the API's error code (``"not_found"``, ...), ``status`` the HTTP status (0 when
    there was no answer), ``message`` the API's message and ``details`` its machine-readable
    facts (such as ``{"field": "name"}``), or None.
    """

    code: str
    status: int
    message: str
    details: Any

    def __init__(self, message: str, *, code: str = "unknown", status: int = 0,
                 details: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.details = details

    def __str__(self) -> str:
        where = "HTTP %d, " % self.status if self.status else ""
        return "%s (%s%s)" % (self.message, where, self.code)

    def __repr__(self) -> str:
        return "%s(%r, code=%r, status=%r, details=%r)" % (
            type(self).__name__, self.message, self.code, self.status, self.details)


class InvalidArgument(PitboxError):
    """400 (or 413): a bad request, such as an unknown field or a malformed value."""


class Unauthenticated(PitboxError):
    """401: no API key, or one that is unknown or revoked."""


class PermissionDenied(PitboxError):
    """403: the key may not make this call (admin-only routes)."""


class NotFound(PitboxError):
    """404: no such sandbox, session, key, file or executable."""


class Conflict(PitboxError):
    """409: a name in use, or a sandbox or session in the wrong state."""


class ResourceExhausted(PitboxError):
    """429: a limit was reached."""


class Internal(PitboxError):
    """500: the daemon failed."""


class Unavailable(PitboxError):
    """503: the daemon cannot serve the call now."""


class PitboxConnectionError(Unavailable):
    """The daemon could not be reached, or the connection broke before it answered."""


class CommandError(PitboxError):
    """Raised by :meth:`ExecResult.check` when a command did not exit with status 0."""

    result: ExecResult

    def __init__(self, result: ExecResult, command: str = "") -> None:
        what = "command %s" % command if command else "command"
        if result.timed_out:
            message = "%s timed out after %d ms" % (what, result.duration_ms)
        elif result.signal is not None:
            message = "%s was killed by signal %d" % (what, result.signal)
        else:
            message = "%s exited with status %d" % (what, result.exit_code)
        stderr = result.stderr if isinstance(result.stderr, str) else ""
        if stderr.strip():
            message += ": " + stderr.strip()[-500:]
        super().__init__(message, code="command_failed", status=0,
                         details={"exit_code": result.exit_code, "signal": result.signal})
        self.result = result


class BuildError(PitboxError):
    """Raised when an image build ran and failed (a RUN step that exited non-zero, a COPY
    source that is not in the context, a FROM image that does not exist...).

    ``build`` is the build record, ``log`` everything the build logged, ``line`` the
    Dockerfile line the error is about (or None); ``code``, ``message`` and ``details`` are
    those of the build's error. (A Dockerfile that does not even parse is refused before any
    build starts, as :class:`InvalidArgument` with ``details["line"]``.)
    """

    build: Build
    log: str
    line: int | None

    def __init__(self, build: Build, log: str = "") -> None:
        error = build.error or {}
        message = str(error.get("message") or "the build %s failed" % build.id)
        super().__init__(message, code=str(error.get("code") or "build_failed"), status=0,
                         details=error.get("details"))
        self.build = build
        self.log = log
        self.line = build.error_line

    def __str__(self) -> str:
        text = "build %s failed: %s" % (self.build.id, self.message)
        # The end of the log (what a failing RUN printed), without its last line: the error.
        tail = self.log.rstrip("\n").split("\n")
        if tail and tail[-1].startswith("error: "):
            tail.pop()
        tail = [line for line in tail[-12:] if line.strip()]
        if tail:
            text += "\n--- the end of the build log:\n" + "\n".join(tail)[-2000:]
        return text


_BY_CODE: dict[str, type[PitboxError]] = {
    "invalid_argument": InvalidArgument,
    "unauthenticated": Unauthenticated,
    "permission_denied": PermissionDenied,
    "not_found": NotFound,
    "conflict": Conflict,
    "resource_exhausted": ResourceExhausted,
    "internal": Internal,
    "unavailable": Unavailable,
}

_BY_STATUS: dict[int, str] = {
    400: "invalid_argument",
    413: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    429: "resource_exhausted",
    500: "internal",
    503: "unavailable",
}


def error_from_response(status: int, body: bytes) -> PitboxError:
    """The error for an answer with an HTTP status of 400 or more."""
    code = _BY_STATUS.get(status, "internal" if status >= 500 else "invalid_argument")
    message = body.decode("utf-8", "replace").strip() or "HTTP %d" % status
    details: Any = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        err = parsed["error"]
        if isinstance(err.get("code"), str):
            code = err["code"]
        if isinstance(err.get("message"), str):
            message = err["message"]
        details = err.get("details")
    cls = _BY_CODE.get(code, PitboxError)
    return cls(message, code=code, status=status, details=details)
