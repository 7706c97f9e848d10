#!/usr/bin/env bash
# Stops the AkkaTrader cluster: deletes everything in the namespace akka-cqrs of kubectl's current
# context (workloads, services, disruption budgets, secrets, RBAC objects and MongoDB's volume).
#
# Usage: scripts/stopK8sServices.sh [--keep-data] [--delete-namespace]
#
#   --keep-data         keep the PersistentVolumeClaims (MongoDB's journal survives a re-deploy)
#   --delete-namespace  also delete the namespace itself
#
# Members receive SIGTERM (after their preStop `tradectl cluster leave`) and leave the cluster
# gracefully; the script waits until every pod is gone. Any failure stops with exit code 1.
set -euo pipefail

readonly NAMESPACE="akka-cqrs"
DELETE_TIMEOUT="${DELETE_TIMEOUT:-180s}"

# Prints the comment block at the top of this file.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "error: $*" >&2; exit 1; }

keep_data=false
delete_namespace=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    --keep-data) keep_data=true ;;
    --delete-namespace) delete_namespace=true ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "error: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
  shift
done

kube() {
  echo "+ kubectl $*"
  kubectl "$@" || die "'kubectl $*' failed (exit code $?)"
}

command -v kubectl >/dev/null 2>&1 ||
  die "kubectl not found on PATH; install it (https://kubernetes.io/docs/tasks/tools/) and point it at your cluster"
context="$(kubectl config current-context 2>/dev/null)" ||
  die "kubectl has no current context; pick one with 'kubectl config use-context NAME'"
[ -n "$context" ] || die "kubectl has no current context; pick one with 'kubectl config use-context NAME'"
echo "==> stopping AkkaTrader in namespace '$NAMESPACE' of kubectl context '$context'"

if ! kubectl get namespace "$NAMESPACE" >/dev/null 2>&1; then
  echo "namespace '$NAMESPACE' does not exist: nothing to stop"
  exit 0
fi

# `all` covers pods, services, deployments, statefulsets and replica sets; the rest are listed.
# (Kubernetes re-creates the namespace's default ServiceAccount and kube-root-ca.crt ConfigMap.)
kinds="all,poddisruptionbudgets,secrets,configmaps,serviceaccounts,roles,rolebindings"
if [ "$keep_data" = false ]; then
  kinds="$kinds,persistentvolumeclaims"
fi
kube --namespace "$NAMESPACE" delete "$kinds" --all --ignore-not-found
kube --namespace "$NAMESPACE" wait --for=delete pods --all --timeout="$DELETE_TIMEOUT"

if [ "$delete_namespace" = true ]; then
  kube delete namespace "$NAMESPACE" --wait=true
fi
echo "==> stopped"
