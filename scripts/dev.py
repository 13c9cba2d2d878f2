#!/usr/bin/env python3
"""One entry point for a fresh clone; needs only Python 3.11+.

    python3 scripts/dev.py serve    # install into .venv, migrate SQLite, serve on :8000
    python3 scripts/dev.py test     # install into .venv, run the test suite (args go to pytest)
    python3 scripts/dev.py lint     # ruff and mypy
    python3 scripts/dev.py audit    # pip-audit: known vulnerabilities in the installed dependencies
    python3 scripts/dev.py bench    # load benchmark against Postgres, Redis, wrk and LiteLLM
                                    # (args go to tests/bench/chat_load.py; --help for them)

The first run creates `.venv` and installs the project (with its dev tools) into it; later runs
reinstall only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-install-stamp"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit("Python 3.11 or newer is required.")
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing dependencies into .venv ...", flush=True)
    run([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"])
    STAMP.write_text(wanted)


def ensure_wrk() -> None:
    """The benchmark's load tool, from Debian's packages when it is missing and we may."""
    if shutil.which("wrk") or not shutil.which("apt-get") or os.geteuid() != 0:
        return  # the benchmark says what is missing
    print("installing wrk (apt-get install wrk) ...", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False)


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, cwd=ROOT, env=env, check=False)
    if result.returncode != 0:
        sys.exit(result.returncode)


def serve(args: list[str]) -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    run([str(PYTHON), "-m", "alembic", "upgrade", "head"])
    print(f"serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)", flush=True)
    os.chdir(ROOT)
    uvicorn = [str(PYTHON), "-m", "uvicorn", "--factory", "app.main:create_app"]
    # Our own access log (app.access) has request ids and no query strings; uvicorn's is off.
    os.execv(str(PYTHON), [*uvicorn, "--host", host, "--port", port, "--no-access-log", *args])  # noqa: S606


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command not in {"serve", "test", "lint", "bench", "audit"}:
        sys.exit(__doc__)
    ensure_venv()
    if command == "serve":
        serve(args)
    elif command == "test":
        run([str(PYTHON), "-m", "pytest", *args])
    elif command == "audit":
        # The environment's pinned versions (runtime and dev), checked against OSV.
        audit = [str(BIN / "pip-audit"), "--vulnerability-service", "osv", "--skip-editable"]
        run([*audit, "--progress-spinner", "off", *args])
    elif command == "bench":
        ensure_wrk()
        run([str(PYTHON), "-m", "tests.bench.chat_load", *args])
    else:
        run([str(PYTHON), "-m", "ruff", "check", "."])
        run([str(PYTHON), "-m", "ruff", "format", "--check", "."])
        run([str(PYTHON), "-m", "mypy"])


if __name__ == "__main__":
    main()
