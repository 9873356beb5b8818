# shellcheck shell=bash disable=SC2034
# scripts/bench/throughput.sh: the throughput/latency job of scripts/bench.sh. Two namespaces on one
# veth; for each peer in TP_PEERS in turn: start the pair (scripts/bench/peers.sh), iperf3 and ping
# through the tunnel, stop it; the baseline measures the bare veth. Results in the R_* tables, raw
# outputs in $OUT; tp_table, tp_verdict and tp_method write the docs' part.
# (SC2034 is off: scripts/bench.sh and the report read R_* and TP_SECONDS.)

declare -A R_BPS=() R_RETR=() R_RTT=() R_PCT=() R_LOSS=()
TP_SECONDS=0

# tp_run: the whole job.
tp_run() {
    local t0=$SECONDS peer
    step "topology (throughput and latency)"
    ns_add lap gw
    veth_link lap eth0 "10.10.0.2/24 fd10::2/64" gw eth0 "10.10.0.1/24 fd10::1/64"
    wait_ping lap 10.10.0.1 10
    bg_start iperf3-server gw iperf3 -s -p 5201
    wait_listen gw 5201 10

    for peer in "${TP_PEERS[@]}"; do
        step "$peer"
        case $peer in
            baseline) measure baseline 10.10.0.1 ;;
            jvpn|jvpn-prev) tp_run_jvpn "$peer" ;;
            boringtun-default|boringtun-nocudp|wireguard-go) tp_run_wg "$peer" ;;
        esac
    done
    bg_stop iperf3-server TERM 5 || true
    TP_SECONDS=$((SECONDS - t0))
}

# measure PEER TARGET: iperf3 and ping from lap to TARGET; results into the R_* tables.
measure() {
    local peer=$1 target=$2 json=$OUT/$1-iperf3.json pingf=$OUT/$1-ping.txt
    # Warm up: caches, ARP/ND, the handshake's first packets; not recorded.
    nsx lap ping -n -q -c 20 -i 0.01 -W 1 "$target" >/dev/null 2>&1 || true
    log "$peer: iperf3 ${DURATION}s ..."
    if ! timeout $((DURATION + 30)) ip netns exec "$(ns lap)" \
            iperf3 -c "$target" -p 5201 -t "$DURATION" -J >"$json" 2>"$RUN_DIR/$peer-iperf3.err"; then
        warn "$peer: iperf3 failed (see $json)"
    fi
    R_BPS[$peer]=$(iperf_bps "$json")
    R_RETR[$peer]=$(jq -r '.end.sum_sent.retransmits // "-"' "$json" 2>/dev/null || echo -)
    log "$peer: ping ${PINGS}x ..."
    timeout $((PINGS / 10 + 30)) ip netns exec "$(ns lap)" \
        ping -n -c "$PINGS" -i 0.01 -W 1 "$target" >"$pingf" 2>&1 || true
    R_RTT[$peer]=$(ping_rtt "$pingf")
    R_PCT[$peer]=$(ping_percentiles "$pingf")
    R_LOSS[$peer]=$(ping_loss "$pingf")
    local pct
    read -r -a pct <<<"${R_PCT[$peer]}"
    log "$peer: $(human_bps "${R_BPS[$peer]}"), rtt min/avg/max/mdev ${R_RTT[$peer]// //} ms, p50 ${pct[0]} p99 ${pct[1]} ms, loss ${R_LOSS[$peer]}%"
}

# tp_run_wg PEER: throughput and latency of a userspace WireGuard.
tp_run_wg() {
    local peer=$1
    wg_pair_start "$peer" "$peer" lap gw
    wait_ping lap 10.77.0.1 30
    nsx lap wg show "$IF_LAP" >"$OUT/$peer-wg-show.log" 2>&1 || true
    measure "$peer" 10.77.0.1
    wg_pair_stop "$peer" lap gw
}

