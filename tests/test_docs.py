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


class TestSecurityPage:
    def test_what_we_tested_names_tests_that_exist(self) -> None:
        """Every test docs/security.md cites in "What we tested" exists in the suite."""
        page = (DOCS / "security.md").read_text()
        tested = page[page.index("## What we tested") :]
        named = _named_tests(tested)
        assert len(named) >= 20
        missing = []
        for reference in named:
            file, *names = reference.split("::")
            path = DOCS.parent / file
            if not (path.is_file() and _defined(path, names)):
                missing.append(reference)
        assert missing == []
