"""The Braze and Iterable snippets of docs/send-time-content.md, taken from the page and rendered by
real template engines (python-liquid with Braze's tags, pybars3 for Iterable's Handlebars) against
the live service: a message with the recipient's titles and prices written for their locale, and
no message at all when no ID of theirs is known (Braze aborts, Iterable skips the send)."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Mapping

import pytest
from yarl import URL

from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.docs_pages import DOCS, README, block_titled, fenced_blocks
from tests.support.send_platforms import BrazeRenderer, IterableDataFeed, MessageAborted

PAGE = DOCS / "send-time-content.md"
DOCS_HOST = "enricher.example.com"  # the docs' stand-in for the service

ITEMS = [
    {"id": "1815", "title": "Fleabag", "price": {"amount": "19.99", "currency": "USD"},
     "locales": {"de": {"title": "Fleabag (deutsch)"}}},
    {"id": "2009", "title": "Hunters", "price": {"amount": "24.99", "currency": "EUR"}},
    {"id": "1527", "title": "Sold out", "price": {"amount": "5.00", "currency": "EUR"},
     "available": False},
]
RECOMMENDER = {"catalog": "movies", "locale": "en_US", "attributes": [
    {"name": "Title", "field": "title"}, {"name": "Price", "field": "price", "format": "currency"}]}
NBSP = "\xa0"  # CLDR puts a no-break space between amount and symbol


@pytest.fixture
async def live(admin: Api, make_key) -> tuple[Api, str]:
    """The service with the docs' `movies` recommender, and a key with the `transform` scope."""
    await load_catalog(admin, "movies", ITEMS)
    status, body, _ = await admin.put("/v1/recommenders/movies", RECOMMENDER)
    assert status == 201, body
    return admin, await make_key("acme", "transform")


def fetch_from(api: Api):
    """The platforms' GET, sent to the service under test in place of the docs' host."""
    async def fetch(url: str, headers: Mapping[str, str]) -> tuple[int, bytes]:
        target = URL(url, encoded=True)
        assert target.host == DOCS_HOST, url
        async with api.client.get(target.raw_path_qs, headers=dict(headers)) as response:
            return response.status, await response.read()
    return fetch


class TestBraze:
    """The Braze message body of the page, through Connected Content, as Braze renders it."""

    def snippet(self) -> str:
        return block_titled(PAGE, "Braze message body").text

    async def test_a_recipient_gets_their_items_in_their_language(self, live):
        api, key = live
        braze = BrazeRenderer(fetch_from(api), {"enricher": ("braze", key)})
        message = await braze.render(self.snippet(), {
            "language": "de", "custom_attribute": {"recommended_ids": ["1815", "2009", "1527"]}})
        assert message.strip() == (f"<p>Fleabag (deutsch): 19,99{NBSP}$</p>"
                                   f"<p>Hunters: 24,99{NBSP}€</p>")
        [(url, status)] = braze.calls
        assert status == 200 and "ids=1815%2C2009%2C1527&locale=de" in url

    async def test_english_is_the_recommenders_locale(self, live):
        api, key = live
        braze = BrazeRenderer(fetch_from(api), {"enricher": ("braze", key)})
        message = await braze.render(self.snippet(), {
            "language": "en", "custom_attribute": {"recommended_ids": ["2009", "1815"]}})
        assert message.strip() == "<p>Hunters: €24.99</p><p>Fleabag: $19.99</p>"

    @pytest.mark.parametrize("user", [
        {"language": "de", "custom_attribute": {"recommended_ids": ["no-such-id", "1527"]}},
        {"language": "de", "custom_attribute": {"recommended_ids": []}},
        {"language": "de", "custom_attribute": {}},
    ], ids=["unknown-ids", "empty-list", "no-attribute"])
    async def test_no_known_id_aborts_the_message(self, live, user):
        api, key = live
        braze = BrazeRenderer(fetch_from(api), {"enricher": ("braze", key)})
        with pytest.raises(MessageAborted, match="no recommendations for this recipient"):
            await braze.render(self.snippet(), user)
        assert len(braze.calls) == 1

    async def test_a_wrong_credential_aborts_too(self, live):
        api, _ = live
        braze = BrazeRenderer(fetch_from(api), {"enricher": ("braze", "ce_notakey0000000000")})
        with pytest.raises(MessageAborted):
            await braze.render(self.snippet(), {
                "language": "de", "custom_attribute": {"recommended_ids": ["1815"]}})
        assert braze.calls[0][1] == 401


