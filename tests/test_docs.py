"""The documentation: README.md is a short front page whose links all resolve, docs/ builds with
`mkdocs build --strict` (and a broken link, anchor or unlisted page fails it), the pages hold no
lab notes, and the reference pages match the code they describe: every setting of `Settings`,
every route of openapi.json and every command's `--help`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from service.runtime.settings import Settings
from service.web.handlers.openapi import OPENAPI_PATH
from tests.support.docs_pages import (
    DOCS,
    README,
    ROOT,
    cli_commands,
    cli_heading,
    cli_help,
    cli_page_sections,
    code_spans,
    fenced_blocks,
    heading_anchors,
    links,
    pages,
    table_rows,
)

HTTP_METHODS = ("get", "put", "post", "patch", "delete")


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of this config into `site`, with this test run's interpreter."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice, not a build problem
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
         "--site-dir", str(site)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def built_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def documented_operations() -> set[tuple[str, str]]:
    import json

    document = json.loads(OPENAPI_PATH.read_text(encoding="utf-8"))
    return {(method.upper(), path) for path, entry in document["paths"].items()
            for method in entry if method in HTTP_METHODS}


class TestSiteBuilds:
    """`mkdocs build --strict` passes, and fails on what it is there to catch."""

    def test_strict_build_passes(self, built_site: Path):
        assert (built_site / "index.html").is_file()
        for page in DOCS.rglob("*.md"):
            name = page.relative_to(DOCS).with_suffix("")
            built = built_site / ("index.html" if name.name == "index" else f"{name}/index.html")
            assert built.is_file(), f"{page} was not built"

    def test_the_openapi_page_renders_every_route(self, built_site: Path):
        import html

        page = (built_site / "openapi" / "index.html").read_text(encoding="utf-8")
        # Each operation is a heading: <h3 id=…><span class="http-get">GET</span> /v1/…</h3>.
        headings = {
            " ".join(html.unescape(re.sub(r"<[^>]+>", "", heading)).replace("¶", "").split())
            for heading in re.findall(r"<h3[^>]*>(.*?)</h3>", page, re.S)
        }
        missing = sorted(f"{m} {p}" for m, p in documented_operations()
                         if f"{m} {p}" not in headings)
        assert not missing, f"the rendered OpenAPI page lacks {missing}"

    @pytest.mark.parametrize("breakage", ["page", "anchor", "unlisted"])
    def test_a_broken_link_or_an_unlisted_page_fails_the_build(self, tmp_path: Path,
                                                               breakage: str):
        scratch = tmp_path / "repo"
        shutil.copytree(DOCS, scratch / "docs")
        shutil.copy(ROOT / "mkdocs.yml", scratch / "mkdocs.yml")
        (scratch / "service" / "web").mkdir(parents=True)
        shutil.copy(OPENAPI_PATH, scratch / "service" / "web" / "openapi.json")
        page = scratch / "docs" / "caching.md"
        text = page.read_text(encoding="utf-8")
        assert "(production.md#read-replicas)" in text
        if breakage == "page":
            page.write_text(text.replace("(production.md#read-replicas)", "(producton.md)"))
        elif breakage == "anchor":
            page.write_text(text.replace("(production.md#read-replicas)",
                                         "(production.md#read-replica)"))
        else:
            (scratch / "docs" / "notes.md").write_text("# Notes\n\nA page nobody listed.\n")
        result = mkdocs_build(scratch / "mkdocs.yml", tmp_path / "site")
        output = result.stdout + result.stderr
        assert result.returncode != 0, output
        expected = {"page": "producton.md", "anchor": "#read-replica",
                    "unlisted": "notes.md"}[breakage]
        assert "Aborted with 1 warnings in strict mode" in output and expected in output


class TestReadme:
    """A front page: short, the two commands first and unchanged, every link resolves."""

    def test_it_is_short(self):
        assert len(README.read_text(encoding="utf-8").splitlines()) <= 220

    def test_the_two_commands_come_first_word_for_word(self):
        blocks = [block for block in fenced_blocks(README) if block.lang == "sh"]
        assert [block.text for block in blocks[:2]] == ["make run\n", "make test\n"]
        text = README.read_text(encoding="utf-8")
        assert text.index("```sh\nmake run\n```") < min(
            text.index(f"```{block.lang}") for block in fenced_blocks(README)
            if block.lang not in ("sh", "text"))

    def test_ci_runs_the_second_command(self):
        commands = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
        assert commands[-1] == "make test"
        makefile = (ROOT / "Makefile").read_text()
        assert re.search(r"^run: .*\n\t\$\(BIN\)/catalog-enricher serve --demo$", makefile, re.M)
        assert re.search(r"^docs: .*\n\t\$\(BIN\)/mkdocs serve\b", makefile, re.M)

    @pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
    def test_every_link_resolves(self, page: Path):
        """Every relative link names a file of the repository, and its #anchor a heading there
        (external links are not followed: the docs have none that a reader needs to start)."""
        broken = []
        for target in links(page.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{target}: no file {resolved}")
            elif anchor and resolved.suffix == ".md" and \
                    anchor not in heading_anchors(resolved.read_text(encoding="utf-8")):
                broken.append(f"{target}: no heading for #{anchor}")
        assert not broken, "\n".join(broken)

    def test_readme_links_stay_in_the_repository(self):
        external = [t for t in links(README.read_text(encoding="utf-8"))
                    if re.match(r"^[a-z]+:", t)]
        assert not external


class TestNoLabNotes:
    """No issue numbers, session dates or re-measurements in the README or the docs."""

    FORBIDDEN = (
        r"\bissues? #?\d+", r"\bissue-\d+", r"#\d{1,3}\b(?![\w-])",
        r"\b2026-1[12]-\d\d\b",  # the weeks of the work's own lab notes
        r"measured again", r"measured on \d", r"\bthis session\b", r"\bsessions? of work\b",
    )

    @pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
    def test_page_is_free_of_lab_notes(self, page: Path):
        found = []
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            for pattern in self.FORBIDDEN:
                if re.search(pattern, line, re.IGNORECASE):
                    found.append(f"{page.name}:{number}: {line.strip()[:100]}")
        assert not found, "\n".join(found)


class _ReadRecorder(Mapping[str, str]):
    """An empty environment that remembers which variables were asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __getitem__(self, key: str) -> str:
        self.asked.append(key)
        raise KeyError(key)

    def get(self, key, default=None):
        self.asked.append(key)
        return default

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def settings_variables() -> list[str]:
    recorder = _ReadRecorder()
    Settings.from_env(recorder)
    return list(dict.fromkeys(recorder.asked))


