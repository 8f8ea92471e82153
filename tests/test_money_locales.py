"""A locale's first prices: its CLDR data is loaded off the event loop (enrich.prepare_money_locales).

Loading a locale's data costs 3-4 ms and checking a currency's layout in it ~0.7 ms; an event of
30 locales new to the process held the loop ~100 ms, stalling every other request. The transform
and content routes now do that first work in a thread. These tests start from empty caches and
watch where Babel loads its data.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import babel.localedata
import orjson
import pytest
from babel.numbers import format_currency

from service.enrichment import enrich
from service.enrichment.enrich import Enricher, prepare_money_locales
from service.enrichment.locales import babel_locale, fallback_chain
from service.enrichment.money_format import layout_for
from service.enrichment.recommenders import parse_recommender
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

# Locales no other fixture of the suite formats money in, and what Babel writes for 1234.50 EUR
# there.
LOCALES = {tag: format_currency(Decimal("1234.50"), "EUR", locale=tag)
           for tag in ("is_IS", "sw_KE", "hy_AM", "mt_MT", "ka_GE")}
CURRENCY_SPEC = {"catalog": "c", "locale": "en_US",
                 "attributes": [{"name": "Price", "field": "price", "format": "currency"}]}


@pytest.fixture
def cold_babel(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Empty CLDR and money caches (they refill), and a record of every locale data load: (name,
    whether it ran on the main thread, the event loop's)."""
    for cache in (babel_locale, enrich.format_price, layout_for, fallback_chain):
        cache.cache_clear()
    enrich._prepared_chains.clear()
    babel.localedata._cache.clear()
    getattr(babel.localedata, "_dict_cache", {}).clear()  # Babel 2.18 and later
    loads: list[tuple[str, bool]] = []
    real_load = babel.localedata.load

    def watched_load(name, merge_inherited=True):
        loads.append((str(name), threading.current_thread() is threading.main_thread()))
        return real_load(name, merge_inherited)

    monkeypatch.setattr(babel.localedata, "load", watched_load)
    return loads


def test_only_money_formatting_recommenders_have_chains_to_prepare(cold_babel):
    plain = Enricher(parse_recommender({"catalog": "c", "attributes": [
        {"name": "Title", "field": "title"}]}, "plain"))
    assert plain.unprepared_chains(["is_IS"]) == []
    money = Enricher(parse_recommender(CURRENCY_SPEC, "money"))
    chains = money.unprepared_chains(["is_IS", "is-IS", None])
    assert sorted(chains) == sorted({("is_IS", "is", "en_US", "en"), ("en_US", "en")})
    prepare_money_locales(chains, [{"price_currency": "EUR"}])
    assert money.unprepared_chains(["is_IS", None]) == []


def test_preparing_a_chain_loads_its_data_and_survives_bad_currencies(cold_babel):
    chain = fallback_chain("is_IS", "en_US")
    prepare_money_locales([chain], [{"price_currency": "NOT-A-CURRENCY"}, {"price_currency": None}])
    assert any(name.startswith("is") for name, _ in cold_babel)
    assert enrich.format_price("1234.5", "EUR", chain) == LOCALES["is_IS"]


async def post_transform(api: Api, recommender: str, event: dict) -> dict:
    async with api.client.post(f"/v1/recommenders/{recommender}/transform",
                               data=orjson.dumps(event), headers=api.headers()) as response:
        assert response.status == 200, await response.text()
        return orjson.loads(await response.read())


async def test_a_transform_in_new_locales_loads_them_off_the_loop(admin: Api, cold_babel):
    await load_catalog(admin, "shop", [{"id": "p1", "title": "One",
                                        "price": {"amount": "1234.50", "currency": "EUR"}}])
    await put_recommender(admin, "priced", "shop", ("Title", "title"), locale="en_US")
    status, body, _ = await admin.put("/v1/recommenders/priced", {**CURRENCY_SPEC, "catalog": "shop"})
    assert status == 200, body
    cold_babel.clear()  # what the writes loaded, validating the recommender's locale
    event = {"Endpoints": {locale: {"RecommendationItems": ["p1"], "Demographic": {"Locale": locale}}
                           for locale in LOCALES}}
    answer = await post_transform(admin, "priced", event)
    assert {e: answer[e]["Recommendations"]["Price"] for e in answer} == {
        locale: [text] for locale, text in LOCALES.items()}
    loaded = {name.split("_")[0] for name, _ in cold_babel}
    assert set(map(lambda tag: tag.split("_")[0], LOCALES)) <= loaded
    assert not [name for name, on_loop in cold_babel if on_loop], "CLDR data loaded on the loop"
    # Prepared once: the same locales again load nothing.
    cold_babel.clear()
    assert await post_transform(admin, "priced", event) == answer
    assert cold_babel == []


async def test_a_content_request_in_a_new_locale_loads_it_off_the_loop(admin: Api, cold_babel):
    await load_catalog(admin, "shop", [{"id": "p1", "title": "One",
                                        "price": {"amount": "1234.50", "currency": "EUR"}}])
    status, body, _ = await admin.put("/v1/recommenders/priced", {**CURRENCY_SPEC, "catalog": "shop"})
    assert status in (200, 201), body
    cold_babel.clear()
    status, answer, _ = await admin.get("/v1/recommenders/priced/content?ids=p1&locale=hy_AM")
    assert status == 200, answer
    assert answer["Recommendations"]["Price"] == [LOCALES["hy_AM"]]
    assert cold_babel and not [name for name, on_loop in cold_babel if on_loop]
