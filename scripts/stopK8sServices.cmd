@echo off
rem Stops the AkkaTrader cluster: deletes everything in the namespace akka-cqrs of kubectl's current
rem context (workloads, services, disruption budgets, secrets, RBAC objects and MongoDB's volume).
rem Windows twin of scripts/stopK8sServices.sh: same steps, same options.
rem
rem Usage: scripts\stopK8sServices.cmd [--keep-data] [--delete-namespace]
rem
rem   --keep-data         keep the PersistentVolumeClaims (MongoDB's journal survives a re-deploy)
rem   --delete-namespace  also delete the namespace itself
rem
rem Any failure stops with exit code 1.
setlocal EnableExtensions

set "NAMESPACE=akka-cqrs"
if not defined DELETE_TIMEOUT set "DELETE_TIMEOUT=180s"
set "KEEP_DATA=false"
set "DELETE_NAMESPACE=false"

:parse_args
if "%~1"=="" goto args_done
if /i "%~1"=="--keep-data" (
  set "KEEP_DATA=true"
  shift
  goto parse_args
)
if /i "%~1"=="--delete-namespace" (
  set "DELETE_NAMESPACE=true"
  shift
  goto parse_args
)
if /i "%~1"=="-h" goto usage
if /i "%~1"=="--help" goto usage
echo error: unknown argument '%~1' 1>&2
echo usage: scripts\stopK8sServices.cmd [--keep-data] [--delete-namespace] 1>&2
exit /b 2
:args_done

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
echo ==^> stopping AkkaTrader in namespace '%NAMESPACE%' of kubectl context '%CONTEXT%'

kubectl get namespace %NAMESPACE% >nul 2>nul
if errorlevel 1 (
  echo namespace '%NAMESPACE%' does not exist: nothing to stop
  exit /b 0
)

rem `all` covers pods, services, deployments, statefulsets and replica sets; the rest are listed.
set "KINDS=all,poddisruptionbudgets,secrets,configmaps,serviceaccounts,roles,rolebindings"
if /i "%KEEP_DATA%"=="false" set "KINDS=%KINDS%,persistentvolumeclaims"
call :kube --namespace %NAMESPACE% delete %KINDS% --all --ignore-not-found || exit /b 1
call :kube --namespace %NAMESPACE% wait --for=delete pods --all --timeout=%DELETE_TIMEOUT% || exit /b 1
if /i "%DELETE_NAMESPACE%"=="true" (
  call :kube delete namespace %NAMESPACE% --wait=true || exit /b 1
)
echo ==^> stopped
exit /b 0

:usage
echo usage: scripts\stopK8sServices.cmd [--keep-data] [--delete-namespace]
echo.
echo   --keep-data         keep the PersistentVolumeClaims ^(MongoDB's journal survives a re-deploy^)
echo   --delete-namespace  also delete the namespace itself
exit /b 0

rem Runs kubectl, echoing the command; on failure prints which command failed and returns 1.
:kube
echo + kubectl %*
kubectl %*
if errorlevel 1 (
  echo error: 'kubectl %*' failed 1>&2
  exit /b 1
)
exit /b 0
