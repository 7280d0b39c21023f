# shellcheck shell=bash disable=SC2034  # WORKERS_COUNTS, WORKERS_CLIENTS are read by scripts/bench
# Server workers for scripts/bench (sourced by it after paths.sh; on by default, for the
# tether-tls path; `--workers-only` runs only this, `--no-workers` leaves it out): one
# `tether server --workers N`, four `tether connect` processes (four sessions), each mapping
# a local port to its own iperf3 server, and four iperf3 clients at once, one stream each
# through its own session. Taken with 1 and then 2 workers in the same repetition (the order
# alternates between repetitions). Records, per worker count N:
#   workersN_gbps               aggregate Gbit/s (the sum of the four receivers)
#   workersN_bytes              bytes received, all four
#   workersN_server_cpu_s       CPU seconds of the server process (all its threads)
#   workersN_clients_cpu_s      CPU seconds of the four tether clients
#   workersN_wall_s             the window the CPU was counted over
#   workersN_thread1_pct, _thread2_pct
#                               the server's busiest and second busiest thread, % of a core
#   workersN_busy_pct           the machine's busy share (100 = all CPUs)

WORKERS_COUNTS=${WORKERS_COUNTS:-"1 2"}
WORKERS_CLIENTS=${WORKERS_CLIENTS:-4}