def configuration_rows() -> dict[str, str]:
    """variable -> its default cell, from every table of docs/configuration.md."""
    rows = table_rows((DOCS / "configuration.md").read_text(encoding="utf-8"), "variable")
    documented: dict[str, str] = {}
    for row in rows:
        for name in code_spans(row[0]):
            documented[name] = row[1]
    return documented


class TestConfigurationPage:
    """docs/configuration.md is the list of every setting, with the defaults the code applies."""

    def test_every_setting_is_documented(self):
        documented = configuration_rows()
        missing = [name for name in settings_variables() if name not in documented]
        assert settings_variables(), "no variable was read: the recorder no longer sees them"
        assert not missing, ("settings without a row in docs/configuration.md (add one: "
                             "variable, default, meaning):\n  " + "\n  ".join(missing))

    def test_every_documented_variable_is_read_by_the_service(self):
        read = set(settings_variables())
        sources = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "service").rglob("*.py"))
        stale = [name for name in configuration_rows()
                 if name not in read and not name.startswith("AWS_") and name != "..."
                 and f'"{name}"' not in sources]
        assert not stale, f"documented but read nowhere in service/: {stale}"

    def test_documented_defaults_are_the_defaults(self):
        """Setting a variable to its documented default changes nothing; a cell that is not a
        value (`unset: ...`) is for variables that have none."""
        baseline = Settings.from_env({})
        read = set(settings_variables())
        checked, wrong = 0, []
        for name, cell in configuration_rows().items():
            if name not in read:
                continue
            if cell.startswith("unset"):
                if name not in ("ENRICHER_DATA_DIR", "XDG_DATA_HOME"):  # a path from $HOME
                    assert getattr(baseline, _field_of(name)) is None, f"{name} has a default"
                continue
            value = code_spans(cell)[0]
            if Settings.from_env({name: value}) != baseline:
                wrong.append(f"{name}: documented default {value!r} is not the default")
            checked += 1
        assert not wrong, "\n".join(wrong)
        assert checked >= 40


