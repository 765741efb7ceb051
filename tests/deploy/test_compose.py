"""Specification of the container deployment: the Dockerfile and deploy/compose, checked structurally.

There is no container engine in the test environment, so these tests read the files and check what must hold
for ``docker compose up`` to work: services, commands, health checks, mounts, ports, environment overrides and
the mounted selector configuration agree with each other and with the application's configuration model.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from connectors.settings.configfile import ENV_PREFIX, load_config
from selector.config import Config, parse_config

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = REPO_ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
COMPOSE_CONFIG = COMPOSE_DIR / "selector.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
CONFIG_PATH = "/etc/selector/config.yaml"

SELECTOR_SERVICES = {"selector": "run", "selector-labels": "labels", "selector-serve": "serve-model"}
"""The services running the selector image, with their subcommand."""

PORT_KEY = {"run": "port", "labels": "labels_port", "serve-model": "serve_port"}
"""The ``metrics`` key holding each subcommand's HTTP port."""


def config_key_problems(names: list[str]) -> list[str]:
    """The ``SELECTOR_<SECTION>__<KEY>`` names among ``names`` that name no configuration key.

    Names without the prefix are not configuration overrides and are ignored. A ``_FILE`` suffix (read the
    value from a file) is allowed on the key.
    """
    problems = []
    for name in names:
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name.removeprefix(ENV_PREFIX).split("__")]
        model: type[BaseModel] = Config
        for depth, part in enumerate(parts):
            key = part.removesuffix("_file") if depth == len(parts) - 1 else part
            field = model.model_fields.get(key)
            if field is None:
                problems.append(f"{name}: {part!r} is not a key of {model.__name__}")
                break
            ann = field.annotation
            if depth < len(parts) - 1:
                if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                    problems.append(f"{name}: {part!r} is not a section")
                    break
                model = ann
            elif isinstance(ann, type) and issubclass(ann, BaseModel):
                problems.append(f"{name}: {part!r} is a section, not a key")
    return problems


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as a mapping (list or mapping syntax)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def short_volumes(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(source, target, mode)`` of each short-syntax volume of a service."""
    out = []
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        out.append((parts[0], parts[1], parts[2] if len(parts) > 2 else "rw"))
    return out


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def compose_config() -> Config:
    return load_config(COMPOSE_CONFIG, environ={})


class TestComposeFile:
    def test_has_the_expected_services(self, services: dict[str, Any]) -> None:
        """Kafka, the topic initialiser, the three selector processes, Prometheus and Grafana."""
        expected = {"kafka", "kafka-init", *SELECTOR_SERVICES, "prometheus", "grafana"}
        assert expected <= set(services)

    def test_every_host_path_exists(self, services: dict[str, Any]) -> None:
        """Bind mounts (relative to deploy/compose) name files and folders of the repository."""
        missing = [
            f"{name}: {source}"
            for name, service in services.items()
            for source, _, _ in short_volumes(service)
            if source.startswith((".", "/")) and not (COMPOSE_DIR / source).exists()
        ]
        assert not missing

    def test_build_context_holds_the_dockerfile(self, services: dict[str, Any]) -> None:
        """Every service that builds the image points at the repository root."""
        for name in SELECTOR_SERVICES:
            build = services[name]["build"]
            context = build if isinstance(build, str) else build["context"]
            assert (COMPOSE_DIR / context).resolve() == REPO_ROOT, name
            assert (COMPOSE_DIR / context / "Dockerfile").is_file(), name

    def test_named_volumes_are_declared(self, compose: dict[str, Any], services: dict[str, Any]) -> None:
        """A named volume a service mounts is declared at the top level (else compose refuses the file)."""
        declared = set(compose.get("volumes") or {})
        used = {
            source
            for service in services.values()
            for source, _, _ in short_volumes(service)
            if not source.startswith((".", "/"))
        }
        assert used
        assert used <= declared

    def test_depends_on_names_existing_services(self, services: dict[str, Any]) -> None:
        """depends_on only names services of this file, with a valid condition."""
        conditions = {"service_started", "service_healthy", "service_completed_successfully"}
        for name, service in services.items():
            deps = service.get("depends_on") or {}
            for dep in deps:
                assert dep in services, f"{name} -> {dep}"
                if isinstance(deps, dict):
                    assert deps[dep]["condition"] in conditions, f"{name} -> {dep}"


class TestSelectorServices:
    @pytest.mark.parametrize(("name", "command"), SELECTOR_SERVICES.items())
    def test_runs_its_command_on_the_mounted_config(
        self, services: dict[str, Any], name: str, command: str
    ) -> None:
        """Each service runs its subcommand on the read-only mounted selector.yaml."""
        service = services[name]
        assert service["command"] == [command, "-c", CONFIG_PATH]
        assert ("./selector.yaml", CONFIG_PATH, "ro") in short_volumes(service)

    @pytest.mark.parametrize(("name", "command"), SELECTOR_SERVICES.items())
    def test_health_checked_on_its_own_port(
        self, services: dict[str, Any], compose_config: Config, name: str, command: str
    ) -> None:
        """The health check asks /healthz on the port the process serves (no curl in the slim image)."""
        port = getattr(compose_config.metrics, PORT_KEY[command])
        check = healthcheck_text(services[name])
        assert f"127.0.0.1:{port}/healthz" in check
        assert "python" in check
        assert "curl" not in check

    @pytest.mark.parametrize(("name", "command"), SELECTOR_SERVICES.items())
    def test_publishes_its_metrics_port(
        self, services: dict[str, Any], compose_config: Config, name: str, command: str
    ) -> None:
        """The metrics port of the process is published."""
        port = getattr(compose_config.metrics, PORT_KEY[command])
        assert f"{port}:{port}" in services[name]["ports"]

    @pytest.mark.parametrize("name", SELECTOR_SERVICES)
    def test_restarts_and_drains_on_stop(self, services: dict[str, Any], name: str) -> None:
        """A failed process (e.g. exit 3, Kafka unreachable) is restarted; a stop leaves time to drain."""
        service = services[name]
        assert service["restart"] in {"on-failure", "unless-stopped", "always"}
        grace = re.fullmatch(r"(\d+)s", str(service["stop_grace_period"]))
        assert grace is not None
        assert int(grace.group(1)) >= 30

    @pytest.mark.parametrize("name", SELECTOR_SERVICES)
    def test_read_only_root_filesystem(self, services: dict[str, Any], name: str) -> None:
        """The container writes only to its volumes and a tmpfs /tmp (HOME and TMPDIR in the image)."""
        service = services[name]
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]

    @pytest.mark.parametrize("name", SELECTOR_SERVICES)
    def test_starts_after_the_topics_exist(self, services: dict[str, Any], name: str) -> None:
        """The processes start once kafka-init created the topics (create_topics is off)."""
        assert services[name]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"

    @pytest.mark.parametrize("name", SELECTOR_SERVICES)
    def test_environment_names_config_keys(self, services: dict[str, Any], name: str) -> None:
        """Every SELECTOR_ variable names a real section and key, and the overridden config validates."""
        env = environment(services[name])
        assert config_key_problems(list(env)) == []
        cfg = load_config(COMPOSE_CONFIG, environ=env)
        assert cfg.kafka.bootstrap_servers == env["SELECTOR_KAFKA__BOOTSTRAP_SERVERS"]
        assert cfg.metrics.host == "0.0.0.0"

    def test_same_image_for_all_processes(self, services: dict[str, Any]) -> None:
        """One image, built once, runs the three processes."""
        images = {services[name]["image"] for name in SELECTOR_SERVICES}
        assert len(images) == 1

    def test_label_loop_owns_dataset_and_registry(
        self, services: dict[str, Any], compose_config: Config
    ) -> None:
        """The dataset's folder and the model registry are named volumes, writable by the label loop."""
        mounts = {
            target: (source, mode) for source, target, mode in short_volumes(services["selector-labels"])
        }
        data_dir = str(Path(compose_config.dataset.path).parent)
        assert mounts[data_dir][1] == "rw"
        assert mounts[compose_config.retrain.registry][1] == "rw"
        assert not mounts[compose_config.retrain.registry][0].startswith((".", "/"))

    def test_inference_connector_reads_the_same_registry(
        self, services: dict[str, Any], compose_config: Config
    ) -> None:
        """selector-serve mounts the label loop's registry volume, read-only, at the configured path."""
        registry = compose_config.retrain.registry
        labels = {t: s for s, t, _ in short_volumes(services["selector-labels"])}
        serve = {t: (s, mode) for s, t, mode in short_volumes(services["selector-serve"])}
        assert serve[registry] == (labels[registry], "ro")

    def test_monitor_mounts_no_state(self, services: dict[str, Any]) -> None:
        """The monitor keeps its state in Kafka (selector-state), so scaling it out needs no volume."""
        assert [t for _, t, _ in short_volumes(services["selector"])] == [CONFIG_PATH]


class TestKafkaServices:
    def test_kafka_is_a_single_kraft_node(self, services: dict[str, Any]) -> None:
        """The official image, version 3.9 or newer, as broker and controller, advertising kafka:9092."""
        kafka = services["kafka"]
        image = re.fullmatch(r"apache/kafka:(\d+)\.(\d+)\.(\d+)", kafka["image"])
        assert image is not None
        assert (int(image.group(1)), int(image.group(2))) >= (3, 9)
        env = environment(kafka)
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        assert {"PLAINTEXT://:9092", "CONTROLLER://:9093"} <= set(env["KAFKA_LISTENERS"].split(","))
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"

    def test_kafka_health_check_asks_the_broker(self, services: dict[str, Any]) -> None:
        """Healthy means the broker answers an ApiVersions request."""
        assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in healthcheck_text(services["kafka"])

    def test_kafka_init_runs_once_after_kafka_is_healthy(self, services: dict[str, Any]) -> None:
        """kafka-init waits for a healthy broker, uses the same image and is not restarted."""
        init = services["kafka-init"]
        assert init["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert init["image"] == services["kafka"]["image"]
        assert init["restart"] == "no"

    def test_kafka_init_creates_every_configured_topic(
        self, services: dict[str, Any], compose_config: Config
    ) -> None:
        """Each topic of the configuration is created idempotently; the state topic compacted, 1 partition."""
        script = " ".join(services["kafka-init"]["command"])
        assert "kafka-topics.sh" in script
        assert "--if-not-exists" in script
        words = set(re.split(r"[\s;]+", script))
        for topic in compose_config.topics.model_dump().values():
            assert topic in words, topic
        state_line = next(line for line in script.splitlines() if compose_config.topics.state in line.split())
        assert "--config cleanup.policy=compact" in state_line
        assert "--partitions 1" in state_line

    def test_selector_config_matches_the_broker(
        self, services: dict[str, Any], compose_config: Config
    ) -> None:
        """The config names the advertised listener and leaves topic creation to kafka-init."""
        advertised = environment(services["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
        assert f"PLAINTEXT://{compose_config.kafka.bootstrap_servers}" in advertised.split(",")
        assert compose_config.kafka.create_topics is False


class TestObservabilityServices:
    def test_prometheus_mounts_its_config_and_rules(self, services: dict[str, Any]) -> None:
        """Prometheus reads deploy/prometheus/prometheus.yml and alerts.yml and serves on 9090."""
        prometheus = services["prometheus"]
        assert prometheus["image"].startswith("prom/prometheus:")
        mounts = {t: s for s, t, _ in short_volumes(prometheus)}
        assert mounts["/etc/prometheus/prometheus.yml"] == "../prometheus/prometheus.yml"
        assert mounts["/etc/prometheus/alerts.yml"] == "../prometheus/alerts.yml"
        assert "9090:9090" in prometheus["ports"]

    def test_prometheus_scrapes_each_selector_process(
        self, services: dict[str, Any], compose_config: Config
    ) -> None:
        """The scrape configuration targets each selector service on its metrics port."""
        path = COMPOSE_DIR / "../prometheus/prometheus.yml"
        if not path.exists():
            pytest.skip("deploy/prometheus/prometheus.yml is not written yet")
        text = path.read_text(encoding="utf-8")
        for name, command in SELECTOR_SERVICES.items():
            assert f"{name}:{getattr(compose_config.metrics, PORT_KEY[command])}" in text

    def test_grafana_mounts_provisioning_and_dashboards(self, services: dict[str, Any]) -> None:
        """Grafana reads the provisioning and dashboards of deploy/grafana and serves on 3000."""
        grafana = services["grafana"]
        assert grafana["image"].startswith("grafana/grafana:")
        mounts = {t: s for s, t, _ in short_volumes(grafana)}
        assert mounts["/etc/grafana/provisioning"] == "../grafana/provisioning"
        assert mounts["/var/lib/grafana/dashboards"] == "../grafana/dashboards"
        assert "3000:3000" in grafana["ports"]


class TestComposeConfig:
    def test_validates(self) -> None:
        """deploy/compose/selector.yaml is a valid configuration as it is."""
        data = yaml.safe_load(COMPOSE_CONFIG.read_text(encoding="utf-8"))
        cfg = parse_config(data, str(COMPOSE_CONFIG))
        assert cfg.kafka.bootstrap_servers == "kafka:9092"

    def test_is_container_ready(self, compose_config: Config) -> None:
        """Metrics reachable from other containers, state files under /var/lib/selector, trainer on."""
        assert compose_config.metrics.host == "0.0.0.0"
        assert compose_config.dataset.path.startswith("/var/lib/selector/")
        assert compose_config.retrain.registry.startswith("/var/lib/selector/")
        assert compose_config.retrain.builtin is True


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of the Dockerfile, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line.removesuffix("\\").strip() + " "
        if line.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions()


@pytest.fixture(scope="module")
def runtime(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The instructions of the last (runtime) stage."""
    last_from = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last_from:]


class TestDockerfile:
    def test_multi_stage_on_a_pinned_python_image(self, instructions: list[tuple[str, str]]) -> None:
        """A builder and a runtime stage, both on python 3.11 slim with the patch release pinned."""
        defaults = {}
        for word, args in instructions:
            if word == "ARG" and "=" in args:
                key, _, value = args.partition("=")
                defaults.setdefault(key, value.strip("\"'"))
        bases = [args.split()[0] for word, args in instructions if word == "FROM"]
        assert len(bases) >= 2
        for base in bases:
            image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base)
            assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?(@sha256:[0-9a-f]{64})?", image), image

    def test_runs_as_a_non_root_user(self, runtime: list[tuple[str, str]]) -> None:
        """The runtime stage switches to uid 10001 (numeric, so runAsNonRoot can verify it)."""
        users = [args for word, args in runtime if word == "USER"]
        assert users
        assert users[-1].split(":")[0] == "10001"

    def test_exposes_the_three_metrics_ports(self, runtime: list[tuple[str, str]]) -> None:
        """The monitor's, the label loop's and the inference connector's ports (the config defaults)."""
        exposed = {int(p.split("/")[0]) for word, args in runtime if word == "EXPOSE" for p in args.split()}
        metrics = Config().metrics
        assert {metrics.port, metrics.labels_port, metrics.serve_port} <= exposed

    def test_health_check_without_curl(self, runtime: list[tuple[str, str]]) -> None:
        """HEALTHCHECK asks /healthz with Python's urllib (the slim image has no curl)."""
        checks = [args for word, args in runtime if word == "HEALTHCHECK"]
        assert len(checks) == 1
        assert "/healthz" in checks[0]
        assert "urllib" in checks[0]
        assert "curl" not in checks[0]

    def test_entrypoint_and_default_command(self, runtime: list[tuple[str, str]]) -> None:
        """``selector`` is the entrypoint; the default command is the monitor on the image's config."""
        assert ("ENTRYPOINT", '["selector"]') in runtime
        assert ("CMD", f'["run", "-c", "{CONFIG_PATH}"]') in runtime

    def test_writable_paths_are_not_the_root_filesystem(self, runtime: list[tuple[str, str]]) -> None:
        """HOME and TMPDIR point at /tmp; the state lives under /var/lib/selector volumes."""
        env = " ".join(args for word, args in runtime if word == "ENV")
        assert "HOME=/tmp" in env
        assert "TMPDIR=/tmp" in env
        volumes = [args for word, args in runtime if word == "VOLUME"]
        assert volumes
        assert all("/var/lib/selector" in v for v in volumes)

    def test_environment_names_config_keys(self, runtime: list[tuple[str, str]]) -> None:
        """SELECTOR_ variables set in the image are real configuration keys."""
        names = [
            token.split("=", 1)[0]
            for word, args in runtime
            if word == "ENV"
            for token in shlex.split(args)
            if "=" in token
        ]
        assert any(n.startswith(ENV_PREFIX) for n in names)
        assert config_key_problems(names) == []

    def test_torch_index_is_a_build_argument_left_empty(self, instructions: list[tuple[str, str]]) -> None:
        """No package index is written into the image definition; one may be passed at build time."""
        assert ("ARG", 'TORCH_INDEX=""') in instructions
        assert "://" not in DOCKERFILE.read_text(encoding="utf-8").replace("http://127.0.0.1:", "")

    def test_dockerignore_keeps_the_context_small(self) -> None:
        """The virtualenv, git metadata, caches and bench outputs stay out of the build context."""
        ignored = {
            line.strip()
            for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert {".venv", ".git", "**/__pycache__", ".pytest_cache", "bench/results"} <= ignored


class TestConfigKeyProblems:
    """The checker the deployment tests rely on must itself reject wrong names."""

    def test_accepts_keys_and_file_variants(self) -> None:
        names = ["SELECTOR_KAFKA__BOOTSTRAP_SERVERS", "SELECTOR_KAFKA__SASL_PLAIN_PASSWORD_FILE", "PATH"]
        assert config_key_problems(names) == []

    @pytest.mark.parametrize(
        "name",
        ["SELECTOR_KAFKA__BOOTSTRAP", "SELECTOR_KAFKA", "SELECTOR_METRIC__HOST", "SELECTOR_BUDGET__RATE__X"],
    )
    def test_rejects_unknown_names(self, name: str) -> None:
        assert config_key_problems([name]) != []
