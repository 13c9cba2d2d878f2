#!/usr/bin/env python3
"""One entry point for a fresh clone; needs only Python 3.11+.

    python3 scripts/dev.py serve    # install into .venv, migrate SQLite, serve on :8000
    python3 scripts/dev.py test     # install into .venv, run the test suite (args go to pytest)
    python3 scripts/dev.py lint     # ruff and mypy
    python3 scripts/dev.py lock     # refresh uv.lock after editing pyproject.toml
    python3 scripts/dev.py lock --check
                                    # fail when uv.lock and pyproject.toml disagree, or when
                                    # .venv holds anything but the locked set
    python3 scripts/dev.py test-latest
                                    # the suite against the newest releases pyproject.toml
                                    # allows, in .venv-highest (not the lock; not part of CI)
    python3 scripts/dev.py test-lowest
                                    # the same against the lowest releases its lower bounds
                                    # allow, in .venv-lowest-direct
    python3 scripts/dev.py audit    # pip-audit: known vulnerabilities in the installed dependencies
    python3 scripts/dev.py bench    # load benchmark against Postgres, Redis, wrk and LiteLLM
                                    # (args go to tests/bench/chat_load.py; --help for them)

The first run creates `.venv` and installs exactly the set that uv.lock pins, with hashes
checked: it installs the locked `uv` with pip, then `uv sync --locked`. Later runs sync again only
when pyproject.toml or uv.lock changes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-install-stamp"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
UV = BIN / ("uv.exe" if os.name == "nt" else "uv")


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this script may be run by an older python3
        sys.exit("Python 3.11 or newer is required.")
    ensure_uv()
    wanted = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "uv.lock").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text().strip() == wanted:
        return
    print("installing the locked dependencies into .venv ...", flush=True)
    # Exact: anything not in the lock is removed, so .venv is the set CI tested.
    run([str(UV), "sync", "--locked", "--quiet", "--python", str(PYTHON)], env=uv_env())
    STAMP.write_text(wanted)


def uv_requirement() -> str:
    """The requirements line for the uv release that uv.lock pins, with the lock's hashes."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    uv = next(package for package in lock["package"] if package["name"] == "uv")
    files = [*uv.get("wheels", []), *([uv["sdist"]] if "sdist" in uv else [])]
    return f"uv=={uv['version']} " + " ".join(f"--hash={file['hash']}" for file in files)


def install_locked_uv() -> None:
    """pip-install the uv release that uv.lock pins, checked against the lock's hashes."""
    with tempfile.TemporaryDirectory() as folder:
        requirements = Path(folder) / "uv.txt"
        requirements.write_text(uv_requirement() + "\n")
        pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, "--require-hashes", "--no-deps", "-r", str(requirements)])


def uv_env(**extra: str) -> dict[str, str]:
    # Never download an interpreter: the project runs on the Python that made .venv.
    return {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": str(VENV),
        "UV_PYTHON_DOWNLOADS": "never",
        **extra,
    }


def check_lock() -> None:
    """Fail when uv.lock no longer satisfies pyproject.toml, or .venv differs from the lock."""
    run([str(UV), "lock", "--check", "--quiet"], env=uv_env())
    export = [str(UV), "export", "--frozen", "--no-hashes", "--no-header", "--no-annotate"]
    exported = subprocess.run(
        [*export, "--no-emit-project"],
        cwd=ROOT,
        env=uv_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    freeze = [str(PYTHON), "-m", "pip", "freeze", "--all", "--exclude-editable"]
    frozen = subprocess.run(freeze, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    run([str(PYTHON), __file__, "_compare-freeze", exported, frozen])


def compare_freeze(exported: str, frozen: str) -> None:
    """Run by .venv's Python, whose `packaging` evaluates the lock's markers for this machine."""
    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    def pins(lines: list[str]) -> set[str]:
        return {f"{canonicalize_name(name)}=={version}" for name, version in map(split, lines)}

    def split(line: str) -> tuple[str, str]:
        name, _, version = line.partition("==")
        return name, version

    locked = []
    for line in exported.splitlines():
        requirement, _, marker = line.partition(";")
        if requirement.strip() and (not marker.strip() or Marker(marker).evaluate()):
            locked.append(requirement.strip())
    installed = [line for line in frozen.splitlines() if "==" in line]
    missing, extra = pins(locked) - pins(installed), pins(installed) - pins(locked)
    if missing or extra:
        sys.exit(f".venv differs from uv.lock: missing {sorted(missing)}, extra {sorted(extra)}")
    print(f"pip freeze matches uv.lock: {len(installed)} packages", flush=True)


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


def ensure_uv() -> None:
    """.venv with pip and the locked uv, and nothing else ensurepip seeds (uv sync keeps those)."""
    if not PYTHON.exists():
        print("creating .venv ...", flush=True)
        create_venv(VENV)
    if not UV.exists():
        install_locked_uv()


def create_venv(folder: Path) -> None:
    venv.EnvBuilder(with_pip=True, clear=True).create(folder)
    python = folder / BIN.name / PYTHON.name
    # Python 3.11's ensurepip also seeds setuptools, which the lock does not ask for.
    uninstall = [str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"]
    subprocess.run(uninstall, cwd=ROOT, check=False, capture_output=True)


def lock(args: list[str]) -> None:
    ensure_uv()
    if args == ["--check"]:
        run([str(UV), "lock", "--check"], env=uv_env())
        ensure_venv()
        check_lock()
    elif not args:
        run([str(UV), "lock"], env=uv_env())
        ensure_venv()
    else:
        sys.exit("usage: python3 scripts/dev.py lock [--check]")


def test_resolution(resolution: str, args: list[str]) -> None:
    """The suite in a venv of its own, resolved afresh from pyproject.toml (not uv.lock)."""
    ensure_uv()
    folder = ROOT / f".venv-{resolution}"
    print(f"creating {folder.name} (resolution {resolution}, ignoring uv.lock) ...", flush=True)
    create_venv(folder)
    python = folder / BIN.name / PYTHON.name
    install = [str(UV), "pip", "install", "--quiet", "--upgrade", "--python", str(python)]
    run([*install, "--resolution", resolution, "-e", ".", "--group", "dev"], env=uv_env())
    newer = subprocess.run(
        [str(UV), "pip", "list", "--python", str(python), "--format", "freeze"],
        cwd=ROOT,
        env=uv_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    locked: dict[str, set[str]] = {}
    for package in tomllib.loads((ROOT / "uv.lock").read_text())["package"]:
        locked.setdefault(package["name"], set()).add(package.get("version", ""))
    for line in newer:
        name, _, version = line.partition("==")
        pinned = locked.get(name.lower().replace("_", "-"), set())
        if version and pinned and version not in pinned:
            print(f"  {name} {' / '.join(sorted(pinned))} (lock) -> {version}", flush=True)
    run([str(python), "-m", "pytest", *args])


def main() -> None:
    command, args = (sys.argv[1], sys.argv[2:]) if len(sys.argv) > 1 else ("", [])
    if command == "_compare-freeze":
        compare_freeze(*args)
        return
    if command == "uv-requirement":  # for the Dockerfile's build stage
        print(uv_requirement())
        return
    commands = {"serve", "test", "lint", "bench", "audit", "lock", "test-latest", "test-lowest"}
    if command not in commands:
        sys.exit(__doc__)
    if command == "lock":
        lock(args)
        return
    if command in {"test-latest", "test-lowest"}:
        test_resolution("highest" if command == "test-latest" else "lowest-direct", args)
        return
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
