"""Specification of the Kubernetes manifests (deploy/k8s), checked structurally.

No cluster is needed: the tests parse every manifest and check that the objects reference each other
consistently (labels and selectors, ports, volumes, claims, the ConfigMap), that every workload is probed on
/healthz and /readyz, limited and locked down, and that the PrometheusRule carries exactly the alert groups of
deploy/prometheus/alerts.yml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.settings.configfile import apply_env
from selector.config import Config, parse_config
from tests.deploy.test_compose import CONFIG_PATH, PORT_KEY, config_key_problems

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"

COMMANDS = {"selector": "run", "selector-labels": "labels", "selector-serve": "serve-model"}
"""The Deployments and the subcommand each runs."""

Doc = dict[str, Any]


def load_documents() -> list[Doc]:
    docs = []
    for path in sorted(K8S_DIR.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None)
    return docs


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity (``500m``, ``2``, ``512Mi``, ``1G``) as a number."""
    units = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match is not None, value
    return float(match.group(1)) * (units[match.group(2)] if match.group(2) else 1)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return load_documents()


@pytest.fixture(scope="module")
def by_kind(docs: list[Doc]) -> dict[str, dict[str, Doc]]:
    out: dict[str, dict[str, Doc]] = {}
    for doc in docs:
        out.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return out


@pytest.fixture(scope="module")
def deployments(by_kind: dict[str, dict[str, Doc]]) -> dict[str, Doc]:
    return by_kind["Deployment"]


@pytest.fixture(scope="module")
def config(by_kind: dict[str, dict[str, Doc]]) -> Config:
    data = yaml.safe_load(by_kind["ConfigMap"]["selector-config"]["data"]["config.yaml"])
    return parse_config(data, "deploy/k8s/configmap.yaml")


def container(deployment: Doc) -> Doc:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def metrics_port(c: Doc) -> int:
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    return int(ports["metrics"])


def resolve_port(c: Doc, port: str | int) -> int:
    """A probe's or Service's target port, by name or number, as a container port the container declares."""
    declared = {p["containerPort"]: p for p in c["ports"]}
    named = {p["name"]: p["containerPort"] for p in c["ports"] if "name" in p}
    number = named[port] if isinstance(port, str) else port
    assert number in declared, port
    return int(number)


class TestManifests:
    def test_every_document_parses_and_is_an_object(self, docs: list[Doc]) -> None:
        """Every document has apiVersion, kind and a name."""
        assert docs
        for doc in docs:
            assert doc["apiVersion"]
            assert doc["kind"]
            assert doc["metadata"]["name"]

    def test_the_expected_objects_exist(self, by_kind: dict[str, dict[str, Doc]]) -> None:
        """Workloads, storage, configuration, services, disruption budget and monitoring objects."""
        assert set(by_kind["Deployment"]) == set(COMMANDS)
        assert set(by_kind["PersistentVolumeClaim"]) == {"selector-data", "selector-models"}
        assert "selector-config" in by_kind["ConfigMap"]
        assert len(by_kind["Service"]) == 3
        assert "selector" in by_kind["PodDisruptionBudget"]
        assert by_kind["ServiceMonitor"]
        assert by_kind["PrometheusRule"]

    def test_one_namespace_for_everything(self, docs: list[Doc], by_kind: dict[str, dict[str, Doc]]) -> None:
        """Namespaced objects live in the Namespace the manifests create."""
        (namespace,) = by_kind["Namespace"]
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]

    def test_kustomization_lists_every_manifest(self) -> None:
        """kubectl apply -k applies all of them."""
        kustomization = yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text(encoding="utf-8"))
        manifests = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
        assert set(kustomization["resources"]) == manifests

    def test_images_name_no_registry(self, deployments: dict[str, Doc]) -> None:
        """The image is the locally built one; the registry is set at deploy time (kustomize images)."""
        for name, deployment in deployments.items():
            image = container(deployment)["image"]
            assert re.fullmatch(r"selector:[\w.-]+", image), name


class TestConfigMap:
    def test_config_validates(self, config: Config) -> None:
        """The mounted config is valid as it is and serves metrics beyond the loopback."""
        assert config.metrics.host == "0.0.0.0"
        assert config.retrain.builtin is True

    @pytest.mark.parametrize("name", COMMANDS)
    def test_container_environment_names_config_keys(
        self, deployments: dict[str, Doc], by_kind: dict[str, dict[str, Doc]], name: str
    ) -> None:
        """Every SELECTOR_ variable names a real key and the config with it applied validates."""
        env = {e["name"]: e.get("value", "") for e in container(deployments[name]).get("env", [])}
        assert config_key_problems(list(env)) == []
        assert "SELECTOR_KAFKA__BOOTSTRAP_SERVERS" in env
        data = yaml.safe_load(by_kind["ConfigMap"]["selector-config"]["data"]["config.yaml"])
        apply_env(data, env)
        cfg = parse_config(data)
        assert cfg.kafka.bootstrap_servers == env["SELECTOR_KAFKA__BOOTSTRAP_SERVERS"]
        assert cfg.kafka.bootstrap_servers != "embedded"


