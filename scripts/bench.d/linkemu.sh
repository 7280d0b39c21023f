# shellcheck shell=bash disable=SC2034  # LONGLINK_PATHS is read by scripts/bench
# Long links for scripts/bench (sourced by it after paths.sh; `--longlink` runs them): the
# link emulator (bench.d/linkemu) between the two ends of a path, and one iperf3 stream
# through it. The paths:
#   direct      iperf3 client -> linkemu -> iperf3 server: plain TCP over the link
#   ssh-gcm     ssh -L -> linkemu -> sshd -> iperf3 server (fixed 2 MiB channel windows)
#   tether-tls  tether connect -> linkemu -> tether server -> iperf3 server
# The emulator ends TCP on both of its sides, so TCP's windows see loopback while what a
# path does per round trip (ssh's channel window, tether's stream window) sees the link's
# whole round trip; docs/PERFORMANCE.md says more. paths.sh has no place for a hop between
# a path's two ends, so its ssh and tether paths are started here again, with the same
# settings as there but the client pointed at the emulator.

LONGLINK_PATHS="direct ssh-gcm tether-tls"
# name:linkemu arguments (the name goes into the metrics: longlink_NAME_mbps)
# The issue's two links, and between them the 100 ms link at 1 Gbit/s: without a rate the
# emulator's queue lets plain TCP run as fast as this machine relays (several Gbit/s),
# which no 16 MiB window reaches at 100 ms (16 MiB per round trip is 1.3 Gbit/s). Two more
# rows say what bounds the unlimited one: the same relay with no delay (what each path
# moves through the emulator on this machine at all), and the 100 ms link again with
# tether's window cap raised to 128 MiB (the client's --max-stream-window, so the stream
# runs the other way, iperf3 -R, for every path of that row).
LONGLINK_LINKS=("rtt0:--delay-ms 0" "rtt100:--delay-ms 50"
                "rtt100-cap128:--delay-ms 50" "rtt100-1gbit:--delay-ms 50 --rate-mbit 1000"
                "rtt300-20mbit:--delay-ms 150 --rate-mbit 20")
# per link: more iperf3 client options, and more `tether connect` options
declare -A LONGLINK_IPERF_ARGS=([rtt100-cap128]="-R")
declare -A LONGLINK_TETHER_ARGS=([rtt100-cap128]="--max-stream-window 128M")
# iperf3 seconds per measurement, and the first seconds left out (TCP and the windows of
# every path ramp up over a few round trips first; all paths get the same)
LONGLINK_T=${LONGLINK_T:-8} LONGLINK_OMIT=${LONGLINK_OMIT:-2}
LINKEMU=$HERE/linkemu

# link_hop PORT ARGS...: a linkemu instance forwarding to 127.0.0.1:PORT; sets LINK_PORT
link_hop() {
  local to=$1 deadline=$((SECONDS + 10))
  shift
  spawn linkemu python3 "$LINKEMU" --listen 127.0.0.1:0 --to "127.0.0.1:$to" "$@" || return 1
  until grep -q '^linkemu listening on' "$SPAWNED_OUT" 2> /dev/null; do
    if ! alive "$SPAWNED_PID" || ((SECONDS >= deadline)); then
      log "  linkemu did not start: $(tail -1 "${SPAWNED_OUT%.out}.err" 2> /dev/null)"
      return 1
    fi
    sleep 0.05
  done
  LINK_PORT=$(sed -n 's/^linkemu listening on .*:\([0-9]*\)$/\1/p' "$SPAWNED_OUT")
}

