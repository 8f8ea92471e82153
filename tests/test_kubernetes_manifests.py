"""deploy/kubernetes, checked offline: it renders with `kubectl kustomize`, passes
`kubernetes-validate --strict` for named Kubernetes versions and checkov's scan, and holds what the
service needs (probes, drain timing, sizing, hardening, secrets by reference, wiring); a broken
copy fails."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.support.kubernetes_checks import (
    KUBERNETES_VERSIONS,
    MANIFESTS,
    Objects,
    checkov_problems,
    env_of,
    invariant_problems,
    matches,
    pod_templates,
    render,
    schema_problems,
)
from tests.support.kubernetes_checks import _hardening_problems as hardening_problems
from tests.support.kubernetes_checks import _secret_problems as secret_problems

RENDERINGS = {"base": MANIFESTS, "production overlay": MANIFESTS / "overlays" / "production"}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, tuple[Path, Objects]]:
    folder = tmp_path_factory.mktemp("rendered")
    out = {}
    for name, directory in RENDERINGS.items():
        text, objects = render(directory)
        path = folder / f"{name.replace(' ', '-')}.yaml"
        path.write_text(text)
        out[name] = (path, objects)
    return out


@pytest.mark.parametrize("name", RENDERINGS)
class TestRendered:
    """Each rendering (the base, the overlay) is valid and keeps every invariant."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_valid_for_kubernetes(self, rendered, name, version):
        path, _ = rendered[name]
        assert schema_problems(path, version) == []

    def test_invariants_hold(self, rendered, name):
        _, objects = rendered[name]
        assert invariant_problems(objects) == []


@pytest.mark.slow
def test_checkov_finds_nothing_unexplained(rendered):
    """No failed check; each skipped one carries its reason in an annotation."""
    assert checkov_problems(*(path for path, _ in rendered.values())) == []


def test_the_overlay_adds_redis_and_the_read_replica(rendered):
    _, objects = rendered["production overlay"]
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    for name in ("DATABASE_URL", "REDIS_URL", "DATABASE_READ_URL"):
        assert env[name]["valueFrom"]["secretKeyRef"] == {"name": "catalog-enricher", "key": name}
    assert container["image"].startswith("registry.example.com/catalog-enricher:")
    assert all(o["metadata"]["namespace"] == "catalog-enricher" for o in objects)


# --- broken copies ----------------------------------------------------------------------------

def broken_copy(tmp_path: Path, change: Callable[[dict], None]) -> tuple[Path, Objects]:
    """deploy/kubernetes copied, its Deployment changed by `change`, rendered."""
    copy = tmp_path / "kubernetes"
    shutil.copytree(MANIFESTS, copy)
    deployment_file = copy / "base" / "deployment.yaml"
    head = "".join(line for line in deployment_file.read_text().splitlines(keepends=True)
                   if line.startswith("#"))
    deployment = yaml.safe_load(deployment_file.read_text())
    change(deployment["spec"]["template"]["spec"]["containers"][0])
    deployment_file.write_text(head + yaml.safe_dump(deployment, sort_keys=False))
    text, objects = render(copy)
    path = tmp_path / "rendered.yaml"
    path.write_text(text)
    return path, objects


