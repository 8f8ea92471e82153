"""Bulk import: streamed NDJSON and CSV, counts, line errors, atomic and replace modes, and the
guarantees that nothing is half-written (a cut connection, a concurrent import)."""

from __future__ import annotations

import gzip

import pytest

from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.imports import (
    CSV,
    NDJSON,
    PartialUpload,
    all_items,
    import_copying,
    import_finished,
    import_lock_held,
    ndjson,
    post_import,
    wait_for,
)

pytestmark = pytest.mark.timing

TEN = [{"id": f"i{n}", "title": f"Item {n}", "genre": "g",
        "price": {"amount": f"{n}.50", "currency": "EUR"}} for n in range(10)]


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Tiny batches and limits, so small bodies exercise several staging batches and the limits.
    return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5,
                    import_batch_rows=3, import_max_line_bytes=2048, import_max_errors=3)


@pytest.fixture
async def shop(admin: Api) -> Api:
    status, _, _ = await admin.put("/v1/catalogs/shop", {})
    assert status == 201
    return admin


def summary(**counts: int) -> dict[str, int]:
    base = {"inserted": 0, "updated": 0, "unchanged": 0, "deleted": 0, "rejected": 0}
    return {**base, **counts}


def counts(answer: dict) -> dict[str, int]:
    return {k: answer[k] for k in ("inserted", "updated", "unchanged", "deleted", "rejected")}


class TestNdjson:
    """NDJSON lines land as items; a second import tells updated from unchanged."""

    async def test_insert_then_reimport(self, shop: Api):
        status, answer = await post_import(shop, "shop", ndjson(TEN))
        assert status == 200, answer
        assert counts(answer) == summary(inserted=10)
        assert answer["errors"] == []
        assert answer["seconds"] >= 0
        _, item, _ = await shop.get("/v1/catalogs/shop/items/i3")
        assert item["price"] == {"amount": "3.50", "currency": "EUR"}

        status, answer = await post_import(shop, "shop", ndjson(TEN))
        assert counts(answer) == summary(unchanged=10)

    async def test_unchanged_keeps_version_and_updated_at(self, shop: Api):
        await post_import(shop, "shop", ndjson(TEN))
        _, before, headers = await shop.get("/v1/catalogs/shop/items/i1")
        changed = [dict(item, title="New") if item["id"] == "i2" else item for item in TEN]
        _, answer = await post_import(shop, "shop", ndjson(changed))
        assert counts(answer) == summary(updated=1, unchanged=9)
        _, after, after_headers = await shop.get("/v1/catalogs/shop/items/i1")
        assert after["updated_at"] == before["updated_at"]
        assert after_headers["ETag"] == headers["ETag"]
        assert (await shop.get("/v1/catalogs/shop/items/i2"))[1]["title"] == "New"

    async def test_bad_lines_are_reported_and_good_ones_land(self, shop: Api):
        body = b"\n".join([
            b'{"id": "a", "title": "A"}',
            b"",                                                   # line 2: blank, skipped
            b'{"id": "b", "title": "B", "price": {"amount": 1.5, "currency": "USD"}}',
            b"{not json",
            b'{"id": "c", "title": "C"}\r',                        # CRLF line ending
            b'["an", "array"]',
        ]) + b"\n"
        status, answer = await post_import(shop, "shop", body)
        assert status == 200
        assert counts(answer) == summary(inserted=2, rejected=3)
        errors = {e["line"]: e["reason"] for e in answer["errors"]}
        assert list(errors) == [3, 4, 6]
        assert errors[3].startswith("price.amount:")
        assert "float" in errors[3]
        assert errors[4].startswith("not valid JSON")
        assert "JSON object" in errors[6]
        assert [i["id"] for i in await all_items(shop, "shop")] == ["a", "c"]

    async def test_every_error_counted_first_ones_listed(self, shop: Api):
        body = ndjson([{"id": f"x{n}"} for n in range(7)])  # no title
        _, answer = await post_import(shop, "shop", body)
        assert answer["rejected"] == 7
        assert [e["line"] for e in answer["errors"]] == [1, 2, 3]  # ENRICHER_IMPORT_MAX_ERRORS
        assert answer["errors"][0]["reason"] == "title: is required"

    async def test_a_repeated_id_is_refused_on_its_later_line(self, shop: Api):
        body = ndjson([{"id": "a", "title": "first"}, {"id": "b", "title": "B"},
                       {"id": "a", "title": "second"}])
        _, answer = await post_import(shop, "shop", body)
        assert counts(answer) == summary(inserted=2, rejected=1)
        assert answer["errors"] == [{"line": 3, "reason": "id: 'a' was already given on line 1"}]
        assert (await shop.get("/v1/catalogs/shop/items/a"))[1]["title"] == "first"

    async def test_overlong_line_is_refused_without_stopping(self, shop: Api):
        body = ndjson([{"id": "a", "title": "A"}, {"id": "b", "title": "x" * 3000},
                       {"id": "c", "title": "C"}])
        _, answer = await post_import(shop, "shop", body)
        assert counts(answer) == summary(inserted=2, rejected=1)
        assert answer["errors"][0]["line"] == 2
        assert "2048 bytes" in answer["errors"][0]["reason"]

    async def test_last_line_without_newline(self, shop: Api):
        _, answer = await post_import(shop, "shop", b'{"id": "a", "title": "A"}')
        assert counts(answer) == summary(inserted=1)

    async def test_empty_body_imports_nothing(self, shop: Api):
        status, answer = await post_import(shop, "shop", b"")
        assert status == 200
        assert counts(answer) == summary()


