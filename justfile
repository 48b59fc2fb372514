# tower-trio's tasks. Every recipe sets up the project's virtualenv itself.

set shell := ["bash", "-euo", "pipefail", "-c"]

python := env_var_or_default("PYTHON", "python3")
venv := justfile_directory() / ".venv"
bin := venv / "bin"

# List the recipes.
default:
    @just --list

# Run the tower (HTTP API, watcher plugins, publisher) until Ctrl-C. The tower
# drains and exits 0, but just reports any interruption as `error: interrupted`
# and exits 130; a service manager runs `tower-trio run` itself.
run: _venv
    PLUGIN_EXAMPLE_PATH="${PLUGIN_EXAMPLE_PATH:-var/example-inbox.txt}" exec {{bin}}/tower-trio run

# The console's browser tests need Chromium: installed first when missing.
# Lint, then test. With no arguments: the whole suite against the local
# RabbitMQ, under branch coverage and its gate. Arguments go to pytest and run
# that part alone, without the gate, which a part of the suite cannot meet:
# `just test -m "not broker and not subprocess and not postgres"` runs the pure tests.
[positional-arguments]
test *args: lint _chromium
    #!/usr/bin/env bash
    set -euo pipefail
    if (( $# == 0 )); then
        "{{bin}}/coverage" run -m pytest
        "{{bin}}/coverage" report --fail-under=92
    else
        exec "{{bin}}/python" -m pytest "$@"
    fi

# The browser tests save the PNGs as they pass.
# Take the console's screenshots again into docs/console/ (shown in docs/console.md).
screenshots: _venv _chromium
    rm -f docs/console/*.png
    TOWER_CONSOLE_SCREENSHOTS="{{justfile_directory()}}/docs/console" {{bin}}/python -m pytest -q -p no:cacheprovider tests/console -k "TestLayout or TestLogin"

# ruff (lint and format check), mypy --strict, and the import contracts
# (the tower's layers; tower_trio.amqp imports nothing of the tower).
lint: _venv
    {{bin}}/ruff check .
    {{bin}}/ruff format --check .
    {{bin}}/mypy
    {{bin}}/lint-imports --no-logo

# Format the code and apply ruff's safe fixes.
fmt: _venv
    {{bin}}/ruff format .
    {{bin}}/ruff check --fix .

# Measure throughput against peers in one run; writes docs/benchmarks.md.
bench *args: _venv _wrk
    {{bin}}/python -m bench {{args}}

# Measure how each cost grows with the work and plot it; writes docs/growth.md
# and docs/growth/*.png.
bench-growth *args: _venv _wrk
    {{bin}}/python -m bench.growth {{args}}

# Mutation-test the modules that carry the guarantees (about an hour on two
# cores; results are cached in mutants/, so a rerun checks only what changed).
mutate *args: _venv
    {{bin}}/mutmut run --max-children "${MUTATE_JOBS:-2}" {{args}} > mutants.log 2>&1 || { tail -20 mutants.log; exit 1; }
    {{bin}}/python -m tests.mutation_report

# Create or refresh the virtualenv when pyproject.toml changes.
_venv:
    #!/usr/bin/env bash
    set -euo pipefail
    stamp="{{venv}}/.installed"
    if [[ -f "$stamp" && "$stamp" -nt pyproject.toml ]]; then exit 0; fi
    if [[ ! -x "{{bin}}/python" ]]; then
        {{python}} -c 'import sys; assert sys.version_info >= (3, 11), "tower-trio needs Python >= 3.11; set PYTHON=python3.11"'
        {{python}} -m venv "{{venv}}"
    fi
    # Dependency groups need pip >= 25.1. The bench group is included because
    # mypy checks the benchmark code too.
    "{{bin}}/python" -m pip install --quiet --upgrade "pip>=25.1"
    "{{bin}}/python" -m pip install --quiet --editable . --group test --group lint --group bench --group mutate
    touch "$stamp"

# Debian's Chromium, which the console's browser tests drive (tests/console/),
# installed with apt-get when it is missing.
_chromium:
    #!/usr/bin/env bash
    set -euo pipefail
    if [[ -x "${TOWER_TEST_CHROMIUM:-/usr/bin/chromium}" ]]; then exit 0; fi
    if ! command -v apt-get >/dev/null; then
        echo "the console's browser tests need Chromium; install it, or set TOWER_TEST_CHROMIUM to its path" >&2
        exit 0
    fi
    sudo=""
    if (( EUID != 0 )); then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium

# Debian's wrk, the benchmarks' HTTP load generator: written in C, it leaves
# the CPU to the servers it measures (without it the bench falls back to a
# Python generator that competes with them). Installed with apt-get when missing.
_wrk:
    #!/usr/bin/env bash
    set -euo pipefail
    if command -v wrk >/dev/null; then exit 0; fi
    if ! command -v apt-get >/dev/null; then
        echo "wrk not found: the HTTP benchmark uses its slower Python load generator" >&2
        exit 0
    fi
    sudo=""
    if (( EUID != 0 )); then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk

# Create plugins/NAME/ with a watcher, a README and a test to start from.
new-plugin name: _venv
    {{bin}}/python -m tower_trio._scaffold {{name}}
