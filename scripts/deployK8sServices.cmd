@echo off
rem Deploys the AkkaTrader cluster to the Kubernetes cluster of kubectl's current context.
rem Windows twin of scripts/deployK8sServices.sh: same steps, same order, same options.
rem It builds nothing: build the images first (scripts/build-images.sh, e.g. from WSL or Git Bash).
rem
rem Usage: scripts\deployK8sServices.cmd [--discovery MODE] [--without-observability]
rem
rem   --discovery seeds           (default) members join through the lighthouse seeds (k8s\services)
rem   --discovery kubernetes-api  members find the lighthouse pods through the Kubernetes API
rem                               (k8s\discovery-kubernetes-api, with its pod-reader Role)
rem   --without-observability     leave out Jaeger, Prometheus and Grafana
rem
rem Environment: ROLLOUT_TIMEOUT (default 300s) bounds the wait for each workload.
rem Any failure stops with exit code 1.
setlocal EnableExtensions

set "NAMESPACE=akka-cqrs"
set "SECRET=akka-cqrs-secrets"
if not defined ROLLOUT_TIMEOUT set "ROLLOUT_TIMEOUT=300s"
set "DISCOVERY=seeds"
set "OBSERVABILITY=on"

:parse_args
if "%~1"=="" goto args_done
if /i "%~1"=="--discovery" (
  if "%~2"=="" goto usage_error
  set "DISCOVERY=%~2"
  shift
  shift
  goto parse_args
)
if /i "%~1"=="--without-observability" (
  set "OBSERVABILITY=off"
  shift
  goto parse_args
)
if /i "%~1"=="-h" goto usage
if /i "%~1"=="--help" goto usage
echo error: unknown argument '%~1' 1>&2
goto usage_error
:args_done

if /i not "%DISCOVERY%"=="seeds" if /i not "%DISCOVERY%"=="kubernetes-api" (
  echo error: unknown discovery '%DISCOVERY%' ^(use 'seeds' or 'kubernetes-api'^) 1>&2
  exit /b 1
)

