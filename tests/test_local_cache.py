"""L1 alone, with a clock the test moves: TTLs, negative entries, the stale window, the bound."""

from __future__ import annotations

import sys

from service.resolution import local_cache
from service.resolution.local_cache import (
    ABSENT,
    MAX_DERIVED_PER_ENTRY,
    LocalCache,
    derived_bytes,
    item_bytes,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(clock: Clock, **overrides: float) -> LocalCache:
    # Admission off: these tests store keys once into a full L1 to see its bounds, LRU order and
    # TTLs; TestAdmission turns it on, as the service has it.
    options = {"max_entries": 100, "ttl": 60.0, "negative_ttl": 5.0, "stale_seconds": 600.0,
               "admission": False}
    options.update(overrides)
    return LocalCache(clock=clock, **options)  # type: ignore[arg-type]


class TestExpiry:
    """Entries are fresh for their TTL, then stale (a fallback only) for a window, then gone."""

    def test_fresh_then_stale_then_gone(self):
        clock = Clock()
        cache = make_cache(clock)
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        assert cache.lookup(1, ["a"]) == ({"a": {"id": "a"}}, {}, [])
        clock.now += 61
        assert cache.lookup(1, ["a"]) == ({}, {"a": {"id": "a"}}, ["a"])
        clock.now += 600
        assert cache.lookup(1, ["a"]) == ({}, {}, ["a"])
        assert len(cache) == 0

    def test_negative_entries_have_their_shorter_ttl(self):
        clock = Clock()
        cache = make_cache(clock)
        cache.store(1, {"gone": ABSENT, "here": {"id": "here"}}, cache.generation())
        fresh, _, missing = cache.lookup(1, ["gone", "here"])
        assert fresh == {"gone": ABSENT, "here": {"id": "here"}}
        assert missing == []
        clock.now += 6
        fresh, _, missing = cache.lookup(1, ["gone", "here"])
        assert fresh == {"here": {"id": "here"}}
        assert missing == ["gone"]

    def test_catalogs_do_not_share_entries(self):
        cache = make_cache(Clock())
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        assert cache.lookup(2, ["a"]) == ({}, {}, ["a"])


class TestBound:
    """Storing more entries than the bound never holds more than the bound; the oldest go first."""

    def test_bound_respected_with_lru_eviction(self):
        cache = make_cache(Clock(), max_entries=100)
        cache.store(1, {"keep": {"id": "keep"}}, cache.generation())
        for start in range(0, 1000, 50):
            cache.store(1, {str(i): {"id": str(i)} for i in range(start, start + 50)},
                        cache.generation())
            cache.lookup(1, ["keep"])  # recently used: survives
            assert len(cache) <= 100
        fresh, _, missing = cache.lookup(1, ["keep", "0", "999"])
        assert set(fresh) == {"keep", "999"}
        assert missing == ["0"]

    def test_a_sharded_l1_keeps_its_bound_and_its_recently_used_entries(self, monkeypatch):
        # A large L1 is split into shards (the LRU order is kept per shard): 16 of 1,000 here.
        # The margins hold whatever the hash seed: each shard evicts ~250 of ~440 old entries
        # nobody used again, so none of the ~60 used ones.
        monkeypatch.setattr(local_cache, "SHARD_FROM", 16_000)
        cache = make_cache(Clock(), max_entries=16_000)
        old = [f"old-{i}" for i in range(8_000)]
        cache.store(1, {i: {"id": i} for i in old}, cache.generation())
        used, looked_up = old[:500], old[500:1_000]
        cache.touch(1, used)
        cache.lookup(1, looked_up)
        new = [f"new-{i}" for i in range(12_000)]
        for start in range(0, len(new), 1_000):
            cache.store(1, {i: {"id": i} for i in new[start:start + 1_000]}, cache.generation())
        assert len(cache) == 16_000
        fresh, _, missing = cache.lookup(1, used + looked_up + new)
        assert len(fresh) == 13_000 and not missing
        # And what the bound leaves of the rest.
        assert len(cache.lookup(1, old[1_000:])[0]) == 16_000 - 13_000
        cache.forget(1, new)
        assert len(cache) == 4_000

    def test_a_sharded_l1_keeps_its_byte_bound_and_its_accounts(self, monkeypatch):
        monkeypatch.setattr(local_cache, "SHARD_FROM", 16_000)
        monkeypatch.setattr(local_cache, "SHARD_FROM_BYTES", 0)
        bound = 2_000 * item_bytes("item-0000", {"id": "item-0000"})
        cache = make_cache(Clock(), max_entries=16_000, max_bytes=bound)
        for start in range(0, 8_000, 500):
            values = {f"item-{i:04}": {"id": f"item-{i:04}"} for i in range(start, start + 500)}
            cache.store(1, values, cache.generation())
            cache.attach(1, {i: (v, (b'"x"',)) for i, v in values.items()}, (7, None))
            assert cache.accounted_bytes <= bound
        assert 1_000 < len(cache) < 2_000  # the bytes bound it, not the entries
        assert sum(entry[5] for entry in cache.entries()) == cache.accounted_bytes

    def test_zero_entries_turns_l1_off(self):
        cache = make_cache(Clock(), max_entries=0)
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        assert len(cache) == 0
        assert cache.lookup(1, ["a"]) == ({}, {}, ["a"])


class TestInvalidation:
    """forget drops entries; flushes demote them to stale; reads older than a flush land stale."""

    def test_forget_drops_even_the_fallback(self):
        cache = make_cache(Clock())
        cache.store(1, {"a": {"id": "a"}, "b": {"id": "b"}}, cache.generation())
        cache.forget(1, ["a"])
        assert cache.lookup(1, ["a", "b"]) == ({"b": {"id": "b"}}, {}, ["a"])

    def test_flush_catalog_demotes_only_that_catalog(self):
        cache = make_cache(Clock())
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        cache.store(2, {"a": {"id": "a2"}}, cache.generation())
        cache.flush_catalog(1)
        assert cache.lookup(1, ["a"]) == ({}, {"a": {"id": "a"}}, ["a"])
        assert cache.lookup(2, ["a"]) == ({"a": {"id": "a2"}}, {}, [])

    def test_flush_all_demotes_everything(self):
        cache = make_cache(Clock())
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        cache.store(2, {"b": {"id": "b"}}, cache.generation())
        cache.flush_all()
        assert cache.lookup(1, ["a"])[0] == {}
        assert cache.lookup(2, ["b"])[0] == {}
        cache.store(1, {"a": {"id": "new"}}, cache.generation())
        assert cache.lookup(1, ["a"])[0] == {"a": {"id": "new"}}

    def test_a_read_begun_before_a_flush_is_stored_stale(self):
        cache = make_cache(Clock())
        before = cache.generation()
        cache.flush_catalog(1)
        cache.store(1, {"a": {"id": "old"}}, before)
        assert cache.lookup(1, ["a"]) == ({}, {"a": {"id": "old"}}, ["a"])


class TestDerivedValues:
    """What the transform derives from an entry (its rendered row) is answered only while that very
    entry is fresh: never after the item changed, was evicted or flushed, or its TTL passed."""

    KEY = ("recommender-1", "en_US")

    def cache_with_row(self, clock: Clock, **overrides: float) -> tuple[LocalCache, dict]:
        cache = make_cache(clock, **overrides)
        item = {"id": "a"}
        cache.store(1, {"a": item, "b": {"id": "b"}}, cache.generation())
        cache.attach(1, {"a": (item, "row-a")}, self.KEY)
        return cache, item

    def test_a_partial_table_hit_answers_as_the_per_id_lookup_does(self):
        clock = Clock()
        cache, _ = self.cache_with_row(clock)
        stale_item = {"id": "s"}
        cache.store(1, {"s": stale_item}, cache.generation() - 1)
        cache.flush_all()  # s stale; a's row leaves its table with the flush
        cache.store(1, {"a": {"id": "a"}}, cache.generation())
        item_a = cache.lookup(1, ["a"])[0]["a"]
        cache.attach(1, {"a": (item_a, "row-a")}, self.KEY)
        b = cache.lookup(1, ["b"])[1]
        assert b == {"b": {"id": "b"}}  # b: stored before the flush, stale now
        rows = cache.derived_table(1, self.KEY)
        assert rows == {"a": "row-a"}
        ids = ["a", "s", "c", "b"]
        through = cache.lookup_through_table(1, ids, rows, self.KEY)
        assert through == cache.lookup_derived(1, ids, self.KEY)
        derived, fresh, stale, missing = through
        assert derived == {"a": "row-a"} and fresh == {}
        assert stale == {"s": stale_item, "b": {"id": "b"}} and missing == ["s", "c", "b"]
        cache.forget(1, ["a"])  # the item changed while the request awaits its misses
        assert derived == {"a": "row-a"}  # its copy, as a per-ID lookup's

    def test_attached_value_is_answered_instead_of_the_item(self):
        cache, _ = self.cache_with_row(Clock())
        derived, fresh, stale, missing = cache.lookup_derived(1, ["a", "b", "c"], self.KEY)
        assert derived == {"a": "row-a"}
        assert fresh == {"b": {"id": "b"}}
        assert (stale, missing) == ({}, ["c"])
        assert cache.derived_table(1, self.KEY) == {"a": "row-a"}
        # Another key, another catalog: nothing derived there.
        assert cache.lookup_derived(1, ["a"], ("other", None))[0] == {}
        assert cache.derived_table(2, self.KEY) is None

    def test_a_replaced_item_loses_what_was_derived_from_it(self):
        cache, item = self.cache_with_row(Clock())
        cache.store(1, {"a": {"id": "a", "title": "new"}}, cache.generation())
        assert cache.derived_table(1, self.KEY) == {}
        derived, fresh, _, _ = cache.lookup_derived(1, ["a"], self.KEY)
        assert derived == {}
        assert fresh == {"a": {"id": "a", "title": "new"}}
        # A row derived from the old item, attached late, is not kept on the new entry.
        cache.attach(1, {"a": (item, "stale-row")}, self.KEY)
        assert cache.lookup_derived(1, ["a"], self.KEY)[0] == {}

    def test_forget_and_flushes_drop_derived_values(self):
        for drop in (lambda c: c.forget(1, ["a"]), lambda c: c.flush_catalog(1),
                     lambda c: c.flush_all()):
            cache, _ = self.cache_with_row(Clock())
            drop(cache)
            assert not cache.derived_table(1, self.KEY)
            assert cache.lookup_derived(1, ["a"], self.KEY)[0] == {}

    def test_a_table_is_dropped_when_its_earliest_entry_expires(self):
        clock = Clock()
        cache, _ = self.cache_with_row(clock)
        clock.now += 61
        assert cache.derived_table(1, self.KEY) is None
        assert cache.lookup_derived(1, ["a"], self.KEY)[0] == {}

    def test_rows_go_back_into_a_dropped_table(self):
        clock = Clock()
        cache, _ = self.cache_with_row(clock)
        clock.now += 30
        newer = {"id": "n"}
        cache.store(1, {"n": newer}, cache.generation())
        cache.attach(1, {"n": (newer, "row-n")}, self.KEY)
        clock.now += 31  # a's TTL has passed, n's has not
        assert cache.derived_table(1, self.KEY) is None
        assert cache.lookup_derived(1, ["n"], self.KEY)[0] == {"n": "row-n"}
        assert cache.derived_table(1, self.KEY) == {"n": "row-n"}

    def test_eviction_takes_the_row_out_of_the_table(self):
        cache, _ = self.cache_with_row(Clock(), max_entries=2)
        cache.store(1, {"c": {"id": "c"}}, cache.generation())  # evicts a, the oldest
        assert cache.derived_table(1, self.KEY) == {}

    def test_touch_keeps_rows_from_the_table_in_lru_order(self):
        cache, _ = self.cache_with_row(Clock(), max_entries=2)
        cache.touch(1, ["a"])  # used through the table: b is now the oldest
        cache.store(1, {"c": {"id": "c"}}, cache.generation())
        assert cache.derived_table(1, self.KEY) == {"a": "row-a"}
        assert cache.lookup(1, ["b"])[2] == ["b"]


class TestAdmission:
    """Once L1 is full, a new key is kept from its second store on (the doorkeeper); what it
    refuses is never served, and keys it holds are always refreshed."""

    @staticmethod
    def full_cache(clock: Clock, **overrides: float) -> LocalCache:
        cache = make_cache(clock, admission=True, max_entries=4, **overrides)
        cache.store(1, {i: {"id": i} for i in "abcd"}, cache.generation())  # room: all kept
        assert len(cache) == 4 and not cache.refused
        return cache

    def test_a_new_key_is_kept_at_its_second_store_only(self):
        cache = self.full_cache(Clock())
        cache.store(1, {"new": {"id": "new", "v": 1}}, cache.generation())
        assert cache.refused == 1
        assert cache.lookup(1, ["new"]) == ({}, {}, ["new"])  # not fresh, not stale: a miss
        assert set(cache.lookup(1, list("abcd"))[0]) == set("abcd")  # nothing evicted for it
        cache.store(1, {"new": {"id": "new", "v": 2}}, cache.generation())
        assert cache.lookup(1, ["new"])[0] == {"new": {"id": "new", "v": 2}}  # the second read's
        assert len(cache) == 4  # the least recently used went for it

    def test_a_key_held_is_refreshed_at_once(self):
        clock = Clock()
        cache = self.full_cache(clock)
        clock.now += 61  # all stale
        cache.store(1, {"a": {"id": "a", "v": 2}}, cache.generation())
        assert cache.lookup(1, ["a"])[0] == {"a": {"id": "a", "v": 2}}
        assert cache.refused == 0

    def test_a_forgotten_key_is_not_served_after_its_first_store(self):
        cache = self.full_cache(Clock())
        cache.forget(1, ["a"])  # the item changed
        cache.store(1, {"x": {"id": "x"}}, cache.generation())  # room again: kept
        cache.store(1, {"a": {"id": "a", "v": 2}}, cache.generation())  # full: refused
        assert cache.lookup(1, ["a"]) == ({}, {}, ["a"])

    def test_an_l1_bound_by_bytes_refuses_once_nearly_full(self):
        """Evicting for the byte bound leaves L1 just under it: that is full, not room, or every
        miss of a cold load would be stored and evict another."""
        cache = make_cache(Clock(), admission=True, max_entries=100_000, max_bytes=200_000)
        for start in range(0, 20_000, 500):
            cache.store(1, {f"i{n}": {"id": f"i{n}"} for n in range(start, start + 500)},
                        cache.generation())
            assert cache.accounted_bytes <= 200_000
        assert not cache.has_room() and len(cache) < 1_000  # the bytes bind, not the entries
        assert cache.refused > 15_000  # nearly every key once: almost all refused

    def test_while_there_is_room_every_key_is_kept(self):
        cache = make_cache(Clock(), admission=True, max_entries=100)
        cache.store(1, {str(i): {"id": str(i)} for i in range(100)}, cache.generation())
        assert len(cache) == 100 and cache.refused == 0

    def test_refusals_of_a_cold_load_keep_the_bound_and_the_accounts(self):
        cache = make_cache(Clock(), admission=True, max_entries=1_000, max_bytes=10**9)
        for start in range(0, 20_000, 500):
            cache.store(1, {f"i{n}": {"id": f"i{n}"} for n in range(start, start + 500)},
                        cache.generation())
            assert len(cache) <= 1_000
        assert cache.refused > 15_000  # nearly every key once: almost all refused
        entries = sum(entry[5] for entry in cache.entries())
        assert entries < cache.accounted_bytes <= entries + 8 * 1_024 * 8  # plus the marks
        hot = {f"i{n}": {"id": f"i{n}"} for n in range(20_000, 20_050)}
        for _ in range(3):  # read again and again; the marks may be cleared once in between
            cache.store(1, hot, cache.generation())
        assert len(cache.lookup(1, hot)[0]) == 50  # kept


def rendered_row(key: int, item_id: str) -> tuple[bytes, ...]:
    """A transform's row: three serialised attribute values, as json_row makes them."""
    return (b'"Title %d of %s"' % (key, item_id.encode()), b'"Genre"', b'"$19.99"')


def derived_keys(recommenders: int = 20, locales: int = 30) -> list[tuple[int, str]]:
    return [(r, f"l{loc:02d}") for r in range(recommenders) for loc in range(locales)]


class TestByteBound:
    """L1 accounts for the bytes of its entries and of the rows kept on them, and evicts the least
    recently used entries while they pass `max_bytes`, however many (recommender, locale) rows
    each entry keeps."""

    def fill(self, cache: LocalCache, count: int, keys: list) -> dict[str, dict]:
        items = {f"item-{i}": {"id": f"item-{i}", "title": f"Movie {i}", "available": True}
                 for i in range(count)}
        cache.store(1, items, cache.generation())
        for key in keys:
            cache.attach(1, {i: (item, rendered_row(key[0], i)) for i, item in items.items()}, key)
        return items

    def test_rows_for_many_keys_stay_within_the_bound_and_evict_lru(self):
        bound = 200_000
        cache = make_cache(Clock(), max_entries=100_000, max_bytes=bound)
        cache.store(1, {"keep": {"id": "keep"}}, cache.generation())
        highest = 0
        for start in range(0, 2000, 100):
            ids = [f"item-{i}" for i in range(start, start + 100)]
            items = {i: {"id": i, "title": f"Movie {i}", "available": True} for i in ids}
            cache.store(1, items, cache.generation())
            for key in derived_keys(4, 5):
                cache.attach(1, {i: (items[i], rendered_row(key[0], i)) for i in ids}, key)
                highest = max(highest, cache.accounted_bytes)
                cache.lookup(1, ["keep"])  # recently used: survives
        assert highest <= bound
        assert 0.5 * bound < cache.accounted_bytes <= bound  # filled, not emptied
        fresh, _, missing = cache.lookup(1, ["keep", "item-0", "item-1999"])
        assert set(fresh) == {"keep", "item-1999"}
        assert missing == ["item-0"]
        assert len(cache) < 2000  # the bytes bound, not the entry bound, evicted

    def test_accounted_bytes_come_back_to_zero(self):
        for drop in (lambda c: c.forget(1, [f"item-{i}" for i in range(50)]),
                     lambda c: c.store(1, {f"item-{i}": ABSENT for i in range(50)},
                                       c.generation()) or c.forget(
                         1, [f"item-{i}" for i in range(50)])):
            cache = make_cache(Clock(), max_entries=1000, max_bytes=10**9)
            self.fill(cache, 50, derived_keys(2, 3))
            assert cache.accounted_bytes > 50 * 6 * 100
            drop(cache)
            assert cache.accounted_bytes == 0
            assert len(cache) == 0

    def test_replacing_and_evicting_give_the_bytes_back(self):
        cache = make_cache(Clock(), max_entries=10, max_bytes=10**9)
        self.fill(cache, 10, derived_keys(1, 3))
        one_entry = cache.accounted_bytes // 10
        cache.store(1, {f"item-{i}": {"id": f"item-{i}"} for i in range(10)}, cache.generation())
        plain = cache.accounted_bytes
        assert plain < 10 * one_entry  # the rows went with the values they were made from
        cache.store(1, {f"new-{i}": {"id": f"new-{i}"} for i in range(10)}, cache.generation())
        assert len(cache) == 10
        assert abs(cache.accounted_bytes - plain) < 10 * 10  # ten evicted, ten alike stored

    def test_a_row_an_entry_drops_leaves_its_table(self):
        """An entry keeps at most MAX_DERIVED_PER_ENTRY rows, then starts over: the rows it drops
        are no longer in their tables either, nor in the accounted bytes."""
        cache = make_cache(Clock(), max_entries=1000, max_bytes=10**9)
        keys = derived_keys(3, 30)
        self.fill(cache, 20, keys)
        held = sum(len(cache.derived_table(1, key) or {}) for key in keys)
        assert held <= 20 * MAX_DERIVED_PER_ENTRY
        kept_now = [key for key in keys if cache.derived_table(1, key)]
        assert len(kept_now) <= MAX_DERIVED_PER_ENTRY
        # What is accounted is what the entries hold: as many as after attaching one round.
        again = make_cache(Clock(), max_entries=1000, max_bytes=10**9)
        self.fill(again, 20, keys[-len(kept_now):])
        assert cache.accounted_bytes == again.accounted_bytes

    def test_flushes_keep_the_accounting(self):
        cache = make_cache(Clock(), max_entries=1000, max_bytes=10**9)
        self.fill(cache, 10, derived_keys(1, 2))
        before = cache.accounted_bytes
        cache.flush_all()  # entries demoted to stale, still held (a fallback): still accounted
        assert cache.accounted_bytes == before
        cache.forget(1, [f"item-{i}" for i in range(10)])
        assert cache.accounted_bytes == 0

    def test_zero_is_no_byte_bound(self):
        cache = make_cache(Clock(), max_entries=1000, max_bytes=0)
        self.fill(cache, 100, derived_keys(2, 2))
        assert len(cache) == 100
        assert cache.accounted_bytes > 0


class TestEstimates:
    """The estimates L1 accounts for grow with what an item and a row hold."""

    def test_item_estimate_counts_texts_and_json_fields(self):
        small = {"id": "a", "title": "x"}
        long = {"id": "a", "title": "x" * 1000}
        localized = {"id": "a", "title": "x",
                     "locales": {f"l{j}": {"title": "y" * 20} for j in range(30)}}
        assert item_bytes("a", long) >= item_bytes("a", small) + 999
        assert item_bytes("a", localized) >= item_bytes("a", small) + 30 * 20
        assert item_bytes("a", ABSENT) < item_bytes("a", small)

    def test_row_estimate_counts_its_bytes(self):
        assert derived_bytes((b"x" * 500, b"y")) >= derived_bytes((b"x", b"y")) + 499
        assert derived_bytes(False) > 0

    def test_row_estimate_is_what_the_objects_take(self):
        """A rendered row weighs what sys.getsizeof says of it and its values (the calibration
        the byte bound rests on), whatever values it holds."""
        for row in [(), (b"",), (b'"Drama"', b'"https://img.example/' + b"x" * 300 + b'"'),
                    ("text", b"bytes")]:
            expected = sys.getsizeof(row) + sum(map(sys.getsizeof, row))
            assert derived_bytes(row) - derived_bytes(()) == expected - sys.getsizeof(()), row

    def test_a_table_that_shrank_gives_its_room_back(self):
        """A dict keeps the room it grew to: a table whose rows mostly left is copied."""
        import sys

        cache = make_cache(Clock(), max_entries=10_000, max_bytes=0)
        key = (0, "l00")
        items = {f"i{n}": {"id": f"i{n}"} for n in range(2000)}
        cache.store(1, items, cache.generation())
        cache.attach(1, {i: (item, (b'"x"',)) for i, item in items.items()}, key)
        full = sys.getsizeof(cache.derived_table(1, key))
        cache.forget(1, [f"i{n}" for n in range(1900)])
        rows = cache.derived_table(1, key)
        assert rows == {f"i{n}": (b'"x"',) for n in range(1900, 2000)}
        assert sys.getsizeof(rows) < full / 4
