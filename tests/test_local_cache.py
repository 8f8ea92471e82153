"""L1 alone, with a clock the test moves: TTLs, negative entries, the stale window, the bound."""

from __future__ import annotations

from service.resolution.local_cache import ABSENT, LocalCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_cache(clock: Clock, **overrides: float) -> LocalCache:
    options = {"max_entries": 100, "ttl": 60.0, "negative_ttl": 5.0, "stale_seconds": 600.0}
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
