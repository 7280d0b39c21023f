# shellcheck shell=bash
# Messages/s through POST /webhooks/{token} (docs/API.md), with wrk, beside nginx serving a
# small static file in the same repetition: the HTTP API's cost next to a plain web server.
# Sourced by scripts/bench, which runs measure_webhook once per repetition. Each message is
# stored in the message log (one synchronous SQLite commit) before its 200, and goes to the
# echo target without waiting for a reply.

WEBHOOK_T=${WEBHOOK_T:-10}
WEBHOOK_CONNS=${WEBHOOK_CONNS:-32}

# wrk_rate OUT: the Requests/sec figure of a wrk report
wrk_rate() { awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' "$1"; }

measure_webhook() {
  if ! command -v wrk > /dev/null || ! command -v nginx > /dev/null; then
    log "  webhook: wrk or nginx missing (scripts/bench installs wrk and nginx-light): skipped"
    return 0
  fi
  local dir=$RUN/webhook-$REP nginx_port key sha url hook lua
  mkdir -p "$dir/www" && chmod 700 "$dir" || return 1
  printf 'ok\n' > "$dir/www/index.txt"
  "$TETHER" server --dev --state-dir "$dir/pki" --print-fingerprint > /dev/null || return 1
  key="tt_$(openssl rand -hex 24)"
  sha=$(printf '%s' "$key" | sha256sum | cut -d' ' -f1)
  cat > "$dir/server.toml" << EOF_CONFIG
listen = "127.0.0.1:0"
cert = "pki/server.pem"
key = "pki/server.key"
api_listen = "127.0.0.1:0"
state_dir = "state"

[api]
tls = false
webhook_rate_per_minute = 1000000
webhook_burst = 1000000

[[credential]]
name = "bench"
token_sha256 = "$sha"
allow = ["*:*"]

[[api_key]]
name = "bench"
token_sha256 = "$sha"
allow = ["*:*"]

[[device]]
id = "bench-echo"
address = "127.0.0.1"
EOF_CONFIG
  spawn tether-api "$TETHER" server --config "$dir/server.toml" --json
  wait_event "$SPAWNED_OUT" api 10 || return 1
  url=$(event_field "$SPAWNED_OUT" api url) || return 1
  hook=$(curl -sS --fail-with-body -H "Authorization: Bearer $key" \
    -d "{\"port\": $ECHO_PORT, \"protocol\": \"tcp\"}" \
    "$url/api/v1/devices/bench-echo/webhooks" | sed -n 's/.*"url":"\([^"]*\)".*/\1/p')
  [[ -n $hook ]] || { log "  webhook: could not create one"; return 1; }
  lua=$dir/post.lua
  printf '%s\n' 'wrk.method = "POST"' 'wrk.body = "{\"data\": \"ping\"}"' \
    'wrk.headers["Content-Type"] = "application/json"' > "$lua"
  wrk -t2 -c"$WEBHOOK_CONNS" -d"${WEBHOOK_T}s" -s "$lua" "$url$hook" > "$dir/wrk-webhook.out" 2>&1
  rec webhook_msgs_s "$(wrk_rate "$dir/wrk-webhook.out")"
  rec webhook_non2xx "$(awk '/Non-2xx/ { print $NF }' "$dir/wrk-webhook.out")"

  alloc_port nginx_port || return 1
  cat > "$dir/nginx.conf" << EOF_NGINX
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  server { listen 127.0.0.1:$nginx_port; root $dir/www; }
}
EOF_NGINX
  spawn nginx nginx -c "$dir/nginx.conf" -p "$dir"
  wait_listen "$nginx_port" || return 1
  wrk -t2 -c"$WEBHOOK_CONNS" -d"${WEBHOOK_T}s" "http://127.0.0.1:$nginx_port/index.txt" \
    > "$dir/wrk-nginx.out" 2>&1
  rec nginx_static_req_s "$(wrk_rate "$dir/wrk-nginx.out")"
  log "  webhook: $(wrk_rate "$dir/wrk-webhook.out") messages/s through POST /webhooks/{token};" \
    "nginx static: $(wrk_rate "$dir/wrk-nginx.out") requests/s"
  stop_pids "${CUR_PIDS[@]}"
  CUR_PIDS=()
}
