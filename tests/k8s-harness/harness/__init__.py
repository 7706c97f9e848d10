"""k8s-harness: runs the k8s/ manifests as containers on Docker (see __main__.py)."""
