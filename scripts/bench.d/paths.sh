# shellcheck shell=bash disable=SC2034  # PATH_PORT(2), SKIP_NOTE, ALL_PATHS are read by scripts/bench
# The paths scripts/bench measures. Sourced by scripts/bench, which provides the helpers
# (spawn, alloc_port, wait_listen, wait_event, event_field, log) and $RUN, $LOGS, $TETHER.
#
# A path is one function, path_<name>, called as:
#   path_<name> setup        once per run (keys, certificates, probes). Return 0 when ready,
#                            1 on failure, 2 to skip the path; a skip sets SKIP_NOTE.
#   path_<name> start PORT   make a local port forward every TCP connection to 127.0.0.1:PORT;
#                            set PATH_PORT to that local port. Long-running processes are
#                            started with `spawn ROLE CMD...` and stopped by the caller.
#   path_<name> start PORT PORT2
#                            the same, and a second local port (PATH_PORT2) to 127.0.0.1:PORT2
#                            through the SAME instance: one ssh connection, one tether
#                            session, one stunnel pair. The latency-under-load test sends
#                            bulk through one mapping and a ping-pong through the other. A
#                            path that cannot leaves PATH_PORT2 empty and is not measured.
#   path_<name> describe     one line for the report: the tool, its version, its settings.
#
# Crypto is held equal where the issue compares: ssh-gcm and both TLS paths use AES-128-GCM;
# ssh-ctr uses aes128-ctr with hmac-sha2-256, which is what libssh2 negotiates for tether-ssh.

ALL_PATHS="direct socat ssh-gcm ssh-ctr stunnel tether-tls tether-ssh"

# ------------------------------------------------------------------ direct
path_direct() {
  case $1 in
    start) PATH_PORT=$2 PATH_PORT2=${3:-} ;;
    describe) echo "no relay: the load tools talk to the target (the ceiling)" ;;
  esac
}

# ------------------------------------------------------------------ socat
path_socat() {
  case $1 in
    start)
      local a a2
      alloc_port a || return 1
      spawn socat socat -b 65536 \
        "TCP4-LISTEN:$a,bind=127.0.0.1,reuseaddr,fork,backlog=4096" "TCP4:127.0.0.1:$2" || return 1
      wait_listen "$a" || return 1
      PATH_PORT=$a
      # socat shares nothing between connections: a second listener is the same thing
      if [[ -n ${3:-} ]]; then
        alloc_port a2 || return 1
        spawn socat socat -b 65536 \
          "TCP4-LISTEN:$a2,bind=127.0.0.1,reuseaddr,fork,backlog=4096" "TCP4:127.0.0.1:$3" || return 1
        wait_listen "$a2" || return 1
        PATH_PORT2=$a2
      fi ;;
    describe) echo "$(socat -V 2>/dev/null | awk '/socat version/ {print "socat " $3; exit}') -b 65536, a process per connection, no crypto" ;;
  esac
}

# ------------------------------------------------------------------ OpenSSH
SSH_DIR=""
ssh_keys() {
  [[ -n $SSH_DIR ]] && return 0
  SSH_DIR=$RUN/ssh
  mkdir -p "$SSH_DIR" && chmod 700 "$SSH_DIR" || return 1
  ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$SSH_DIR/host_key" || return 1
  ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$SSH_DIR/user_key" || return 1
  cp "$SSH_DIR/user_key.pub" "$SSH_DIR/authorized_keys"
  # sshd as root insists on its privilege-separation directory; nothing else creates it here
  if ((EUID == 0)); then mkdir -p /run/sshd && chmod 755 /run/sshd; fi
}

# ssh_server: a private sshd on a free loopback port; sets SSHD_PORT. It allows both ciphers
# the paths use; each client picks one.
ssh_server() {
  local p
  alloc_port p || return 1
  cat > "$SSH_DIR/sshd_config.$p" <<EOF
Port $p
ListenAddress 127.0.0.1
HostKey $SSH_DIR/host_key
PidFile none
AuthorizedKeysFile $SSH_DIR/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowTcpForwarding local
X11Forwarding no
PermitTTY no
PrintMotd no
UseDNS no
Compression no
MaxStartups 100
Ciphers aes128-gcm@openssh.com,aes128-ctr
LogLevel ERROR
EOF
  spawn sshd /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config.$p" || return 1
  wait_listen "$p" 10 || return 1
  SSHD_PORT=$p
}

