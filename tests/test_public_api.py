"""The public surface of ``tower_trio``: what plugin authors may import."""

from __future__ import annotations

import importlib.metadata

import pytest

import tower_trio
from tower_trio import _errors, _models

PUBLIC_NAMES = [
    "ConfigError",
    "FieldError",
    "InvalidTriggerError",
    "JournalError",
    "Metadata",
    "Plate",
    "PluginError",
    "PublishError",
    "TowerError",
    "Trigger",
    "__version__",
]


class TestAll:
    def test_pinned(self) -> None:
        """The public names are exactly these; adding or removing one is a deliberate change."""
        assert tower_trio.__all__ == PUBLIC_NAMES

    def test_sorted(self) -> None:
        """``__all__`` is kept sorted, without duplicates."""
        assert tower_trio.__all__ == sorted(set(tower_trio.__all__))

    def test_star_import(self) -> None:
        """A star import brings exactly the public names."""
        namespace: dict[str, object] = {}
        exec("from tower_trio import *", namespace)
        assert sorted(set(namespace) - {"__builtins__"}) == PUBLIC_NAMES


class TestObjects:
    @pytest.mark.parametrize(
        "name", ["FieldError", "InvalidTriggerError", "Metadata", "Plate", "Trigger"]
    )
    def test_models_reexported(self, name: str) -> None:
        """The model names are the objects defined by the models, not copies."""
        assert getattr(tower_trio, name) is getattr(_models, name)

    @pytest.mark.parametrize("name", ["ConfigError", "PluginError", "PublishError", "TowerError"])
    def test_errors_reexported(self, name: str) -> None:
        """The error names are the tower's own exception classes."""
        assert getattr(tower_trio, name) is getattr(_errors, name)

    @pytest.mark.parametrize(
        "error",
        [
            tower_trio.ConfigError,
            tower_trio.InvalidTriggerError,
            tower_trio.PluginError,
            tower_trio.PublishError,
        ],
        ids=lambda error: error.__name__,
    )
    def test_one_hierarchy(self, error: type[Exception]) -> None:
        """Every public error is a TowerError, so one ``except`` catches them all."""
        assert issubclass(error, tower_trio.TowerError)

    def test_version(self) -> None:
        """``__version__`` is the version the installed distribution declares."""
        assert tower_trio.__version__ == importlib.metadata.version("tower-trio")
