#!/usr/bin/env bash
# Deploys rl_worker, checks running workers, or runs the tests. docs/DEPLOYMENT_OPERATIONS.md explains it.
#
#   scripts/deploy.sh                  pre-flight checks, then roll the workers out one at a time
#   scripts/deploy.sh --dry-run        print what the default would do, change nothing
#   scripts/deploy.sh --monitor-only   health and metrics of the running workers; exit 1 when one is unhealthy
#   scripts/deploy.sh --test-only      the test suite (scripts/test.sh; arguments after -- go to pytest)
#
# Options:
#   --target compose|kubernetes   where to deploy (default: compose; or $DEPLOY_TARGET)
#   --first-deploy                an empty cluster or a new namespace: the input topics and the learning
#                                 log may be missing (the first worker creates them)
#   --preflight-here              run the pre-flight on this machine with its RL_* environment
#                                 (default: inside the target, with the target's settings)
#   --url URL                     a worker's base URL for --monitor-only (repeatable; default: $DEPLOY_URLS,
#                                 else the compose ports 127.0.0.1:6066 and :6067, or each pod via kubectl exec)
#   --namespace NS                Kubernetes namespace (default: kubectl's current one)
#   --image IMAGE                 Kubernetes: the image to roll out (default: the one in deployment.yaml)
#   --timeout SECONDS             how long to wait for each worker to say ok (default 300)
#
# Exit codes: 0 done / all healthy; 1 a check failed or a worker is unhealthy; 2 bad usage.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
K8S_DIR="$ROOT/deploy/kubernetes"
DEPLOYMENT=rl-worker          # metadata.name in deploy/kubernetes/deployment.yaml
CONTAINER=rl-worker
SECRET=rl-worker-secrets      # deploy/kubernetes/secret.yaml (never applied by this script)
CONFIGMAP=rl-worker-config
WEB_PORT=6066                 # RL_WEB_PORT inside the containers

mode=deploy
dry_run=0
target=${DEPLOY_TARGET:-compose}
first_deploy=0
preflight_here=0
namespace=""
image=""
timeout_s=300
urls=()
pytest_args=()

usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --test-only) mode=test ;;
    --monitor-only) mode=monitor ;;
    --dry-run) dry_run=1 ;;
    --target) target=${2:?--target needs compose or kubernetes}; shift ;;
    --first-deploy) first_deploy=1 ;;
    --preflight-here) preflight_here=1 ;;
    --url) urls+=("${2:?--url needs a URL}"); shift ;;
    --namespace) namespace=${2:?--namespace needs a name}; shift ;;
    --image) image=${2:?--image needs an image}; shift ;;
    --timeout) timeout_s=${2:?--timeout needs seconds}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) echo "deploy.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case "$target" in compose|kubernetes) ;; *) echo "deploy.sh: --target is compose or kubernetes, not $target" >&2; exit 2 ;; esac

# the local rl-worker: $DEPLOY_PYTHON -m rl_worker, else the project's .venv, else the one on PATH
if [ -n "${DEPLOY_PYTHON:-}" ]; then RL_WORKER=("$DEPLOY_PYTHON" -m rl_worker)
elif [ -x "$ROOT/.venv/bin/rl-worker" ]; then RL_WORKER=("$ROOT/.venv/bin/rl-worker")
else RL_WORKER=(rl-worker)
fi
KUBECTL=(kubectl)
[ -n "$namespace" ] && KUBECTL+=(--namespace "$namespace")

say() { echo "deploy.sh: $*"; }
# run a command, or only print it with --dry-run
run() {
  if [ "$dry_run" = 1 ]; then printf '+'; printf ' %q' "$@"; printf '\n'; else "$@"; fi
}

