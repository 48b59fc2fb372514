"""Score a ``mutmut run`` per module, against the targets in docs/testing.md.

``just mutate`` runs mutmut, then this. It reads mutmut's per-file results
under ``mutants/``, counts each mutant once, and prints one row per module:
killed (a test failed, or timed out), survived (the tests passed), and
untested (no selected test reached the mutated function, which is a survivor
too). Survivors listed in docs/testing.md's table of equivalent mutants are
set apart: a mutant that changes nothing observable cannot be killed.

It exits 1 when a module scores under the target, or when a survivor that is
not listed as equivalent sits where every mutant must be killed (the
durability and confirm paths: whole modules, or single functions of a
module), so the recipe fails where the net is thin.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

TARGET = 0.85
STRICT = (
    "tower_trio._journal",
    "tower_trio.amqp._confirm",
    # The confirm path: from a publish to the recorded outcome.
    "tower_trio._publisher.Publisher._publish_pending",
    "tower_trio._publisher.Publisher._publish",
    "tower_trio._publisher.Publisher._settle_confirms",
    "tower_trio._publisher.Publisher._settle",
    "tower_trio._publisher.Publisher._finish",
    "tower_trio._publisher.Publisher._republish_later",
    "tower_trio._settlements.Settlements.record",
    "tower_trio._settlements.Settlements.settled_but_unrecorded",
    "tower_trio._settlements.Settlements.flush",
    "tower_trio._outbox.Outbox.settled",
)
"""Modules, or functions, where every surviving mutant must be explained as equivalent."""

_KILLED = {1, 3, 24, -24, 36, 152, 255, 37}
"""Exit codes mutmut records for a failing test, a timeout, or a type error."""
_SURVIVED = {0}
_UNTESTED = {5, 33}
_EQUIVALENT = re.compile(r"^\|\s*`(tower_trio\.[^`]+__mutmut_\d+)`", re.MULTILINE)


def equivalent_mutants(doc: Path) -> set[str]:
    """Mutant names in the first column of docs/testing.md's equivalents table."""
    return set(_EQUIVALENT.findall(doc.read_text(encoding="utf-8")))


def function_of(mutant: str) -> str:
    """The dotted name of the function a mutant changes.

    mutmut names ``pkg.mod.x_func__mutmut_3`` and ``pkg.mod.xǁClassǁmethod__mutmut_3``.
    """
    module, _, mangled = mutant.rsplit("__mutmut_", 1)[0].rpartition(".")
    name = mangled.removeprefix("xǁ").replace("ǁ", ".") if "ǁ" in mangled else mangled[2:]
    return f"{module}.{name}"


def is_strict(mutant: str, module: str) -> bool:
    """Whether a survivor of ``mutant`` must be listed as equivalent."""
    return module in STRICT or function_of(mutant) in STRICT


def results(mutants: Path) -> dict[str, dict[str, int | None]]:
    """Exit code of each mutant's test run, by module."""
    by_module: dict[str, dict[str, int | None]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        relative = meta.relative_to(mutants).with_suffix("").with_suffix("")
        module = ".".join(relative.parts)
        exit_codes = json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"]
        by_module[module] = exit_codes
    return by_module


def _verdict(exit_code: int | None) -> str:
    if exit_code in _KILLED:
        return "killed"
    if exit_code in _SURVIVED:
        return "survived"
    if exit_code in _UNTESTED:
        return "untested"
    return "not run" if exit_code is None else f"exit {exit_code}"


def main(root: Path) -> int:
    equivalent = equivalent_mutants(root / "docs" / "testing.md")
    by_module = results(root / "mutants")
    if not by_module:
        print("no mutmut results under mutants/; run `just mutate` first", file=sys.stderr)
        return 2
    failed = False
    print(f"{'module':34} {'mutants':>7} {'killed':>6} {'equiv.':>6} {'left':>5} {'score':>6}")
    for module, exit_codes in by_module.items():
        verdicts = {name: _verdict(code) for name, code in exit_codes.items()}
        counts = Counter(verdicts.values())
        unkilled = [name for name, verdict in verdicts.items() if verdict != "killed"]
        left = sorted(name for name in unkilled if name not in equivalent)
        judged = len(unkilled) - len(left)
        # Equivalent mutants leave the denominator: no test can tell them apart.
        countable = len(verdicts) - judged
        score = counts["killed"] / countable if countable else 1.0
        short = module.removeprefix("tower_trio.")
        row = f"{len(verdicts):7} {counts['killed']:6} {judged:6} {len(left):5} {score:6.1%}"
        print(f"{short:34} {row}")
        strict = [name for name in left if is_strict(name, module)]
        if score < TARGET or strict:
            failed = True
        for name in left:
            mark = "strict" if name in strict else ""
            print(f"    {verdicts[name]:9} {mark:6} {name}")
    print(f"target: {TARGET:.0%} killed per module; no unexplained survivor in {', '.join(STRICT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(Path.cwd()))
