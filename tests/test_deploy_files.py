"""The deployment files, read as Docker would read them (no Docker engine runs here): the
compose file parses and its dependencies name real services, and the image installs the locked
set and runs the same import string as the README."""

from __future__ import annotations

import yaml

from tests.live import ROOT


def test_compose_file_parses_and_its_dependencies_exist() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"db", "redis", "migrate", "api"} <= set(services)
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    assert services["migrate"]["command"] == ["alembic", "upgrade", "head"]


def test_image_installs_the_lock_and_serves_app_main_app() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "uv sync --locked --no-dev --no-editable" in dockerfile
    assert "--require-hashes" in dockerfile
    cmd = next(line for line in dockerfile.splitlines() if line.startswith("CMD "))
    assert '"app.main:app"' in cmd and "--factory" not in cmd
