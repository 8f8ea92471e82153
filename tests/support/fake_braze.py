"""A fake Braze REST endpoint: `POST /users/track` with `Authorization: Bearer`, at most 75
attribute objects a request, `_merge_objects`, and partial failures reported in a 201's `errors`
(`{"type", "input_array": "attributes", "index"}`), as Braze documents them. The faults are
FakeProfilePlatform's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.fake_profile_platform import FakeProfilePlatform


class FakeBraze(FakeProfilePlatform):
    path = "/users/track"

    def __init__(self, api_key: str, max_batch: int = 75, **kw: Any) -> None:
        super().__init__(api_key=api_key, max_batch=max_batch, **kw)
        self.bulk_headers = 0  # requests marked X-Braze-Bulk: true

    def authorized(self, request: web.Request) -> bool:
        if request.headers.get("X-Braze-Bulk") == "true":
            self.bulk_headers += 1
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def updates(self, body: Any) -> list[tuple[str, dict[str, Any]]] | None:
        if not isinstance(body, dict) or not isinstance(body.get("attributes"), list):
            return None
        found = []
        for update in body["attributes"]:
            if not isinstance(update, dict) or not isinstance(update.get("external_id"), str):
                return None
            fields = {k: v for k, v in update.items() if k not in ("external_id",
                                                                  "_merge_objects")}
            found.append((update["external_id"], fields))
        return found

    def answer(self, refused: list[tuple[int, str]], applied: int) -> tuple[int, dict[str, Any]]:
        body: dict[str, Any] = {"message": "success", "attributes_processed": applied}
        if refused:
            body["errors"] = [{"type": "'external_id' is not valid", "input_array": "attributes",
                               "index": index} for index, _ in refused]
        return 201, body
