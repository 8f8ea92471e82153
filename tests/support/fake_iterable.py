"""A fake Iterable API: `POST /api/users/bulkUpdate` with the `Api-Key` header, users by `userId`
(`preferUserId`) or `email` with `dataFields`, and the answer's counts and lists of refused users
(`failedUpdates.notFoundUserIds`, ...). The faults are FakeProfilePlatform's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.support.fake_profile_platform import FakeProfilePlatform


class FakeIterable(FakeProfilePlatform):
    path = "/api/users/bulkUpdate"

    def __init__(self, api_key: str, max_batch: int = 1000, **kw: Any) -> None:
        super().__init__(api_key=api_key, max_batch=max_batch, rate_headers=False, **kw)

    def authorized(self, request: web.Request) -> bool:
        return request.headers.get("Api-Key") == self.api_key

    def updates(self, body: Any) -> list[tuple[str, dict[str, Any]]] | None:
        if not isinstance(body, dict) or not isinstance(body.get("users"), list):
            return None
        found = []
        for user in body["users"]:
            if not isinstance(user, dict) or not isinstance(user.get("dataFields"), dict):
                return None
            key = user.get("userId") if user.get("preferUserId") else user.get("email")
            if not isinstance(key, str):
                return None
            found.append((key, user["dataFields"]))
        return found

    def answer(self, refused: list[tuple[int, str]], applied: int) -> tuple[int, dict[str, Any]]:
        return 200, {"successCount": applied, "failCount": len(refused),
                     "invalidEmails": [], "invalidUserIds": [],
                     "failedUpdates": {"notFoundUserIds": [user for _, user in refused]}}
