#!/usr/bin/env bash
# Deploys the AkkaTrader cluster to the Kubernetes cluster of kubectl's current context.
# It builds nothing: build the images first (scripts/build-images.sh) and make them available to
# the cluster (Docker Desktop shares them; `kind load docker-image ...`; or push to a registry).
#
# Usage: scripts/deployK8sServices.sh [--discovery seeds|kubernetes-api] [--without-observability]
#
#   --discovery seeds           (default) members join through the lighthouse seeds (k8s/services/)
#   --discovery kubernetes-api  members find the lighthouse pods through the Kubernetes API
#                               (k8s/discovery-kubernetes-api/, with its pod-reader Role)
#   --without-observability     leave out Jaeger, Prometheus and Grafana (a small cluster, or one
#                               that cannot pull their images); the services still run, their
#                               traces go nowhere
#
# Environment: ROLLOUT_TIMEOUT (default 300s) bounds the wait for each workload.
#
# Steps: check kubectl and print its context; create the namespace; apply k8s/environment/
# (Secret, MongoDB, Jaeger, Prometheus, Grafana) and wait for it; apply the services and wait for
# each rollout in start order (seeds first); print where the dashboard is. Any failure stops with
# exit code 1.
set -euo pipefail

readonly NAMESPACE="akka-cqrs"
readonly SECRET="akka-cqrs-secrets"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"

cd "$(dirname "$0")/.."

# Prints the comment block at the top of this file.
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "error: $*" >&2; exit 1; }

discovery="seeds"
observability=true
while [ "$#" -gt 0 ]; do
  case "$1" in
    --discovery)
      [ "$#" -ge 2 ] || { usage >&2; exit 2; }
      discovery="$2"
      shift 2
      ;;
    --discovery=*)
      discovery="${1#--discovery=}"
      shift
      ;;
    --without-observability)
      observability=false
      shift
      ;;
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
done

# Manifests in apply order. Environment first (the services need MongoDB and the Secret), then the
# seeds, then the members, then the dashboard.
environment_files=(k8s/environment/mongodb.yaml)
environment_workloads=(statefulset/mongodb)
if [ "$observability" = true ]; then
  environment_files+=(
    k8s/environment/jaeger.yaml
    k8s/environment/prometheus.yaml
    k8s/environment/grafana.yaml
  )
  environment_workloads+=(deployment/jaeger deployment/prometheus deployment/grafana)
fi
case "$discovery" in
  seeds)
    service_files=(
      k8s/services/lighthouse.yaml
      k8s/services/trade-processor.yaml
      k8s/services/traders.yaml
      k8s/services/pricing.yaml
      k8s/services/pricing-web.yaml
    )
    ;;
  kubernetes-api)
    service_files=(
      k8s/discovery-kubernetes-api/rbac.yaml
      k8s/discovery-kubernetes-api/lighthouse.yaml
      k8s/discovery-kubernetes-api/trade-processor.yaml
      k8s/discovery-kubernetes-api/traders.yaml
      k8s/discovery-kubernetes-api/pricing.yaml
      k8s/services/pricing-web.yaml
    )
    ;;
  *)
    die "unknown discovery '$discovery' (use 'seeds' or 'kubernetes-api')"
    ;;
esac
service_workloads=(
  statefulset/lighthouse
  statefulset/trade-processor
  statefulset/pricing
  statefulset/traders
  deployment/pricing-web
)

# Runs kubectl, echoing the command, and stops the script with a clear message if it fails.
kube() {
  echo "+ kubectl $*"
  kubectl "$@" || die "'kubectl $*' failed (exit code $?)"
}

command -v kubectl >/dev/null 2>&1 ||
  die "kubectl not found on PATH; install it (https://kubernetes.io/docs/tasks/tools/) and point it at your cluster"
context="$(kubectl config current-context 2>/dev/null)" ||
  die "kubectl has no current context; pick one with 'kubectl config use-context NAME'"
[ -n "$context" ] || die "kubectl has no current context; pick one with 'kubectl config use-context NAME'"
echo "==> deploying AkkaTrader to namespace '$NAMESPACE' in kubectl context '$context' (discovery: $discovery)"

echo "==> namespace"
kube apply -f k8s/namespace.yaml

echo "==> environment"
# The Secret is applied only once: if you replaced the workshop values (see its comments), a
# re-deploy keeps yours.
if kubectl --namespace "$NAMESPACE" get secret "$SECRET" >/dev/null 2>&1; then
  echo "secret/$SECRET exists: keeping it"
else
  kube --namespace "$NAMESPACE" apply -f k8s/environment/secret.yaml
fi
for file in "${environment_files[@]}"; do
  kube --namespace "$NAMESPACE" apply -f "$file"
done
for workload in "${environment_workloads[@]}"; do
  kube --namespace "$NAMESPACE" rollout status "$workload" --timeout="$ROLLOUT_TIMEOUT"
done

echo "==> services"
for file in "${service_files[@]}"; do
  kube --namespace "$NAMESPACE" apply -f "$file"
done
# A member is ready only when it is Up in the cluster, so these waits follow the cluster forming.
for workload in "${service_workloads[@]}"; do
  kube --namespace "$NAMESPACE" rollout status "$workload" --timeout="$ROLLOUT_TIMEOUT"
done

echo "==> done"
address="$(kubectl --namespace "$NAMESPACE" get service pricing-ui \
  -o 'jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}' 2>/dev/null || true)"
if [ -n "$address" ]; then
  echo "dashboard: http://$address/"
else
  echo "dashboard: the pricing-ui LoadBalancer has no external address yet; check with"
  echo "  kubectl --namespace $NAMESPACE get service pricing-ui"
  echo "or reach it through a port-forward:"
  echo "  kubectl --namespace $NAMESPACE port-forward service/pricing-ui 8080:80   # http://localhost:8080"
fi
if [ "$observability" = true ]; then
  echo "traces:    kubectl --namespace $NAMESPACE port-forward service/jaeger 16686:16686   # http://localhost:16686"
  echo "metrics:   kubectl --namespace $NAMESPACE port-forward service/grafana 3000:3000   # http://localhost:3000"
fi
echo "members:   kubectl --namespace $NAMESPACE exec lighthouse-0 -c lighthouse -- tradectl --addr 127.0.0.1:8558 cluster show"
echo "more load: kubectl --namespace $NAMESPACE scale statefulsets traders --replicas=4"