# longlink_start PATH TARGET TETHER_ARGS ARGS...: PATH to 127.0.0.1:TARGET with the link
# (linkemu ARGS) between its two ends, TETHER_ARGS (a list in one word) given to `tether
# connect`; sets PATH_PORT
longlink_start() {
  local path=$1 target=$2 tether_args=$3 a sp ca token
  shift 3
  CUR_PIDS=() PATH_PORT=""
  case $path in
    direct)
      link_hop "$target" "$@" || return 1
      PATH_PORT=$LINK_PORT ;;
    ssh-gcm)
      ssh_server || return 1
      link_hop "$SSHD_PORT" "$@" || return 1
      alloc_port a || return 1
      spawn ssh ssh -F /dev/null -N -T -p "$LINK_PORT" -i "$SSH_DIR/user_key" \
        -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
        -o HostKeyAlias=bench-sshd -o UserKnownHostsFile="$SSH_DIR/known_hosts" \
        -o ExitOnForwardFailure=yes -o Compression=no -o ConnectTimeout=20 \
        -o Ciphers=aes128-gcm@openssh.com -o LogLevel=ERROR \
        -L "127.0.0.1:$a:127.0.0.1:$target" "$(id -un)@127.0.0.1" || return 1
      wait_listen "$a" 30 || return 1
      PATH_PORT=$a ;;
    tether-tls)
      spawn tether-server "$TETHER" server --dev --listen 127.0.0.1:0 --state-dir "$TETHER_STATE" \
        --device bench=127.0.0.1 --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" dev 15 || return 1
      sp=$(event_field "$SPAWNED_OUT" listening local) || return 1
      ca=$(event_field "$SPAWNED_OUT" dev ca) || return 1
      token=$(event_field "$SPAWNED_OUT" dev token_file) || return 1
      link_hop "${sp##*:}" "$@" || return 1
      # shellcheck disable=SC2086  # tether_args is a list of options
      spawn tether-client "$TETHER" connect "tls://127.0.0.1:$LINK_PORT" --ca "$ca" \
        --token-file "$token" -L "127.0.0.1:0:bench:$target" --json --log-level warn $tether_args || return 1
      wait_event "$SPAWNED_OUT" connected 30 || return 1
      tether_ports "$SPAWNED_OUT" "$target" ;;
    *) log "  no long-link variant of $path"; return 1 ;;
  esac
}

# measure_longlink: one iperf3 stream through CUR_PATH over each link; Mbit/s at the receiver
measure_longlink() {
  local link name args json mbps rc
  for link in "${LONGLINK_LINKS[@]}"; do
    name=${link%%:*} args=${link#*:}
    json=$LOGS/iperf-$REP-$CUR_PATH-longlink-$name.json
    # shellcheck disable=SC2086  # args is a list of linkemu options
    if ! longlink_start "$CUR_PATH" "$IPERF_PORT" "${LONGLINK_TETHER_ARGS[$name]:-}" $args; then
      log "  $name: $CUR_PATH did not start over the link"
      rec "longlink_${name}_mbps" FAIL
      instance_stop
      continue
    fi
    watch_begin "${CUR_PIDS[@]}"
    # shellcheck disable=SC2086  # a list of iperf3 options
    timeout -k 2 $((LONGLINK_T + LONGLINK_OMIT + 30)) iperf3 -c 127.0.0.1 -p "$PATH_PORT" \
      -t "$LONGLINK_T" -O "$LONGLINK_OMIT" -l 1M --connect-timeout 10000 -J ${LONGLINK_IPERF_ARGS[$name]:-} \
      > "$json" 2>> "$LOGS/iperf3-client.err"
    rc=$?
    watch_end "longlink_$name" counts
    mbps=$(awk '/"sum_received"/ { on = 1 } on && /"bits_per_second"/ { gsub(/[^0-9.eE+-]/, "", $2); print $2 / 1e6; exit }' "$json" 2> /dev/null)
    if ((rc == 0)) && [[ -n $mbps ]]; then
      rec "longlink_${name}_mbps" "$mbps"
      rec "longlink_${name}_path_peak_rss_kb" "$(kv "$RUN/watch.out" peak_rss_kb)"
      log "  $name ($args): $(printf '%.0f' "$mbps") Mbit/s (others $(kv "$RUN/watch.out" foreign_pct)%)"
    else
      rec "longlink_${name}_mbps" FAIL
      log "  $name: iperf3 failed (rc $rc); restarting the iperf3 server"
      stop_pids "$IPERF_PID"
      start_iperf
    fi
    instance_stop
  done
}