# ssh_forward CIPHER MAC TARGET [TARGET2]: sshd plus `ssh -N -L` in front of it (with
# TARGET2, a second -L on the same connection)
ssh_forward() {
  local cipher=$1 mac=$2 target=$3 target2=${4:-} a a2 mac_opt=() second=()
  [[ -n $mac ]] && mac_opt=(-o "MACs=$mac")
  ssh_server || return 1
  alloc_port a || return 1
  if [[ -n $target2 ]]; then
    alloc_port a2 || return 1
    second=(-L "127.0.0.1:$a2:127.0.0.1:$target2")
  fi
  spawn ssh ssh -F /dev/null -N -T -p "$SSHD_PORT" -i "$SSH_DIR/user_key" \
    -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes \
    -o HostKeyAlias=bench-sshd -o UserKnownHostsFile="$SSH_DIR/known_hosts" \
    -o ExitOnForwardFailure=yes -o Compression=no -o ConnectTimeout=10 \
    -o Ciphers="$cipher" "${mac_opt[@]}" -o LogLevel=ERROR \
    -L "127.0.0.1:$a:127.0.0.1:$target" "${second[@]}" "$(id -un)@127.0.0.1" || return 1
  wait_listen "$a" 15 || return 1
  PATH_PORT=$a
  if [[ -n $target2 ]]; then wait_listen "$a2" 15 || return 1; PATH_PORT2=$a2; fi
}

ssh_setup() {
  ssh_keys || return 1
  echo "bench-sshd $(cut -d' ' -f1,2 "$SSH_DIR/host_key.pub")" > "$SSH_DIR/known_hosts"
}
ssh_version() { ssh -V 2>&1 | awk -F, '{print $1}'; }

path_ssh-gcm() {
  case $1 in
    setup) ssh_setup ;;
    start) ssh_forward aes128-gcm@openssh.com "" "$2" "${3:-}" ;;
    describe) echo "$(ssh_version): ssh -N -L through a private sshd, aes128-gcm@openssh.com" ;;
  esac
}

path_ssh-ctr() {
  case $1 in
    setup) ssh_setup ;;
    start) ssh_forward aes128-ctr hmac-sha2-256 "$2" "${3:-}" ;;
    describe) echo "$(ssh_version): ssh -N -L through a private sshd, aes128-ctr + hmac-sha2-256 (what libssh2 negotiates)" ;;
  esac
}

# ------------------------------------------------------------------ stunnel
TLS_DIR=""
path_stunnel() {
  case $1 in
    setup)
      TLS_DIR=$RUN/stunnel
      mkdir -p "$TLS_DIR" || return 1
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=bench-stunnel -addext subjectAltName=DNS:bench-stunnel \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" >"$LOGS/openssl-req.log" 2>&1 ;;
    start)
      local m a m2 a2
      alloc_port m && alloc_port a || return 1
      # both ends: TLS 1.3 only, with the suite tether and ssh-gcm use
      cat > "$TLS_DIR/server.$m.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = 3
[in]
accept = 127.0.0.1:$m
connect = 127.0.0.1:$2
cert = $TLS_DIR/cert.pem
key = $TLS_DIR/key.pem
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
EOF
      cat > "$TLS_DIR/client.$m.conf" <<EOF