# tp_run_jvpn PEER: throughput and latency of jvpn or jvpn-prev (their logs go to $OUT too).
tp_run_jvpn() {
    local peer=$1 dir=$RUN_DIR/$1
    JVPN=$(jvpn_binary "$peer") tp_jvpn_configs "$dir"
    jvpn_pair_start "$peer" "$peer" lap gw "$dir/gateway.toml" "$dir/laptop.toml"
    wait_ping lap 10.77.0.1 30
    measure "$peer" 10.77.0.1
    jvpn_pair_stop "$peer"
    cp "$RUN_DIR/$peer-gw.log" "$OUT/$peer-gw.log"
    cp "$RUN_DIR/$peer-lap.log" "$OUT/$peer-lap.log"
}

# tp_jvpn_configs DIR: identities and dual-stack configs for one veth, in DIR.
tp_jvpn_configs() {
    local dir=$1 gw_pub lap_pub
    mkdir -p "$dir"
    gw_pub=$(jvpn_keygen "$dir/gateway.key")
    lap_pub=$(jvpn_keygen "$dir/laptop.key")
    cat >"$dir/gateway.toml" <<EOT
identity = "gateway.key"
listen = "0.0.0.0:$PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24", "fd77::1/64"]
mtu = $MTU

[[peer]]
public_key = "$lap_pub"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
EOT
    cat >"$dir/laptop.toml" <<EOT
identity = "laptop.key"

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24", "fd77::2/64"]
mtu = $MTU

[gateway]
endpoint = "10.10.0.1:$PORT"
public_key = "$gw_pub"
routes = ["10.77.0.0/24", "fd77::/64"]
EOT
}

tp_table() {
    echo "| peer | TCP throughput (Gbit/s) | TCP retransmits | ping avg (ms) | ping p50 / p99 (ms) | ping min / max / mdev (ms) | ping loss |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    local p rtt pct
    for p in "${TP_PEERS[@]}"; do
        read -r -a rtt <<<"${R_RTT[$p]}"
        read -r -a pct <<<"${R_PCT[$p]}"
        printf '| %s | %s | %s | %s | %s / %s | %s / %s / %s | %s%% |\n' "$(label "$p")" \
            "$(awk -v b="${R_BPS[$p]}" 'BEGIN { printf "%.2f", b / 1e9 }')" "${R_RETR[$p]}" \
            "${rtt[1]}" "${pct[0]}" "${pct[1]}" "${rtt[0]}" "${rtt[2]}" "${rtt[3]}" "${R_LOSS[$p]}"
    done
}

# tp_verdict: jvpn against boringtun's best (highest throughput, lowest ping avg and p50), when
# both ran (the target: throughput at least boringtun's best, ping RTT no worse); then jvpn against
# jvpn-prev, when both ran (the current build against the previous one).
tp_verdict() {
    tp_measured jvpn || return 0
    local p rows=""
    for p in boringtun-default boringtun-nocudp; do
        tp_measured "$p" && rows+="$(tp_row "$p")"$'\n'
    done
    [[ -z $rows ]] || printf '%s' "$rows" | tp_compare "boringtun's best"
    if tp_measured jvpn-prev; then
        [[ -z $rows ]] || echo
        tp_row jvpn-prev | tp_compare "jvpn-prev (the previous build)"
    fi
}

# tp_measured PEER: this run measured PEER's throughput and latency.
tp_measured() { [[ -n ${R_BPS[$1]:-} ]]; }

# tp_row PEER: "label|bps|ping avg|ping p50".
tp_row() {
    echo "$(label "$1")|${R_BPS[$1]}|$(awk '{ print $2 }' <<<"${R_RTT[$1]}")|$(awk '{ print $1 }' <<<"${R_PCT[$1]}")"
}

