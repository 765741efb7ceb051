"""Specification of the deploy files against the schemas of the programs that read them, offline.

Every schema comes from a package installed by ``make test``; nothing is fetched:

- ``deploy/compose/docker-compose.yml`` against the Compose Specification's JSON Schema, as the
  ``check-jsonschema`` package vendors it (``check_jsonschema/builtin_schemas/vendor/compose-spec.json``).
- Every core object in ``deploy/k8s`` against the Kubernetes API's JSON Schemas of each version in
  ``KUBERNETES_VERSIONS``, as the ``kubernetes-validate`` package ships them, in their strict form: a field
  Kubernetes does not know (a typo) is an error, not silently dropped.
- The Prometheus Operator's custom resources (ServiceMonitor, PrometheusRule) against its CRDs' schemas as
  the ``cloudcoil-models-prometheus-operator`` package carries them (pydantic models generated from the CRDs
  of the operator release its version names), made as strict as the CRDs by ``as_crd``. promtool checks the
  rules' PromQL (``test_k8s.py`` checks the groups equal ``deploy/prometheus/alerts.yml``).
- ``kustomization.yaml`` (read by kustomize, not by the API server; no package ships its schema) against
  ``KUSTOMIZATION`` below: the fields this project uses, no others.

A failure names the file, the object, the path in the document and the validator's message.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILES = sorted((REPO_ROOT / "deploy" / "compose").glob("docker-compose*.yml"))
K8S_FILES = sorted((REPO_ROOT / "deploy" / "k8s").glob("*.yaml"))

KUBERNETES_VERSIONS = ("1.30", "1.37")
"""The Kubernetes versions the manifests must be valid for: the oldest supported here, the newest shipped."""

Doc = dict[str, Any]

CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
"""The Prometheus Operator's kinds used here, checked against the models generated from its CRDs."""

KUSTOMIZATION: Doc = {
    "type": "object",
    "required": ["apiVersion", "kind", "resources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kustomize.config.k8s.io/v1beta1"},
        "kind": {"const": "Kustomization"},
        "namespace": {"type": "string"},
        "labels": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "pairs": {"type": "object", "additionalProperties": {"type": "string"}},
                    "includeSelectors": {"type": "boolean"},
                    "includeTemplates": {"type": "boolean"},
                },
            },
        },
        "resources": {"type": "array", "items": {"type": "string"}},
        "images": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "newName": {"type": "string"},
                    "newTag": {"type": "string"},
                    "digest": {"type": "string"},
                },
            },
        },
    },
}
"""The fields of a kustomize Kustomization used here, written by hand: no package we use ships its schema."""


@functools.cache
def compose_validator() -> jsonschema.protocols.Validator:
    text = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(text.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema)


