"""The 2,465 real Retail Demo Store products, imported as NDJSON and as CSV (skipped where the
shared datasets folder is absent)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support.api import Api
from tests.support.imports import (
    CSV,
    all_items,
    csv_rows,
    csv_text,
    ndjson,
    post_import,
    retail_items,
)

PRODUCTS = 2465


@pytest.fixture
def products(shared_dir: Path) -> list[dict]:
    items = retail_items(shared_dir)
    assert len(items) == PRODUCTS
    return items


@pytest.fixture
async def retail(admin: Api) -> Api:
    assert (await admin.put("/v1/catalogs/retail", {}))[0] == 201
    return admin


def counts(answer: dict) -> tuple[int, int, int, int, int]:
    return (answer["inserted"], answer["updated"], answer["unchanged"], answer["deleted"],
            answer["rejected"])


class TestRetailDemoStoreNdjson:
    """The products as NDJSON: all land, a second import changes nothing, bad lines are named."""

    async def test_import_then_reimport(self, retail: Api, products):
        status, answer = await post_import(retail, "retail", ndjson(products))
        assert status == 200, answer
        assert counts(answer) == (PRODUCTS, 0, 0, 0, 0)
        stored = await all_items(retail, "retail")
        assert len(stored) == PRODUCTS
        by_id = {item["id"]: item for item in stored}
        for product in products[:50]:
            item = by_id[product["id"]]
            assert item["title"] == product["title"]
            assert item["price"] == product["price"]  # exact decimal strings, as sent
            assert item["attributes"] == product["attributes"]

        status, answer = await post_import(retail, "retail", ndjson(products))
        assert counts(answer) == (0, 0, PRODUCTS, 0, 0)
        assert await all_items(retail, "retail") == stored  # not even updated_at moved

    async def test_bad_lines_mixed_in(self, retail: Api, products):
        lines = ndjson(products).splitlines()
        bad = {  # position in the final file (1-based) -> the bad line
            1: b'{"id": "no-title"}',
            500: b'{"id": "float-price", "title": "x", "price": {"amount": 9.99, '
                 b'"currency": "USD"}}',
            1200: b"{this is not json",
            2000: b'{"id": "bad-currency", "title": "x", "price": {"amount": "1", '
                  b'"currency": "dollars"}}',
            PRODUCTS + 4: orjson.dumps(products[7]),  # a repeat of an earlier product
        }
        for position in sorted(bad):
            lines.insert(position - 1, bad[position])
        status, answer = await post_import(retail, "retail", b"\n".join(lines) + b"\n")
        assert status == 200
        assert counts(answer) == (PRODUCTS, 0, 0, 0, len(bad))
        assert [e["line"] for e in answer["errors"]] == sorted(bad)
        reasons = [e["reason"] for e in answer["errors"]]
        assert reasons[0] == "title: is required"
        assert reasons[1].startswith("price.amount:")
        assert reasons[2].startswith("not valid JSON")
        assert reasons[3].startswith("price.currency:")
        assert "already given on line" in reasons[4]

    async def test_atomic_lands_none(self, retail: Api, products):
        body = ndjson(products) + b'{"id": "no-title"}\n'
        status, problem = await post_import(retail, "retail", body, query="atomic=true")
        assert status == 422
        assert problem["rejected"] == 1
        assert problem["errors"] == [{"line": PRODUCTS + 1, "reason": "title: is required"}]
        assert await all_items(retail, "retail") == []


class TestRetailDemoStoreCsv:
    """The same products as CSV (attributes as text columns)."""

    async def test_import_reimport_and_bad_rows(self, retail: Api, products):
        header, rows = csv_rows(products)
        status, answer = await post_import(retail, "retail", csv_text(header, rows), CSV)
        assert status == 200, answer
        assert counts(answer) == (PRODUCTS, 0, 0, 0, 0)
        _, item, _ = await retail.get(f"/v1/catalogs/retail/items/{products[0]['id']}")
        assert item["title"] == products[0]["title"]
        assert item["attributes"]["current_stock"] == str(products[0]["attributes"]
                                                          ["current_stock"])

        status, answer = await post_import(retail, "retail", csv_text(header, rows), CSV)
        assert counts(answer) == (0, 0, PRODUCTS, 0, 0)

        broken = [list(row) for row in rows]
        broken[9][1] = ""            # no title: CSV line 11 (the header is line 1)
        broken[99][3] = "12,50"      # a comma decimal: line 101
        status, answer = await post_import(retail, "retail", csv_text(header, broken), CSV,
                                           query="mode=replace")
        assert counts(answer) == (0, 0, PRODUCTS - 2, 0, 2)  # refused rows keep their item
        assert [(e["line"], e["reason"].split(":")[0]) for e in answer["errors"]] == [
            (11, "title"), (101, "price.amount")]

        status, problem = await post_import(retail, "retail", csv_text(header, broken), CSV,
                                            query="atomic=true")
        assert status == 422
        assert problem["rejected"] == 2