class TestBrokenCopies:
    """What each check is there for: a copy broken in one way fails it."""

    def test_readiness_probe_without_its_path(self, tmp_path):
        path, objects = broken_copy(
            tmp_path, lambda container: container["readinessProbe"]["httpGet"].pop("path"))
        # Valid for Kubernetes (the path is optional, "/" by default) ...
        assert schema_problems(path, KUBERNETES_VERSIONS[0]) == []
        # ... but the pods would be ready whatever Postgres says.
        assert "readinessProbe path is None, not '/readyz'" in invariant_problems(objects)

    @pytest.mark.slow
    def test_privileged_container(self, tmp_path):
        def privileged(container: dict) -> None:
            container["securityContext"]["privileged"] = True

        path, objects = broken_copy(tmp_path, privileged)
        assert any(p.startswith("checkov CKV_K8S_16 ") for p in checkov_problems(path))
        assert "Deployment/catalog-enricher: catalog-enricher is privileged" in \
            invariant_problems(objects)

    def test_misspelt_field(self, tmp_path):
        def misspelt(container: dict) -> None:
            container["readinesProbe"] = container.pop("readinessProbe")

        path, objects = broken_copy(tmp_path, misspelt)
        assert any("readinesProbe" in p for p in schema_problems(path, KUBERNETES_VERSIONS[0]))
        assert "no readinessProbe" in invariant_problems(objects)

    def test_workers_out_of_step_with_the_cpu_request(self, tmp_path):
        def more_cpu(container: dict) -> None:
            container["resources"]["requests"]["cpu"] = "4"
            container["resources"]["limits"]["cpu"] = "4"

        _, objects = broken_copy(tmp_path, more_cpu)
        assert "--workers 2 does not match the CPU request 4" in invariant_problems(objects)

    def test_memory_limit_below_the_l1_byte_bound(self, tmp_path):
        def bigger_cache(container: dict) -> None:
            for entry in container["env"]:
                if entry["name"] == "ENRICHER_CACHE_MAX_BYTES":
                    entry["value"] = str(1024 * 1024 * 1024)

        _, objects = broken_copy(tmp_path, bigger_cache)
        assert any(p.startswith("the memory limit 1Gi is below --workers 2")
                   for p in invariant_problems(objects))

    def test_database_url_written_in(self, tmp_path):
        def written(container: dict) -> None:
            for entry in container["env"]:
                if entry["name"] == "DATABASE_URL":
                    entry.pop("valueFrom")
                    entry["value"] = "postgresql://enricher:hunter2@db:5432/catalog"

        _, objects = broken_copy(tmp_path, written)
        problems = invariant_problems(objects)
        assert "Deployment/catalog-enricher: DATABASE_URL of catalog-enricher is not taken " \
            "from a named Secret" in problems
        assert "Deployment/catalog-enricher: DATABASE_URL holds a password" in problems


# --- the nightly batch: an Indexed Job of its own -------------------------------------------------

BATCH = MANIFESTS / "batch"


@pytest.fixture(scope="module")
def batch_rendered(tmp_path_factory) -> tuple[Path, Objects]:
    text, objects = render(BATCH)
    path = tmp_path_factory.mktemp("rendered") / "batch.yaml"
    path.write_text(text)
    return path, objects


class TestBatchJob:
    """deploy/kubernetes/batch renders, is valid, is hardened like the service, and its pods
    take disjoint shards that cover the input: pod K runs `--shard K/N` with N its completions,
    arguments the real command line accepts."""

    @pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
    def test_valid_for_kubernetes(self, batch_rendered, version):
        assert schema_problems(batch_rendered[0], version) == []

    def test_hardened_and_secrets_by_reference(self, batch_rendered):
        _, objects = batch_rendered
        for name, template in pod_templates(objects):
            assert hardening_problems(template["spec"]) == [], name
            assert secret_problems(template["spec"]) == [], name
        assert not [o for o in objects if o["kind"] == "Secret"]

    def test_each_index_takes_its_own_shard(self, batch_rendered):
        from service.adapters.batch_run import parse_shard
        from service.cli import build_parser

        _, objects = batch_rendered
        (job,) = [o for o in objects if o["kind"] == "Job"]
        spec = job["spec"]
        assert spec["completionMode"] == "Indexed"
        count = spec["completions"]
        assert spec["parallelism"] <= count
        (container,) = spec["template"]["spec"]["containers"]
        assert container["command"] == ["catalog-enricher"]
        outputs = set()
        for index in range(count):
            args = [a.replace("$(JOB_COMPLETION_INDEX)", str(index)) for a in container["args"]]
            parsed = build_parser().parse_args(args)
            assert parsed.command == "enrich-batch"
            assert parse_shard(parsed.shard) == (index, count)
            outputs.add(parsed.output)
        assert len(outputs) == count  # each pod writes its own part
        assert all(o.startswith("s3://") for o in outputs)
        sa = job["spec"]["template"]["spec"]["serviceAccountName"]
        assert [o for o in objects if o["kind"] == "ServiceAccount"
                and o["metadata"]["name"] == sa]

    def test_no_ingress_to_the_batch_pods(self, batch_rendered):
        _, objects = batch_rendered
        (job,) = [o for o in objects if o["kind"] == "Job"]
        labels = job["spec"]["template"]["metadata"]["labels"]
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"
                    and matches(o["spec"]["podSelector"], labels)]
        assert policies and all(p["spec"]["policyTypes"] == ["Ingress"]
                                and not p["spec"].get("ingress") for p in policies)

    @pytest.mark.slow
    def test_checkov_finds_nothing_unexplained(self, batch_rendered):
        assert checkov_problems(batch_rendered[0]) == []