def as_crd(schema: Any) -> Any:
    """A model's JSON Schema made as strict as the CRD it was generated from.

    Two differences undone: pydantic writes an optional field as ``anyOf: [<schema>, {type: null}]`` where the
    CRD has ``<schema>`` alone (and the branches blur the error message); and it lets unknown fields through,
    where the API server prunes the fields a CRD's structural schema does not know, silently, so a misspelt
    field would vanish. Objects that list their properties get ``additionalProperties: false``, as
    kubernetes-validate's strict schemas do for the core kinds.
    """
    if isinstance(schema, list):
        return [as_crd(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: as_crd(value) for key, value in schema.items()}
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out.update(rest[0])
        else:
            out["anyOf"] = rest
    if out.get("properties") and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


@functools.cache
def custom_resource_validator(kind: str) -> jsonschema.protocols.Validator:
    """A validator of the Prometheus Operator's ``kind``: its CRD's schema, as generated models carry it."""
    # a 2 MB generated module, seconds to import: only when a custom resource is checked
    from cloudcoil.models.prometheus_operator import v1  # noqa: PLC0415

    schema = as_crd(getattr(v1, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def located(error: jsonschema.ValidationError) -> str:
    """``<path>: <message>`` of the most specific error (in an ``anyOf``, the branch that came closest)."""
    best = jsonschema.exceptions.best_match([error])
    return f"{best.json_path}: {best.message}"


def compose_problems(doc: Doc) -> list[str]:
    """Every violation of the Compose Specification in ``doc``, as ``<path>: <message>``."""
    errors = sorted(compose_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    return [located(e) for e in errors]


def manifest_problems(doc: Doc, version: str) -> list[str]:
    """The violations of ``doc``'s schema in Kubernetes ``version`` (or in the CRD, or in ``KUSTOMIZATION``).

    Each is ``<path>: <message>``. A kind with no schema is a problem: nobody would check it.
    """
    key = (str(doc.get("apiVersion")), str(doc.get("kind")))
    if key in CUSTOM_RESOURCES:
        return [located(e) for e in custom_resource_validator(key[1]).iter_errors(doc)]
    if key == ("kustomize.config.k8s.io/v1beta1", "Kustomization"):
        return [located(e) for e in jsonschema.Draft202012Validator(KUSTOMIZATION).iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [located(exc)]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"$: {exc.message}; give it a schema in tests/deploy/test_schemas.py"]
    return []


def file_problems(path: Path, version: str) -> list[str]:
    problems = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc is None:
            continue
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name', '')}"
        problems += [f"{path.name} {name}: {p}" for p in manifest_problems(doc, version)]
    return problems


def load(path: Path) -> Doc:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), path
    return doc


def first_of_kind(kind: str) -> Doc:
    for path in K8S_FILES:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == kind:
                return copy.deepcopy(doc)
    raise AssertionError(f"no {kind} in deploy/k8s")


class TestComposeSchema:
    @pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
    def test_the_compose_file_follows_the_compose_specification(self, path: Path) -> None:
        """``docker compose`` validates the file against this schema before anything starts."""
        problems = compose_problems(load(path))
        assert not problems, f"{path.name} breaks the Compose Specification:\n" + "\n".join(problems)

    def test_a_service_whose_ports_are_a_string_is_refused_at_its_path(self) -> None:
        """The check can fail, and says where and why."""
        doc = load(COMPOSE_FILES[0])
        service = next(iter(doc["services"]))
        doc["services"][service]["ports"] = "x"
        assert f"$.services.{service}.ports: 'x' is not of type 'array'" in compose_problems(doc)

    def test_a_misspelt_service_key_is_refused(self) -> None:
        doc = load(COMPOSE_FILES[0])
        service = next(iter(doc["services"]))
        doc["services"][service]["restart_policy"] = "always"
        assert compose_problems(doc) == [
            f"$.services.{service}: Unevaluated properties are not allowed ('restart_policy' was unexpected)"
        ]


class TestKubernetesSchemas:
    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    @pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
    def test_every_object_follows_its_schema(self, path: Path, version: str) -> None:
        """What ``kubectl apply`` would refuse (a wrong type, an unknown field) fails here first."""
        problems = file_problems(path, version)
        assert not problems, f"invalid for Kubernetes {version}:\n" + "\n".join(problems)

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_replicas_as_a_word_are_refused_at_their_path(self, version: str) -> None:
        """The check can fail, and says where and why."""
        deployment = first_of_kind("Deployment")
        deployment["spec"]["replicas"] = "two"
        (problem,) = manifest_problems(deployment, version)
        assert problem == "$.spec.replicas: 'two' is not of type 'integer', 'null'"

    def test_a_misspelt_container_field_is_refused(self) -> None:
        """The strict schemas refuse fields Kubernetes does not know, where the API server would drop them."""
        deployment = first_of_kind("Deployment")
        deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
        (problem,) = manifest_problems(deployment, KUBERNETES_VERSIONS[0])
        assert problem.startswith("$.spec.template.spec.containers[0]: Additional properties are not allowed")

    def test_a_kind_without_a_schema_is_a_problem(self) -> None:
        """A new custom resource is not waved through unchecked."""
        doc = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
        (problem,) = manifest_problems(doc, KUBERNETES_VERSIONS[0])
        assert "Couldn't find schema for kind Widget" in problem

    def test_custom_resource_metadata_is_checked_against_object_meta(self) -> None:
        monitor = first_of_kind("ServiceMonitor")
        monitor["metadata"]["labels"] = ["app.kubernetes.io/name=selector"]
        assert manifest_problems(monitor, KUBERNETES_VERSIONS[0]) == [
            "$.metadata.labels: ['app.kubernetes.io/name=selector'] is not of type 'object'"
        ]

    def test_a_service_monitor_is_checked_against_its_crd(self) -> None:
        """A duration that does not parse is refused, and so is a misspelt field the API server would drop."""
        monitor = first_of_kind("ServiceMonitor")
        monitor["spec"]["endpoints"][0]["interval"] = "fifteen"
        monitor["spec"]["endpoints"][0]["portt"] = "metrics"
        interval, field = manifest_problems(monitor, KUBERNETES_VERSIONS[0])
        assert interval.startswith("$.spec.endpoints[0].interval: 'fifteen' does not match")
        assert field == "$.spec.endpoints[0]: Additional properties are not allowed ('portt' was unexpected)"

    def test_a_service_monitor_selector_is_checked_against_label_selector(self) -> None:
        monitor = first_of_kind("ServiceMonitor")
        monitor["spec"]["selector"] = {"matchLabel": {"app.kubernetes.io/name": "selector"}}
        assert manifest_problems(monitor, KUBERNETES_VERSIONS[0]) == [
            "$.spec.selector: Additional properties are not allowed ('matchLabel' was unexpected)"
        ]

    def test_a_prometheus_rule_is_checked_against_its_crd(self) -> None:
        rule = first_of_kind("PrometheusRule")
        rule["spec"]["groups"][0]["rules"][0]["for"] = "two minutes"
        del rule["spec"]["groups"][0]["rules"][1]["expr"]
        duration, missing = manifest_problems(rule, KUBERNETES_VERSIONS[0])
        assert duration.startswith("$.spec.groups[0].rules[0].for: 'two minutes' does not match")
        assert missing == "$.spec.groups[0].rules[1]: 'expr' is a required property"

    def test_a_misspelt_kustomization_field_is_refused(self) -> None:
        kustomization = load(REPO_ROOT / "deploy" / "k8s" / "kustomization.yaml")
        kustomization["resource"] = kustomization.pop("resources")
        problems = manifest_problems(kustomization, KUBERNETES_VERSIONS[0])
        assert "$: 'resources' is a required property" in problems
