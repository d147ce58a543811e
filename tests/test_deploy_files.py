"""The deployment files: the Dockerfile (read statically here, built and run when a Docker engine answers),
compose.yaml, the Kubernetes and KEDA manifests and the systemd units agree with each other and with the settings
they configure (every GOPHERQ_* variable and the ConfigMap's file are loaded as a worker would load them)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from gopherq.core.keys import QueueKeys
from gopherq.core.settings import Settings, load_settings
from tests.support.common import REPO, wait_until
from tests.support.loopback import LoopbackServer

DEPLOY = REPO / "deploy"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib


# -- Dockerfile ----------------------------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    return stages


def test_dockerfile_is_multi_stage_non_root_without_build_tools_and_with_a_health_check() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "a builder stage and a final stage"
    builder, final = stages[0], stages[-1]
    assert "slim" in builder[0][1] and "slim" in final[0][1]
    assert builder[0][1].endswith("AS builder")
    assert any(name == "RUN" and "-m build --wheel" in args for name, args in builder)

    final_text = " ".join(args for _name, args in final)
    for tool in ("gcc", "build-essential", "apt-get install", "make ", "g++"):
        assert tool not in final_text, f"{tool!r} in the final stage"
    assert not any(name in ("ADD",) or (name == "COPY" and "--from=builder" not in args) for name, args in final), (
        "the final stage copies only the built environment from the builder"
    )
    users = [args for name, args in final if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = [args for name, args in final if name == "HEALTHCHECK"]
    assert healthcheck and '["gopherq", "ping"]' in healthcheck[0]
    assert ("STOPSIGNAL", "SIGTERM") in final
    assert ("ENTRYPOINT", '["gopherq"]') in final and ("CMD", '["run"]') in final
    # Every file the builder copies is in the build context (.dockerignore does not hide it).
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line and line[0] != "#"}
    for name, args in builder:
        if name == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists() and source not in ignored, source


def docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.chaos
@pytest.mark.skipif(not docker_works(), reason="no Docker engine answers `docker info` on this machine")
def test_the_image_builds_runs_as_non_root_and_runs_a_worker(
    redis_url: str, queue_name: str, loopback: LoopbackServer
) -> None:  # pragma: no cover - needs a Docker engine
    tag = "gopherq-test:latest"
    built = subprocess.run(["docker", "build", "-t", tag, str(REPO)], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]

    def docker_run(*args: str, detach: bool = False) -> subprocess.CompletedProcess[str]:
        env = ["-e", f"GOPHERQ_REDIS__URL={redis_url}", "-e", f"GOPHERQ_QUEUE__NAME={queue_name}"]
        flags = ["-d"] if detach else ["--rm"]
        command = ["docker", "run", *flags, "--network", "host", *env, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert docker_run("--entrypoint", "id", tag, "-u").stdout.strip() == "10001"
    assert docker_run("--entrypoint", "sh", tag, "-c", "command -v gcc cc || echo none").stdout.strip() == "none"
    assert docker_run(tag, "ping").returncode == 0
    container = docker_run(tag, "run", detach=True).stdout.strip()
    client = redis.Redis.from_url(redis_url)
    try:
        task = {"id": "from-image", "method": "GET", "url": loopback.url("/ok")}
        client.rpush(queue_name, json.dumps(task))
        raw = wait_until(lambda: client.get(QueueKeys(queue_name).result("from-image")), timeout=60, what="result")
        assert json.loads(raw)["status"] == "succeeded"
        stopped = subprocess.run(["docker", "stop", "-t", "40", container], capture_output=True, timeout=60)
        assert stopped.returncode == 0
        state = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", container], capture_output=True, text=True, timeout=30
        )
        assert state.stdout.strip() == "0"  # SIGTERM: graceful shutdown
    finally:
        client.close()
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, timeout=60)


# -- settings the files configure ----------------------------------------------------------------------------------


def check_environment(variables: dict[str, str]) -> Settings:
    """Load settings from these variables as a worker would; sections this build does not have are left out (a
    file may configure a component, like the dashboard, that another module adds)."""
    known = {f"GOPHERQ_{name.upper()}__" for name in Settings.model_fields}
    usable = {k: str(v) for k, v in variables.items() if k.startswith(tuple(known)) or not k.startswith("GOPHERQ_")}
    usable.pop("GOPHERQ_CONFIG", None)
    return load_settings(None, environ=usable)


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "m" else 1)


def compose_defaults(text: str) -> str:
    """compose.yaml as `docker compose` reads it with none of its variables set: `${VAR:-default}` -> default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def test_compose_runs_redis_with_aof_a_worker_and_the_dashboard() -> None:
    compose = yaml.safe_load(compose_defaults((REPO / "compose.yaml").read_text()))
    services = compose["services"]
    assert set(services) >= {"redis", "worker", "web"}
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command and "--maxmemory-policy noeviction" in redis_command
    assert services["redis"]["volumes"] and "healthcheck" in services["redis"]

    worker, web = services["worker"], services["web"]
    for service in (worker, web):
        assert service["build"] == "." and service["depends_on"]["redis"]["condition"] == "service_healthy"
        settings = check_environment(service["environment"])
        assert settings.redis.url == "redis://redis:6379/0"
    assert worker["command"] == ["run"] and web["command"] == ["web"]
    shutdown = check_environment(worker["environment"]).worker.shutdown_timeout
    assert seconds(worker["stop_grace_period"]) > shutdown
    assert all(port.startswith("127.0.0.1:") for port in web["ports"]), "the dashboard is published on loopback only"
    assert "GOPHERQ_WEB__TOKEN" in web["environment"]


