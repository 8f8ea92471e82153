"""Amazon Connect's IdempotencyToken: a profile's first answer, replayed to every retry of it.

Connect sends each customer profile with an `IdempotencyToken` and may invoke the function again
with the same one (a retry). The answer to a token is kept for `ENRICHER_CONNECT_REPLAY_SECONDS`
(at least 15 minutes) and a repeated token gets it back byte for byte, whatever changed in the
catalog or in Personalize since: a retry never shows other items than the first try did.

- **Key**: the tenant, the recommender (its ID: a recommender deleted and made again is a new
  one), the profile's ID and the token. The profile is part of it because the guide does not say
  whether a token names one profile or a whole batch.
- **L1** (this process): answers in insertion order, bounded by
  `ENRICHER_CONNECT_REPLAY_MAX_BYTES` (the oldest go first; 0 turns L1 off). Every entry lives
  as long as the others, so the oldest is also the first to expire.
- **L2** (Redis, when `REDIS_URL` is set): read with one MGET per batch; written with one script
  call that keeps the first answer stored for a key and returns it, so two processes answering
  the same token at once (a retry that overtook the first try) both answer the first one stored.
  Redis failing or slow counts as a miss, and the answer computed here stands.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Sequence

import orjson

from service.resolution.shared_cache import SharedCache

L2_PREFIX = "c:"
# What an entry costs beyond its answer: the key tuple, its strings, the OrderedDict's links.
ENTRY_OVERHEAD = 240

ReplayKey = tuple[int, int, str, str]


def replay_key(tenant_id: int, recommender_id: int, profile_id: str, token: str) -> ReplayKey:
    return (tenant_id, recommender_id, profile_id, token)


def _l2_name(key: ReplayKey) -> str:
    """A short, stable name for a key in Redis (profile IDs and tokens are not written out)."""
    return L2_PREFIX + hashlib.blake2b(orjson.dumps(key), digest_size=20).hexdigest()


class ConnectReplay:
    """First answers per (tenant, recommender, profile, token): L1, then L2."""

    def __init__(self, shared: SharedCache | None, seconds: float, max_bytes: int) -> None:
        self.shared = shared
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._entries: OrderedDict[ReplayKey, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0

    @property
    def accounted_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    async def recall(self, keys: Sequence[ReplayKey], budget: float) -> dict[ReplayKey, bytes]:
        """The answers kept for `keys` (those found); L2 is asked, once, for what L1 lacks."""
        found: dict[ReplayKey, bytes] = {}
        wanted: list[ReplayKey] = []
        now = time.monotonic()
        self._expire(now)
        for key in keys:
            entry = self._entries.get(key)
            if entry is not None:
                found[key] = entry[1]
            else:
                wanted.append(key)
        if wanted and self.shared is not None:
            held = await self.shared.get_many([_l2_name(k) for k in wanted], budget)
            for key, value in zip(wanted, held, strict=True):
                if value is not None:
                    found[key] = value
                    self._keep(key, value, now)
        return found

    async def keep(self, answers: dict[ReplayKey, bytes]) -> dict[ReplayKey, bytes]:
        """Keep `answers` unless an answer is kept already for the key; returns, per key, the
        answer to give: the first one kept (another process's, a moment ago), else this one."""
        if not answers:
            return answers
        first = dict(answers)
        if self.shared is not None:
            keys = list(answers)
            held = await self.shared.add_many([(_l2_name(k), answers[k]) for k in keys],
                                              self.seconds)
            for key, value in zip(keys, held, strict=True):
                if value is not None:
                    first[key] = value
        now = time.monotonic()
        for key, value in first.items():
            entry = self._entries.get(key)
            if entry is not None:  # kept here while this batch ran: that one was first
                first[key] = entry[1]
            else:
                self._keep(key, value, now)
        return first

    def _keep(self, key: ReplayKey, value: bytes, now: float) -> None:
        if self.max_bytes <= 0:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= _cost(key, old[1])
        self._entries[key] = (now + self.seconds, value)
        self._bytes += _cost(key, value)
        while self._bytes > self.max_bytes:
            old_key, (_, old_value) = self._entries.popitem(last=False)
            self._bytes -= _cost(old_key, old_value)

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            key, (expires, value) = next(iter(entries.items()))
            if expires > now:
                return
            del entries[key]
            self._bytes -= _cost(key, value)


def _cost(key: ReplayKey, value: bytes) -> int:
    return len(value) + len(key[2]) + len(key[3]) + ENTRY_OVERHEAD