class TestCsv:
    """CSV with a header row: base columns, attributes.<key>, locales.<tag>.<field>."""

    async def test_columns_map_to_item_fields(self, shop: Api):
        body = (
            "\ufeffid,title,price_amount,price_currency,available,attributes.colour,"
            "locales.de_DE.title\n"
            'p1,"Shirt, blue",19.90,USD,false,blue,Hemd\n'
            'p2,"A ""quoted"" title",,,1,,\n'
        ).encode()
        status, answer = await post_import(shop, "shop", body, CSV)
        assert status == 200, answer
        assert counts(answer) == summary(inserted=2)
        _, p1, _ = await shop.get("/v1/catalogs/shop/items/p1")
        assert p1["title"] == "Shirt, blue"
        assert p1["available"] is False
        assert p1["price"] == {"amount": "19.90", "currency": "USD"}
        assert p1["attributes"] == {"colour": "blue"}
        assert p1["locales"] == {"de_DE": {"title": "Hemd"}}
        _, p2, _ = await shop.get("/v1/catalogs/shop/items/p2")
        assert p2["title"] == 'A "quoted" title'
        assert p2["price"] is None
        assert p2["attributes"] == {}

    async def test_quoted_line_breaks_and_line_numbers(self, shop: Api):
        body = (
            b"id,title,attributes.description\n"      # line 1
            b'a,A,"two\nlines"\n'                     # lines 2-3
            b"b,,missing title\n"                     # line 4
            b"c,C,x,extra\n"                          # line 5
            b'd,"D""x,y\n'                            # line 6: a quote that never closes
        )
        _, answer = await post_import(shop, "shop", body, CSV)
        assert counts(answer) == summary(inserted=1, rejected=3)
        assert [(e["line"], e["reason"][:12]) for e in answer["errors"]] == [
            (4, "title: is re"), (5, "has 4 fields"), (6, "the record e")]
        _, a, _ = await shop.get("/v1/catalogs/shop/items/a")
        assert a["attributes"]["description"] == "two\nlines"

    async def test_bad_available_and_price(self, shop: Api):
        body = b"id,title,available,price_amount,price_currency\na,A,maybe,,\nb,B,,12,\n"
        _, answer = await post_import(shop, "shop", body, CSV)
        assert answer["rejected"] == 2
        assert answer["errors"][0]["reason"].startswith("available:")
        assert answer["errors"][1]["reason"].startswith("price.currency:")

    @pytest.mark.parametrize(("header", "says"), [
        ("id,title,colour", "unknown column 'colour'"),
        ("id,genre", "lacks the column(s) title"),
        ("id,title,title", "appears twice"),
    ])
    async def test_bad_header_refuses_the_file(self, shop: Api, header: str, says: str):
        status, problem = await post_import(shop, "shop", f"{header}\na,A,B\n".encode(), CSV)
        assert status == 422
        assert problem["field"] == "body"
        assert problem["errors"][0]["line"] == 1
        assert says in problem["errors"][0]["reason"]
        assert await all_items(shop, "shop") == []


class TestModes:
    """atomic=true lands all or nothing; mode=replace deletes what the file does not hold."""

    async def test_atomic_with_a_bad_line_lands_nothing(self, shop: Api):
        await load_catalog(shop, "shop", [{"id": "kept", "title": "Before"}])
        body = ndjson([{"id": "kept", "title": "After"}, {"id": "new", "title": "N"},
                       {"id": "bad"}])
        status, problem = await post_import(shop, "shop", body, query="atomic=true")
        assert status == 422
        assert problem["rejected"] == 1
        assert problem["errors"] == [{"line": 3, "reason": "title: is required"}]
        items = await all_items(shop, "shop")
        assert [(i["id"], i["title"]) for i in items] == [("kept", "Before")]

    async def test_atomic_without_errors_lands_everything(self, shop: Api):
        _, answer = await post_import(shop, "shop", ndjson(TEN), query="atomic=true")
        assert counts(answer) == summary(inserted=10)

    async def test_replace_deletes_absent_items(self, shop: Api):
        await post_import(shop, "shop", ndjson(TEN))
        _, answer = await post_import(shop, "shop", ndjson(TEN[:4]), query="mode=replace")
        assert counts(answer) == summary(unchanged=4, deleted=6)
        assert [i["id"] for i in await all_items(shop, "shop")] == ["i0", "i1", "i2", "i3"]

    async def test_replace_keeps_items_whose_line_was_refused(self, shop: Api):
        await post_import(shop, "shop", ndjson(TEN[:3]))
        body = ndjson([TEN[0], {"id": "i1", "title": ""}])  # i1's line is bad; i2 is absent
        _, answer = await post_import(shop, "shop", body, query="mode=replace")
        assert counts(answer) == summary(unchanged=1, deleted=1, rejected=1)
        assert [i["id"] for i in await all_items(shop, "shop")] == ["i0", "i1"]

    async def test_replace_and_atomic_with_errors_deletes_nothing(self, shop: Api):
        await post_import(shop, "shop", ndjson(TEN))
        status, _ = await post_import(shop, "shop", ndjson([{"id": "z"}]),
                                      query="mode=replace&atomic=true")
        assert status == 422
        assert len(await all_items(shop, "shop")) == 10


