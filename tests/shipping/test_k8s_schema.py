"""Every Kubernetes manifest validates against the Kubernetes OpenAPI schemas, offline and strict.

Strict mode rejects properties the schema does not know (a misspelt `readinesProbe` would pass a
lenient check and be silently ignored by the API server's older versions). Checked against the
oldest and the newest Kubernetes minor version the validator ships that we support.
"""

from __future__ import annotations

import kubernetes_validate
import pytest

from shipping import K8S, REPO, load_docs, manifest_files

VERSIONS = ["1.30.0", "1.37.0"]
FILES = manifest_files(K8S)


def test_there_are_manifests():
    names = {p.relative_to(K8S).as_posix() for p in FILES}
    for required in [
        "namespace.yaml",
        "environment/secret.yaml",
        "environment/mongodb.yaml",
        "environment/jaeger.yaml",
        "services/lighthouse.yaml",
        "services/trade-processor.yaml",
        "services/traders.yaml",
        "services/pricing.yaml",
        "services/pricing-web.yaml",
        "discovery-kubernetes-api/rbac.yaml",
    ]:
        assert required in names, f"k8s/{required} is missing"


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_manifest_validates_strictly(path, version):
    docs = load_docs(path)
    assert docs, f"{path} holds no resource"
    for doc in docs:
        try:
            kubernetes_validate.validate(doc.body, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{doc}: invalid for Kubernetes {version}: {e.message} at {'.'.join(map(str, e.path))}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{doc}: {e.message}")


def test_validator_rejects_unknown_fields():
    """The check can fail: a misspelt field in an otherwise valid manifest is rejected."""
    bad = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}], "publishNotReadyAdresses": True},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[-1], strict=True)
