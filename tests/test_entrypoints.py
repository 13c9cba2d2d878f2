"""The ways users start the service: `uvicorn app.main:app` as in the seed's README and
FastAPI's docs (with and without `--reload`), the factory form, and an import of `app.main` that
builds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.live import ROOT, api_process


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'entry.db'}",
        "ENVIRONMENT": "development",
    }


@pytest.mark.parametrize(
    "target",
    [
        ("app.main:app",),
        ("app.main:app", "--reload", "--reload-dir", str(ROOT / "app")),
        ("--factory", "app.main:create_app"),
    ],
    ids=["app", "app-reload", "factory"],
)
def test_uvicorn_serves_health(target: tuple[str, ...], tmp_path: Path) -> None:
    with api_process(_env(tmp_path), target) as url:
        response = httpx.get(f"{url}/health", timeout=5)
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_importing_app_main_builds_nothing_until_app_is_asked_for(tmp_path: Path) -> None:
    script = """
import logging
import app.main as main
assert "app" not in vars(main), "importing app.main built the app"
assert not logging.getLogger("app").handlers, "importing app.main configured logging"
first = main.app
assert first is main.app, "app.main.app is one app per process"
assert logging.getLogger("app").handlers, "building the app configures logging"
print(type(first).__name__)
"""
    result = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "FastAPI"
    with pytest.raises(AttributeError):
        import app.main

        _ = app.main.nothing_here  # type: ignore[attr-defined]