where kubectl >nul 2>nul
if errorlevel 1 (
  echo error: kubectl not found on PATH; install it ^(https://kubernetes.io/docs/tasks/tools/^) and point it at your cluster 1>&2
  exit /b 1
)
set "CONTEXT="
for /f "usebackq delims=" %%c in (`kubectl config current-context 2^>nul`) do set "CONTEXT=%%c"
if not defined CONTEXT (
  echo error: kubectl has no current context; pick one with 'kubectl config use-context NAME' 1>&2
  exit /b 1
)
echo ==^> deploying AkkaTrader to namespace '%NAMESPACE%' in kubectl context '%CONTEXT%' (discovery: %DISCOVERY%)

rem Run from the repository root, whatever the caller's directory.
pushd "%~dp0.." || exit /b 1

echo ==^> namespace
call :kube apply -f k8s\namespace.yaml || goto failed

echo ==^> environment
rem The Secret is applied only once, so values you replaced survive a re-deploy.
kubectl --namespace %NAMESPACE% get secret %SECRET% >nul 2>nul
if errorlevel 1 (
  call :kube --namespace %NAMESPACE% apply -f k8s\environment\secret.yaml || goto failed
) else (
  echo secret/%SECRET% exists: keeping it
)
call :kube --namespace %NAMESPACE% apply -f k8s\environment\mongodb.yaml || goto failed
if "%OBSERVABILITY%"=="off" goto environment_applied
call :kube --namespace %NAMESPACE% apply -f k8s\environment\jaeger.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\environment\prometheus.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\environment\grafana.yaml || goto failed
:environment_applied
call :kube --namespace %NAMESPACE% rollout status statefulset/mongodb --timeout=%ROLLOUT_TIMEOUT% || goto failed
if "%OBSERVABILITY%"=="off" goto environment_ready
call :kube --namespace %NAMESPACE% rollout status deployment/jaeger --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status deployment/prometheus --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status deployment/grafana --timeout=%ROLLOUT_TIMEOUT% || goto failed
:environment_ready

echo ==^> services
if /i "%DISCOVERY%"=="kubernetes-api" goto apply_discovery
call :kube --namespace %NAMESPACE% apply -f k8s\services\lighthouse.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\services\trade-processor.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\services\traders.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\services\pricing.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\services\pricing-web.yaml || goto failed
goto wait_services
:apply_discovery
call :kube --namespace %NAMESPACE% apply -f k8s\discovery-kubernetes-api\rbac.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\discovery-kubernetes-api\lighthouse.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\discovery-kubernetes-api\trade-processor.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\discovery-kubernetes-api\traders.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\discovery-kubernetes-api\pricing.yaml || goto failed
call :kube --namespace %NAMESPACE% apply -f k8s\services\pricing-web.yaml || goto failed

:wait_services
rem A member is ready only when it is Up in the cluster, so these waits follow the cluster forming.
call :kube --namespace %NAMESPACE% rollout status statefulset/lighthouse --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status statefulset/trade-processor --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status statefulset/pricing --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status statefulset/traders --timeout=%ROLLOUT_TIMEOUT% || goto failed
call :kube --namespace %NAMESPACE% rollout status deployment/pricing-web --timeout=%ROLLOUT_TIMEOUT% || goto failed

echo ==^> done
set "ADDRESS="
for /f "usebackq delims=" %%a in (`kubectl --namespace %NAMESPACE% get service pricing-ui -o "jsonpath={.status.loadBalancer.ingress[0].ip}{.status.loadBalancer.ingress[0].hostname}" 2^>nul`) do set "ADDRESS=%%a"
if defined ADDRESS (
  echo dashboard: http://%ADDRESS%/
) else (
  echo dashboard: the pricing-ui LoadBalancer has no external address yet; check with
  echo   kubectl --namespace %NAMESPACE% get service pricing-ui
  echo or reach it through a port-forward:
  echo   kubectl --namespace %NAMESPACE% port-forward service/pricing-ui 8080:80   ^(http://localhost:8080^)
)
if "%OBSERVABILITY%"=="on" echo traces:    kubectl --namespace %NAMESPACE% port-forward service/jaeger 16686:16686   ^(http://localhost:16686^)
if "%OBSERVABILITY%"=="on" echo metrics:   kubectl --namespace %NAMESPACE% port-forward service/grafana 3000:3000   ^(http://localhost:3000^)
echo members:   kubectl --namespace %NAMESPACE% exec lighthouse-0 -c lighthouse -- tradectl --addr 127.0.0.1:8558 cluster show
echo more load: kubectl --namespace %NAMESPACE% scale statefulsets traders --replicas=4
popd
exit /b 0

:failed
popd
exit /b 1

:usage
echo usage: scripts\deployK8sServices.cmd [--discovery MODE] [--without-observability]
echo.
echo   --discovery seeds           ^(default^) members join through the lighthouse seeds ^(k8s\services^)
echo   --discovery kubernetes-api  members find the lighthouse pods through the Kubernetes API
echo                               ^(k8s\discovery-kubernetes-api, with its pod-reader Role^)
echo   --without-observability     leave out Jaeger, Prometheus and Grafana
echo.
echo Environment: ROLLOUT_TIMEOUT ^(default 300s^) bounds the wait for each workload.
exit /b 0

:usage_error
echo usage: scripts\deployK8sServices.cmd [--discovery seeds or kubernetes-api] [--without-observability] 1>&2
exit /b 2

rem Runs kubectl, echoing the command; on failure prints which command failed and returns 1.
:kube
echo + kubectl %*
kubectl %*
if errorlevel 1 (
  echo error: 'kubectl %*' failed 1>&2
  exit /b 1
)
exit /b 0
