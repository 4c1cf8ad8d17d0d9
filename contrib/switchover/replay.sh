#!/usr/bin/env bash
# Replays the calls the replaced handlers' documents and schedulers make (Vercel cron entries,
# a Kubernetes CronJob running curl, crontab + curl, an EventBridge rule, the application's
# export metrics) against a running edgecron, and prints PASS or FAIL for each.
#
# usage: contrib/switchover/replay.sh BASE_URL SECRET
#   BASE_URL  where edgecron listens, e.g. http://127.0.0.1:8787
#   SECRET    its CRON_SECRET (one of them, when rotating)
# Optional: CRON_TOKEN (the legacy tick's X-Cron-Token), MAINTENANCE_SECRET
# (MAINTENANCE_CRON_SECRET); those calls are skipped when unset.
#
# Safe against a live server: every job call is a dry run (`dryRun=true` added) unless
# REPLAY_REAL_RUNS=1. The export-metric calls do record metrics (export ids `replay-*`; a
# second replay records nothing new: the same ids are answered as repeats).
# Exit status: 0 when every call passed, 1 otherwise.
set -u
base=${1:?usage: replay.sh BASE_URL SECRET}
secret=${2:?usage: replay.sh BASE_URL SECRET}
base=${base%/}
real=${REPLAY_REAL_RUNS:-0}
passed=0
failed=0

# call NAME EXPECTED METHOD PATH [curl arguments...]
# EXPECTED: one status or several joined by |. A job path gets dryRun=true unless real runs
# are asked for or the call names dryRun itself (in its path or its body).
call() {
  local name=$1 expected=$2 method=$3 path=$4
  shift 4
  local named=0 argument
  for argument in "$path" "$@"; do
    [[ $argument == *dryRun* ]] && named=1
  done
  if [ "$real" != 1 ] && [ "${DRY:-1}" = 1 ] && [ "$named" = 0 ]; then
    case $path in
      *\?*) path="$path&dryRun=true" ;;
      *) path="$path?dryRun=true" ;;
    esac
  fi
  local status verb=(-X "$method")
  # HEAD has no body to wait for: curl must be told so.
  [ "$method" = HEAD ] && verb=(--head)
  status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 120 "${verb[@]}" "$@" \
    "$base$path" 2>/dev/null) || status=000
  if [[ "|$expected|" == *"|$status|"* ]]; then
    echo "PASS $name ($method $path: $status)"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($method $path: $status, expected $expected)"
    failed=$((failed + 1))
  fi
}

# A call that runs no job: nothing to make a dry run of.
plain() { DRY=0 call "$@"; }

bearer=(-H "Authorization: Bearer $secret")
header=(-H "X-Cron-Secret: $secret")
json=(-H "Content-Type: application/json")

# --- Vercel cron entries of the export monitoring handlers (GET with the bearer secret).
for route in export-file-cleanup export-log-cleanup export-metrics-aggregate; do
  call "vercel cron GET /api/cron/$route" 200 GET "/api/cron/$route" "${bearer[@]}"
  call "manual POST /api/cron/$route" 200 POST "/api/cron/$route" "${bearer[@]}"
  call "$route with X-Cron-Secret" 200 GET "/api/cron/$route" "${header[@]}"
  plain "$route without a secret" 401 GET "/api/cron/$route"
  plain "$route with a wrong secret" 401 GET "/api/cron/$route" -H "Authorization: Bearer wrong-$secret"
  call "$route dry run in the query" 200 GET "/api/cron/$route?dryRun=true" "${bearer[@]}"
  call "$route dry run in the body" 200 POST "/api/cron/$route" "${bearer[@]}" "${json[@]}" \
    -d '{"dryRun":true}'
done
call "aggregate over a date range" 200 POST /api/cron/export-metrics-aggregate "${bearer[@]}" \
  "${json[@]}" -d '{"startDate":"2026-01-01","endDate":"2026-01-31"}'
call "aggregate over a date range in the query" 200 GET \
  "/api/cron/export-metrics-aggregate?startDate=2026-01-01&endDate=2026-01-02" "${bearer[@]}"
call "aggregate with a malformed date" 400 GET \
  "/api/cron/export-metrics-aggregate?startDate=2026-13-01" "${bearer[@]}"

# --- The application's export metrics, in the replaced system's own field names.
metric() {
  local id=$1 status=$2 size=$3 count=$4 error_type=$5 error_message=$6
  printf '{"export_id":"%s","user_id":"replay-user","format":"csv","status":"%s","conversation_count":%s,"duration_ms":1250,"file_size_bytes":%s,"error_type":%s,"error_message":%s}' \
    "$id" "$status" "$count" "$size" "$error_type" "$error_message"
}
plain "metric: a completed export" '201|200' POST /api/v1/export-metrics "${bearer[@]}" "${json[@]}" \
  -d "$(metric replay-1 completed 48213 12 null null)"
plain "metric: a failed export, its size null" '201|200' POST /api/v1/export-metrics "${bearer[@]}" \
  "${json[@]}" -d "$(metric replay-2 failed null 0 '"TimeoutError"' '"render timed out"')"
plain "metric: a failed export, count and size null" '201|200' POST /api/v1/export-metrics \
  "${bearer[@]}" "${json[@]}" -d "$(metric replay-3 failed null null '"S3Error"' '"upload failed"')"
plain "metric: the same export reported again" 200 POST /api/v1/export-metrics "${bearer[@]}" \
  "${json[@]}" -d "$(metric replay-1 completed 48213 12 null null)"