class TestRequests:
    """Bad import requests are refused before anything is read or written."""

    @pytest.mark.parametrize(("content_type", "query", "status", "field"), [
        ("application/json", "", 415, "Content-Type"),
        ("text/csv; charset=latin-1", "", 415, "Content-Type"),
        (NDJSON, "mode=merge", 422, "mode"),
        (NDJSON, "atomic=yes", 422, "atomic"),
        (NDJSON, "dry_run=true", 422, "dry_run"),
    ])
    async def test_refused(self, shop: Api, content_type, query, status, field):
        got, problem = await post_import(shop, "shop", ndjson(TEN), content_type, query)
        assert got == status, problem
        assert problem["field"] == field

    async def test_unknown_and_foreign_catalogs_are_404(self, shop: Api, make_key):
        status, problem = await post_import(shop, "nope", ndjson(TEN))
        assert status == 404
        assert problem["field"] == "catalog"
        other = Api(shop.client, await make_key("globex", "catalog:write"))
        status, _ = await post_import(other, "shop", ndjson(TEN))
        assert status == 404

    async def test_needs_write_scope(self, shop: Api, make_key):
        reader = Api(shop.client, await make_key("acme", "catalog:read"))
        status, _ = await post_import(reader, "shop", ndjson(TEN))
        assert status == 403

    async def test_gzipped_body(self, shop: Api):
        status, answer, _ = await shop.call(
            "POST", "/v1/catalogs/shop/items:import", raw=gzip.compress(ndjson(TEN)),
            headers={"Content-Type": NDJSON, "Content-Encoding": "gzip"})
        assert status == 200, answer
        assert answer["inserted"] == 10

    async def test_body_larger_than_the_json_limit_is_streamed(self, shop: Api, settings):
        items = [{"id": f"big{n}", "title": "t" * 1000} for n in range(9000)]
        body = ndjson(items)
        assert len(body) > settings.max_body_bytes  # a whole-body read would be refused
        status, answer = await post_import(shop, "shop", body)
        assert status == 200
        assert answer["inserted"] == 9000


class TestNothingHalfWritten:
    """A cut connection or a concurrent import never leaves a catalog half-imported."""

    async def test_cut_connection_leaves_the_catalog_as_it_was(
        self, shop: Api, client, database_url: str
    ):
        await post_import(shop, "shop", ndjson([{"id": f"{n:04d}", "title": f"Old {n}"}
                                                for n in range(100)]))
        before = await all_items(shop, "shop")
        body = ndjson([{"id": f"{n:04d}", "title": f"New {n}"} for n in range(2000)])
        upload = PartialUpload(client.host, client.port, shop.key,
                               "/v1/catalogs/shop/items:import?mode=replace", body)
        await upload.send_first(len(body) // 2)
        await wait_for(import_copying, database_url)  # rows have reached the staging table
        upload.cut()
        await wait_for(import_finished, database_url)
        assert await all_items(shop, "shop") == before

    async def test_concurrent_import_into_one_catalog_is_409(
        self, shop: Api, client, database_url: str
    ):
        body = ndjson(TEN)
        upload = PartialUpload(client.host, client.port, shop.key,
                               "/v1/catalogs/shop/items:import", body)
        await upload.send_first(10)
        await wait_for(import_lock_held, database_url)
        status, problem = await post_import(shop, "shop", ndjson(TEN[:1]))
        assert status == 409
        assert problem["field"] == "catalog"
        status, answer = await upload.finish()
        assert status == 200
        assert answer["inserted"] == 10


class TestImportSlots:
    """Imports beyond ENRICHER_MAX_CONCURRENT_IMPORTS in one process get 503 with Retry-After."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return Settings(database_url=database_url, db_pool_min=1, db_pool_max=5,
                        max_concurrent_imports=1)

    async def test_second_import_waits_its_turn(self, shop: Api, client, database_url: str):
        await shop.put("/v1/catalogs/other", {})
        upload = PartialUpload(client.host, client.port, shop.key,
                               "/v1/catalogs/shop/items:import", ndjson(TEN))
        await upload.send_first(10)
        await wait_for(import_lock_held, database_url)
        status, _answer, headers = await shop.call(
            "POST", "/v1/catalogs/other/items:import", raw=ndjson(TEN),
            headers={"Content-Type": NDJSON})
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert (await upload.finish())[0] == 200
        assert (await post_import(shop, "other", ndjson(TEN)))[0] == 200
