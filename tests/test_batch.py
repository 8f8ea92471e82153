"""`catalog-enricher enrich-batch`: every answer line is the content route's answer for the same
IDs and locale (scores added), malformed lines are answered and counted, workers keep the order,
a killed run resumed equals an uninterrupted one byte for byte, and shards partition the input."""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from random import Random
from typing import Any

import orjson
import pytest

from service.adapters.batch_run import parse_shard, run_batch
from service.cli import build_parser
from service.runtime.settings import Settings
from tests.support.api import Api
from tests.support.catalogs import load_catalog
from tests.support.docs_pages import DOCS, fenced_blocks
from tests.support.imports import ndjson, post_import, retail_items

pytestmark = pytest.mark.slow  # runs the CLI as a process

ITEMS = [
    {"id": "1815", "title": "Fleabag", "price": {"amount": "19.99", "currency": "USD"},
     "locales": {"de_DE": {"title": "Fleabag (DE)"}}},
    {"id": "2009", "title": "The Thick of It", "price": {"amount": "2000", "currency": "JPY"}},
    {"id": "1527", "title": "A very long title for truncation",
     "price": {"amount": "5.5", "currency": "EUR"}},
    {"id": "é 🎬", "title": "Unicode"},
    {"id": "gone", "title": "Sold out", "available": False},
] + [{"id": f"p{n}", "title": f"Product {n}", "price": {"amount": f"{n}.50", "currency": "EUR"}}
     for n in range(40)]
ATTRIBUTES = [
    {"name": "Title", "field": "title"},
    {"name": "Price", "field": "price", "format": "currency"},
    {"name": "Short", "field": "title", "truncate": 8},
]


@pytest.fixture
async def api(admin: Api) -> Api:
    await load_catalog(admin, "movies", ITEMS)
    for name, policy in (("movies", "skip"), ("strict", "drop_endpoint")):
        status, body, _ = await admin.put(f"/v1/recommenders/{name}", {
            "catalog": "movies", "attributes": ATTRIBUTES, "missing_items": policy,
            "recommendations_per_message": 3, "locale": "en_US"})
        assert status in (200, 201), body
    return admin


def line(data: Any) -> bytes:
    return orjson.dumps(data) + b"\n"


def personalize_lines(count: int, *, start: int = 0) -> bytes:
    """USER_PERSONALIZATION, RELATED_ITEMS and PERSONALIZED_RANKING lines, in turn."""
    out = []
    for n in range(start, start + count):
        ids = [f"p{(n * 7 + k) % 40}" for k in range(n % 5 + 1)] + (["unknown"] if n % 3 else [])
        if n % 3 == 0:
            out.append(line({"input": {"userId": f"u{n}"}, "output": {
                "recommendedItems": ids, "scores": [round(1 / (k + 2), 4) for k in range(len(ids))]},
                "error": None}))
        elif n % 3 == 1:
            out.append(line({"input": {"itemId": f"p{n % 40}"},
                             "output": {"recommendedItems": ids}}))
        else:
            out.append(line({"input": {"userId": f"u{n}", "itemList": ids[::-1]}, "output": {
                "recommendedItems": ids, "scores": [0.5] * len(ids)}}))
    return b"".join(out)


async def run_cli(env: dict[str, str], *args: str, stdin: bytes | None = None
                  ) -> tuple[int, bytes, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "enrich-batch", *args, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=120)
    return process.returncode, out, err.decode()


async def run_here(settings: Settings, *args: str) -> int:
    """The command in this process (no start-up to pay: for the runs a test makes many of)."""
    return await run_batch(settings, build_parser().parse_args(["enrich-batch", *args]))


def summary_of(stderr: str) -> dict[str, Any]:
    return orjson.loads(stderr.strip().splitlines()[-1])


async def content_answer(api: Api, recommender: str, ids: list[str], locale: str | None):
    body: dict[str, Any] = {"ids": ids}
    if locale:
        body["locale"] = locale
    status, answer, _ = await api.post(f"/v1/recommenders/{recommender}/content", body)
    assert status == 200, answer
    return answer


