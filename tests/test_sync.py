"""`catalog-enricher sync braze|iterable` against local fakes that speak each platform's protocol:
every user's profile holds exactly the expected attribute (the content route's items), written
once, with 429s, 5xx bursts, slow answers and partial failures on the way; the dead letter holds
exactly the refused users; a killed sync resumed sends no user twice and misses none;
`--changed-only` sends only what changed; no API key in any output."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.adapters.sync.checkpoint import Checkpoint
from service.adapters.sync.command import run_sync
from service.adapters.sync.profile_value import profile_value
from service.cli import build_parser
from service.errors import ValidationFailed
from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.fake_braze import FakeBraze
from tests.support.fake_iterable import FakeIterable

KEY = "brz-test-key-7f3a9c0e5b1d4a2e8c6f"  # looked for in every output
ITERABLE_KEY = "itb-test-key-0a1b2c3d4e5f60718293"
ATTRIBUTE = "recommended_products"
ITEMS = [{"id": f"p{n}", "title": f"Product {n}",
          "price": {"amount": f"{n}.99", "currency": "USD"}} for n in range(1, 31)]
# Users get one of these ID lists (an unknown ID in some): the content route answers each once.
COMBOS = [[f"p{(c * 7 + k) % 30 + 1}" for k in range(4 + c % 3)] + (["nope"] if c % 5 == 0 else [])
          for c in range(24)]


@pytest.fixture
async def shop(admin: Api) -> dict[int, list[dict[str, Any]]]:
    """The catalog and recommender, and the content route's items for each combo."""
    await load_catalog(admin, "goods", ITEMS)
    status, body, _ = await admin.put("/v1/recommenders/shop", {
        "catalog": "goods", "locale": "en_US", "attributes": [
            {"name": "Title", "field": "title"},
            {"name": "Price", "field": "price", "format": "currency"}]})
    assert status in (200, 201), body
    return await expected_items(admin)


async def expected_items(admin: Api) -> dict[int, list[dict[str, Any]]]:
    found = {}
    for index, ids in enumerate(COMBOS):
        status, body, _ = await admin.post("/v1/recommenders/shop/content", {"ids": ids})
        assert status == 200, body
        found[index] = body["items"]
    return found


def write_users(path: Path, count: int, start: int = 0) -> dict[str, int]:
    """`{"key", "ids"}` lines; returns user → combo."""
    users = {f"u{n:06d}": n % len(COMBOS) for n in range(start, start + count)}
    path.write_bytes(b"".join(orjson.dumps({"key": user, "ids": COMBOS[combo]}) + b"\n"
                              for user, combo in users.items()))
    return users


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return dataclasses.replace(settings, sync_backoff_ms=5, sync_concurrency=4)


async def sync(settings: Settings, capsys, *argv: str) -> tuple[int, dict[str, Any]]:
    args = build_parser().parse_args(["sync", *argv, "--no-progress"])
    status = await run_sync(settings, args)
    out = capsys.readouterr().out.strip().splitlines()
    return status, orjson.loads(out[-1]) if out else {}


def assert_profiles(fake, users: dict[str, int], expected: dict[int, list], refused: set[str]):
    assert set(fake.profiles) == set(users) - refused
    for user, profile in fake.profiles.items():
        assert list(profile) == [ATTRIBUTE], user
        assert profile[ATTRIBUTE]["items"] == expected[users[user]], user
        assert profile[ATTRIBUTE]["updated_at"].endswith("Z")
    assert fake.users_written_twice() == []


def dead_letter_keys(path: Path) -> dict[str, str]:
    return {entry["key"]: entry["reason"] for entry in
            map(orjson.loads, path.read_bytes().splitlines())}


