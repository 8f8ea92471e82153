"""The bench's Amazon Personalize: the tests' fake runtime (tests/support/fake_personalize.py) in
a thread of the bench process, answering each bench user with `bench.catalog.user_recommendations`.

The service reaches it through `ENRICHER_PERSONALIZE_ENDPOINT_URL` with the fake's credentials
(`service_environment`), signing each call as it would for AWS. With the recommender's
`cache_seconds` longer than the run, the fake is asked once per user, during the warm-up.
"""

from __future__ import annotations

import asyncio
import threading

from bench.catalog import user_recommendations
from tests.support.fake_personalize import ACCESS_KEY, REGION, SECRET_KEY, FakePersonalize


class BenchPersonalize:
    def __init__(self, users: int, items: int) -> None:
        self._fake = FakePersonalize(users={
            f"user-{n}": user_recommendations(f"user-{n}", items) for n in range(users)})
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-personalize", daemon=True)

    def start(self) -> BenchPersonalize:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the fake Personalize did not start within 30 s")
        return self

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._fake.start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._fake.stop())
        self._loop.close()

    @property
    def calls(self) -> int:
        return len(self._fake.requests)

    def service_environment(self) -> dict[str, str]:
        return {"ENRICHER_PERSONALIZE_ENDPOINT_URL": self._fake.url,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
