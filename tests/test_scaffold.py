"""`just new-plugin NAME` writes a plugin that passes `just lint` and waits to be configured."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tower_trio._plugins import discover_plugins, select_plugins
from tower_trio._scaffold import scaffold

REPO = Path(__file__).parent.parent
BIN = Path(sys.executable).parent


def lint(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a linter as `just lint` does: from the checkout, with the project's configuration."""
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.subprocess
class TestScaffoldLint:
    @pytest.fixture
    def folder(self, tmp_path: Path) -> Path:
        return scaffold("plate_reader", tmp_path / "plugins")

    def test_ruff_finds_nothing(self, folder: Path) -> None:
        """The scaffold passes `ruff check` and `ruff format --check` with the project's rules."""
        config = str(REPO / "pyproject.toml")
        checked = lint(str(BIN / "ruff"), "check", "--config", config, str(folder))
        formatted = lint(str(BIN / "ruff"), "format", "--check", "--config", config, str(folder))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert formatted.returncode == 0, formatted.stdout + formatted.stderr

    def test_mypy_strict_finds_nothing(self, folder: Path) -> None:
        """The scaffold passes `mypy --strict` with the project's configuration."""
        config = str(REPO / "pyproject.toml")
        checked = lint(str(BIN / "mypy"), "--config-file", config, str(folder))
        assert checked.returncode == 0, checked.stdout + checked.stderr


class TestScaffoldIsInert:
    def test_skipped_until_its_api_version_is_set(self, tmp_path: Path) -> None:
        """Started with every plugin, an unconfigured scaffold is skipped, naming the variable."""
        scaffold("plate_reader", tmp_path)
        selected, skipped = select_plugins(discover_plugins(tmp_path, entry_points=False), None, {})
        assert selected == []
        ((name, reason),) = [(s.name, s.reason) for s in skipped]
        assert name == "plate_reader"
        assert reason.startswith("PLUGIN_PLATE_READER_API_VERSION is not set")

    def test_runs_once_an_api_version_is_chosen(self, tmp_path: Path) -> None:
        """With PLUGIN_<NAME>_API_VERSION set, the scaffold runs and sends to that apiVersion."""
        scaffold("plate_reader", tmp_path)
        environ = {"PLUGIN_PLATE_READER_API_VERSION": "Test/v1"}
        (plugin,), _ = select_plugins(discover_plugins(tmp_path, entry_points=False), None, environ)
        assert plugin.config.api_version == "Test/v1"

    def test_readme_says_the_variable_is_required(self, tmp_path: Path) -> None:
        """The scaffold's README documents the apiVersion variable as required."""
        folder = scaffold("plate_reader", tmp_path)
        readme = (folder / "README.md").read_text()
        assert "| `PLUGIN_PLATE_READER_API_VERSION` | (required) |" in readme