class TestDeployments:
    @pytest.mark.parametrize(("name", "command"), COMMANDS.items())
    def test_runs_its_command_on_the_config_map(
        self, deployments: dict[str, Doc], name: str, command: str
    ) -> None:
        """The container runs its subcommand on config.yaml of the ConfigMap, mounted read-only."""
        deployment = deployments[name]
        c = container(deployment)
        assert c["args"] == [command, "-c", CONFIG_PATH]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(Path(CONFIG_PATH).parent))
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["configMap"]["name"] == "selector-config"

    @pytest.mark.parametrize(("name", "command"), COMMANDS.items())
    def test_metrics_port_is_the_configured_one(
        self, deployments: dict[str, Doc], config: Config, name: str, command: str
    ) -> None:
        """The port named metrics is the one the process listens on."""
        assert metrics_port(container(deployments[name])) == getattr(config.metrics, PORT_KEY[command])

    @pytest.mark.parametrize("name", COMMANDS)
    def test_probed_for_liveness_and_readiness(self, deployments: dict[str, Doc], name: str) -> None:
        """Liveness asks /healthz, readiness /readyz, both on the metrics port."""
        c = container(deployments[name])
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path
            assert resolve_port(c, get["port"]) == metrics_port(c)

    @pytest.mark.parametrize("name", COMMANDS)
    def test_resources_requested_and_limited(self, deployments: dict[str, Doc], name: str) -> None:
        """CPU and memory have requests and limits, requests not above limits."""
        resources = container(deployments[name])["resources"]
        for kind in ("cpu", "memory"):
            assert quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind])

    @pytest.mark.parametrize("name", COMMANDS)
    def test_locked_down(self, deployments: dict[str, Doc], name: str) -> None:
        """Non-root uid 10001, read-only root, no privilege escalation, no capabilities, default seccomp."""
        pod = deployments[name]["spec"]["template"]["spec"]
        security = {**pod.get("securityContext", {}), **container(deployments[name])["securityContext"]}
        assert security["runAsNonRoot"] is True
        assert security["runAsUser"] == 10001
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["seccompProfile"]["type"] == "RuntimeDefault"

    @pytest.mark.parametrize("name", COMMANDS)
    def test_tmp_is_an_empty_dir(self, deployments: dict[str, Doc], name: str) -> None:
        """/tmp (HOME and TMPDIR of the image) is the writable scratch space."""
        deployment = deployments[name]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mount = next(m for m in container(deployment)["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in volumes[mount["name"]]

    @pytest.mark.parametrize("name", COMMANDS)
    def test_mounts_name_declared_volumes_and_claims(
        self, deployments: dict[str, Doc], by_kind: dict[str, dict[str, Doc]], name: str
    ) -> None:
        """Every mount names a volume of the pod; every claim exists."""
        spec = deployments[name]["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container(deployments[name])["volumeMounts"]:
            assert mount["name"] in volumes
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]

    @pytest.mark.parametrize("name", COMMANDS)
    def test_drains_on_termination(self, deployments: dict[str, Doc], name: str) -> None:
        """SIGTERM drains and commits: the pod gets 60 s before SIGKILL."""
        assert deployments[name]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60

    @pytest.mark.parametrize("name", COMMANDS)
    def test_selector_matches_the_pod_template(self, deployments: dict[str, Doc], name: str) -> None:
        """The Deployment's selector selects its own pods and no other Deployment's."""
        selector = deployments[name]["spec"]["selector"]["matchLabels"]
        for other, deployment in deployments.items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selects(selector, labels) == (other == name), other

    def test_monitor_scales_out_without_disruption(self, deployments: dict[str, Doc]) -> None:
        """Two monitors share the partitions; a rollout adds one before removing one."""
        spec = deployments["selector"]["spec"]
        assert spec["replicas"] == 2
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    def test_monitor_has_enough_partitions(self, deployments: dict[str, Doc], config: Config) -> None:
        """A replica without partitions is never ready: created topics have a partition per replica."""
        assert config.kafka.topic_partitions >= deployments["selector"]["spec"]["replicas"]

    def test_label_loop_is_a_single_writer(self, deployments: dict[str, Doc]) -> None:
        """One label loop per deployment (SQLite); Recreate stops the old pod before the new one starts."""
        spec = deployments["selector-labels"]["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"]["type"] == "Recreate"

    def test_label_loop_writes_dataset_and_registry(
        self, deployments: dict[str, Doc], config: Config
    ) -> None:
        """The dataset's folder and the registry are claims mounted writable at the configured paths."""
        deployment = deployments["selector-labels"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["mountPath"]: m for m in container(deployment)["volumeMounts"]}
        claims = {}
        for path in (str(Path(config.dataset.path).parent), config.retrain.registry):
            assert not mounts[path].get("readOnly", False)
            claims[path] = volumes[mounts[path]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claims == {
            str(Path(config.dataset.path).parent): "selector-data",
            config.retrain.registry: "selector-models",
        }

    def test_inference_connector_reads_the_registry(
        self, deployments: dict[str, Doc], by_kind: dict[str, dict[str, Doc]], config: Config
    ) -> None:
        """selector-serve mounts the label loop's registry claim read-only; the claim is ReadWriteMany."""
        deployment = deployments["selector-serve"]
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        mount = next(
            m for m in container(deployment)["volumeMounts"] if m["mountPath"] == config.retrain.registry
        )
        assert mount["readOnly"] is True
        claim = volumes[mount["name"]]["persistentVolumeClaim"]
        assert claim["claimName"] == "selector-models"
        assert claim["readOnly"] is True
        assert "ReadWriteMany" in by_kind["PersistentVolumeClaim"]["selector-models"]["spec"]["accessModes"]


class TestServicesAndMonitoring:
    @pytest.mark.parametrize("name", COMMANDS)
    def test_one_service_exposes_each_metrics_port(
        self, deployments: dict[str, Doc], by_kind: dict[str, dict[str, Doc]], name: str
    ) -> None:
        """Exactly one Service selects the Deployment's pods, on a port named metrics that reaches them."""
        deployment = deployments[name]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        services = [s for s in by_kind["Service"].values() if selects(s["spec"]["selector"], labels)]
        assert len(services) == 1
        (port,) = [p for p in services[0]["spec"]["ports"] if p["name"] == "metrics"]
        c = container(deployment)
        assert resolve_port(c, port["targetPort"]) == metrics_port(c)

    def test_disruption_budget_keeps_a_monitor(
        self, deployments: dict[str, Doc], by_kind: dict[str, dict[str, Doc]]
    ) -> None:
        """The PDB selects exactly the monitor's pods and keeps one of its replicas."""
        pdb = by_kind["PodDisruptionBudget"]["selector"]["spec"]
        for name, deployment in deployments.items():
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert selects(pdb["selector"]["matchLabels"], labels) == (name == "selector"), name
        assert 1 <= pdb["minAvailable"] < deployments["selector"]["spec"]["replicas"]

    def test_service_monitor_scrapes_every_service(self, by_kind: dict[str, dict[str, Doc]]) -> None:
        """The ServiceMonitor selects the three Services in their namespace, on the metrics port."""
        (monitor,) = by_kind["ServiceMonitor"].values()
        spec = monitor["spec"]
        for service in by_kind["Service"].values():
            assert selects(spec["selector"]["matchLabels"], service["metadata"]["labels"])
            assert service["metadata"]["namespace"] in spec["namespaceSelector"]["matchNames"]
        assert [e["port"] for e in spec["endpoints"]] == ["metrics"]
        assert all(e.get("path", "/metrics") == "/metrics" for e in spec["endpoints"])

    def test_job_names_match_the_prometheus_configuration(self, by_kind: dict[str, dict[str, Doc]]) -> None:
        """The ServiceMonitor's jobs (the Service names) are the jobs of prometheus.yml the alerts were
        written against."""
        path = PROMETHEUS_DIR / "prometheus.yml"
        if not path.exists():
            pytest.skip("deploy/prometheus/prometheus.yml is not written yet")
        scrape = yaml.safe_load(path.read_text(encoding="utf-8"))["scrape_configs"]
        jobs = {job["job_name"] for job in scrape if job["job_name"].startswith("selector")}
        assert set(by_kind["Service"]) == jobs

    def test_prometheus_rule_carries_the_alerts_of_compose(self, by_kind: dict[str, dict[str, Doc]]) -> None:
        """The PrometheusRule's groups equal deploy/prometheus/alerts.yml's: one set of alerts everywhere."""
        path = PROMETHEUS_DIR / "alerts.yml"
        if not path.exists():
            pytest.skip("deploy/prometheus/alerts.yml is not written yet")
        alerts = yaml.safe_load(path.read_text(encoding="utf-8"))
        (rule,) = by_kind["PrometheusRule"].values()
        assert alerts["groups"]
        assert rule["spec"]["groups"] == alerts["groups"]
