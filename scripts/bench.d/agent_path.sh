# shellcheck shell=bash disable=SC2034  # PATH_PORT(2), SKIP_NOTE, ALL_PATHS are read by scripts/bench
# The tether-agent path (docs/AGENTS.md): tether connect -> tether server -> tether agent ->
# target. Sourced by scripts/bench after paths.sh, whose conventions it follows.
#
# The server runs with its default workers (one per CPU), so the client's and the agent's
# sessions usually sit on different workers: the bridge between them crosses threads, the
# case it is built for. Compare it with tether-tls (the same client and server, a direct
# device) to see what the agent's session and the bridge cost.

ALL_PATHS+=" tether-agent"
MEM_PATHS+=" tether-agent"  # what idle connections cost when each is also an agent stream
AGENT_DIR=""

path_tether-agent() {
  case $1 in
    setup)
      [[ -x $TETHER ]] || { SKIP_NOTE="no tether binary at $TETHER"; return 1; }
      AGENT_DIR=$RUN/tether-agent
      mkdir -p "$AGENT_DIR" && chmod 700 "$AGENT_DIR" || return 1
      # A --dev state directory gives a CA and a server certificate for 127.0.0.1.
      "$TETHER" server --dev --state-dir "$AGENT_DIR/pki" --print-fingerprint > /dev/null || return 1
      local who token
      for who in client agent; do
        token="tt_$(openssl rand -hex 24)" || return 1
        printf '%s\n' "$token" > "$AGENT_DIR/$who.token"
        printf '%s' "$token" | sha256sum | cut -d' ' -f1 > "$AGENT_DIR/$who.sha256"
      done
      chmod 600 "$AGENT_DIR"/*.token
      cat > "$AGENT_DIR/server.toml" <<EOF_CONFIG
listen = "127.0.0.1:0"
cert = "pki/server.pem"
key = "pki/server.key"

[[credential]]
name = "bench"
token_sha256 = "$(cat "$AGENT_DIR/client.sha256")"
allow = ["*:*"]

[[credential]]
name = "bench-agent"
token_sha256 = "$(cat "$AGENT_DIR/agent.sha256")"
agent_for = "bench"

[[device]]
id = "bench"
agent = true
EOF_CONFIG
      ;;
    start)
      local sp allow=$2 second=()
      [[ -z ${3:-} ]] || { allow+=",$3"; second=(-L "127.0.0.1:0:bench:$3"); }
      spawn tether-server "$TETHER" server --config "$AGENT_DIR/server.toml" --json \
        --log-level warn || return 1
      wait_event "$SPAWNED_OUT" listening 15 || return 1
      sp=$(event_field "$SPAWNED_OUT" listening local) || return 1
      spawn tether-agent "$TETHER" agent "tls://$sp" --ca "$AGENT_DIR/pki/ca.pem" \
        --token-file "$AGENT_DIR/agent.token" --allow "$allow" --target 127.0.0.1 --json \
        --log-level warn || return 1
      wait_event "$SPAWNED_OUT" connected 15 || return 1
      spawn tether-client "$TETHER" connect "tls://$sp" --ca "$AGENT_DIR/pki/ca.pem" \
        --token-file "$AGENT_DIR/client.token" -L "127.0.0.1:0:bench:$2" "${second[@]}" \
        --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" listening 15 || return 1
      tether_ports "$SPAWNED_OUT" "$2" "${3:-}" ;;
    describe) echo "$(tether_version): tether connect tls:// -> tether server -> tether agent (its own TLS session) -> target, TLS 1.3 both legs" ;;
  esac
}
