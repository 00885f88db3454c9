"""The deployment kit under docker/: its files parse, the configs it ships are valid config trees,
the Grafana dashboard queries only metrics the worker exposes, the KEDA ceiling is the
partition count, and the Helm chart's values hold a valid config with secrets only from a Secret.
Static checks: no Docker engine, broker or Redis (helm renders the chart when installed)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram, Summary, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from streamer.metrics import Metrics
from streamer.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DASHBOARD = DOCKER / "grafana" / "dashboards" / "streamer.json"
DATASOURCES = DOCKER / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
K8S_DEPLOYMENT = DOCKER / "k8s" / "deployment.yaml"
KEDA = DOCKER / "k8s" / "keda-scaledobject.yaml"
LOCAL_CONFIG = ROOT / "configs" / "local.yaml"
CHART = DOCKER / "helm" / "streamer"
HELM = Path(os.environ.get("STREAMER_TOOLS", Path.home() / ".cache" / "streamer")) / "bin" / "helm-v3.22.0"
KIT_FILES = sorted(
    p
    for p in DOCKER.rglob("*")
    if p.is_file() and p.suffix in {".yml", ".yaml", ".json"} and "templates" not in p.parts  # Go templates
)


def documents(path: Path) -> list[Any]:
    """Every document in a YAML file (compose and k8s files may hold several), or the JSON one."""
    text = path.read_text()
    if path.suffix == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def k8s_object(path: Path, kind: str) -> dict[str, Any]:
    found = [doc for doc in documents(path) if isinstance(doc, dict) and doc.get("kind") == kind]
    assert len(found) == 1, f"{path.relative_to(ROOT)}: expected one {kind}, found {len(found)}"
    return found[0]


# --- (a) every YAML and JSON file parses ---------------------------------------------------------


def test_kit_files_are_found() -> None:
    """Guards the parametrized test below against silently running on an empty glob."""
    names = {p.relative_to(DOCKER).as_posix() for p in KIT_FILES}
    assert {"compose.yml", "config.yaml", "prometheus.yml", "grafana/dashboards/streamer.json"} <= names
    assert {"k8s/deployment.yaml", "k8s/keda-scaledobject.yaml"} <= names
    assert {"helm/streamer/Chart.yaml", "helm/streamer/values.yaml", "helm/streamer/values.schema.json"} <= names


@pytest.mark.parametrize("path", KIT_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_kit_file_parses(path: Path) -> None:
    assert documents(path), f"{path.relative_to(ROOT)} holds no document"


# --- the configs the kit ships are valid config trees ------------------------------------------


def test_container_config_is_a_valid_config() -> None:
    settings = load_settings(DOCKER / "config.yaml", environ={})
    assert settings.kafka.common["bootstrap.servers"] == "kafka:9092"
    assert settings.metrics.host == "0.0.0.0"
    assert settings.metrics.port == 9400
    assert str(settings.model.feature_spec) == "/app/configs/features/fraud.yaml"


def test_k8s_configmap_holds_a_valid_config(tmp_path: Path) -> None:
    configmap = k8s_object(K8S_DEPLOYMENT, "ConfigMap")
    path = tmp_path / "config.yaml"
    path.write_text(configmap["data"]["config.yaml"])
    settings = load_settings(path, environ={})
    assert settings.metrics.port == 9400
    assert settings.topics.partitions == load_settings(LOCAL_CONFIG, environ={}).topics.partitions


# --- (b) the dashboard queries only metrics the worker exposes ----------------------------------


def exercised_exposition() -> str:
    """The text format of a fresh `Metrics` after one observation on every metric. A labelled
    metric has no sample until a label set is used, so each gets one (any values will do)."""
    metrics = Metrics.create()
    for field in dataclasses.fields(metrics):
        metric = getattr(metrics, field.name)
        if not isinstance(metric, MetricWrapperBase):
            continue  # the registry itself
        labelnames = metric._labelnames
        child = metric.labels(*["0"] * len(labelnames)) if labelnames else metric
        if isinstance(metric, Counter):
            child.inc()
        elif isinstance(metric, Gauge):
            child.set(1)
        elif isinstance(metric, Histogram | Summary):
            child.observe(0.01)
        else:
            raise AssertionError(f"Metrics.{field.name}: no observation defined for {type(metric).__name__}")
    return generate_latest(metrics.registry).decode()


def exposed_names(exposition: str) -> set[str]:
    """Family names from `# TYPE` lines and sample names (`_total`, `_bucket`, `_sum`, ...)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_exposed_names_reads_types_and_samples() -> None:
    exposition = '# TYPE a_total counter\na_total 1.0\n# TYPE h histogram\nh_bucket{le="1.0"} 1.0\nh_sum 0.5\n'
    assert exposed_names(exposition) == {"a_total", "h", "h_bucket", "h_sum"}