class TestAnswers:
    async def test_each_line_is_the_content_routes_answer(self, api: Api, subprocess_env,
                                                          tmp_path: Path):
        source = tmp_path / "batch.out"
        source.write_bytes(
            personalize_lines(12)
            + line({"key": "k1", "ids": ["1815", "é 🎬", "1815", "gone"], "locale": "de_DE"})
            + line({"key": "k2", "ids": ["gone", "nothing"]})
            + line({"input": {"userId": "u-de", "locale": "de_DE"},
                    "output": {"recommendedItems": ["1815", "2009"], "scores": [0.9, 0.1]}}))
        inputs = [orjson.loads(x) for x in source.read_bytes().splitlines()]
        for recommender in ("movies", "strict"):
            target = tmp_path / f"{recommender}.ndjson"
            code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                         recommender, "--locale-from", "input.locale",
                                         str(source), str(target))
            assert code == 0, err
            outputs = [orjson.loads(x) for x in target.read_bytes().splitlines()]
            assert len(outputs) == len(inputs)
            for given, answer in zip(inputs, outputs, strict=True):
                if "key" in given:
                    ids, locale, scores = given["ids"], given.get("locale"), None
                    assert answer.pop("key") == given["key"]
                else:
                    ids = given["output"]["recommendedItems"]
                    locale = given["input"].get("locale")
                    scores = given["output"].get("scores")
                    key_field = "userId" if "userId" in given["input"] else "itemId"
                    assert answer.pop("key") == given["input"][key_field]
                if scores is not None:
                    by_id = dict(zip(ids, scores, strict=True))
                    for item in answer["items"]:
                        assert item.pop("score") == by_id[item["id"]]
                assert answer == await content_answer(api, recommender, ids, locale)
            summary = summary_of(err)
            assert summary["lines"] == len(inputs)
            assert summary["input_errors"] == 0
            assert summary["enriched"] + summary["without_content"] == len(inputs)
            assert summary["missing_ids"] == 3  # unknown, gone, nothing
            assert summary["queries"] >= 1

    async def test_malformed_lines_are_answered_and_counted(self, api: Api, subprocess_env,
                                                            tmp_path: Path):
        good = personalize_lines(3)
        bad = [
            b'{"input": {"userId": "u1"}, "output": {"recommendedItems": ["p1"]',  # cut short
            line({"input": {"userId": "u2"}}),
            line({"input": {"userId": "u3"}, "output": {"recommendedItems": [1815]}}),
            line({"input": {"userId": "u4"}, "output": None,
                  "error": "User u4 has no interactions"}),
            line({"key": "k", "ids": "p1"}),
            line(["p1"]),
            b'{"key": "big", "ids": ["' + b"x" * (10 * 1024 * 1024) + b'"]}',
        ]
        source = tmp_path / "batch.out"
        source.write_bytes(good + b"\n".join(x.rstrip(b"\n") for x in bad) + b"\n" + good)
        target = tmp_path / "out.ndjson"
        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                     "movies", "--chunk-lines", "4", str(source), str(target))
        assert code == 0, err
        outputs = [orjson.loads(x) for x in target.read_bytes().splitlines()]
        assert len(outputs) == 3 + len(bad) + 3
        problems = outputs[3:3 + len(bad)]
        assert [p["line"] for p in problems] == list(range(4, 4 + len(bad)))
        assert all(p["send"] is False and p["reason"] for p in problems)
        assert "not valid JSON" in problems[0]["reason"]
        assert problems[1] == {"key": "u2", "line": 5, "send": False,
                               "reason": "output is required: an object holding recommendedItems"}
        assert problems[2]["reason"].startswith("output.recommendedItems[0] must be a string")
        assert "User u4 has no interactions" in problems[3]["reason"]
        assert problems[4]["reason"] == "ids must be an array, got a string"
        assert "over the 1,048,576-byte limit" in problems[6]["reason"]
        assert outputs[:3] == outputs[-3:]  # the lines after are answered as usual
        summary = summary_of(err)
        assert summary["input_errors"] == len(bad)
        assert summary["lines"] == len(outputs)
        assert [e["line"] for e in summary["first_input_errors"]] == list(range(4, 11))

        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                     "movies", "--chunk-lines", "4", "--max-errors", "2",
                                     str(source), str(target))
        assert code == 1
        assert "--max-errors" in summary_of(err)["stopped"]

    async def test_stdin_to_stdout_and_bad_arguments(self, api: Api, subprocess_env):
        data = personalize_lines(5)
        code, out, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                       "movies", "-", "-", stdin=data)
        assert code == 0, err
        assert len(out.splitlines()) == 5
        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                     "nope", "-", "-", stdin=data)
        assert code == 1 and "nope" in err
        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                     "movies", "--shard", "4/4", "-", "-", stdin=data)
        assert code == 2 and "--shard" in err