plain "metric: without an export id" '201' POST /api/v1/export-metrics "${bearer[@]}" "${json[@]}" \
  -d '{"user_id":"replay-user","format":"json","status":"completed","duration_ms":80,"conversation_count":3,"file_size_bytes":900}'
plain "metric: edgecron's own field names" '201' POST /api/v1/export-metrics "${bearer[@]}" \
  "${json[@]}" -d '{"tenantId":"replay-user","format":"ndjson","status":"success","durationMs":40,"rowCount":5,"bytes":700}'
plain "metric: an unknown status" 400 POST /api/v1/export-metrics "${bearer[@]}" "${json[@]}" \
  -d "$(metric replay-4 done 1 1 null null)"
plain "metric: the two field sets mixed" 400 POST /api/v1/export-metrics "${bearer[@]}" "${json[@]}" \
  -d '{"export_id":"replay-5","user_id":"u","tenantId":"t","format":"csv","status":"completed","duration_ms":1}'
plain "metric: without a secret" 401 POST /api/v1/export-metrics "${json[@]}" \
  -d "$(metric replay-6 completed 1 1 null null)"
plain "metric: GET is not a method here" 405 GET /api/v1/export-metrics "${bearer[@]}"

# --- The legacy tick (crontab + curl, and an EventBridge rule posting its event).
if [ -n "${CRON_TOKEN:-}" ]; then
  token=(-H "X-Cron-Token: $CRON_TOKEN")
  call "tick: GET with X-Cron-Token" 200 GET /api/cron/tick "${token[@]}"
  call "tick: POST with X-Cron-Token" 200 POST /api/cron/tick "${token[@]}"
  call "tick: an EventBridge scheduled event as the body" 200 POST /api/cron/tick "${token[@]}" \
    "${json[@]}" -d '{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"Scheduled Event","source":"aws.events","account":"123456789012","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":["arn:aws:events:us-east-1:123456789012:rule/cron-tick"],"detail":{}}'
  call "tick: an empty JSON object as the body" 200 POST /api/cron/tick "${token[@]}" "${json[@]}" -d '{}'
  plain "tick: a wrong token" 401 POST /api/cron/tick -H "X-Cron-Token: wrong-$CRON_TOKEN"
else
  echo "SKIP the tick's X-Cron-Token calls: CRON_TOKEN is not set"
fi
call "tick: with the cron secret" 200 POST /api/cron/tick "${bearer[@]}"
plain "tick: without a secret" 401 POST /api/cron/tick

# --- Import maintenance (GET, its own secret or the cron secret).
if [ -n "${MAINTENANCE_SECRET:-}" ]; then
  call "maintenance: its own secret" 200 GET /api/admin/maintenance \
    -H "Authorization: Bearer $MAINTENANCE_SECRET"
  call "maintenance: its own secret as X-Cron-Secret" 200 GET /api/admin/maintenance \
    -H "X-Cron-Secret: $MAINTENANCE_SECRET"
else
  echo "SKIP the maintenance secret's calls: MAINTENANCE_SECRET is not set"
fi
call "maintenance: the cron secret" 200 GET /api/admin/maintenance "${bearer[@]}"
plain "maintenance: without a secret" 401 GET /api/admin/maintenance
plain "maintenance: POST is not a method here" 405 POST /api/admin/maintenance "${bearer[@]}"

# --- The telemetry rollup's own path.
call "telemetry rollup: GET" 200 GET /api/jobs/telemetry-daily "${bearer[@]}"
call "telemetry rollup: POST" 200 POST /api/jobs/telemetry-daily "${bearer[@]}"
call "telemetry rollup: one day" 200 POST /api/jobs/telemetry-daily "${bearer[@]}" "${json[@]}" \
  -d '{"startDate":"2026-01-01","endDate":"2026-01-01"}'

# --- A Kubernetes CronJob (curl -fsS -X POST) or crontab + curl per job.
for job in export-interactions s3-sync cleanup maintenance export-file-cleanup export-log-cleanup \
  export-metrics-aggregate dsar-purge siem-ship engagement-health-recompute gitops-drift-check \
  approvals-expire flow-scheduler-tick scheduled-retrains outbox-reaper telemetry-daily cron-tick; do
  call "cronjob: POST /api/v1/cron/$job" 200 POST "/api/v1/cron/$job" "${bearer[@]}"
  call "crontab: GET /api/v1/cron/$job with X-Cron-Secret" 200 GET "/api/v1/cron/$job" "${header[@]}"
done
plain "a date range where the job takes none" 400 POST /api/v1/cron/export-interactions \
  "${bearer[@]}" "${json[@]}" -d '{"startDate":"2026-01-01","endDate":"2026-01-31"}'
plain "a mistyped dryrun is refused, never a real run" 400 POST /api/v1/cron/dsar-purge \
  "${bearer[@]}" "${json[@]}" -d '{"dryrun":true}'
plain "a null dryRun is refused" 400 POST /api/v1/cron/dsar-purge "${bearer[@]}" "${json[@]}" \
  -d '{"dryRun":null}'
plain "an unknown job" 404 POST /api/v1/cron/no-such-job "${bearer[@]}"
plain "a job without a secret" 401 POST /api/v1/cron/cleanup
plain "two secrets in one request" 400 POST /api/v1/cron/cleanup "${bearer[@]}" "${header[@]}"

# --- What the operator's monitoring reads.
plain "health" 200 GET /healthz
plain "health: HEAD" 200 HEAD /healthz
plain "metrics" 200 GET /metrics
plain "the jobs" 200 GET /api/v1/jobs "${bearer[@]}"
plain "the runs" 200 GET "/api/v1/runs?job=cleanup&limit=5" "${bearer[@]}"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