# -- Kubernetes and KEDA -------------------------------------------------------------------------------------------


def manifests(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}


def configmap_settings(tmp_path: Path) -> Settings:
    configmap = manifests(DEPLOY / "k8s" / "configmap.yaml")[("ConfigMap", "gopherq")]
    path = tmp_path / "gopherq.toml"
    path.write_text(configmap["data"]["gopherq.toml"])
    tomllib.loads(path.read_text())
    return load_settings(path, environ={})


def test_k8s_worker_outlives_its_shutdown_timeout_and_is_probed(tmp_path: Path) -> None:
    settings = configmap_settings(tmp_path)  # the ConfigMap's file is a valid gopherq.toml
    objects = manifests(DEPLOY / "k8s" / "deployment.yaml")
    secret = manifests(DEPLOY / "k8s" / "secret.example.yaml")[("Secret", "gopherq-redis")]

    worker = objects[("Deployment", "gopherq-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] > settings.worker.shutdown_timeout
    assert worker["securityContext"]["runAsNonRoot"] is True
    dockerfile_user = [args for name, args in dockerfile_stages()[-1] if name == "USER"][-1].split(":")[0]
    assert str(worker["securityContext"]["runAsUser"]) == dockerfile_user
    (container,) = worker["containers"]
    assert container["args"] == ["run"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["gopherq", "ping"]
    env = {item["name"]: item for item in container["env"]}
    mount = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["config"]
    assert env["GOPHERQ_CONFIG"]["value"] == f"{mount}/gopherq.toml"
    assert env["GOPHERQ_REDIS__PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] in secret["stringData"]
    check_environment({name: item.get("value", "x") for name, item in env.items()})

    web = objects[("Deployment", "gopherq-web")]["spec"]["template"]["spec"]
    (web_container,) = web["containers"]
    assert web_container["args"] == ["web"]
    assert web_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    labels = objects[("Deployment", "gopherq-web")]["spec"]["template"]["metadata"]["labels"]
    assert objects[("Service", "gopherq-web")]["spec"]["selector"] == labels


def test_keda_scales_the_worker_deployment_on_the_ready_list(tmp_path: Path) -> None:
    settings = configmap_settings(tmp_path)
    objects = manifests(DEPLOY / "keda" / "scaledobject.yaml")
    scaled = objects[("ScaledObject", "gopherq-worker")]["spec"]
    assert ("Deployment", scaled["scaleTargetRef"]["name"]) in manifests(DEPLOY / "k8s" / "deployment.yaml")
    assert scaled["minReplicaCount"] >= 1  # someone must promote delayed tasks and reap dead workers' leases
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == QueueKeys(settings.queue.name).ready
    assert int(trigger["metadata"]["listLength"]) > 0
    auth = objects[("TriggerAuthentication", trigger["authenticationRef"]["name"])]["spec"]
    secret = manifests(DEPLOY / "k8s" / "secret.example.yaml")[("Secret", "gopherq-redis")]
    assert auth["secretTargetRef"][0]["name"] == secret["metadata"]["name"]


# -- systemd -------------------------------------------------------------------------------------------------------


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return parser


@pytest.mark.parametrize(("name", "command"), [("gopherq.service", "run"), ("gopherq-web.service", "web")])
def test_systemd_units_stop_gracefully_and_run_unprivileged(name: str, command: str) -> None:
    service = unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/gopherq") and argv[1] == command and "-c" in argv
    assert service["KillSignal"] == "SIGTERM"
    assert service["User"] not in ("root", "0")
    assert service["RestartPreventExitStatus"] == "2"  # a bad config is not retried
    assert unit(name)["Install"]["WantedBy"] == "multi-user.target"
    if command == "run":
        # The supervisor forwards SIGTERM to its worker processes once: systemd must not signal them too.
        assert service["KillMode"] == "mixed"
        assert float(service["TimeoutStopSec"]) > Settings().worker.shutdown_timeout
    analyze = shutil.which("systemd-analyze")
    if analyze:
        result = subprocess.run([analyze, "verify", str(DEPLOY / "systemd" / name)], capture_output=True, text=True)
        assert "Unknown key" not in result.stderr and "Unknown section" not in result.stderr, result.stderr