class TestOrderResumeShards:
    async def test_workers_keep_the_order(self, api: Api, subprocess_env, tmp_path: Path):
        source = tmp_path / "batch.out"
        source.write_bytes(personalize_lines(300))
        one, two = tmp_path / "one.ndjson", tmp_path / "two.ndjson"
        for target, workers in ((one, "1"), (two, "2")):
            code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                         "movies", "--chunk-lines", "7", "--workers", workers,
                                         str(source), str(target))
            assert code == 0, err
        assert two.read_bytes() == one.read_bytes()
        assert len(one.read_bytes().splitlines()) == 300

    async def test_shards_partition_the_input(self, api: Api, settings: Settings,
                                              tmp_path: Path):
        source = tmp_path / "batch.out"
        source.write_bytes(personalize_lines(101))
        whole = tmp_path / "whole.ndjson"
        assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                              str(source), str(whole)) == 0
        for count in range(1, 5):
            parts = []
            for index in range(count):
                target = tmp_path / f"part-{index}-of-{count}.ndjson"
                assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                                      "--shard", f"{index}/{count}", str(source),
                                      str(target)) == 0
                parts.append(target.read_bytes())
            assert b"".join(parts) == whole.read_bytes(), count  # in order, none twice

    async def test_killed_and_resumed_equals_an_uninterrupted_run(
            self, api: Api, settings: Settings, subprocess_env, tmp_path: Path, capsys):
        """The kill lands right after a chosen chunk (the input comes through a named pipe, so
        the process waits for more); partial output past the checkpoint is simulated too."""
        data = personalize_lines(60) + b"not json\n" + personalize_lines(60, start=60)
        whole = tmp_path / "whole.ndjson"
        plain = tmp_path / "plain.out"
        plain.write_bytes(data)
        assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                              "--chunk-lines", "10", str(plain), str(whole)) == 0
        lines = data.splitlines(keepends=True)
        for kill_after in (10, 50, 70, 110):
            source = tmp_path / f"batch-{kill_after}.out"
            target = tmp_path / f"out-{kill_after}.ndjson"
            checkpoint = Path(str(target) + ".checkpoint")
            os.mkfifo(source)
            process = subprocess.Popen(  # noqa: ASYNC220 - killed below, never waited on long
                [sys.executable, "-m", "service", "enrich-batch", "--tenant", "acme",
                 "--recommender", "movies", "--chunk-lines", "10", str(source), str(target)],
                env=subprocess_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                with open(source, "wb") as pipe:  # noqa: ASYNC230
                    pipe.write(b"".join(lines[:kill_after + 3]))  # a partial chunk after
                    pipe.flush()
                    await wait_for_checkpoint(checkpoint, kill_after + 1, process)
                    process.send_signal(signal.SIGKILL)
                    process.wait(timeout=30)
            except BrokenPipeError:
                pass
            finally:
                if process.poll() is None:
                    process.kill()
                process.stderr.close()  # type: ignore[union-attr]
            source.unlink()
            source.write_bytes(data)  # the same input, now whole
            with open(target, "ab") as out:  # noqa: ASYNC230 - bytes past the checkpoint
                out.write(b'{"userId": "half a li')
            capsys.readouterr()
            assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                                  "--chunk-lines", "10", "--resume", str(source),
                                  str(target)) == 0
            err = capsys.readouterr().err
            assert target.read_bytes() == whole.read_bytes(), kill_after
            assert not checkpoint.exists()
            summary = summary_of(err)
            assert summary["lines"] == len(lines)
            assert summary["input_errors"] == 1
            assert summary["resumed_at_line"] == kill_after + 1

        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--recommender",
                                     "movies", "--resume", str(plain), str(whole))
        assert code == 1 and "no checkpoint" in err


