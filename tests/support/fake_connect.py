"""A local "Amazon Connect": outbound campaigns' custom action block, as the administrator guide
("Invoke Lambda functions") describes it, for tests.

It makes the events a journey sends its Lambda function (`InvocationMetadata.CampaignContext` and
`Items.CustomerProfiles`, each profile a `ProfileId`, its `CustomerData` as a JSON *string*, and an
`IdempotencyToken`), in batches of 1-100 profiles shaped like Customer Profiles' standard profile
object (FirstName, EmailAddress, Address, `Attributes` a string-to-string map), with non-ASCII
names, profiles missing attributes, huge attributes, and retries (the same batch, same tokens).
`check` holds an answer to what Connect requires of it: every profile answered once, by an `Id`
equal to its ProfileId, in order, each `ResultData` a JSON object of at most 32 KB.

`send_to_service` posts an event to the real service's connect route; the same events go through
the real shim code with tests/support/shim_process.py.
"""

from __future__ import annotations

import copy
import io
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from tests.support.api import Api

RESULT_DATA_LIMIT = 32 * 1000  # the guide's 32 KB, read as the smaller of 32,000 and 32,768

FIRST_NAMES = ("Zoë", "Łukasz", "Søren", "José", "Ngọc Anh", "Дмитрий", "陽菜", "Ayşe", "Chloé",
               "Björk", "François", "Agnieszka", "😀 Emoji", "Mateus")
LAST_NAMES = ("Martínez", "渡辺", "Kowalski", "Øvergaard", "Nguyễn", "Иванова", "Þórsdóttir",
              "Öztürk", "Gonçalves", "Schröder")


class FakeConnect:
    """Makes Connect's events and checks answers the way Connect would."""

    def __init__(self, seed: int | None = 1, campaign: str = "campaign-12345") -> None:
        self.rng = random.Random(seed)  # None: new profiles and tokens every time
        self.campaign = campaign
        self.runs = 0

    def customer_data(self, *, ids: Sequence[str] | str | None = None,
                      locale: str | None = None, **attributes: str) -> dict[str, Any]:
        """A standard profile object: non-ASCII names, an address, custom `Attributes` (string
        values, as Customer Profiles keeps them) holding the IDs (comma-separated, or as given)
        and the locale when given."""
        first = self.rng.choice(FIRST_NAMES)
        last = self.rng.choice(LAST_NAMES)
        custom: dict[str, Any] = dict(attributes)
        if ids is not None:
            # A list of strings as Customer Profiles keeps it (one string, comma-separated);
            # anything else as it is.
            custom["recommended_items"] = ",".join(ids) if isinstance(ids, list | tuple) and \
                ids and all(isinstance(i, str) for i in ids) else ids
        if locale is not None:
            custom["locale"] = locale
        return {
            "ProfileId": uuid.UUID(int=self.rng.getrandbits(128)).hex,
            "FirstName": first, "LastName": last,
            "EmailAddress": f"{uuid.UUID(int=self.rng.getrandbits(128)).hex[:10]}@example.com",
            "PhoneNumber": f"+1202555{self.rng.randrange(10_000):04d}",
            "PartyType": "INDIVIDUAL",
            "Address": {"Address1": "Große Straße 5", "City": "Zürich", "Country": "CH"},
            "Attributes": custom,
        }

    def profile(self, data: dict[str, Any] | str | None = None, *,
                profile_id: str | None = None, token: str | None = None) -> dict[str, Any]:
        """One entry of `Items.CustomerProfiles`: `data` (a profile object, written as a JSON
        string; a string is sent as it is, e.g. not JSON at all)."""
        if data is None:
            data = self.customer_data()
        if isinstance(data, dict):
            profile_id = profile_id or data.get("ProfileId")
            data = json.dumps(data, ensure_ascii=False)
        return {
            "ProfileId": profile_id or uuid.UUID(int=self.rng.getrandbits(128)).hex,
            "CustomerData": data,
            "IdempotencyToken": token or f"token-{uuid.UUID(int=self.rng.getrandbits(128))}",
        }

    def event(self, profiles: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """A batch as the custom action block sends it."""
        self.runs += 1
        return {
            "InvocationMetadata": {"CampaignContext": {
                "CampaignId": self.campaign, "RunId": f"run-{self.runs}",
                "ActionId": "activity-abc123", "CampaignName": "Welcome Campaign"}},
            "Items": {"CustomerProfiles": list(profiles)},
        }

    @staticmethod
    def retry(event: dict[str, Any]) -> dict[str, Any]:
        """The same batch again, same tokens: what Connect sends when it retries."""
        return copy.deepcopy(event)

    @staticmethod
    def check(event: dict[str, Any], answer: object) -> list[dict[str, Any]]:
        """Each profile's ResultData, after asserting what Connect requires of the answer."""
        assert isinstance(answer, dict) and set(answer) == {"Items"}, answer
        results = answer["Items"]["CustomerProfiles"]
        asked = [p["ProfileId"] for p in event["Items"]["CustomerProfiles"]]
        assert [r["Id"] for r in results] == asked, "every profile, by its Id, once, in order"
        for result in results:
            data = result["ResultData"]
            assert isinstance(data, dict) and isinstance(data.get("send"), bool), data
            assert result_data_size(data) <= RESULT_DATA_LIMIT
            if data["send"] is False and "items" not in data:
                assert data["reason"], data
        return [r["ResultData"] for r in results]

    @staticmethod
    async def send_to_service(api: Api, recommender: str, event: dict[str, Any],
                              headers: dict[str, str] | None = None):
        """POST the event to the connect route: (status, parsed body, headers)."""
        body = io.BytesIO(orjson.dumps(event))  # a file: aiohttp sends a large one in chunks
        async with api.client.post(f"/v1/recommenders/{recommender}/connect", data=body,
                                   headers=api.headers(headers)) as response:
            return response.status, orjson.loads(await response.read()), response.headers


def result_data_size(data: object) -> int:
    """Bytes of a ResultData as the Lambda Python runtime writes it at its largest (ASCII
    escapes, a space after `,` and `:`): every other writing is smaller."""
    return len(json.dumps(data).encode())