class TestIterable:
    """The page's data feed URL and email template, as Iterable fetches and renders them."""

    def feed(self, api: Api, key: str, *, merge_contexts: bool = False) -> IterableDataFeed:
        url = block_titled(PAGE, "Iterable data feed URL").text
        return IterableDataFeed(fetch_from(api), url, {"Authorization": f"Bearer {key}"},
                                merge_contexts=merge_contexts)

    def template(self) -> str:
        return block_titled(PAGE, "Iterable email template").text

    async def test_a_user_gets_their_items_in_their_locale(self, live):
        api, key = live
        sent = await self.feed(api, key).send(self.template(), {
            "email": "ada@example.com", "locale": "de_DE", "recommendedIds": ["2009", "1815"]})
        assert sent.skipped is None
        assert (f"<p>Hunters: 24,99{NBSP}€</p><p>Fleabag (deutsch): 19,99{NBSP}$</p>"
                in sent.content)

    async def test_merged_contexts_read_the_feed_in_curly_braces(self, live):
        api, key = live
        merged = self.template().replace("[[", "{{").replace("]]", "}}")
        sent = await self.feed(api, key, merge_contexts=True).send(merged, {
            "locale": "de_DE", "recommendedIds": ["1815"]})
        assert f"<p>Fleabag (deutsch): 19,99{NBSP}$</p>" in sent.content

    async def test_no_known_id_skips_the_send(self, live):
        api, key = live
        sent = await self.feed(api, key).send(self.template(), {
            "locale": "de_DE", "recommendedIds": ["no-such-id", "1527"]})
        assert sent == type(sent)(skipped="EmptyContent")

    async def test_no_ids_at_all_is_a_non_200_and_skips_the_send(self, live):
        api, key = live
        sent = await self.feed(api, key).send(self.template(), {"locale": "de_DE"})
        assert sent.skipped == "DataFeedError"

    async def test_a_wrong_key_skips_the_send(self, live):
        api, _ = live
        sent = await self.feed(api, "ce_notakey0000000000").send(self.template(), {
            "locale": "de_DE", "recommendedIds": ["1815"]})
        assert sent.skipped == "DataFeedError"


def test_the_readme_tour_shows_the_pages_snippets():
    """The README's tour is the same Braze snippet and the same Iterable URL and fields."""
    readme = {block.lang: block.text for block in fenced_blocks(README)
              if block.lang in ("liquid", "handlebars")}
    assert readme["liquid"] == block_titled(PAGE, "Braze message body").text
    assert block_titled(PAGE, "Iterable data feed URL").text.strip() in readme["handlebars"]
    for field in ("[[#if send]]", "[[#each items]]", "[[Title]]", "[[Price]]"):
        assert field in readme["handlebars"]


CONNECT_PAGE = DOCS / "connect.md"


def connect_block(lang: str, starts: str) -> str:
    [block] = [b.text for b in fenced_blocks(CONNECT_PAGE)
               if b.lang == lang and b.text.lstrip().startswith(starts)]
    return block


class TestConnectPage:
    """docs/connect.md's recommender block, event and answer, and its connect-config command, as
    written, against the live service: what the page shows is what a journey gets."""

    @pytest.fixture
    async def movies(self, admin: Api) -> Api:
        # The page's catalog: 1815 is known, 2009 is not (the answer lists it as missing).
        fleabag = {key: value for key, value in ITEMS[0].items() if key != "locales"}
        await load_catalog(admin, "movies", [fleabag])
        recommender = json.loads(connect_block("json", '{"catalog"'))
        status, body, _ = await admin.put("/v1/recommenders/movies", recommender)
        assert status == 201, body
        return admin

    async def test_the_pages_event_gets_the_pages_answer(self, movies: Api):
        event = json.loads(connect_block("json", '{"InvocationMetadata"'))
        shown = json.loads(connect_block("json", '{"Items"'))
        status, answer, _ = await movies.post("/v1/recommenders/movies/connect", event)
        assert status == 200, answer
        # The page writes CLDR's no-break space before the currency as a plain one.
        got = json.loads(json.dumps(answer).replace("\\u00a0", " "))
        assert json.dumps(got, sort_keys=True) == json.dumps(shown, sort_keys=True)

    async def test_the_pages_connect_config_command(self, movies: Api, subprocess_env):
        command = connect_block("sh", "catalog-enricher connect-config")
        words = shlex.split(command.replace("\\\n", " "))
        assert words[0] == "catalog-enricher"
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", *words[1:], env=subprocess_env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, err.decode()
        printed = out.decode()
        assert "aws lambda add-permission" in printed
        assert "connect-campaigns.amazonaws.com" in printed
        for name in ("Title", "Price"):
            assert f"$.LambdaInvocation.ResultData.Recommendations.{name}" in printed
