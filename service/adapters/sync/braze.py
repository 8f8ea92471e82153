"""Braze `POST /users/track`: user attributes, up to 75 attribute objects a request.

- The REST endpoint is per instance (`https://rest.iad-01.braze.com`, ...): `--endpoint`.
- The REST API key goes in `Authorization: Bearer`.
- A request's body may be 4 MB at most (every Braze endpoint's payload limit), less than 75
  attributes of 100 KB: batches are cut by bytes too.
- Each attribute object is `{"external_id": user, "<attribute>": {"items": [...], ...}}`; with
  `_merge_objects: true` Braze merges the object into the profile's existing one instead of
  replacing it (`--merge-objects`).
- `X-Braze-Bulk: true` marks the request as a bulk backfill so Braze can route it (`--bulk`).
- A 201 can still refuse some objects: `{"message": "success", "errors": [{"type": "...",
  "input_array": "attributes", "index": 3}]}`; those users are refused, the rest landed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from service.adapters.sync.platform import PlatformRequest, UserUpdate

MAX_ATTRIBUTE_OBJECTS = 75  # per request (Braze's API limits page)
MAX_NESTED_ATTRIBUTE_BYTES = 100_000  # a nested custom attribute object (100 KB)
MAX_REQUEST_BYTES = 4_000_000  # every Braze endpoint's payload limit (4 MB; 413 over it)


@dataclass(frozen=True)
class Braze:
    endpoint: str
    api_key: str
    attribute: str
    max_batch: int = MAX_ATTRIBUTE_OBJECTS
    max_request_bytes: int = MAX_REQUEST_BYTES
    merge_objects: bool = False
    bulk: bool = False
    name: str = "braze"
    credential_header: str = "Authorization"

    def request(self, users: Sequence[UserUpdate]) -> PlatformRequest:
        objects = []
        for user in users:
            update = {"external_id": user.key, self.attribute: user.value}
            if self.merge_objects:
                update["_merge_objects"] = True
            objects.append(update)
        headers = {"Authorization": f"Bearer {self.api_key}",
                   "Content-Type": "application/json"}
        if self.bulk:
            headers["X-Braze-Bulk"] = "true"
        return PlatformRequest(self.endpoint.rstrip("/") + "/users/track", headers,
                               orjson.dumps({"attributes": objects}))

    def refused(self, status: int, body: bytes, users: Sequence[UserUpdate]) -> dict[str, str]:
        try:
            answer = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return {}
        errors = answer.get("errors") if isinstance(answer, dict) else None
        refused: dict[str, str] = {}
        for error in errors if isinstance(errors, list) else ():
            if not isinstance(error, dict) or error.get("input_array", "attributes") != "attributes":
                continue
            index = error.get("index")
            if isinstance(index, int) and 0 <= index < len(users):
                refused[users[index].key] = str(error.get("type") or "refused")[:500]
        return refused