foreground = yes
pid =
syslog = no
debug = 3
[out]
client = yes
accept = 127.0.0.1:$a
connect = 127.0.0.1:$m
sslVersionMin = TLSv1.3
sslVersionMax = TLSv1.3
ciphersuites = TLS_AES_128_GCM_SHA256
verifyPeer = yes
CAfile = $TLS_DIR/cert.pem
checkHost = bench-stunnel
EOF
      if [[ -n ${3:-} ]]; then  # a second mapping: one more service in the same two processes
        local tls_in tls_out
        alloc_port m2 && alloc_port a2 || return 1
        tls_in=$(sed -n '/^cert =/,/^ciphersuites/p' "$TLS_DIR/server.$m.conf")
        tls_out=$(sed -n '/^sslVersionMin/,/^checkHost/p' "$TLS_DIR/client.$m.conf")
        printf '[in2]\naccept = 127.0.0.1:%s\nconnect = 127.0.0.1:%s\n%s\n' "$m2" "$3" "$tls_in" \
          >> "$TLS_DIR/server.$m.conf"
        printf '[out2]\nclient = yes\naccept = 127.0.0.1:%s\nconnect = 127.0.0.1:%s\n%s\n' \
          "$a2" "$m2" "$tls_out" >> "$TLS_DIR/client.$m.conf"
      fi
      spawn stunnel-server stunnel4 "$TLS_DIR/server.$m.conf" || return 1
      wait_listen "$m" 10 || return 1
      spawn stunnel-client stunnel4 "$TLS_DIR/client.$m.conf" || return 1
      wait_listen "$a" 10 || return 1
      PATH_PORT=$a
      if [[ -n ${3:-} ]]; then wait_listen "$a2" 10 || return 1; PATH_PORT2=$a2; fi ;;
    describe) stunnel4 -version 2>&1 | awk '/^stunnel/ {print $1 " " $2 ": client -> server, TLS 1.3 TLS_AES_128_GCM_SHA256, a thread per connection"; exit}' ;;
  esac
}

# ------------------------------------------------------------------ tether
TETHER_STATE=""
tether_version() { "$TETHER" --version 2>/dev/null | head -1; }

# tether_ports OUT TARGET [TARGET2]: PATH_PORT (and PATH_PORT2) from the "listening" events
# of a `tether connect --json`, by the target port each mapping forwards to
tether_ports() {
  local out=$1 lp deadline=$((SECONDS + 15))
  lp=$(grep "\"event\":\"listening\"" "$out" | grep -m1 "\"port\":$2[,}]" | sed -n 's/.*"local":"\([^"]*\)".*/\1/p')
  [[ -n $lp ]] || return 1
  PATH_PORT=${lp##*:}
  [[ -n ${3:-} ]] || return 0
  until lp=$(grep "\"event\":\"listening\"" "$out" | grep -m1 "\"port\":$3[,}]" | sed -n 's/.*"local":"\([^"]*\)".*/\1/p') && [[ -n $lp ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
  PATH_PORT2=${lp##*:}
}

path_tether-tls() {
  case $1 in
    setup)
      [[ -x $TETHER ]] || { SKIP_NOTE="no tether binary at $TETHER"; return 1; }
      TETHER_STATE=$RUN/tether-state ;;
    start)
      local sp lp ca token
      spawn tether-server "$TETHER" server --dev --listen 127.0.0.1:0 --state-dir "$TETHER_STATE" \
        --device bench=127.0.0.1 --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" dev 15 || return 1
      sp=$(event_field "$SPAWNED_OUT" listening local) || return 1
      ca=$(event_field "$SPAWNED_OUT" dev ca) || return 1
      token=$(event_field "$SPAWNED_OUT" dev token_file) || return 1
      local second=()  # a second -L in the same `tether connect`: one session
      [[ -z ${3:-} ]] || second=(-L "127.0.0.1:0:bench:$3")
      spawn tether-client "$TETHER" connect "tls://$sp" --ca "$ca" --token-file "$token" \
        -L "127.0.0.1:0:bench:$2" "${second[@]}" --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" listening 15 || return 1
      tether_ports "$SPAWNED_OUT" "$2" "${3:-}" ;;
    describe) echo "$(tether_version): tether connect tls:// -> tether server -> target, TLS 1.3 (AES-128-GCM), one session" ;;
  esac
}

# The ssh:// client is young: probe it against a closed port and skip the path, with the
# reason, when this build refuses the URL or the flags the path needs.
path_tether-ssh() {
  case $1 in
    setup)
      [[ -x $TETHER ]] || { SKIP_NOTE="no tether binary at $TETHER"; return 1; }
      ssh_setup || return 1
      local closed out
      alloc_port closed || return 1
      : > "$SSH_DIR/probe_known_hosts"
      out=$(timeout -k 1 5 "$TETHER" connect "ssh://$(id -un)@127.0.0.1:$closed" \
              -i "$SSH_DIR/user_key" --known-hosts "$SSH_DIR/probe_known_hosts" \
              -L "127.0.0.1:0:127.0.0.1:9" --connect-timeout 2 --log-level error 2>&1 </dev/null)
      if grep -qiE 'not supported|not expected|unknown option|extra argument' <<<"$out"; then
        printf '%s\n' "$out" > "$LOGS/tether-ssh-probe.log"
        SKIP_NOTE="this build of tether connect does not take ssh:// with -i and --known-hosts yet"
        return 2
      fi ;;
    start)
      local lp
      ssh_server || return 1
      echo "[127.0.0.1]:$SSHD_PORT $(cut -d' ' -f1,2 "$SSH_DIR/host_key.pub")" > "$SSH_DIR/known_hosts.$SSHD_PORT"
      local second=()
      [[ -z ${3:-} ]] || second=(-L "127.0.0.1:0:127.0.0.1:$3")
      spawn tether-ssh-client "$TETHER" connect "ssh://$(id -un)@127.0.0.1:$SSHD_PORT" \
        -i "$SSH_DIR/user_key" --known-hosts "$SSH_DIR/known_hosts.$SSHD_PORT" \
        -L "127.0.0.1:0:127.0.0.1:$2" "${second[@]}" --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" listening 15 || return 1
      tether_ports "$SPAWNED_OUT" "$2" "${3:-}" ;;
    describe) echo "$(tether_version): tether connect ssh:// (libssh2, direct-tcpip) -> private sshd -> target, aes128-ctr" ;;
  esac
}

