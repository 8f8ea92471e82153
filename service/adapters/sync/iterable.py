"""Iterable `POST /api/users/bulkUpdate`: `dataFields` merged into each user's profile.

- Iterable's API reference for bulkUpdate: request body at most 4 MB, 5 requests a second per
  project (`ENRICHER_SYNC_ITERABLE_RATE`); batches are cut by bytes as well as by count.
- The project's API key goes in the `Api-Key` header; `--endpoint` picks the data center
  (`https://api.iterable.com`, `https://api.eu.iterable.com`).
- Users are named by `userId` (with `preferUserId: true`, so a user that exists only by userId is
  updated rather than a new one made) or by `email` (`--identify-by email`).
- The answer counts successes and failures and lists the refused users by kind
  (`invalidEmails`, `invalidUserIds`, and in `failedUpdates`: `notFoundUserIds`,
  `conflictEmails`, ...); each listed user is refused with that kind as the reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from service.adapters.sync.platform import PlatformRequest, UserUpdate

DEFAULT_BATCH_SIZE = 1000  # ours: Iterable documents no user count, only the body's size
MAX_REQUEST_BYTES = 4_000_000  # bulkUpdate's "Max size of request body: 4MB"


@dataclass(frozen=True)
class Iterable:
    endpoint: str
    api_key: str
    attribute: str
    max_batch: int = DEFAULT_BATCH_SIZE
    max_request_bytes: int = MAX_REQUEST_BYTES
    identify_by: str = "userId"  # or "email"
    name: str = "iterable"
    credential_header: str = "Api-Key"

    def request(self, users: Sequence[UserUpdate]) -> PlatformRequest:
        if self.identify_by == "email":
            listed = [{"email": u.key, "dataFields": {self.attribute: u.value}} for u in users]
        else:
            listed = [{"userId": u.key, "preferUserId": True,
                       "dataFields": {self.attribute: u.value}} for u in users]
        return PlatformRequest(self.endpoint.rstrip("/") + "/api/users/bulkUpdate",
                               {"Api-Key": self.api_key, "Content-Type": "application/json"},
                               orjson.dumps({"users": listed}))

    def refused(self, status: int, body: bytes, users: Sequence[UserUpdate]) -> dict[str, str]:
        try:
            answer = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return {}
        if not isinstance(answer, dict):
            return {}
        sent = {u.key for u in users}
        refused: dict[str, str] = {}
        lists = [(k, v) for k, v in answer.items() if k in ("invalidEmails", "invalidUserIds")]
        failed = answer.get("failedUpdates")
        if isinstance(failed, dict):
            lists += list(failed.items())
        for kind, keys in lists:
            for key in keys if isinstance(keys, list) else ():
                if isinstance(key, str) and key in sent:
                    refused.setdefault(key, kind)
        return refused
