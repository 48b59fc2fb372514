"""The documentation stays true to the code."""

from __future__ import annotations

import json
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