def test_dashboard_queries_only_exposed_metrics() -> None:
    used = set(re.findall(r"streamer_[a-z_]+", DASHBOARD.read_text()))
    assert used, "the dashboard queries no streamer_ metric"
    missing = sorted(used - exposed_names(exercised_exposition()))
    assert not missing, f"{DASHBOARD.relative_to(ROOT)} uses metrics streamer.metrics does not expose: {missing}"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uids = {source["uid"] for source in documents(DATASOURCES)[0]["datasources"]}
    dashboard_uids = {
        m.group(1) for m in re.finditer(r'"datasource":\s*\{[^{}]*"uid":\s*"([^"]+)"', DASHBOARD.read_text())
    }
    assert dashboard_uids, "the dashboard names no datasource uid"
    assert dashboard_uids <= uids, f"dashboard datasource uids {dashboard_uids} not provisioned ({uids})"


# --- (c) the autoscaling ceiling is the partition count -----------------------------------------


def test_keda_ceiling_is_the_partition_count() -> None:
    """Replicas beyond the partition count get no partition and sit idle."""
    scaled = k8s_object(KEDA, "ScaledObject")
    local = yaml.safe_load(LOCAL_CONFIG.read_text())
    assert scaled["spec"]["maxReplicaCount"] == local["topics"]["partitions"]
    assert scaled["spec"]["minReplicaCount"] == 1
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == local["kafka"]["consumer"]["group.id"]
    assert trigger["metadata"]["topic"] == local["topics"]["input"]


# --- (d) the Helm chart --------------------------------------------------------------------------


def chart_values() -> dict[str, Any]:
    values = documents(CHART / "values.yaml")[0]
    assert isinstance(values, dict)
    return values


def test_chart_config_is_a_valid_config_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    """The ConfigMap holds `config` verbatim; the Secret's keys arrive as the env variables
    `secrets.env` names, and those must be the ones the worker reads as secrets."""
    values = chart_values()
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values["config"]))
    environ = {name: f"from-secret-{key}" for name, key in values["secrets"]["env"].items()}
    settings = load_settings(path, environ=environ)
    assert settings.features.password is not None
    assert settings.features.password.get_secret_value() == "from-secret-redis-password"
    assert settings.kafka.common["sasl.password"] == "from-secret-kafka-sasl-password"
    assert settings.schemas.registry_config["basic.auth.user.info"] == "from-secret-schema-registry-user-info"
    assert settings.topics.partitions == load_settings(LOCAL_CONFIG, environ={}).topics.partitions
    assert settings.metrics.host == "0.0.0.0"


def test_chart_requests_fit_the_measured_worker() -> None:
    """load/BENCHMARKS.md: a steady 624 MiB RSS over the soak; the request must hold it."""
    resources = chart_values()["resources"]
    mib = {"Mi": 1, "Gi": 1024}
    request = resources["requests"]["memory"]
    assert int(request[:-2]) * mib[request[-2:]] >= 624
    assert "cpu" not in resources.get("limits", {}), "a CPU limit throttles TensorFlow's thread pools"


def render(*args: str) -> list[dict[str, Any]]:
    if not HELM.exists():
        pytest.skip(f"{HELM} not installed (docker/validate.sh installs it)")
    command = [str(HELM), "template", "t", str(CHART), "--kube-version", "1.37.0", *args]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_rendered_chart_scales_to_the_partitions_and_probes_health() -> None:
    objects = {doc["kind"]: doc for doc in render()}
    values = chart_values()
    scaled = objects["ScaledObject"]["spec"]
    assert scaled["maxReplicaCount"] == values["config"]["topics"]["partitions"]
    assert scaled["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert scaled["triggers"][0]["metadata"]["consumerGroup"] == values["config"]["kafka"]["consumer"]["group.id"]
    deployment = objects["Deployment"]["spec"]
    assert "replicas" not in deployment  # KEDA's HPA owns the count
    (worker,) = deployment["template"]["spec"]["containers"]
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert yaml.safe_load(objects["ConfigMap"]["data"]["config.yaml"]) == values["config"]
    monitor = objects["ServiceMonitor"]["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert monitor["selector"]["matchLabels"].items() <= objects["Service"]["metadata"]["labels"].items()


def test_rendered_chart_takes_secrets_by_reference_only() -> None:
    objects = render("--set", "secrets.existingSecret=s", "--set", "keda.enabled=false")
    deployment = next(doc for doc in objects if doc["kind"] == "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["STREAMER_FEATURES__PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "s"
    assert deployment["spec"]["replicas"] == 1
    for bad in (
        "config.features.password=x",
        "config.kafka.common.sasl\\.password=x",
        "config.schemas.registry_config.basic\\.auth\\.user\\.info=x",
        "keda.maxReplicaCount=9",
    ):
        command = [str(HELM), "template", "t", str(CHART), "--kube-version", "1.37.0", "--set", bad]
        refused = subprocess.run(command, capture_output=True)
        assert refused.returncode != 0, bad