# thread_ticks PID: "TID TICKS" (utime + stime) for each thread of PID
thread_ticks() {
  local f
  for f in /proc/"$1"/task/*/stat; do
    # the fields after the command name, which is in parentheses and may hold spaces
    sed -n 's/^\([0-9]*\) (.*) \(.*\)$/\1 \2/p' "$f" 2> /dev/null |
      awk '{ print $1, $13 + $14 }'   # utime and stime: fields 14 and 15 of stat
  done
}

# workers_once N PORT...: one measurement with `--workers N`, one session and one iperf3
# stream per target port
workers_once() {
  local n=$1 i rc=0 sp ca token server lp json gbps bytes sum_g=0 sum_b=0 fails=0
  shift
  local ports=("$@") clients=() iperfs=() jsons=() locals=()
  CUR_PIDS=()
  spawn tether-server "$TETHER" server --dev --listen 127.0.0.1:0 --state-dir "$TETHER_STATE" \
    --device bench=127.0.0.1 --json --log-level warn --workers "$n" || return 1
  server=$SPAWNED_PID
  wait_event "$SPAWNED_OUT" dev 15 || return 1
  sp=$(event_field "$SPAWNED_OUT" listening local) || return 1
  ca=$(event_field "$SPAWNED_OUT" dev ca) || return 1
  token=$(event_field "$SPAWNED_OUT" dev token_file) || return 1
  for i in "${!ports[@]}"; do
    spawn tether-client "$TETHER" connect "tls://$sp" --ca "$ca" --token-file "$token" \
      -L "127.0.0.1:0:bench:${ports[i]}" --json --log-level warn || return 1
    clients+=("$SPAWNED_PID")
    wait_event "$SPAWNED_OUT" connected 15 || return 1
    wait_event "$SPAWNED_OUT" listening 15 || return 1
    tether_ports "$SPAWNED_OUT" "${ports[i]}" || return 1
    locals+=("$PATH_PORT")
  done
  local before after=$RUN/threads.after
  before=$RUN/threads.before
  thread_ticks "$server" > "$before"
  "$TOOL" watch -i 100 "${clients[@]}" > "$RUN/watch-clients.out" 2> /dev/null &
  local cwatch=$!
  watch_begin "$server"
  for i in "${!locals[@]}"; do
    json=$LOGS/iperf-$REP-workers$n-$i.json
    jsons+=("$json")
    timeout -k 2 $((BULK_T + 20)) iperf3 -c 127.0.0.1 -p "${locals[i]}" -t "$BULK_T" -P 1 \
      -l 1M --connect-timeout 3000 -J > "$json" 2>> "$LOGS/iperf3-client.err" &
    iperfs+=("$!")
  done
  for i in "${!iperfs[@]}"; do
    wait "${iperfs[i]}" || rc=1
  done
  watch_end "workers$n" counts
  thread_ticks "$server" > "$after"
  kill -TERM "$cwatch" 2> /dev/null
  wait "$cwatch" 2> /dev/null
  for json in "${jsons[@]}"; do
    read -r gbps bytes < <(awk '/"sum_received"/ { on = 1 }
      on && /"bytes"/ { gsub(/[^0-9.eE+-]/, "", $2); b = $2 }
      on && /"bits_per_second"/ { gsub(/[^0-9.eE+-]/, "", $2); r = $2 }
      on && /}/ { if (b != "" && r != "") print r / 1e9, b; exit }' "$json" 2> /dev/null)
    if [[ -z ${gbps:-} ]]; then fails=$((fails + 1)); continue; fi
    sum_g=$(awk -v a="$sum_g" -v b="$gbps" 'BEGIN { print a + b }')
    sum_b=$(awk -v a="$sum_b" -v b="$bytes" 'BEGIN { printf "%.0f", a + b }')
  done
  if ((rc != 0 || fails > 0)); then
    log "  workers=$n: $fails of ${#jsons[@]} iperf3 clients failed"
    rec "workers${n}_gbps" FAIL
    return 2
  fi
  local wall cpu ccpu tops top1 top2
  wall=$(kv "$RUN/watch.out" wall_s)
  cpu=$(kv "$RUN/watch.out" cpu_s)
  ccpu=$(kv "$RUN/watch-clients.out" cpu_s)
  # each thread's share of a core over the window, busiest first
  tops=$(awk -v hz="$(getconf CLK_TCK)" -v wall="$wall" '
    NR == FNR { t0[$1] = $2; next }
    ($1 in t0) && wall > 0 { printf "%.1f\n", 100 * ($2 - t0[$1]) / hz / wall }' \
    "$before" "$after" | sort -rn | head -2 | tr '\n' ' ')
  read -r top1 top2 <<< "$tops"
  rec "workers${n}_gbps" "$sum_g"
  rec "workers${n}_bytes" "$sum_b"
  rec "workers${n}_server_cpu_s" "$cpu"
  rec "workers${n}_clients_cpu_s" "$ccpu"
  rec "workers${n}_wall_s" "$wall"
  rec "workers${n}_busy_pct" "$(kv "$RUN/watch.out" busy_pct)"
  [[ -n ${top1:-} ]] && rec "workers${n}_thread1_pct" "$top1"
  [[ -n ${top2:-} ]] && rec "workers${n}_thread2_pct" "$top2"
  log "  workers=$n: $(printf '%.2f' "$sum_g") Gbit/s over ${#jsons[@]} sessions, server CPU $cpu s" \
    "in $wall s (busiest threads ${top1:-?}% ${top2:-}${top2:+% }of a core), clients $ccpu s" \
    "(machine busy $(kv "$RUN/watch.out" busy_pct)%, others $(kv "$RUN/watch.out" foreign_pct)%)"
}

# workers_targets: (fresh) iperf3 servers, one per client: WORKERS_PORTS, WORKERS_IPERF_PIDS
WORKERS_PORTS=() WORKERS_IPERF_PIDS=()
workers_targets() {
  local p i
  ((${#WORKERS_IPERF_PIDS[@]})) && stop_pids "${WORKERS_IPERF_PIDS[@]}"
  WORKERS_PORTS=() WORKERS_IPERF_PIDS=()
  for ((i = 0; i < WORKERS_CLIENTS; i++)); do
    alloc_port p || return 1
    start_bg iperf3-server iperf3 -s -B 127.0.0.1 -p "$p"
    WORKERS_IPERF_PIDS+=("$SPAWNED_PID")
    wait_listen "$p" || return 1
    WORKERS_PORTS+=("$p")
  done
}

# measure_workers: the four sessions with each worker count in WORKERS_COUNTS, against
# WORKERS_CLIENTS iperf3 servers of their own (iperf3 -s serves one test at a time)
measure_workers() {
  local n counts
  workers_targets
  counts=$WORKERS_COUNTS
  # alternate the order between repetitions, so that a drift of the machine's load does not
  # always favour the same count
  ((REP % 2 == 0)) && counts=$(tr ' ' '\n' <<< "$counts" | tac | tr '\n' ' ')
  for n in $counts; do
    if ((${#WORKERS_PORTS[@]} < WORKERS_CLIENTS)); then
      rec "workers${n}_gbps" FAIL
      continue
    fi
    workers_once "$n" "${WORKERS_PORTS[@]}"
    case $? in
      0) ;;
      1) log "  workers=$n: the server or a client did not start"; rec "workers${n}_gbps" FAIL ;;
      *) # a failed iperf3 may leave its server stuck in a test: fresh ones for the next
         workers_targets ;;
    esac
    instance_stop
  done
  ((${#WORKERS_IPERF_PIDS[@]})) && stop_pids "${WORKERS_IPERF_PIDS[@]}"
  WORKERS_IPERF_PIDS=() WORKERS_PORTS=()
}
