"""Errors that carry their own HTTP status.

**For compatibility,** every error names the TensorFlow canonical code that TF Serving would have returned
(``INVALID_ARGUMENT``, ``NOT_FOUND`` ...) and maps it to HTTP exactly as ``http_server.cc`` does
(``ToHTTPStatusCode``). Handlers raise; one Flask error handler renders the body, so no route formats its
own errors.
"""

from __future__ import annotations

# tensorflow/core/protobuf/error_codes.proto: the canonical codes, index = enum number.
CANONICAL_CODES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip

# TF canonical code -> HTTP status, as in tensorflow_serving/model_servers/http_server.cc.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


class ServingError(Exception):
    """Base class: a message for the client plus the canonical code that decides the HTTP status."""

    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def status(self) -> int:
        return HTTP_STATUS_BY_CODE.get(self.code, 500)


class InvalidArgument(ServingError):
    code = "INVALID_ARGUMENT"


class NotFound(ServingError):
    code = "NOT_FOUND"


class FailedPrecondition(ServingError):
    code = "FAILED_PRECONDITION"


class Unavailable(ServingError):
    code = "UNAVAILABLE"


class StaleVersion(Unavailable):
    """A request decoded against a model version that stopped being the one it resolves to (a new
    version loaded meanwhile) with a different signature: 503, the client retries."""


class DeadlineExceeded(ServingError):
    code = "DEADLINE_EXCEEDED"


class ResourceExhausted(ServingError):
    code = "RESOURCE_EXHAUSTED"


class Unimplemented(ServingError):
    code = "UNIMPLEMENTED"


class Internal(ServingError):
    code = "INTERNAL"

    @classmethod
    def of_bug(cls, exc: BaseException) -> Internal:
        """What a bug answers (500): its type and message, never a traceback."""
        return cls(f"Internal error: {type(exc).__name__}: {exc}")


class PayloadTooLarge(ServingError):
    """No TF canonical code maps to 413; the body limit is ours, so is the status."""

    code = "RESOURCE_EXHAUSTED"

    @property
    def status(self) -> int:
        return 413


def code_of_tf_error(exc: BaseException) -> str:
    """The canonical code name of a ``tf.errors.OpError`` (or INTERNAL for anything else)."""
    error_code = getattr(exc, "error_code", None)
    if isinstance(error_code, int) and 0 <= error_code < len(CANONICAL_CODES):
        return CANONICAL_CODES[error_code]
    return "INTERNAL"


def code_number(code: str) -> int:
    """The enum number of a canonical code name (UNKNOWN for a name we do not know)."""
    return CANONICAL_CODES.index(code) if code in CANONICAL_CODES else CANONICAL_CODES.index("UNKNOWN")
