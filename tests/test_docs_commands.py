"""The commands the README and docs/ tell a reader to run, and the JSON they tell them to send, run
and sent as written, in order, against a real `catalog-enricher serve` on this test's database.

Every ```sh and ```json block of the pages is accounted for in `HOW_EACH_BLOCK_IS_CHECKED`: run
or sent by a test here, checked elsewhere, or shown only, with the reason. A new block the list
does not know fails the suite until it says how it is checked.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.docs_pages import DOCS, README, Block, fenced_blocks, page_name, pages

pytestmark = [pytest.mark.timing, pytest.mark.slow]

BIN = Path(sys.executable).parent  # this venv's catalog-enricher comes first on PATH

RUN_HERE = "run by test_the_pages_walkthrough"
HOW_EACH_BLOCK_IS_CHECKED: dict[tuple[str, str], str] = {
    # (page, the block's first line) -> how it is checked
    ("README.md", "make run"): "run by test_make_run_prints_what_the_pages_show (the Makefile's "
                               "run recipe is `catalog-enricher serve --demo`: test_docs)",
    ("README.md", "make test"): "the CI: .ci/run runs it (test_docs checks that it does)",
    ("README.md", '{"recommender": "movies", "locale": "de_DE", "send": true,'):
        "an answer shown; test_docs_snippets renders these fields for de against a live service",
    ("README.md", "catalog-enricher shim-zip shim.zip"): RUN_HERE,
    ("README.md", "curl -sS -X POST localhost:8080/v1/catalogs/movies/items:batchGet"): RUN_HERE,
    ("README.md", '{"items": [{"id": "1815", "title": "Fleabag"'): RUN_HERE + " (the answer)",
    ("docs/getting-started.md", "make run"): "the README's, run by "
                                             "test_make_run_prints_what_the_pages_show",
    ("docs/getting-started.md", "make test"): "the README's: the CI runs it",
    ("docs/getting-started.md", "export DATABASE_URL="): RUN_HERE,
    ("docs/getting-started.md", "curl -X PUT localhost:8080/v1/catalogs/movies"): RUN_HERE,
    ("docs/getting-started.md", 'curl -sS "localhost:8080/v1/recommenders/movies/content'): RUN_HERE,
    ("docs/getting-started.md", '{"recommender": "movies", "locale": "en_US"'): RUN_HERE
                                                                               + " (the answer)",
    ("docs/catalog-api.md", '{"title": "Fleabag", "genre": "Comedy"'): RUN_HERE,
    ("docs/catalog-api.md", 'curl -sS -X POST -H "Authorization: Bearer $KEY"'): RUN_HERE,
    ("docs/catalog-api.md", '{"inserted": 2463,'): RUN_HERE + " (the answer's fields)",
    ("docs/catalog-api.md", "catalog-enricher import --tenant acme --catalog movies"): RUN_HERE,
    ("docs/http-api.md", '{"type": "urn:catalog-enricher:problem:validation"'):
        RUN_HERE + " (the answer to a price sent as a JSON number)",
    ("docs/keys-and-limits.md", "catalog-enricher keys create --tenant acme --scope transform"):
        RUN_HERE,
    ("docs/keys-and-limits.md", '{"ts": "…", "level": "info", "logger": "service.audit"'):
        "a log line shown; tests/test_keys.py checks the audit lines",
    ("docs/personalize.md", '{"catalog": "movies", "attributes": [{"name": "Title"'): RUN_HERE,
    ("docs/personalize.md", '{"Version": "2012-10-17",'): "an IAM policy, for AWS",
    ("docs/recommenders.md", "{"): RUN_HERE,
    ("docs/pinpoint.md", "catalog-enricher shim-zip deploy/shim.zip"):
        RUN_HERE + " (the shim-zip line; `sam deploy` needs AWS)",
    ("docs/pinpoint.md", "catalog-enricher pinpoint-config --tenant acme --recommender movies"):
        RUN_HERE + " (the pinpoint-config line; `aws pinpoint` needs AWS)",
    ("docs/pinpoint.md", "aws lambda add-permission"): "needs AWS; deploy/template.yaml grants "
                                                      "the same (cfn-lint in the suite)",
    ("docs/kubernetes.md", "kubectl create namespace catalog-enricher"):
        "needs a cluster; tests/test_kubernetes_manifests.py renders and validates what it applies",
    ("docs/kubernetes.md", "kubectl -n catalog-enricher delete job catalog-enricher-migrate"):
        "needs a cluster (as above)",
    ("docs/send-time-content.md", '{"recommender": "movies", "locale": "de_DE", "send": true,'):
        "an answer shown; test_docs_snippets renders the route's answers",
    ("docs/connect.md", '{"catalog": "movies",'):
        "sent by test_docs_snippets.TestConnectPage (the recommender it puts)",
    ("docs/connect.md", "catalog-enricher connect-config"): "run by test_docs_snippets",
    ("docs/sync.md", "export BRAZE_API_KEY="):
        "shown only: it needs a real Braze workspace; the same command runs against the fake "
        "Braze in tests/test_sync.py",
    ("docs/sync.md", '{"recommended_products": {"items": [{"id": "1815"'):
        "a profile shown; tests/test_sync.py checks every profile's attribute against the "
        "content route's items",
    ("docs/sync.md", ".venv/bin/python bench/sync_bench.py --users 100000"):
        "shown only: a benchmark of tens of seconds, run by hand (not part of the suite)",
    ("docs/sync.md", '{"users": 1000000, "sent": 41237'):
        "a summary shown; tests/test_sync.py reads these fields from the command's stdout",
    ("docs/connect.md", '{"InvocationMetadata"'): "sent by test_docs_snippets.TestConnectPage",
    ("docs/connect.md", '{"Items": {"CustomerProfiles"'):
        "test_docs_snippets.TestConnectPage: the answer to the event above",
    ("docs/batch.md", '{"input": {"userId": "4638"}'):
        "run by test_batch.TestThePage (the input line)",
    ("docs/batch.md", '{"recommender": "movies", "locale": "en_US", "send": true,'):
        "test_batch.TestThePage: the output for the input line above",
    ("docs/batch.md", '{"key": "4639", "line": 2'):
        "test_batch.TestThePage: the output for the line with `error` set",
    ("docs/batch.md", "catalog-enricher enrich-batch --tenant acme --recommender movies batch"):
        "run by test_batch.TestThePage",
    ("docs/batch.md", "catalog-enricher enrich-batch --tenant acme --recommender movies s3://"):
        "S3 prefix in, S3 key out: tests/test_batch_s3.py runs it against a local S3 server",
    ("docs/batch.md", "kubectl delete job catalog-enricher-batch"):
        "shown only: needs a cluster; test_kubernetes_manifests.TestBatchJob renders and "
        "validates deploy/kubernetes/batch and parses each pod's command",
    ("docs/batch.md", '{"Comment": "Enrich'):
        "test_batch.TestThePage: the state machine parses and each array child's command is one "
        "the CLI accepts",
    ("docs/batch.md", '{"lines": 2'): "test_batch.TestThePage: the run's summary",
    ("docs/batch.md", "catalog-enricher enrich-batch --tenant acme --recommender movies --shard"):
        "shards: test_batch.TestOrderResumeShards.test_shards_partition_the_input runs N = 1..4",
    ("docs/batch.md", "python -m bench --scenarios batch"):
        "a benchmark: the suite runs none (tests/test_bench.py smoke-tests the bench)",
    ("docs/performance.md", "python -m bench"): "a benchmark: the suite runs none "
                                                "(tests/test_bench.py smoke-tests the bench)",
    ("docs/performance.md", "make bench"): "a benchmark (as above)",
    ("docs/soak.md", "python -m bench.soak --minutes 30 --seed 41"):
        "a soak of 30 minutes: the suite runs a short one (tests/test_soak.py) and checks the "
        "checker's command on crafted histories",
    ("docs/soak.md", "python -m bench.soak --minutes 1 --instances 2 --items 2000"):
        "a sabotaged soak: tests/test_soak.py shows each promise's check failing on a broken "
        "history instead (a run takes a minute)",
}


def how_checked(block: Block) -> list[str]:
    first = block.text.splitlines()[0]
    return [how for (page, start), how in HOW_EACH_BLOCK_IS_CHECKED.items()
            if page == block.page and first.startswith(start)]


def runnable_blocks() -> list[Block]:
    return [block for page in pages() for block in fenced_blocks(page)
            if block.lang in ("sh", "json")]


class TestEveryBlockIsAccountedFor:
    """Each sh and json block is run or sent by a test, or says why it cannot be."""

    def test_every_block_says_how_it_is_checked(self):
        unknown = [f"{b.where()}: {b.text.splitlines()[0][:80]}" for b in runnable_blocks()
                   if len(how_checked(b)) != 1]
        assert not unknown, ("blocks without exactly one entry in HOW_EACH_BLOCK_IS_CHECKED (run "
                             "them in a test, or say why they cannot be):\n  "
                             + "\n  ".join(unknown))

    def test_no_entry_is_stale(self):
        firsts = {(b.page, b.text.splitlines()[0]) for b in runnable_blocks()}
        stale = [key for key in HOW_EACH_BLOCK_IS_CHECKED
                 if not any(page == key[0] and first.startswith(key[1])
                            for page, first in firsts)]
        assert not stale, f"entries for blocks the pages no longer have: {stale}"


# --- running them ---------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ENRICHER_", "PROMETHEUS_")) and k != "DATABASE_URL"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["COLUMNS"] = "100"
    return {**env, **extra}


def only(page: Path, start: str, lang: str = "sh") -> Block:
    found = [b for b in fenced_blocks(page) if b.lang == lang and b.text.startswith(start)]
    assert len(found) == 1, f"{page_name(page)}: {len(found)} {lang} blocks start with {start!r}"
    return found[0]


def answer_after(block: Block) -> Any:
    """The JSON answer the page shows right after a command."""
    blocks = fenced_blocks(Path(DOCS.parent / block.page))
    following = blocks[blocks.index(block) + 1]
    assert following.lang == "json", f"{block.where()}: no json answer follows"
    return json.loads(following.text)


def commands(text: str) -> list[str]:
    """A block's commands, continuation lines joined."""
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def bash(script: str, env: dict[str, str], cwd: Path, *, check: bool = True,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["bash", "-eo", "pipefail", "-c", script], env=env, cwd=cwd,
                            capture_output=True, text=True, timeout=120, input=stdin,
                            check=False)
    if check:
        assert result.returncode == 0, f"{script}\nexit {result.returncode}\n{result.stderr}"
    return result