# tp_compare WHAT: jvpn against the best of the rows on stdin (tp_row lines), one sentence.
tp_compare() {
    awk -F'|' -v what="$1" \
        -v j="${R_BPS[jvpn]}" -v javg="$(awk '{ print $2 }' <<<"${R_RTT[jvpn]}")" \
        -v jp50="$(awk '{ print $1 }' <<<"${R_PCT[jvpn]}")" '
        function better(a, b) { return b == "" || (a != "-" && a + 0 < b + 0) }
        {
            if ($2 + 0 > bps + 0) { bps = $2; bpsn = $1 }
            if ($3 != "-" && better($3, avg)) { avg = $3; avgn = $1 }
            if ($4 != "-" && better($4, p50)) { p50 = $4; p50n = $1 }
        }
        END {
            printf "jvpn against %s in this run: TCP throughput %.2f against %.2f Gbit/s (%.0f%%, %s %s)", \
                what, j / 1e9, bps / 1e9, (bps > 0 ? 100 * j / bps : 0), bpsn, (j + 0 >= bps + 0 ? "met" : "NOT met")
            if (jp50 == "-" || p50 == "") { print "; ping not comparable." ; exit }
            printf "; ping p50 %s against %s ms (%s, %s)", jp50, p50, p50n, (jp50 + 0 <= p50 + 0 ? "no worse" : "worse")
            printf "; ping avg %s against %s ms (%s, %s; the average is the noisier number here).\n", \
                javg, avg, avgn, (javg + 0 <= avg + 0 ? "no worse" : "worse")
        }'
}

# tp_method: the "Method" section of docs/BENCHMARKS.md for this job.
tp_method() {
    cat <<EOF
- Topology: two network namespaces, \`lap\` and \`gw\`, joined by one veth pair (10.10.0.2/24 ↔
  10.10.0.1/24, fd10::2/64 ↔ fd10::1/64). The VPN under test runs in both namespaces and puts its
  TUN device at 10.77.0.2/24 (laptop) and 10.77.0.1/24 (gateway), MTU $MTU, UDP port $PORT.
  The peers run one after another in the same run and the same namespaces; the baseline uses the
  veth addresses directly.
- Throughput: \`iperf3 -c 10.77.0.1 -t $DURATION -J\` (one TCP stream, laptop → gateway through
  the tunnel) against \`iperf3 -s\` in \`gw\`; the table shows \`end.sum_received.bits_per_second\`
  and the sender's retransmits.
- Latency: \`ping -c $PINGS -i 0.01 10.77.0.1\` from \`lap\` after 20 warm-up pings; the table
  shows ping's own avg, min, max, mdev and loss, and the median (p50) and 99th percentile of
  the per-packet times (less sensitive to one scheduling hiccup than avg; the sentence under the
  table compares jvpn's p50 with the best boringtun p50 for that reason).
- jvpn: \`jvpn gateway\` and \`jvpn up\` with keys from \`jvpn keygen\` and the configs the script
  writes (release build, \`RUST_LOG=${JVPN_BENCH_LOG:-info}\`). jvpn-prev, when measured: the same
  with a previous build (\`JVPN_PREV\`, its revision in the machine list above).
- boringtun: \`boringtun-cli --foreground --disable-drop-privileges <if>\` (its defaults: 4
  threads, multi-queue TUN, connected UDP sockets), and the same with \`--disable-connected-udp\`;
  configured through its UAPI socket with \`wg set\`, addresses with \`ip\`.
- wireguard-go: \`wireguard-go -f <if>\` (Debian package), configured the same way.
- Both sides of every tunnel share the machine's $(nproc) cores with iperf3 and ping, so the
  numbers compare the implementations against each other on this machine, not against a network.
  Expect a few percent of run-to-run noise; compare rows within one run.
- Raw outputs: \`docs/bench/<peer>-iperf3.json\`, \`docs/bench/<peer>-ping.txt\`.
- Scripts: \`scripts/bench.sh\` runs the jobs in \`scripts/bench/\` (\`throughput.sh\`,
  \`handover.sh\`, \`criterion.sh\`; the peers in \`peers.sh\`).
EOF
}
