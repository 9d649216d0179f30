"""The deployment files agree with the code: configs validate strictly, commands parse.

Docker and Kubernetes do not run on this machine; these checks catch drift between the files
and the CLI/config they call, which is how such files usually break.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from citybrain.cli import build_parser
from citybrain.config import CitybrainConfig

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def parses(args: list[str]) -> None:
    args = [a.replace("$(POD_NAME)", "citybrain-ingest-0") for a in args]
    build_parser().parse_args(args)


def test_configs_validate_against_the_strict_schema() -> None:
    CitybrainConfig.model_validate(yaml.safe_load((DEPLOY / "center/citybrain.yaml").read_text()))
    (configmap,) = yaml.safe_load_all((DEPLOY / "k8s/configmap.yaml").read_text())
    config = CitybrainConfig.model_validate(yaml.safe_load(configmap["data"]["citybrain.yaml"]))
    assert config.bus.cluster and config.api.auth


def test_compose_services_run_real_commands() -> None:
    compose = yaml.safe_load((DEPLOY / "center/docker-compose.yml").read_text())
    services = compose["services"]
    workers = ("ingest-1", "ingest-2", "api", "forecast", "signals")
    assert {"valkey", "postgres", *workers} <= set(services)
    for name in workers:
        parses(services[name]["command"])
    assert "--aclfile" in services["valkey"]["command"][0]
    assert "user default on >" in services["valkey"]["command"][0]  # never a passwordless default


def test_kubernetes_workloads_run_real_commands_and_probe_health() -> None:
    docs = {}
    for path in (DEPLOY / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    ingest = docs[("StatefulSet", "citybrain-ingest")]["spec"]["template"]["spec"]
    parses(ingest["containers"][0]["args"])
    api = docs[("Deployment", "citybrain-api")]["spec"]["template"]["spec"]["containers"][0]
    parses(api["args"])
    assert api["readinessProbe"]["httpGet"]["path"] == "/health"
    for planner in ("citybrain-forecast", "citybrain-signals"):
        spec = docs[("Deployment", planner)]["spec"]
        assert spec["replicas"] == 1  # each pass covers the whole city; two would repeat it
        parses(spec["template"]["spec"]["containers"][0]["args"])
    assert docs[("Service", "citybrain-api")]["spec"]["selector"] == {"app": "citybrain-api"}
    assert all(
        doc["metadata"].get("namespace", "citybrain") == "citybrain" for doc in docs.values()
    )