async def wait_for_checkpoint(path: Path, next_line: int, process: subprocess.Popen) -> None:
    """Until the checkpoint says the lines before `next_line` are written (polled: a file)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read().decode()  # type: ignore[union-attr]
        if path.exists():
            state = orjson.loads(path.read_bytes())
            if state["position"]["line"] >= next_line:
                assert state["position"]["line"] == next_line
                return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no checkpoint at line {next_line} within 60 s")


class TestThePage:
    """docs/batch.md's input, command, answers and summary, run as written."""

    async def test_the_pages_blocks(self, admin: Api, subprocess_env, tmp_path: Path):
        await load_catalog(admin, "movies", [
            {"id": "1815", "title": "Fleabag", "price": {"amount": "19.99", "currency": "USD"}},
            {"id": "2009", "title": "The Thick of It",
             "price": {"amount": "12", "currency": "USD"}}])
        status, body, _ = await admin.put("/v1/recommenders/movies", {
            "catalog": "movies", "locale": "en_US", "attributes": [
                {"name": "Title", "field": "title"},
                {"name": "Price", "field": "price", "format": "currency"}]})
        assert status in (200, 201), body
        blocks = [b for b in fenced_blocks(DOCS / "batch.md") if b.lang in ("json", "sh")]
        given, answer, refused, command, summary = (b.text for b in blocks[:5])
        failed = orjson.loads(given)
        failed.update(input={"userId": "4639"}, output=None,
                      error="User 4639 has no interactions")
        (tmp_path / "batch.out").write_bytes(given.encode() + line(failed))
        words = shlex.split(command)
        assert words[:2] == ["catalog-enricher", "enrich-batch"]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", *words[1:], cwd=tmp_path, env=subprocess_env,
            stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err
        written = (tmp_path / "enriched.ndjson").read_bytes().splitlines()
        assert [orjson.loads(x) for x in written] == [orjson.loads(answer), orjson.loads(refused)]
        shown, got = orjson.loads(summary), summary_of(err.decode())
        assert shown.keys() == got.keys() - {"first_input_errors"}
        assert {k: v for k, v in got.items() if k not in ("seconds", "first_input_errors")} == \
            {k: v for k, v in shown.items() if k != "seconds"}


NDJSON = {"Content-Type": "application/x-ndjson"}


