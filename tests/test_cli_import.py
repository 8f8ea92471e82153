"""`catalog-enricher import`: a file or standard input into a catalog, straight to the database,
with the same counts and errors as the HTTP import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.support.api import Api
from tests.support.imports import all_items, csv_rows, csv_text, ndjson

ITEMS = [{"id": f"p{n}", "title": f"Product {n}", "price": {"amount": f"{n}.99",
                                                          "currency": "USD"}}
         for n in range(1, 8)]


async def run_cli(env: dict[str, str], *args: str, stdin: bytes | None = None):
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "import", *args, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=60)
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def acme(admin: Api) -> Api:
    return admin  # creating the admin key created the tenant


class TestCliImport:
    """The CLI imports NDJSON and CSV files, and standard input, and prints the summary."""

    async def test_ndjson_file_then_again(self, acme: Api, subprocess_env, tmp_path: Path):
        source = tmp_path / "items.ndjson"
        source.write_bytes(ndjson(ITEMS))
        code, out, err = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "shop",
                                       "--create-catalog", str(source))
        assert code == 0, err
        summary = orjson.loads(out)
        assert (summary["inserted"], summary["rejected"]) == (7, 0)
        assert "\r" not in err  # no progress bar when stderr is not a terminal
        assert [i["id"] for i in await all_items(acme, "shop")] == [i["id"] for i in ITEMS]

        code, out, _ = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "shop",
                                     str(source))
        assert code == 0
        assert orjson.loads(out)["unchanged"] == 7

    async def test_csv_from_stdin_replace(self, acme: Api, subprocess_env):
        await acme.put("/v1/catalogs/shop", {})
        await acme.put("/v1/catalogs/shop/items/old", {"title": "Old"})
        header, rows = csv_rows(ITEMS[:3])
        code, out, err = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "shop",
                                       "--format", "csv", "--mode", "replace", "-",
                                       stdin=csv_text(header, rows))
        assert code == 0, err
        summary = orjson.loads(out)
        assert (summary["inserted"], summary["deleted"]) == (3, 1)

    async def test_refused_lines_exit_1_with_the_errors(self, acme: Api, subprocess_env,
                                                       tmp_path: Path):
        await acme.put("/v1/catalogs/shop", {})
        source = tmp_path / "items.ndjson"
        source.write_bytes(ndjson(ITEMS) + b'{"id": "x"}\n')
        code, out, _ = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "shop",
                                     str(source))
        assert code == 1
        assert orjson.loads(out)["errors"] == [{"line": 8, "reason": "title: is required"}]

        await acme.put("/v1/catalogs/empty", {})
        code, out, err = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "empty",
                                       "--atomic", str(source))
        assert code == 1
        assert "nothing was imported" in err
        assert orjson.loads(out)["rejected"] == 1
        assert await all_items(acme, "empty") == []

    async def test_unknown_catalog_is_not_created_silently(self, acme: Api, subprocess_env,
                                                           tmp_path: Path):
        source = tmp_path / "items.ndjson"
        source.write_bytes(ndjson(ITEMS))
        code, _, err = await run_cli(subprocess_env, "--tenant", "acme", "--catalog", "typo",
                                     str(source))
        assert code == 1
        assert "--create-catalog" in err
        assert (await acme.get("/v1/catalogs/typo"))[0] == 404
