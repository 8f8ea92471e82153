"""Domain errors, and how each becomes an RFC 9457 problem.

    ServiceError                      base; never raised itself
    ├── SettingsError                 bad environment at start (not an HTTP error)
    ├── MigrationError                a migration failed, or an applied file changed
    └── ProblemError                  anything answered as application/problem+json
        ├── BadRequest          400   body is not JSON, bad query parameter
        │   └── ClientGone      400   the client went away while sending its body
        ├── Unauthorized        401   missing or unknown API key
        ├── Forbidden           403   the key lacks the scope
        ├── NotFound            404   unknown catalog, item, recommender, route (or another tenant's)
        ├── Conflict            409   e.g. a name already taken
        ├── PreconditionFailed  412   If-Match on a stale version
        ├── PayloadTooLarge     413   body over the configured limit
        ├── UriTooLong          414   request line (path and query) over the parser's limit
        ├── UnsupportedMedia    415   wrong Content-Type
        ├── ValidationFailed    422   well-formed JSON that breaks the contract; names the fields
        │   └── ImportRejected  422   an import that landed nothing; lists the bad lines
        ├── TooManyRequests     429   past the tenant's rate limit, or its cap of requests in flight
        ├── HeaderFieldsTooLarge 431  a header field, or the number of them, over the parser's limit
        └── Unavailable         503   Postgres unreachable or migrations not current

Handlers and data modules raise these; one middleware (service/web/middlewares.py) turns them into
responses, and what aiohttp's HTTP parser refuses before any middleware runs is answered with the
same problems (service/web/http_server.py). Messages are written for the caller and never include
secrets or SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class ServiceError(Exception):
    """Base of every error the service raises on purpose."""


class SettingsError(ServiceError):
    """The environment holds a value the service cannot run with."""


class MigrationError(ServiceError):
    """A migration could not be applied, or an applied one has changed on disk."""


@dataclass(frozen=True)
class FieldError:
    """One bad field: a dotted path into the input (`Endpoints.e1.RecommendationItems[0]`)."""

    field: str
    reason: str

    def as_json(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason}


class ProblemError(ServiceError):
    """An error the caller gets back as `application/problem+json`."""

    status = 500
    slug = "internal"
    title = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        errors: Iterable[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.field = field if field is not None else (self.errors[0].field if self.errors else None)
        self.headers = headers or {}

    @property
    def type_uri(self) -> str:
        return f"urn:catalog-enricher:problem:{self.slug}"

    def as_problem(self, instance: str) -> dict[str, object]:
        body: dict[str, object] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        if self.field is not None:
            body["field"] = self.field
        if self.errors:
            body["errors"] = [e.as_json() for e in self.errors]
        return body


class BadRequest(ProblemError):
    status, slug, title = 400, "bad-request", "Bad request"


class ClientGone(BadRequest):
    """The connection closed mid-body; the answer is for the log, nobody will read it."""


class Unauthorized(ProblemError):
    status, slug, title = 401, "unauthorized", "Missing or invalid API key"

    def __init__(self, detail: str) -> None:
        super().__init__(
            detail, field="Authorization", headers={"WWW-Authenticate": 'Bearer realm="catalog-enricher"'}
        )


class Forbidden(ProblemError):
    status, slug, title = 403, "forbidden", "API key lacks the required scope"


class NotFound(ProblemError):
    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(ProblemError):
    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class Conflict(ProblemError):
    status, slug, title = 409, "conflict", "Conflict"


class PreconditionFailed(ProblemError):
    status, slug, title = 412, "precondition-failed", "Precondition failed"


class PayloadTooLarge(ProblemError):
    status, slug, title = 413, "payload-too-large", "Request body too large"


class UriTooLong(ProblemError):
    status, slug, title = 414, "uri-too-long", "URI too long"


class UnsupportedMedia(ProblemError):
    status, slug, title = 415, "unsupported-media-type", "Unsupported media type"


class ValidationFailed(ProblemError):
    status, slug, title = 422, "validation", "Request failed validation"

    @classmethod
    def of(cls, field: str, reason: str) -> ValidationFailed:
        return cls(f"{field}: {reason}", errors=[FieldError(field, reason)])

    @classmethod
    def of_many(cls, errors: list[FieldError]) -> ValidationFailed:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return cls(f"{first.field}: {first.reason}{more}", errors=errors)


class ImportRejected(ValidationFailed):
    """An import that landed nothing: `errors` lists lines ({"line", "reason"}), not fields."""

    def __init__(
        self, detail: str, *, rejected: int, line_errors: list[dict[str, object]]
    ) -> None:
        super().__init__(detail, field="body")
        self.rejected = rejected
        self.line_errors = line_errors

    def as_problem(self, instance: str) -> dict[str, object]:
        body = super().as_problem(instance)
        body["rejected"] = self.rejected
        body["errors"] = self.line_errors
        return body


class TooManyRequests(ProblemError):
    """Past a limit; `headers` carry Retry-After and the RateLimit fields, `violated_policies` the
    names of the policies (as the IETF draft's quota-exceeded problem does)."""

    status, slug, title = 429, "too-many-requests", "Too many requests"

    def __init__(self, detail: str, *, headers: dict[str, str], violated_policies: list[str]) -> None:
        super().__init__(detail, headers=headers)
        self.violated_policies = violated_policies

    def as_problem(self, instance: str) -> dict[str, object]:
        body = super().as_problem(instance)
        body["violated-policies"] = self.violated_policies
        return body


class HeaderFieldsTooLarge(ProblemError):
    status, slug, title = 431, "header-fields-too-large", "Request header fields too large"


class Unavailable(ProblemError):
    status, slug, title = 503, "unavailable", "Service unavailable"


class InternalError(ProblemError):
    """Stands in for an unexpected exception; its detail never carries the cause."""

    status, slug, title = 500, "internal", "Internal server error"