def on_port(text: str, port: int) -> str:
    assert "localhost:8080" in text or "127.0.0.1:8080" in text, text
    return text.replace("localhost:8080", f"127.0.0.1:{port}").replace(
        "127.0.0.1:8080", f"127.0.0.1:{port}")


def http(method: str, url: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - the test's own server on 127.0.0.1
        url, data=data, method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - 127.0.0.1
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def wait_ready(base: str, server: subprocess.Popen, deadline_s: float = 90) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "serve exited before it was ready"
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)  # paces the poll of the port
    raise AssertionError("serve did not become ready")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=45)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.timeout(300)  # a dozen commands and a serve with two workers, on a loaded machine
def test_the_pages_walkthrough(database_url: str, tmp_path: Path):
    """Getting started, then the catalog, keys, import, Personalize and Pinpoint pages and the
    README's tour, each command as the page writes it (only the database URL and the port are
    this test's), each shown answer compared with the real one."""
    env = clean_env()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    start = only(DOCS / "getting-started.md", "export DATABASE_URL=")
    lines = commands(start.text)
    assert lines[0].startswith("export DATABASE_URL=") and lines[-1].startswith(
        "catalog-enricher serve --host 0.0.0.0 --port 8080")
    setup = [f"export DATABASE_URL='{database_url}'", *lines[1:-1]]
    printed = bash("\n".join(setup), env, tmp_path).stdout.split()
    assert printed[0] == "acme" and all(k.startswith("ce_") for k in printed[1:]), printed
    admin_key = printed[1]  # the second key printed is the shim's, used by none of the pages
    serve = lines[-1].replace("--host 0.0.0.0 --port 8080", f"--host 127.0.0.1 --port {port}")
    server = subprocess.Popen(["bash", "-c", f"exec {serve}"], cwd=tmp_path, text=True,
                              env={**env, "DATABASE_URL": database_url},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(base, server)
        walk_the_pages(env | {"KEY": admin_key, "ADMIN": admin_key}, tmp_path, port, base,
                       admin_key, database_url)
    finally:
        stop(server)
    assert server.returncode == 0


def walk_the_pages(env: dict[str, str], cwd: Path, port: int, base: str, admin: str,
                   database_url: str) -> None:
    # Getting started: a catalog, an item, a recommender, then one recipient's content.
    bash(on_port(only(DOCS / "getting-started.md", "curl -X PUT").text, port), env, cwd)
    content = only(DOCS / "getting-started.md", 'curl -sS "localhost:8080')
    answer = json.loads(bash(on_port(content.text, port), env, cwd).stdout)
    assert answer == answer_after(content)

    # The catalog API page's item, sent as written: a GET answers it back with id and updated_at.
    item = only(DOCS / "catalog-api.md", '{"title"', "json")
    assert item.title == "PUT /v1/catalogs/movies/items/1815"
    sent = json.loads(item.text)
    status, _ = http("PUT", base + item.title.split(" ", 1)[1], admin, sent)
    assert status == 200
    status, stored = http("GET", base + "/v1/catalogs/movies/items/1815", admin)
    assert {k: v for k, v in stored.items() if k not in ("id", "updated_at")} == sent

    # A price sent as a JSON number: the problem the HTTP API page shows.
    problem = json.loads(only(DOCS / "http-api.md", '{"type"', "json").text)
    status, refused = http("PUT", base + problem["instance"], admin,
                           {**sent, "price": {"amount": 19.99, "currency": "USD"}})
    assert status == problem["status"] == 422
    assert {k: refused[k] for k in ("type", "title", "detail", "instance", "field")} == \
        {k: problem[k] for k in ("type", "title", "detail", "instance", "field")}
    assert [e["field"] for e in refused["errors"]] == [e["field"] for e in problem["errors"]]

    # The README's catalog call, and the answer it shows.
    batch = only(README, "curl -sS -X POST localhost:8080/v1/catalogs/movies/items:batchGet")
    assert json.loads(bash(on_port(batch.text, port), env, cwd).stdout) == answer_after(batch)

    # Bulk import over HTTP (a file with one refused line), then from the command line.
    (cwd / "items.ndjson").write_text(
        '{"id": "2009", "title": "Hunters", "genre": "Drama"}\n'
        '{"id": "1527", "title": "Catastrophe", "price": {"amount": "5.00", "currency": "EUR"}}\n'
        '{"id": "bad", "genre": "no title"}\n')
    curl = only(DOCS / "catalog-api.md", 'curl -sS -X POST -H "Authorization: Bearer $KEY"')
    imported = json.loads(bash(on_port(curl.text, port), env, cwd).stdout)
    shown = answer_after(curl)
    assert set(imported) == set(shown)
    assert (imported["inserted"], imported["rejected"]) == (2, 1)
    assert imported["errors"] == shown["errors"]  # line 3, "title: is required"
    (cwd / "items.csv").write_text("id,title,genre,price_amount,price_currency\n"
                                   "1815,Fleabag,Comedy,19.99,USD\n2009,Hunters,Drama,,\n")
    cli_import = commands(only(DOCS / "catalog-api.md", "catalog-enricher import").text)
    with_db = env | {"DATABASE_URL": database_url}
    first = bash(cli_import[0], with_db, cwd, check=False)
    assert first.returncode == 1, first.stderr  # one line refused: exit status 1, as documented
    assert json.loads(first.stdout)["rejected"] == 1
    second = bash(cli_import[1], with_db, cwd)
    assert json.loads(second.stdout)["deleted"] == 1  # replace: 1527 was not in the file
    status, page = http("GET", base + "/v1/catalogs/movies/items", admin)
    assert [i["id"] for i in page["items"]] == ["1815", "2009"]

    # Recommenders and Personalize: the bodies the pages PUT are accepted and read back.
    for page_path in (DOCS / "recommenders.md", DOCS / "personalize.md"):
        body = [b for b in fenced_blocks(page_path) if b.title == "PUT /v1/recommenders/movies"]
        assert len(body) == 1
        recommender = json.loads(body[0].text)
        status, answer = http("PUT", base + "/v1/recommenders/movies", admin, recommender)
        assert status == 200, answer
        status, stored = http("GET", base + "/v1/recommenders/movies", admin)
        for key, value in recommender.items():
            if key != "attributes":
                assert stored[key] == value or (key == "personalize" and
                                                 value.items() <= stored[key].items()), key
        assert [a["name"] for a in stored["attributes"]] == \
            [a["name"] for a in recommender["attributes"]]

    # Keys: create, list, rotate and revoke from the CLI, then create one over HTTP.
    keys = commands(only(DOCS / "keys-and-limits.md", "catalog-enricher keys create").text)
    created = bash(keys[0], with_db, cwd).stdout.strip()
    prefix = created[:11]
    assert "ce_Xk3v9QmZ" in keys[2] and "ce_Xk3v9QmZ" in keys[3]
    listed = bash(keys[1], with_db, cwd).stdout
    assert prefix in listed and "shim" in listed
    rotated = bash(keys[2].replace("ce_Xk3v9QmZ", prefix), with_db, cwd).stdout.strip()
    assert rotated.startswith("ce_") and rotated != created
    bash(keys[3].replace("ce_Xk3v9QmZ", prefix), with_db, cwd)
    status, _ = http("GET", base + "/v1/recommenders/movies/content?ids=1815", created)
    assert status == 401  # revoked
    made = json.loads(bash(on_port("\n".join(keys[4:]), port), env, cwd).stdout)
    assert made["key"].startswith(made["prefix"]) and made["scopes"] == ["transform"]

    # Pinpoint: the shim's zip and the recommender configuration.
    (cwd / "deploy").mkdir()
    pinpoint = DOCS / "pinpoint.md"
    bash(commands(only(pinpoint, "catalog-enricher shim-zip").text)[0], env, cwd)
    readme_zip = only(README, "catalog-enricher shim-zip")
    bash(readme_zip.text, env, cwd)
    for made_zip in (cwd / "deploy" / "shim.zip", cwd / "shim.zip"):
        assert zipfile.ZipFile(made_zip).namelist() == ["lambda_shim.py"]
    config_line = commands(only(pinpoint, "catalog-enricher pinpoint-config").text)[0]
    bash(config_line, with_db, cwd)
    config = json.loads((cwd / "config.json").read_text())
    assert config["RecommendationTransformerUri"].endswith(":function:catalog-enricher-shim")
    assert config["Attributes"]["Recommendations.Title"] == "Title"


def test_make_run_prints_what_the_pages_show(database_url: str, tmp_path: Path):
    """`make run` (catalog-enricher serve --demo) prints the four lines the README and the getting
    started page show, and its curl line works."""
    def printed_block(page: Path) -> list[str]:
        return next(b for b in fenced_blocks(page) if b.lang == "text"
                    and b.text.startswith("catalog-enricher is serving")).text.splitlines()

    shown = printed_block(README)
    assert shown == printed_block(DOCS / "getting-started.md")
    server = subprocess.Popen(
        [str(BIN / "catalog-enricher"), "serve", "--demo", "--port", "0"], cwd=tmp_path,
        env=clean_env(DATABASE_URL=database_url), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    try:
        printed = [server.stdout.readline().rstrip("\n") for _ in shown]
        port = re.search(r"http://127\.0\.0\.1:(\d+)", printed[0])[1]
        for expected, line in zip(shown, printed, strict=True):
            pattern = re.escape(expected.replace(":8080", f":{port}")).replace("…", ".+")
            assert re.fullmatch(pattern, line), (expected, line)
        answer = json.loads(bash(printed[-1], clean_env(), tmp_path).stdout)
        assert answer["endpoint-1"]["Recommendations"]["Title"][0] == "Fleabag"
    finally:
        stop(server)
        server.stdout.close()