def _field_of(variable: str) -> str:
    """The Settings field a variable sets: the one that changes when it is set."""
    samples = {"DATABASE_URL": "postgresql://x@h/db", "DATABASE_READ_URL": "postgresql://x@h/db",
               "REDIS_URL": "redis://h:6379/0",
               "ENRICHER_PERSONALIZE_ENDPOINT_URL": "http://127.0.0.1:1"}
    baseline = Settings.from_env({})
    changed = Settings.from_env({variable: samples[variable]})
    [field] = [f for f in vars(baseline) if getattr(baseline, f) != getattr(changed, f)]
    return field


class TestHttpApiPage:
    """docs/http-api.md lists every route of the OpenAPI document, and no other."""

    def table(self) -> set[tuple[str, str]]:
        rows = table_rows((DOCS / "http-api.md").read_text(encoding="utf-8"), "route")
        routes = set()
        for row in rows:
            method, _, path = code_spans(row[0])[0].partition(" ")
            routes.add((method, path))
        return routes

    def test_every_route_is_in_the_table(self):
        missing = sorted(f"{m} {p}" for m, p in documented_operations() - self.table())
        assert not missing, ("routes of openapi.json missing from docs/http-api.md's table "
                             "(add a line: route, scope, what):\n  " + "\n  ".join(missing))

    def test_the_table_names_no_other_route(self):
        stale = sorted(f"{m} {p}" for m, p in self.table() - documented_operations())
        assert not stale, f"docs/http-api.md lists routes openapi.json does not have: {stale}"


class TestCommandLinePage:
    """docs/cli.md holds every command's `--help`, as the command prints it."""

    def sections(self) -> dict[str, str]:
        return cli_page_sections((DOCS / "cli.md").read_text(encoding="utf-8"))

    @pytest.mark.parametrize("words", cli_commands(), ids=lambda w: " ".join(w) or "top")
    def test_the_page_holds_the_commands_help(self, words: list[str]):
        heading = cli_heading(words)
        expected = cli_help(words)
        assert heading in self.sections(), (
            f"docs/cli.md has no section `## {heading}`; add it with its help:\n```text\n"
            f"{expected}```")
        assert self.sections()[heading] == expected, (
            f"docs/cli.md's help of `{heading}` differs from `{heading} --help`; it now reads:"
            f"\n```text\n{expected}```")

    def test_the_page_documents_no_other_command(self):
        commands = {cli_heading(words) for words in cli_commands()}
        stale = sorted(set(self.sections()) - commands)
        assert not stale, f"docs/cli.md documents commands that do not exist: {stale}"

    def test_the_console_script_prints_the_same(self):
        """The installed `catalog-enricher` is the entry point the page was compared with."""
        script = Path(sys.executable).with_name("catalog-enricher")
        result = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                                timeout=60, check=True,
                                env={**os.environ, "COLUMNS": "100"})
        assert result.stdout == self.sections()["catalog-enricher"]
