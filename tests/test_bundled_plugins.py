"""Every bundled plugin is documented, and the scaffold makes such a plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tower_trio import PluginError
from tower_trio._plugins import discover_plugins
from tower_trio._scaffold import main, scaffold

REPO = Path(__file__).parent.parent
BUNDLED = sorted(p.parent.name for p in (REPO / "plugins").glob("*/watcher.py"))


class TestBundledPlugins:
    def test_the_built_ins_are_bundled(self) -> None:
        """folder, schedule, http_poll and riffyn ship in plugins/, beside the example."""
        assert {"example", "folder", "http_poll", "riffyn", "schedule"} <= set(BUNDLED)

    @pytest.mark.parametrize("name", BUNDLED)
    def test_each_has_a_readme_with_a_config_table(self, name: str) -> None:
        """A bundled plugin's README documents every PLUGIN_<NAME>_* variable."""
        readme = REPO / "plugins" / name / "README.md"
        assert readme.is_file(), f"plugins/{name} has no README.md"
        text = readme.read_text()
        plugin = discover_plugins(REPO / "plugins", entry_points=False)[name]
        for variable in plugin.config_variables().values():
            assert f"`{variable}`" in text, f"plugins/{name}/README.md does not document {variable}"


class TestScaffold:
    @pytest.mark.subprocess
    def test_new_plugin_is_discovered_and_its_test_passes(self, tmp_path: Path) -> None:
        """`just new-plugin NAME` makes a plugin the loader accepts, with a passing test."""
        folder = scaffold("plate_reader", tmp_path)
        assert sorted(p.name for p in folder.iterdir()) == [
            "README.md",
            "__init__.py",
            "test_watcher.py",
            "watcher.py",
        ]
        assert discover_plugins(tmp_path, entry_points=False)["plate_reader"].wants_state
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "-c",
                str(REPO / "pyproject.toml"),
                str(folder),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr

    @pytest.mark.parametrize("name", ["Bad", "1st", "has-dash"])
    def test_bad_names_are_refused(self, tmp_path: Path, name: str) -> None:
        """Names the loader would not accept are refused up front."""
        with pytest.raises(PluginError, match="is not a plugin name"):
            scaffold(name, tmp_path)

    def test_an_existing_folder_is_not_overwritten(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Scaffolding over an existing plugin fails, saying so, and changes nothing."""
        monkeypatch.chdir(tmp_path)
        assert main(["mine"]) == 0
        assert main(["mine"]) == 1
        assert "already exists" in capsys.readouterr().err
        assert main([]) == 2
