"""The documentation stays true to the code."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from tower_trio._config import setting_docs

DOCS = Path(__file__).parent.parent / "docs"


class TestConfigurationPage:
    @pytest.mark.parametrize(
        ("variable", "default", "meaning"), setting_docs(), ids=[v for v, _, _ in setting_docs()]
    )
    def test_every_setting_has_its_row(self, variable: str, default: str, meaning: str) -> None:
        """docs/configuration.md has one row per setting, with its default and meaning."""
        page = (DOCS / "configuration.md").read_text()
        assert f"| `{variable}` | {default} | {meaning} |" in page


def _operations() -> list[str]:
    document = json.loads((DOCS / "openapi.json").read_text())
    return [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method in operations
        if method in {"get", "post", "put", "patch", "delete"}
    ]


class TestHttpApiPage:
    @pytest.mark.parametrize("operation", _operations())
    def test_every_operation_has_its_section(self, operation: str) -> None:
        """docs/http-api.md has a section for each operation of the OpenAPI document."""
        page = (DOCS / "http-api.md").read_text()
        assert f"## `{operation}`" in page

    def test_no_section_for_an_operation_that_does_not_exist(self) -> None:
        """Every operation the page documents is in the OpenAPI document."""
        page = (DOCS / "http-api.md").read_text()
        documented = {
            line.removeprefix("## `").removesuffix("`")
            for line in page.splitlines()
            if line.startswith("## `")
        }
        assert documented == set(_operations())


def _named_tests(page: str) -> list[str]:
    """Every `path::Class::test` a page names, in backticks."""
    return sorted(set(re.findall(r"`((?:tests|plugins)/[\w/]+\.py(?:::\w+)+)", page)))


def _defined(path: Path, names: list[str]) -> bool:
    """Whether ``path`` defines the class (and method) or function ``names``."""
    scope: list[ast.stmt] = ast.parse(path.read_text()).body
    for name in names:
        found = [
            node
            for node in scope
            if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name == name
        ]
        if not found:
            return False
        scope = found[0].body if isinstance(found[0], ast.ClassDef) else []
    return True


def _missing(references: list[str]) -> list[str]:
    """The ``path::Class::test`` references whose file, class or test does not exist."""
    missing = []
    for reference in references:
        file, *names = reference.split("::")
        path = DOCS.parent / file
        if not (path.is_file() and _defined(path, names)):
            missing.append(reference)
    return missing


class TestSecurityPage:
    def test_what_we_tested_names_tests_that_exist(self) -> None:
        """Every test docs/security.md cites in "What we tested" exists in the suite."""
        page = (DOCS / "security.md").read_text()
        tested = page[page.index("## What we tested") :]
        named = _named_tests(tested)
        assert len(named) >= 20
        assert _missing(named) == []


PROMISE_PAGES = ("delivery.md", "security.md", "http-api.md", "replicas.md")


def _promises() -> str:
    """The section of docs/testing.md that ties each promise to its tests."""
    page = (DOCS / "testing.md").read_text()
    start = page.index("## What each promise is pinned by")
    end = page.find("\n## ", start)
    return page[start : end if end != -1 else None]


def _promise_rows() -> list[list[str]]:
    """The cells of each row of the promise table, header and separator left out."""
    rows = [line for line in _promises().splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _page_links(cell: str) -> list[tuple[str, str]]:
    """The (page, anchor) of each link in ``cell`` to a page whose promises are listed."""
    pages = "|".join(re.escape(page) for page in PROMISE_PAGES)
    return re.findall(rf"\]\(({pages})(?:#([\w-]+))?\)", cell)


def _anchors(page: str) -> set[str]:
    """The anchors a Markdown renderer gives the headings of ``page``."""
    headings = (line.lstrip("#").strip() for line in page.splitlines() if line.startswith("#"))
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


class TestTestingPage:
    def test_every_named_test_exists(self) -> None:
        """Every test the promise table of docs/testing.md names exists in the suite."""
        named = _named_tests(_promises())
        assert named
        assert _missing(named) == []

    def test_every_row_links_its_page_and_names_a_test(self) -> None:
        """Each promise has three cells: the promise, a link to its page, and a test."""
        rows = _promise_rows()
        assert rows
        for row in rows:
            assert len(row) == 3, row
            promise, page, tests = row
            assert promise, row
            assert _page_links(page), promise
            assert _named_tests(tests), promise

    @pytest.mark.parametrize("page", PROMISE_PAGES)
    def test_each_page_has_its_promises(self, page: str) -> None:
        """The table lists promises of each of the pages it covers."""
        linked = [link for _, cell, _ in _promise_rows() for link, _ in _page_links(cell)]
        assert page in linked

    def test_links_point_at_sections_that_exist(self) -> None:
        """A link to a section of a page names one of that page's headings."""
        for _, cell, _ in _promise_rows():
            for page, anchor in _page_links(cell):
                if anchor:
                    assert anchor in _anchors((DOCS / page).read_text()), (page, anchor)
