"""The documentation stays true to the code."""

from __future__ import annotations

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