if [ -n "${DEPLOY_URLS:-}" ] && [ ${#urls[@]} -eq 0 ]; then
  read -r -a urls <<< "${DEPLOY_URLS//,/ }"
fi

# ---- the modes -----------------------------------------------------------------------------------

run_tests() {
  say "running the test suite (scripts/test.sh)"
  run bash "$ROOT/scripts/test.sh" "${pytest_args[@]}"
}

compose_url_of() {  # the host URL of a compose worker service (ports are published on 127.0.0.1)
  local hostport
  hostport=$(docker compose -f "$ROOT/docker-compose.yml" port "$1" "$WEB_PORT")
  echo "http://$hostport"
}

kube_pods() {
  "${KUBECTL[@]}" get pods -l "app.kubernetes.io/name=rl-worker" \
    -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}

monitor() {
  if [ ${#urls[@]} -gt 0 ] || [ "$target" = compose ]; then
    [ ${#urls[@]} -gt 0 ] || urls=(http://127.0.0.1:6066 http://127.0.0.1:6067)
    local args=()
    for u in "${urls[@]}"; do args+=(--url "$u"); done
    say "health and metrics of ${#urls[@]} worker(s)"
    run "${RL_WORKER[@]}" status "${args[@]}"
    return
  fi
  # Kubernetes without URLs: ask each pod about itself, from inside the pod
  local failed=0 pods
  if [ "$dry_run" = 1 ]; then
    run "${KUBECTL[@]}" get pods -l app.kubernetes.io/name=rl-worker
    run "${KUBECTL[@]}" exec POD -c "$CONTAINER" -- rl-worker status --url "http://127.0.0.1:$WEB_PORT"
    return
  fi
  pods=$(kube_pods)
  [ -n "$pods" ] || { say "no rl-worker pods found"; return 1; }
  for pod in $pods; do
    "${KUBECTL[@]}" exec "$pod" -c "$CONTAINER" -- rl-worker status --url "http://127.0.0.1:$WEB_PORT" || failed=1
  done
  return $failed
}

preflight() {
  local args=(preflight)
  [ "$first_deploy" = 1 ] && args+=(--first-deploy)
  say "pre-flight: broker, Redis, input topics (present, co-partitioned), learning log"
  if [ "$preflight_here" = 1 ]; then
    run "${RL_WORKER[@]}" "${args[@]}" || return 1
  elif [ "$target" = compose ]; then
    local compose=(docker compose -f "$ROOT/docker-compose.yml")
    run "${compose[@]}" build worker-1 || return 1   # one image (rl-worker:local) for every service
    run "${compose[@]}" up -d --wait kafka redis || return 1
    run "${compose[@]}" run --rm --no-deps worker-1 "${args[@]}" || return 1
  else
    if [ "$dry_run" = 0 ] && ! "${KUBECTL[@]}" get secret "$SECRET" >/dev/null; then
      say "the Secret $SECRET is missing: edit deploy/kubernetes/secret.yaml and kubectl apply -f it first"
      return 1
    fi
    run "${KUBECTL[@]}" apply -f "$K8S_DIR/configmap.yaml" || return 1
    # a one-off pod with the workers' ConfigMap and Secret, as restricted as the Deployment's pods
    local pod="rl-worker-preflight-$$" overrides json_args
    json_args=$(printf '"%s",' "${args[@]}" | sed 's/,$//')
    overrides=$(printf '{"spec":{"securityContext":{"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},'\
'"containers":[{"name":"%s","image":"%s","args":[%s],'\
'"envFrom":[{"configMapRef":{"name":"%s"}},{"secretRef":{"name":"%s"}}],'\
'"securityContext":{"allowPrivilegeEscalation":false,"capabilities":{"drop":["ALL"]}}}]}}' \
      "$pod" "$(kube_image)" "$json_args" "$CONFIGMAP" "$SECRET")
    run "${KUBECTL[@]}" run "$pod" --rm -i --restart=Never --quiet \
      --image "$(kube_image)" --overrides "$overrides" || return 1
  fi
}

kube_image() {
  if [ -n "$image" ]; then echo "$image"; else sed -n 's/^ *image: *//p' "$K8S_DIR/deployment.yaml" | head -1; fi
}

wait_ok() {  # wait until one worker's /health says ok
  local url=$1 deadline=$((SECONDS + timeout_s))
  if [ "$dry_run" = 1 ]; then echo "+ wait until $url/health says ok (at most ${timeout_s}s)"; return; fi
  until "${RL_WORKER[@]}" status --url "$url" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      "${RL_WORKER[@]}" status --url "$url" || true
      say "$url not ok after ${timeout_s}s: stopping the rollout here"
      return 1
    fi
    sleep 2
  done
  say "$url ok"
}

rollout_compose() {
  local compose=(docker compose -f "$ROOT/docker-compose.yml")
  for service in worker-1 worker-2; do
    say "rolling $service"
    run "${compose[@]}" up -d --no-deps "$service"
    if [ "$dry_run" = 1 ]; then wait_ok "http://127.0.0.1:<port of $service>"; else wait_ok "$(compose_url_of "$service")"; fi
  done
}

rollout_kubernetes() {
  say "rolling deployment/$DEPLOYMENT one pod at a time (maxSurge 1, maxUnavailable 0, readiness on /health)"
  run "${KUBECTL[@]}" apply -f "$K8S_DIR/pdb.yaml"
  if [ -n "$image" ]; then
    if [ "$dry_run" = 1 ]; then
      echo "+ sed 's#image: .*#image: $image#' $K8S_DIR/deployment.yaml | ${KUBECTL[*]} apply -f -"
    else
      sed "s#^\( *image:\).*#\1 $image#" "$K8S_DIR/deployment.yaml" | "${KUBECTL[@]}" apply -f -
    fi
  else
    run "${KUBECTL[@]}" apply -f "$K8S_DIR/deployment.yaml"
  fi
  run "${KUBECTL[@]}" rollout status "deployment/$DEPLOYMENT" --timeout "${timeout_s}s"
  monitor
}

case "$mode" in
  test) run_tests ;;
  monitor) monitor ;;
  deploy)
    [ "$dry_run" = 1 ] && say "dry run: printing the commands, running none"
    preflight || { say "pre-flight failed: nothing was deployed"; exit 1; }
    if [ "$target" = compose ]; then rollout_compose; else rollout_kubernetes; fi
    say "done"
    ;;
esac
