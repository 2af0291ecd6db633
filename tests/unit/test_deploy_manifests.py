"""deploy/kubernetes/, docker-compose.yml, the Dockerfile and scripts/deploy.sh agree with the code:
environment names are Settings fields and parse, ports are RL_WEB_PORT, probe and scrape paths are
pages of the app, commands and options exist in the CLI; the manifests pass the Kubernetes schemas."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from rl_worker.settings import Settings
from tests.unit.test_compose import compose, settings_field

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"


def manifest(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((K8S / name).read_text()))


def container() -> dict[str, Any]:
    (only,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    return dict(only)


@cache
def cli_help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "rl_worker", *command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"rl-worker {' '.join(command)} --help: {done.stderr[-2000:]}"
    return done.stdout


def assert_cli_command(args: list[str]) -> None:
    """args[0] is an rl-worker command and every option after it is one of its options."""
    help_text = cli_help(args[0])
    for arg in args[1:]:
        if arg.startswith("-"):
            assert re.search(rf"(^|[\s,]){re.escape(arg.split('=')[0])}([\s,=]|$)", help_text, re.M), (
                f"{arg} is not an option of rl-worker {args[0]}"
            )


def app_pages() -> set[str]:
    from rl_worker.stream.app import create_app

    app, _ = create_app(Settings(), 4)
    return set(app.web.views)


# ---- Kubernetes --------------------------------------------------------------------------------------


def test_configmap_and_secret_are_settings_that_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    data = manifest("configmap.yaml")["data"]
    secret = manifest("secret.yaml")["stringData"]
    for key in [*data, *secret]:
        assert settings_field(key), f"{key} is not a Settings field"
    assert not set(data) & set(secret)
    assert "RL_REDIS_URL" in secret and "RL_REDIS_URL" not in data  # it carries the password
    for key, value in (data | secret).items():
        assert isinstance(value, str), f"{key}: ConfigMap and Secret values are strings"
        monkeypatch.setenv(key, value)
    settings = Settings()  # raises when a value does not parse
    # the keys the Secret's comments offer for secured clusters are settings too, and secret ones
    offered = re.findall(r"^#\s+(RL_\w+):", (K8S / "secret.yaml").read_text(), re.M)
    assert offered and all(settings_field(k) for k in offered), offered
    assert settings.web_host == "0.0.0.0"  # the probes and Prometheus reach the pod from outside
    assert str(settings.data_dir) == "/data"


def test_deployment_wires_configmap_secret_ports_probes_and_scraping() -> None:
    deployment = manifest("deployment.yaml")
    config = manifest("configmap.yaml")
    spec = deployment["spec"]
    pod = spec["template"]
    c = container()
    refs = {(k, v["name"]) for ref in c["envFrom"] for k, v in ref.items()}
    secret = manifest("secret.yaml")
    assert refs == {("configMapRef", config["metadata"]["name"]), ("secretRef", secret["metadata"]["name"])}
    for item in c.get("env", []):
        assert settings_field(item["name"]), item["name"]

    web_port = int(config["data"]["RL_WEB_PORT"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": web_port}
    pages = app_pages()
    probes = {k: c[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    for name, probe in probes.items():
        assert probe["port"] in ("http", web_port), name
        assert probe["path"].split("?")[0] in pages, f"{name}: {probe['path']} is not a page of the worker"
    assert probes["readinessProbe"]["path"] == "/health?ready=1"

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == web_port
    assert annotations["prometheus.io/path"] in pages

    assert spec["replicas"] >= 2
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}  # one pod at a time
    assert spec["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert manifest("pdb.yaml")["spec"]["selector"] == spec["selector"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert config["data"]["RL_DATA_DIR"] in mounts  # Faust's data dir is writable on a read-only root


def test_deployment_command_exists_in_the_cli() -> None:
    c = container()
    assert "command" not in c  # the image's ENTRYPOINT is rl-worker
    assert_cli_command(c["args"])
    assert c["args"][0] == "worker"


def test_pod_runs_as_the_images_non_root_user() -> None:
    pod_security = manifest("deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
    user = re.search(r"^USER (\d+)(?::(\d+))?$", (ROOT / "Dockerfile").read_text(), re.M)
    assert user, "the Dockerfile names a numeric USER"
    assert int(user.group(1)) != 0
    assert pod_security["runAsNonRoot"] is True
    assert pod_security["runAsUser"] == int(user.group(1))
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False


def validator() -> str:
    found = shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate")
    assert Path(found).exists(), "kubernetes-validate (a test dependency) is not installed"
    return found


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [validator(), "--strict", *map(str, paths)], capture_output=True, text=True, timeout=120, check=False
    )


def test_manifests_pass_the_kubernetes_schemas() -> None:
    files = sorted(K8S.glob("*.yaml"))
    assert {f.name for f in files} >= {"deployment.yaml", "configmap.yaml", "secret.yaml", "pdb.yaml"}
    done = validate(*files)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed") == len(files), done.stdout


def test_the_schema_check_catches_a_wrong_field(tmp_path: Path) -> None:
    broken = manifest("deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/health"}}
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    done = validate(path)
    assert done.returncode != 0 and "readinessprobe" in done.stdout + done.stderr


# ---- deploy.sh, the image, compose -----------------------------------------------------------------


def test_deploy_script_names_the_manifests_objects() -> None:
    script = (ROOT / "scripts" / "deploy.sh").read_text()
    constants = dict(re.findall(r"^([A-Z_]+)=([\w.-]+)", script, re.M))
    assert constants["DEPLOYMENT"] == manifest("deployment.yaml")["metadata"]["name"]
    assert constants["CONTAINER"] == container()["name"]
    assert constants["SECRET"] == manifest("secret.yaml")["metadata"]["name"]
    assert constants["CONFIGMAP"] == manifest("configmap.yaml")["metadata"]["name"]
    assert int(constants["WEB_PORT"]) == container()["ports"][0]["containerPort"]
    label = manifest("deployment.yaml")["spec"]["selector"]["matchLabels"]
    for key, value in label.items():
        assert f"{key}={value}" in script
    for command in re.findall(r"rl-worker (\w+) --url", script):
        assert_cli_command([command, "--url"])
    for command in ("preflight", "status"):
        assert f" {command}" in script


def test_deploy_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    # docker, kubectl and rl-worker stand-ins that leave a mark: a dry run must call none of them
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kubectl", "rl-worker"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} >> {tmp_path}/called\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "DEPLOY_PYTHON": str(bin_dir / "rl-worker")}
    bash = shutil.which("bash") or "/bin/bash"
    done = subprocess.run([bash, str(ROOT / "scripts" / "deploy.sh"), "--dry-run"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    planned = [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert any(" preflight" in line for line in planned)
    assert planned.index(next(p for p in planned if " preflight" in p)) < planned.index(
        next(p for p in planned if "up -d --no-deps worker-1" in p)
    )
    assert [p for p in planned if "up -d --no-deps worker-" in p] == [
        f"docker compose -f {ROOT}/docker-compose.yml up -d --no-deps worker-{i}" for i in (1, 2)
    ]
    done = subprocess.run(
        [bash, str(ROOT / "scripts" / "deploy.sh"), "--dry-run", "--target", "kubernetes", "--image", "r/rl:2",
         "--first-deploy"], env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "rollout status deployment/rl-worker" in done.stdout
    # the pre-flight pod's overrides are a valid, restricted Pod spec with the workers' settings
    run_line = next(line for line in done.stdout.splitlines() if " run rl-worker-preflight-" in line)
    overrides = json.loads(shlex.split(run_line)[-1])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "preflight"}, "spec": overrides["spec"]}
    (pod_file := tmp_path / "preflight-pod.yaml").write_text(yaml.safe_dump(pod))
    checked = validate(pod_file)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (c,) = overrides["spec"]["containers"]
    assert c["args"] == ["preflight", "--first-deploy"] and c["image"] == "r/rl:2"
    assert c["envFrom"] == container()["envFrom"]
    assert "--first-deploy" in done.stdout and "r/rl:2" in done.stdout
    assert "secret.yaml" not in "".join(line for line in done.stdout.splitlines() if line.startswith("+ "))
    bad = subprocess.run([bash, str(ROOT / "scripts" / "deploy.sh"), "--nonsense"], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2
    assert not (tmp_path / "called").exists(), (tmp_path / "called").read_text()


def test_image_is_non_root_pinned_and_has_a_healthcheck() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"pip install[^\n]*-c constraints\.txt", dockerfile)
    assert "COPY constraints.txt" in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", dockerfile, re.M)
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert dockerfile.index("USER") > dockerfile.index("pip install")  # installs as root, runs as the user
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r"pip install[^\n]*-c constraints\.txt", test_sh), "CI installs from the same pins"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_constraints_pin_every_dependency_and_match_this_environment() -> None:
    import tomllib
    from importlib.metadata import PackageNotFoundError, version

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            assert pinned, f"constraints.txt: {line!r} is not an exact pin"
            pins[_normalise(name)] = pinned.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    for requirement in wanted:
        name = _normalise(re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is a dependency but not pinned: run scripts/update_constraints.sh"
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # a platform-specific pin
        assert installed == pinned, f"{name} {installed} installed, {pinned} pinned: run scripts/test.sh"


def test_compose_publishes_http_on_loopback_only_and_matches_the_web_port() -> None:
    services = compose()["services"]
    for name in ("worker-1", "worker-2"):
        service = services[name]
        env = service["environment"]
        (published,) = service["ports"]
        host, _host_port, container_port = published.split(":")
        assert host == "127.0.0.1", f"{name} publishes {published} beyond the loopback address"
        assert int(container_port) == int(env["RL_WEB_PORT"])
        assert "/health" in " ".join(service["healthcheck"]["test"])
        assert f":{env['RL_WEB_PORT']}/" in " ".join(service["healthcheck"]["test"])
        assert_cli_command(list(service["command"]))
    for name, service in services.items():
        for published in service.get("ports", []):
            assert str(published).startswith("127.0.0.1:"), f"{name} publishes {published} beyond loopback"