class TestBraze:
    async def test_every_user_once_through_429s_5xx_and_refusals(
            self, shop, fast, tmp_path, capsys, monkeypatch, caplog):
        caplog.set_level(logging.DEBUG)
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        users = write_users(tmp_path / "in.ndjson", 2000)
        refused = {"u000017", "u000900", "u001999"}
        # The limit is announced by the 429s only: a workspace shared with other integrations.
        fake = await FakeBraze(KEY, limit=8, advertise=False, fail_burst=3, delay=0.01,
                               refuse=refused).start()
        try:
            status, summary = await sync(
                fast, capsys, "braze", "--tenant", "acme", "--recommender", "shop",
                "--attribute", ATTRIBUTE, "--endpoint", fake.url, "--rate", "40", "--bulk",
                "--dead-letter", str(tmp_path / "dead.ndjson"), str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 1  # some users were refused
        assert_profiles(fake, users, shop, refused)
        assert set(dead_letter_keys(tmp_path / "dead.ndjson")) == refused
        assert fake.statuses[429] > 0 and fake.statuses[503] == 3
        assert summary["users"] == 2000 and summary["sent"] == 1997
        assert summary["refused"] == 3 and summary["retried"] >= 3 + fake.statuses[429] - 1
        assert fake.bulk_headers == summary["requests"]
        assert KEY not in caplog.text and KEY not in (tmp_path / "dead.ndjson").read_text()
        assert KEY not in (tmp_path / "in.ndjson.checkpoint").read_text()

    async def test_enriched_lines_oversized_values_and_bad_lines(
            self, shop, fast, tmp_path, capsys, monkeypatch):
        """Already-enriched lines are sent as they are; a value over the size limit loses items
        from its end, whole; unusable lines are dead-lettered with their reason."""
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        big = [{"id": f"b{n}", "Title": "x" * 200} for n in range(10)]
        lines = [
            orjson.dumps({"key": "e1", "send": True, "items": big, "Recommendations": {},
                          "missing": []}),
            b"{not json",
            orjson.dumps({"input": {"userId": "e2"}, "output": None, "error": "failed"}),
            orjson.dumps({"input": {"userId": "e3"},
                          "output": {"recommendedItems": ["p1", "p2"], "scores": [0.5, 0.25]}}),
            orjson.dumps({"key": "e4", "ids": ["p3"], "locale": "not a locale!"}),
        ]
        (tmp_path / "in.ndjson").write_bytes(b"\n".join(lines) + b"\n")
        fake = await FakeBraze(KEY).start()
        try:
            status, summary = await sync(
                dataclasses.replace(fast, sync_braze_max_attribute_bytes=1000), capsys,
                "braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
                "--endpoint", fake.url, "--dead-letter", str(tmp_path / "dead.ndjson"),
                str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 1
        kept = fake.profiles["e1"][ATTRIBUTE]["items"]
        assert kept == big[:len(kept)] and 0 < len(kept) < len(big)
        assert len(orjson.dumps(fake.profiles["e1"][ATTRIBUTE])) <= 1000
        e3 = fake.profiles["e3"][ATTRIBUTE]["items"]
        assert [(i["id"], i["score"]) for i in e3] == [("p1", 0.5), ("p2", 0.25)]
        dead = {entry["line"]: entry for entry in
                map(orjson.loads, (tmp_path / "dead.ndjson").read_bytes().splitlines())}
        assert sorted(dead) == [2, 3, 5]
        assert dead[3]["key"] == "e2" and "failed" in dead[3]["reason"]
        assert "locale" in dead[5]["reason"]
        assert summary["input_errors"] == 3 and summary["sent"] == 2
        assert summary["items_dropped"] == len(big) - len(kept)

    async def test_dry_run_sends_nothing_and_hides_the_key(
            self, shop, fast, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        write_users(tmp_path / "in.ndjson", 200)
        status, summary = await sync(
            fast, capsys, "braze", "--tenant", "acme", "--recommender", "shop", "--attribute",
            ATTRIBUTE, "--endpoint", "http://127.0.0.1:9", "--dry-run",
            str(tmp_path / "requests.ndjson"), str(tmp_path / "in.ndjson"))
        assert status == 0
        requests = list(map(orjson.loads, (tmp_path / "requests.ndjson").read_bytes()
                            .splitlines()))
        assert len(requests) == 3 == summary["requests"]  # 75 + 75 + 50
        assert requests[0]["headers"]["Authorization"] == "***"
        assert requests[0]["url"] == "http://127.0.0.1:9/users/track"
        assert sum(len(r["body"]["attributes"]) for r in requests) == 200
        assert KEY not in (tmp_path / "requests.ndjson").read_text()

    async def test_a_refused_key_stops_the_run(self, shop, fast, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        write_users(tmp_path / "in.ndjson", 300)
        fake = await FakeBraze("another-key").start()
        try:
            status, _ = await sync(
                fast, capsys, "braze", "--tenant", "acme", "--recommender", "shop",
                "--attribute", ATTRIBUTE, "--endpoint", fake.url, str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 1
        assert fake.profiles == {} and fake.statuses[401] >= 1
        assert KEY not in capsys.readouterr().err


    @pytest.mark.parametrize(("fault", "reason"), [
        ({"fail_burst": 10_000}, "gave up after 2 attempts: HTTP 503"),
        ({"max_batch": 10}, "HTTP 400: at most 10 users a request"),
    ])
    async def test_what_cannot_land_is_dead_lettered_once(
            self, shop, fast, tmp_path, capsys, monkeypatch, fault, reason):
        """Retries run out on 5xx; another 4xx is not retried: each user once, with why."""
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        users = write_users(tmp_path / "in.ndjson", 150)
        fake = await FakeBraze(KEY, **fault).start()
        try:
            status, summary = await sync(
                dataclasses.replace(fast, sync_max_attempts=2), capsys, "braze", "--tenant",
                "acme", "--recommender", "shop", "--attribute", ATTRIBUTE, "--endpoint",
                fake.url, "--dead-letter", str(tmp_path / "dead.ndjson"),
                str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 1 and fake.profiles == {}
        assert dead_letter_keys(tmp_path / "dead.ndjson") == {user: reason for user in users}
        assert summary["refused"] == 150 and summary["sent"] == 0
        assert summary["requests"] == (4 if "fail_burst" in fault else 2)

class TestLocales:
    """--locale sets every line's locale, --locale-from reads each line's own, as enrich-batch's
    flags do: each user's attribute is the content route's answer in that locale."""

    async def test_locale_and_locale_from(self, shop, admin, fast, tmp_path, capsys,
                                          monkeypatch):
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        ids = COMBOS[1]
        status, body, _ = await admin.post("/v1/recommenders/shop/content",
                                           {"ids": ids, "locale": "de_DE"})
        assert status == 200, body
        german = body["items"]
        assert german != shop[1]  # the currency price is written the German way
        (tmp_path / "all.ndjson").write_bytes(orjson.dumps({"key": "u1", "ids": ids}) + b"\n")
        (tmp_path / "own.ndjson").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in (
            {"input": {"userId": "u2", "locale": "de_DE"}, "output": {"recommendedItems": ids}},
            {"input": {"userId": "u3"}, "output": {"recommendedItems": ids}})))
        fake = await FakeBraze(KEY).start()
        try:
            common = ("braze", "--tenant", "acme", "--recommender", "shop", "--attribute",
                      ATTRIBUTE, "--endpoint", fake.url)
            done, _ = await sync(fast, capsys, *common, "--locale", "de_DE",
                                 str(tmp_path / "all.ndjson"))
            assert done == 0
            done, _ = await sync(fast, capsys, *common, "--locale-from", "input.locale",
                                 str(tmp_path / "own.ndjson"))
            assert done == 0
            capsys.readouterr()
            refused = await run_sync(fast, build_parser().parse_args(
                ["sync", *common, "--locale", "not a locale!", str(tmp_path / "all.ndjson")]))
        finally:
            await fake.stop()
        assert fake.profiles["u1"][ATTRIBUTE]["items"] == german
        assert fake.profiles["u2"][ATTRIBUTE]["items"] == german
        assert fake.profiles["u3"][ATTRIBUTE]["items"] == shop[1]  # the recommender's locale
        assert refused == 2
        assert "--locale must be a locale tag" in capsys.readouterr().err


class TestIterable:
    async def test_every_user_once_through_429s_5xx_slow_answers_and_refusals(
            self, shop, fast, tmp_path, capsys, monkeypatch, caplog):
        caplog.set_level(logging.DEBUG)
        monkeypatch.setenv("ITERABLE_API_KEY", ITERABLE_KEY)
        users = write_users(tmp_path / "in.ndjson", 2000)
        refused = {"u000000", "u001234", "u001999"}
        fake = await FakeIterable(ITERABLE_KEY, max_batch=100, limit=5, fail_burst=4,
                                  delay=0.05, refuse=refused).start()
        try:
            status, summary = await sync(
                fast, capsys, "iterable", "--tenant", "acme", "--recommender", "shop",
                "--attribute", ATTRIBUTE, "--endpoint", fake.url, "--rate", "20",
                "--batch-size", "100", "--dead-letter", str(tmp_path / "dead.ndjson"),
                str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 1
        assert_profiles(fake, users, shop, refused)
        assert dead_letter_keys(tmp_path / "dead.ndjson") == {
            user: "notFoundUserIds" for user in refused}
        assert fake.statuses[429] > 0 and fake.statuses[503] == 4
        assert summary["sent"] == 1997 and summary["refused"] == 3
        assert ITERABLE_KEY not in caplog.text


    async def test_by_email_with_the_key_in_a_secrets_file(self, shop, fast, tmp_path, capsys,
                                                           monkeypatch):
        monkeypatch.delenv("ITERABLE_API_KEY", raising=False)
        (tmp_path / "key").write_text(ITERABLE_KEY + "\n")
        (tmp_path / "in.ndjson").write_bytes(b"".join(
            orjson.dumps({"key": f"user{n}@example.com", "ids": COMBOS[n]}) + b"\n"
            for n in range(3)))
        fake = await FakeIterable(ITERABLE_KEY).start()
        try:
            status, summary = await sync(
                fast, capsys, "iterable", "--tenant", "acme", "--recommender", "shop",
                "--attribute", ATTRIBUTE, "--endpoint", fake.url, "--identify-by", "email",
                "--api-key-file", str(tmp_path / "key"), str(tmp_path / "in.ndjson"))
        finally:
            await fake.stop()
        assert status == 0 and summary["sent"] == 3
        assert {user: p[ATTRIBUTE]["items"] for user, p in fake.profiles.items()} == {
            f"user{n}@example.com": shop[n] for n in range(3)}

@pytest.mark.parametrize("platform", ["braze", "iterable"])
async def test_requests_are_cut_by_bytes_under_the_4_mb_limit(
        shop, fast, tmp_path, capsys, monkeypatch, platform):
    """Both platforms refuse a body over 4 MB: 75 Braze attributes of 60 KB, or 1,000 Iterable
    users of 60 KB, would be far over it, so batches are cut by bytes as well as by count."""
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    monkeypatch.setenv("ITERABLE_API_KEY", ITERABLE_KEY)
    big = [{"id": f"b{n}", "Title": "x" * 2000} for n in range(30)]  # 60 KB a user
    (tmp_path / "in.ndjson").write_bytes(b"".join(
        orjson.dumps({"key": f"u{n:06d}", "send": True, "items": big}) + b"\n"
        for n in range(150)))
    fake = await (FakeBraze(KEY) if platform == "braze" else FakeIterable(ITERABLE_KEY)).start()
    try:
        status, summary = await sync(
            fast, capsys, platform, "--tenant", "acme", "--recommender", "shop", "--attribute",
            ATTRIBUTE, "--endpoint", fake.url, str(tmp_path / "in.ndjson"))
    finally:
        await fake.stop()
    assert status == 0 and summary["sent"] == 150 and summary["items_dropped"] == 0
    assert fake.statuses[413] == 0 and 3_000_000 < fake.largest_body <= 4_000_000
    assert summary["requests"] == -(-150 * 61_000 // 4_000_000)  # as few as the bytes allow
    assert all(p[ATTRIBUTE]["items"] == big for p in fake.profiles.values())


class TestChangedOnly:
    async def test_unchanged_sends_nothing_then_only_the_changed_item_users(
            self, shop, admin, fast, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        users = write_users(tmp_path / "in.ndjson", 1500)
        fake = await FakeBraze(KEY).start()
        argv = ("braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
                "--endpoint", fake.url, "--changed-only", str(tmp_path / "in.ndjson"))
        try:
            status, first = await sync(fast, capsys, *argv)
            assert status == 0 and first["sent"] == 1500
            requests = fake.applied
            status, second = await sync(fast, capsys, *argv)
            assert status == 0
            assert second["sent"] == 0 and second["skipped_unchanged"] == 1500
            assert fake.applied == requests  # not one request
            status, body, _ = await admin.patch("/v1/catalogs/goods/items/p9", {
                "price": {"amount": "1.00", "currency": "USD"}})
            assert status == 200, body
            fake.writes.clear()
            status, third = await sync(fast, capsys, *argv)
        finally:
            await fake.stop()
        showing = {user for user, combo in users.items() if "p9" in COMBOS[combo]}
        assert 0 < len(showing) < 1500
        assert set(fake.writes) == showing and third["sent"] == len(showing)
        assert third["skipped_unchanged"] == 1500 - len(showing)
        new_items = await expected_items(admin)
        for user in showing:
            assert fake.profiles[user][ATTRIBUTE]["items"] == new_items[users[user]]


async def run_cli(env: dict[str, str], *argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "sync", *argv, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def wait_for(condition, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def spans(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(1 for line in path.read_bytes().split(b"\n") if line.startswith(b'{"span"'))


@pytest.mark.slow
class TestKillAndResume:
    @pytest.mark.parametrize("kill_after", [1, 6, 17])
    async def test_sigkill_then_resume_sends_every_user_once(
            self, shop, subprocess_env, tmp_path, kill_after):
        users = write_users(tmp_path / "in.ndjson", 1500)  # 20 requests of 75
        refused = {"u000003", "u001400"}
        fake = await FakeBraze(KEY, hold_after=kill_after, refuse=refused).start()
        env = {**subprocess_env, "BRAZE_API_KEY": KEY, "ENRICHER_SYNC_BACKOFF_MS": "5",
               "ENRICHER_SYNC_CONCURRENCY": "4"}
        argv = ("braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
                "--endpoint", fake.url, "--dead-letter", str(tmp_path / "dead.ndjson"),
                str(tmp_path / "in.ndjson"))
        checkpoint = tmp_path / "in.ndjson.checkpoint"
        try:
            process = await run_cli(env, *argv)
            # Killed once the platform applied `kill_after` requests and their answers are in the
            # checkpoint; the requests after them are held by the fake, never applied.
            await wait_for(lambda: fake.applied == kill_after
                           and spans(checkpoint) == kill_after, "the acknowledged batches")
            process.send_signal(signal.SIGKILL)
            _, first_err = await process.communicate()
            assert process.returncode == -signal.SIGKILL
            fake.hold_after = None
            process = await run_cli(env, *argv[:-1], "--resume", argv[-1])
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            await fake.stop()
        assert process.returncode == 1, err  # refused users
        assert_profiles(fake, users, shop, refused)
        assert set(dead_letter_keys(tmp_path / "dead.ndjson")) == refused
        summary = orjson.loads(out.splitlines()[-1])
        assert summary["already_synced"] == kill_after * 75
        assert summary["sent"] + summary["refused"] + kill_after * 75 == 1500
        for text in (out, err, first_err, (tmp_path / "dead.ndjson").read_bytes(),
                     checkpoint.read_bytes()):
            assert KEY.encode() not in text

    @pytest.mark.parametrize("killed_after", [3, 11])
    async def test_sigkill_in_flight_resends_only_those_batches_with_the_same_value(
            self, shop, subprocess_env, tmp_path, killed_after):
        """Killed without warning while requests are in flight: no client can know whether the
        platform applied those (neither takes an idempotency key), so the resumed run sends them
        again, and only them: at most the 4 batches in flight, each user with the very value it
        had (the run's `updated_at` is kept in the checkpoint), so no profile ends otherwise."""
        users = write_users(tmp_path / "in.ndjson", 900)
        fake = await FakeBraze(KEY, delay=0.02).start()
        env, argv, checkpoint = four_senders(subprocess_env, fake, tmp_path)
        try:
            process = await run_cli(env, *argv)
            await wait_for(lambda: fake.applied >= killed_after, "some requests applied")
            process.send_signal(signal.SIGKILL)
            await process.communicate()
            done = _done_lines(checkpoint)
            await asyncio.sleep(1.1)  # the resumed run starts in another second
            process = await run_cli(env, *argv[:-1], "--resume", argv[-1])
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            await fake.stop()
        assert process.returncode == 0, err
        assert set(fake.profiles) == set(users)
        for user, profile in fake.profiles.items():
            assert profile[ATTRIBUTE]["items"] == shop[users[user]]
        assert len({p[ATTRIBUTE]["updated_at"] for p in fake.profiles.values()}) == 1
        twice = fake.users_written_twice()
        assert len(twice) <= 4 * 75  # at most the batches in flight
        assert all(not done(int(user[1:]) + 1) for user in twice)  # none acknowledged before
        assert fake.changed_rewrites == []  # a resent user got the value it already had
        assert orjson.loads(out.splitlines()[-1])["already_synced"] > 0

    @pytest.mark.parametrize("stopped_after", [2, 9])
    async def test_sigterm_lets_the_batches_in_flight_land_then_resume_sends_each_user_once(
            self, shop, subprocess_env, tmp_path, stopped_after):
        """SIGTERM (a pod stopped) with requests in flight: they are answered and recorded before
        the process exits, so the resumed run sends every user exactly once."""
        users = write_users(tmp_path / "in.ndjson", 3000)  # 40 requests
        fake = await FakeBraze(KEY, delay=0.1).start()  # slow answers: 4 in flight at any time
        env, argv, checkpoint = four_senders(subprocess_env, fake, tmp_path)
        try:
            process = await run_cli(env, *argv)
            await wait_for(lambda: fake.applied >= stopped_after, "some requests applied")
            process.send_signal(signal.SIGTERM)
            at_signal = fake.applied
            _, first_err = await asyncio.wait_for(process.communicate(), 60)
            assert process.returncode == 1, first_err
            assert b"stopped by a signal" in first_err and b"--resume continues" in first_err
            first_applied = fake.applied
            # Those in flight (4), and one a sender may start while the signal is on its way.
            assert first_applied <= at_signal + 4 + 1
            assert spans(checkpoint) == first_applied  # each answered and recorded
            process = await run_cli(env, *argv[:-1], "--resume", argv[-1])
            out, err = await asyncio.wait_for(process.communicate(), 60)
        finally:
            await fake.stop()
        assert process.returncode == 0, err
        assert_profiles(fake, users, shop, set())  # every user, exactly once
        assert orjson.loads(out.splitlines()[-1])["already_synced"] == 75 * first_applied


def four_senders(subprocess_env: dict[str, str], fake: FakeBraze,
                 tmp_path: Path) -> tuple[dict[str, str], tuple[str, ...], Path]:
    """(environment, arguments, checkpoint) of a sync of tmp_path/in.ndjson with 4 senders."""
    env = {**subprocess_env, "BRAZE_API_KEY": KEY, "ENRICHER_SYNC_CONCURRENCY": "4"}
    argv = ("braze", "--tenant", "acme", "--recommender", "shop", "--attribute", ATTRIBUTE,
            "--endpoint", fake.url, str(tmp_path / "in.ndjson"))
    return env, argv, tmp_path / "in.ndjson.checkpoint"


def _done_lines(path: Path):
    """`done(line)` of a checkpoint as it is now (read as a resumed run reads it)."""
    header = orjson.loads(path.read_bytes().split(b"\n", 1)[0])
    checkpoint = Checkpoint(path, header["run"], resume=True)
    checkpoint.close()
    return checkpoint.done


@pytest.mark.slow
@pytest.mark.timing
async def test_the_pace_stays_within_the_rate(shop, fast, tmp_path, capsys, monkeypatch):
    """No one-second window, as the platform sees it, holds more than the rate plus 5 %."""
    monkeypatch.setenv("BRAZE_API_KEY", KEY)
    write_users(tmp_path / "in.ndjson", 1500)
    fake = await FakeBraze(KEY).start()
    try:
        status, summary = await sync(
            fast, capsys, "braze", "--tenant", "acme", "--recommender", "shop", "--attribute",
            ATTRIBUTE, "--endpoint", fake.url, "--rate", "50", "--batch-size", "10",
            str(tmp_path / "in.ndjson"))
    finally:
        await fake.stop()
    assert status == 0 and summary["requests"] == 150
    times = sorted(fake.request_times)
    most = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    assert most <= 50 * 1.05


class TestCheckpoint:
    def test_a_torn_last_line_and_spans_out_of_order(self, tmp_path):
        path = tmp_path / "checkpoint"
        run = {"platform": "braze", "target": "t", "input": "in"}
        first = Checkpoint(path, run, resume=False)
        first.acknowledge(76, 150)
        first.acknowledge(1, 75)
        first.acknowledge(226, 300)
        first.close()
        with path.open("ab") as out:
            out.write(b'{"span": [151, 2')  # killed mid-write
        resumed = Checkpoint(path, run, resume=True)
        assert [n for n in (1, 75, 150, 151, 225, 226, 300, 301) if resumed.done(n)] == [
            1, 75, 150, 226, 300]
        resumed.close()

    def test_another_runs_checkpoint_is_refused(self, tmp_path):
        path = tmp_path / "checkpoint"
        Checkpoint(path, {"input": "a"}, resume=False).close()
        with pytest.raises(ValidationFailed):
            Checkpoint(path, {"input": "b"}, resume=True)


def test_profile_value_drops_whole_items_from_the_end():
    items = [{"id": str(n), "Title": "t" * 100} for n in range(20)]
    value, dropped, size = profile_value(items, "2026-01-01T00:00:00Z", 1000)
    assert size == len(orjson.dumps(value)) <= 1000
    assert value["items"] == items[:20 - dropped] and dropped > 0
    value, dropped, size = profile_value(items, "2026-01-01T00:00:00Z", 100_000)
    assert dropped == 0 and value["items"] == items and size == len(orjson.dumps(value))


@pytest.mark.slow
@pytest.mark.parametrize("platform", ["braze", "iterable"])
async def test_100k_users_through_429s_each_once_and_the_refused_in_the_dead_letter(
        shop, fast, tmp_path, capsys, monkeypatch, platform):
    """The whole night at scale: 100,000 raw lines enriched and sent past a platform whose limit
    forces 429s; every profile holds exactly its items, once, and the dead letter holds exactly
    the users the platform refused."""
    users = write_users(tmp_path / "in.ndjson", 100_000)
    refused = {f"u{n:06d}" for n in range(7, 100_000, 997)}
    if platform == "braze":
        monkeypatch.setenv("BRAZE_API_KEY", KEY)
        fake = await FakeBraze(KEY, limit=150, advertise=False, throttle_burst=2,
                               fail_burst=3, refuse=refused).start()
        extra = ("--bulk",)
    else:
        monkeypatch.setenv("ITERABLE_API_KEY", ITERABLE_KEY)
        fake = await FakeIterable(ITERABLE_KEY, limit=10, throttle_burst=2, fail_burst=3,
                                  refuse=refused).start()
        extra = ()
    try:
        status, summary = await sync(
            dataclasses.replace(fast, sync_concurrency=8), capsys, platform, "--tenant", "acme",
            "--recommender", "shop", "--attribute", ATTRIBUTE, "--endpoint", fake.url,
            "--rate", "0", *extra, "--dead-letter", str(tmp_path / "dead.ndjson"),
            str(tmp_path / "in.ndjson"))
    finally:
        await fake.stop()
    assert status == 1
    assert fake.statuses[429] > 0 and fake.statuses[503] == 3
    assert_profiles(fake, users, shop, refused)
    assert set(dead_letter_keys(tmp_path / "dead.ndjson")) == refused
    assert summary["users"] == 100_000 and summary["refused"] == len(refused)
    assert summary["sent"] == 100_000 - len(refused)