class TestRoute:
    """POST /v1/recommenders/{r}/batch answers the CLI's lines, streamed."""

    async def test_the_routes_lines_are_the_clis(self, api: Api, settings: Settings, make_key,
                                                 tmp_path: Path):
        data = (personalize_lines(40) + b"not json\n"
                + line({"key": "k", "ids": ["1815"], "locale": "de_DE"}))
        source, target = tmp_path / "batch.out", tmp_path / "cli.ndjson"
        source.write_bytes(data)
        assert await run_here(settings, "--tenant", "acme", "--recommender", "movies",
                              str(source), str(target)) == 0
        transform = Api(api.client, await make_key("acme", "transform"))
        async with api.client.post("/v1/recommenders/movies/batch", data=data,
                                   headers=transform.headers(NDJSON)) as response:
            assert response.status == 200, await response.text()
            assert response.headers["Content-Type"] == "application/x-ndjson"
            assert response.headers["Transfer-Encoding"] == "chunked"
            assert await response.read() == target.read_bytes()

    async def test_answers_stream_while_the_body_is_still_coming(self, api: Api):
        """The first chunk's answers arrive before the rest of the body is sent."""
        from service.web.handlers.batch import CHUNK_LINES

        first_answers = asyncio.Event()

        async def body():
            yield personalize_lines(CHUNK_LINES)
            await asyncio.wait_for(first_answers.wait(), timeout=30)
            yield personalize_lines(3)

        async with api.client.post("/v1/recommenders/movies/batch", data=body(),
                                   headers=api.headers(NDJSON)) as response:
            assert response.status == 200
            first = await response.content.readline()
            assert orjson.loads(first)["key"] == "u0"
            first_answers.set()
            rest = await response.read()
        assert len(rest.splitlines()) == CHUNK_LINES - 1 + 3

    async def test_refusals(self, api: Api, make_key):
        status, body, _ = await api.post("/v1/recommenders/nope/batch",
                                         raw=personalize_lines(2), headers=NDJSON)
        assert status == 404, body
        status, body, _ = await api.post("/v1/recommenders/movies/batch",
                                         raw=personalize_lines(2))
        assert (status, body["field"]) == (415, "Content-Type")
        status, body, _ = await api.post("/v1/recommenders/movies/batch?locale=xx_%21",
                                         raw=personalize_lines(2), headers=NDJSON)
        assert (status, body["field"]) == (422, "locale")
        reader = Api(api.client, await make_key("acme", "catalog:read"))
        status, _, _ = await reader.post("/v1/recommenders/movies/batch",
                                         raw=personalize_lines(2), headers=NDJSON)
        assert status == 403
        status, body, _ = await api.post("/v1/recommenders/movies/batch", raw=b"",
                                         headers=NDJSON)
        assert (status, body) == (200, None)

    def test_the_state_machine_runs_the_shards(self):
        """The Step Functions example: valid JSON, each array child's command accepted."""
        (machine,) = [b for b in fenced_blocks(DOCS / "batch.md")
                      if b.lang == "json" and b.text.startswith('{"Comment"')]
        task = orjson.loads(machine.text)["States"]["Enrich"]["Parameters"]
        size = task["ArrayProperties"]["Size"]
        shell, flag, command = task["ContainerOverrides"]["Command"]
        assert (shell, flag) == ("sh", "-c")
        outputs = set()
        for index in range(size):
            words = shlex.split(command.replace("$AWS_BATCH_JOB_ARRAY_INDEX", str(index)))
            args = build_parser().parse_args(words[1:])
            assert parse_shard(args.shard) == (index, size)
            outputs.add(args.output)
        assert len(outputs) == size


class TestRealCatalog:
    async def test_retail_demo_store_lines_equal_the_content_routes(
            self, admin: Api, settings: Settings, shared_dir: Path, tmp_path: Path):
        """The 2,465 real products; lines of 25 IDs drawn Zipf-like (a few hot items, a long
        tail, some unknown) in three locales: every line is the content route's answer."""
        items = retail_items(shared_dir)
        assert (await admin.put("/v1/catalogs/retail", {}))[0] == 201
        status, answer = await post_import(admin, "retail", ndjson(items))
        assert status == 200 and answer["rejected"] == 0, answer
        status, body, _ = await admin.put("/v1/recommenders/shop", {
            "catalog": "retail", "locale": "en_US", "recommendations_per_message": 5,
            "attributes": [{"name": "Title", "field": "title"},
                           {"name": "Price", "field": "price", "format": "currency"},
                           {"name": "Category", "field": "genre"},
                           {"name": "Image", "field": "image_url"}]})
        assert status in (200, 201), body
        ids = [item["id"] for item in items]
        random = Random(31)
        weights = [1 / (rank + 1) for rank in range(len(ids))]
        lines = []
        for n in range(150):
            chosen = random.choices(ids, weights, k=25)
            if n % 10 == 0:
                chosen[-1] = f"gone-{n}"
            locale = ("de_DE", "fr_FR", None)[n % 3]
            lines.append(line({"key": f"user-{n}", "ids": chosen, "locale": locale}))
        source, target = tmp_path / "retail.out", tmp_path / "retail.ndjson"
        source.write_bytes(b"".join(lines))
        assert await run_here(settings, "--tenant", "acme", "--recommender", "shop",
                              "--chunk-lines", "40", str(source), str(target)) == 0
        for given, answer in zip(lines, target.read_bytes().splitlines(), strict=True):
            given, answer = orjson.loads(given), orjson.loads(answer)
            assert answer.pop("key") == given["key"]
            assert answer == await content_answer(admin, "shop", given["ids"], given["locale"])
