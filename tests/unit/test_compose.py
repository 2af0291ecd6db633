"""docker-compose.yml must match the code: services, images, environment names and commands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from rl_worker.ops.kafka_broker import kafka_version
from rl_worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def settings_field(env_name: str) -> bool:
    """Is RL_X or RL_SECTION__FIELD a field of Settings?"""
    assert env_name.startswith("RL_")
    parts = env_name[3:].lower().split("__")
    model: type = Settings
    for part in parts:
        fields = model.model_fields  # type: ignore[attr-defined]
        if part not in fields:
            return False
        model = fields[part].annotation
    return True


def test_services_and_images() -> None:
    services = compose()["services"]
    assert {"kafka", "redis", "worker-1", "worker-2", "simulator"} <= set(services)
    assert services["kafka"]["image"] == f"apache/kafka:{kafka_version()}"  # the version the tests run
    assert "KAFKA_PROCESS_ROLES" in services["kafka"]["environment"]  # KRaft, no ZooKeeper
    assert services["redis"]["image"].startswith("redis:")
    for name, service in services.items():
        assert "healthcheck" in service or name == "simulator", name
    assert set(services["simulator"]["depends_on"]) == {"worker-1", "worker-2"}


def test_environment_names_are_settings_fields_and_point_at_the_services() -> None:
    services = compose()["services"]
    for name in ("worker-1", "worker-2", "simulator"):
        env = services[name]["environment"]
        for key in env:
            assert settings_field(key), f"{name}: {key} is not a Settings field"
        assert env["RL_KAFKA_BOOTSTRAP"] == "kafka:9092"
    for name in ("worker-1", "worker-2"):
        env = services[name]["environment"]
        assert env["RL_REDIS_URL"].startswith("redis://redis:")
        assert env["RL_APP_ID"] == services["worker-1"]["environment"]["RL_APP_ID"]  # one group
    assert not settings_field("RL_NOT_A_SETTING")


def test_commands_exist_in_the_cli() -> None:
    services = compose()["services"]
    entrypoint = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["rl-worker"]' in entrypoint
    commands = {services[n]["command"][0] for n in ("worker-1", "worker-2", "simulator")}
    assert commands == {"worker", "simulate"}
    for command in commands:
        out = subprocess.run(
            [sys.executable, "-m", "rl_worker", command, "--help"],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert out.returncode == 0, out.stderr
    simulate_help = subprocess.run(
        [sys.executable, "-m", "rl_worker", "simulate", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in services["simulator"]["command"][1:]:
        if option.startswith("--"):
            assert option in simulate_help
