"""The notified-versions gate alone, with a clock the test moves: which replica rows are behind a
notified change, for how long, deletions and creations, whole catalogs, and the bound."""

from __future__ import annotations

from service.resolution.local_cache import ABSENT
from service.resolution.notified_versions import NotifiedVersions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def row(version: int) -> dict:
    return {"id": "x", "version": version}


def gate(clock: Clock, **options: int) -> NotifiedVersions:
    return NotifiedVersions(20.0, clock=clock, **options)


class TestItems:
    """A replica row older than the version notified for its item is behind; others are not."""

    def test_older_rows_are_behind_the_notified_version(self):
        notified = gate(Clock())
        notified.note(1, {"a": 7, "b": 7})
        assert notified.behind(1, {"a": row(6), "b": row(7), "c": row(1)}) == ["a"]
        assert notified.behind(1, {"a": row(8)}) == []
        assert notified.behind(2, {"a": row(6)}) == []  # another catalog's "a"

    def test_a_created_item_absent_on_the_replica_is_behind(self):
        notified = gate(Clock())
        notified.note(1, {"new": 9})
        assert notified.behind(1, {"new": ABSENT, "never": ABSENT}) == ["new"]

    def test_a_deleted_item_still_on_the_replica_is_behind(self):
        notified = gate(Clock())
        notified.note(1, {"gone": -5})  # deleted at version 5
        assert notified.behind(1, {"gone": row(5)}) == ["gone"]
        assert notified.behind(1, {"gone": ABSENT}) == []
        notified.note(1, {"gone": 11})  # created again
        assert notified.behind(1, {"gone": ABSENT}) == ["gone"]
        assert notified.behind(1, {"gone": row(11)}) == []

    def test_an_older_notice_arriving_late_changes_nothing(self):
        notified = gate(Clock())
        notified.note(1, {"a": 9})
        notified.note(1, {"a": 4})
        assert notified.behind(1, {"a": row(8)}) == ["a"]

    def test_an_unknown_version_trusts_no_replica_row(self):
        notified = gate(Clock())
        notified.note_unknown(1, ["a"])
        assert notified.behind(1, {"a": row(10**12), "b": row(1)}) == ["a"]
        notified.note(1, {"a": 3})  # the notification with the version comes after
        assert notified.behind(1, {"a": row(10**12)}) == ["a"]

    def test_notices_are_kept_for_the_window_only(self):
        clock = Clock()
        notified = gate(clock)
        notified.note(1, {"a": 7})
        clock.now += 19.9
        assert notified.behind(1, {"a": row(6)}) == ["a"]
        clock.now += 0.2
        assert notified.behind(1, {"a": row(6)}) == []
        assert len(notified) == 0

    def test_noting_again_restarts_the_window(self):
        clock = Clock()
        notified = gate(clock)
        notified.note(1, {"a": 7, "b": 7})
        clock.now += 15
        notified.note(1, {"a": 8})
        clock.now += 10
        assert notified.behind(1, {"a": row(7), "b": row(6)}) == ["a"]


class TestCatalogs:
    """Changes too large to list gate a catalog, or all, for the window."""

    def test_a_whole_catalog_notice_gates_that_catalog(self):
        clock = Clock()
        notified = gate(clock)
        notified.note_catalog(1)
        assert notified.catalog_gated(1)
        assert not notified.catalog_gated(2)
        assert notified.behind(1, {"a": row(99), "b": ABSENT}) == ["a", "b"]
        clock.now += 20.1
        assert not notified.catalog_gated(1)
        assert notified.behind(1, {"a": row(99)}) == []

    def test_everything_gates_every_catalog(self):
        clock = Clock()
        notified = gate(clock)
        notified.note_everything()
        assert notified.catalog_gated(1) and notified.catalog_gated(2)
        assert notified.changed_recently(3)
        clock.now += 20.1
        assert not notified.catalog_gated(1)

    def test_changed_recently_knows_item_notices_too(self):
        clock = Clock()
        notified = gate(clock)
        notified.note(1, {"a": 3})
        assert notified.changed_recently(1)
        assert not notified.changed_recently(2)
        clock.now += 20.1
        assert not notified.changed_recently(1)


class TestBound:
    """Past its bound the map forgets its oldest notices, and gates their catalogs instead."""

    def test_overflow_gates_the_catalog_of_what_was_dropped(self):
        clock = Clock()
        notified = gate(clock, max_items=3)
        notified.note(1, {"a": 5})
        clock.now += 5
        notified.note(2, {"b": 5, "c": 5, "d": 5})
        assert len(notified) == 3
        assert notified.catalog_gated(1)  # "a" was pushed out: all of catalog 1 is distrusted
        assert not notified.catalog_gated(2)
        clock.now += 15.1  # "a" would have expired now
        assert not notified.catalog_gated(1)
        assert notified.behind(2, {"b": row(4)}) == ["b"]