# ------------------------------------------------------------------ UDP paths
# A UDP path is one function, udp_path_<name>, called as the TCP paths are (setup, describe),
# and as `udp_path_<name> start PORT`: make a local UDP port carry every flow (local source
# address) to the UDP echo at 127.0.0.1:PORT and back; set PATH_PORT to that local port.

UDP_ALL_PATHS="direct socat tether-tls"

udp_path_direct() {
  case $1 in
    start) PATH_PORT=$2 ;;
    describe) echo "no relay: the load tool talks to the UDP echo (the ceiling)" ;;
  esac
}

udp_path_socat() {
  case $1 in
    start)
      local a
      alloc_udp_port a || return 1
      spawn socat-udp socat -T 30 -b 65536 \
        "UDP4-LISTEN:$a,bind=127.0.0.1,fork" "UDP4:127.0.0.1:$2" || return 1
      wait_udp_bound "$a" || return 1
      PATH_PORT=$a ;;
    describe) echo "$(socat -V 2>/dev/null | awk '/socat version/ {print "socat " $3; exit}') UDP4-LISTEN,fork -> UDP4: a process and a connected socket per flow, no crypto" ;;
  esac
}

# tether -U: the same server and client as tether-tls, with a UDP mapping. A build that
# refuses -U is skipped, with the reason.
udp_path_tether-tls() {
  case $1 in
    setup)
      [[ -x $TETHER ]] || { SKIP_NOTE="no tether binary at $TETHER"; return 1; }
      TETHER_STATE=$RUN/tether-state
      local out
      out=$(timeout -k 1 2 "$TETHER" connect tls://127.0.0.1:9 --token probe \
              -U 127.0.0.1:0:bench:9 --log-level error 2>&1 </dev/null)
      if grep -qiE 'not supported|not expected|unknown option' <<<"$out"; then
        printf '%s\n' "$out" > "$LOGS/tether-udp-probe.log"
        SKIP_NOTE="this build of tether connect does not take -U yet"
        return 2
      fi ;;
    start)
      local sp lp ca token
      spawn tether-server "$TETHER" server --dev --listen 127.0.0.1:0 --state-dir "$TETHER_STATE" \
        --device bench=127.0.0.1 --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" dev 15 || return 1
      sp=$(event_field "$SPAWNED_OUT" listening local) || return 1
      ca=$(event_field "$SPAWNED_OUT" dev ca) || return 1
      token=$(event_field "$SPAWNED_OUT" dev token_file) || return 1
      spawn tether-client "$TETHER" connect "tls://$sp" --ca "$ca" --token-file "$token" \
        -U "127.0.0.1:0:bench:$2" --json --log-level warn || return 1
      wait_event "$SPAWNED_OUT" connected 15 || return 1
      lp=$(event_field "$SPAWNED_OUT" listening local) || return 1
      PATH_PORT=${lp##*:} ;;
    describe) echo "$(tether_version): tether connect -U tls:// -> tether server -> UDP echo, TLS 1.3 (AES-128-GCM), one session, a stream per flow" ;;
  esac
}
