#!/usr/bin/env bash
# scripts/bench.sh: jvpn against real WireGuard peers, in the same run and the same topology.
#
#   ns lap (laptop)                            ns gw (gateway)
#  +--------------------+                     +--------------------+
#  | eth0 10.10.0.2/24  |------- veth --------| eth0 10.10.0.1/24  |
#  |      fd10::2/64    |                     |      fd10::1/64    |
#  | <tun> 10.77.0.2/24 |==== VPN under test ===| <tun> 10.77.0.1/24 |  iperf3 -s
#  |       fd77::2/64   |     (UDP :51900)    |       fd77::1/64   |
#  +--------------------+                     +--------------------+
#
# For each peer (the same VPN in both namespaces, started, measured, stopped in turn):
#   TCP throughput: iperf3, one stream, laptop -> gateway through the tunnel, 10 s
#   ping RTT:       200 pings at a 10 ms interval through the tunnel (min/avg/max/mdev)
# plus a baseline over the bare veth. Peers: jvpn; boringtun (default, and
# --disable-connected-udp); wireguard-go. All tunnels use MTU 1420.
#
# Writes docs/BENCHMARKS.md (machine, versions, table, method) and the raw outputs under
# docs/bench/. A benchmark never fails on a number; it fails only if a peer cannot be run.
#
# Usage: scripts/bench.sh [--only LIST] [--criterion] [--duration SECONDS] [--pings N]
#                         [--no-docs]
#   --only LIST   comma-separated subset of: baseline, jvpn, boringtun (both variants),
#                 boringtun-default, boringtun-nocudp, wireguard-go (default: all)
#   --criterion   also run `cargo bench --bench datapath` and append its summary
#   --no-docs     print the table, keep raw outputs in a temporary directory, leave docs/ alone
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../netns-tests/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ALL_PEERS=(baseline jvpn boringtun-default boringtun-nocudp wireguard-go)
ONLY="" CRITERION=0 DURATION=10 PINGS=200 WRITE_DOCS=1
while (($#)); do
    case $1 in
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --criterion) CRITERION=1; shift ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --pings) PINGS=${2:?}; shift 2 ;;
        --no-docs) WRITE_DOCS=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

PEERS=()
if [[ -z $ONLY ]]; then
    PEERS=("${ALL_PEERS[@]}")
else
    IFS=, read -r -a wanted <<<"$ONLY"
    for w in "${wanted[@]}"; do
        case $w in
            baseline|jvpn|boringtun-default|boringtun-nocudp|wireguard-go) PEERS+=("$w") ;;
            boringtun) PEERS+=(boringtun-default boringtun-nocudp) ;;
            wg-go|wireguard) PEERS+=(wireguard-go) ;;
            *) echo "unknown peer '$w' in --only (known: ${ALL_PEERS[*]} boringtun)" >&2; exit 2 ;;
        esac
    done
fi
wants() { local p; for p in "${PEERS[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
wants_prefix() { local p; for p in "${PEERS[@]}"; do [[ $p == "$1"* ]] && return 0; done; return 1; }

need_root
lib_init bench
export PATH="$HOME/.cargo/bin:$PATH"

# ---------------------------------------------------------------------------------------------
step "installing what the benchmark needs"
ensure_netns_tools || fail "cannot install iperf3/tcpdump/iproute2"
if wants_prefix boringtun || wants wireguard-go; then
    ensure_cmds wg:wireguard-tools || fail "cannot install wireguard-tools"
fi
if wants wireguard-go; then
    ensure_cmds wireguard-go:wireguard-go || fail "cannot install wireguard-go"
fi
if wants_prefix boringtun && ! command -v boringtun-cli >/dev/null 2>&1; then
    log "cargo install boringtun-cli --locked (a few minutes) ..."
    cargo install boringtun-cli --locked >"$RUN_DIR/boringtun-install.log" 2>&1 ||
        { tail -n 20 "$RUN_DIR/boringtun-install.log"; fail "cargo install boringtun-cli failed"; }
fi
if wants jvpn; then
    ensure_jvpn
    if ! jvpn_supports gateway || ! jvpn_supports up; then
        fail "$JVPN has no 'gateway'/'up' subcommands yet"
    fi
fi

if ((WRITE_DOCS)); then
    OUT=$REPO_DIR/docs/bench
    mkdir -p "$OUT"
    rm -f "$OUT"/*-iperf3.json "$OUT"/*-ping.txt "$OUT"/criterion.txt "$OUT"/*.log
else
    OUT=$RUN_DIR/out
    mkdir -p "$OUT"
    KEEP_RUN_DIR=1
fi

# ---------------------------------------------------------------------------------------------
step "topology"
ns_add lap gw
veth_link lap eth0 "10.10.0.2/24 fd10::2/64" gw eth0 "10.10.0.1/24 fd10::1/64"
wait_ping lap 10.10.0.1 10
bg_start iperf3-server gw iperf3 -s -p 5201
wait_listen gw 5201 10

PORT=51900
MTU=1420
# Interface names for the WireGuard implementations: their UAPI sockets live in the shared
# /var/run/wireguard/<name>.sock, so the names must be unique on the machine, not only per netns.
IF_TAG=$(printf '%04x' "$((RANDOM % 65536))")
IF_LAP=jbl$IF_TAG
IF_GW=jbg$IF_TAG
on_cleanup "rm -f /var/run/wireguard/$IF_LAP.sock /var/run/wireguard/$IF_GW.sock"

declare -A R_BPS=() R_RETR=() R_RTT=() R_PCT=() R_LOSS=() R_VERSION=()

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
    log "$peer: $(human_bps "${R_BPS[$peer]}"), rtt min/avg/max/mdev ${R_RTT[$peer]// //} ms, loss ${R_LOSS[$peer]}%"
}

# tunnel_addrs NS IF LOCAL_HOST_NUMBER: addresses and MTU for a WireGuard implementation's TUN.
tunnel_addrs() {
    if_addrs "$1" "$2" "10.77.0.$3/24 fd77::$3/64"
    ip -n "$(ns "$1")" link set "$2" mtu "$MTU" up
}

# wg_socket_ready IF: the implementation's UAPI socket exists.
wg_socket_ready() { [[ -S /var/run/wireguard/$1.sock ]]; }

# run_wg_peer PEER COMMAND...: start a userspace WireGuard (COMMAND gets the interface name
# appended) in both namespaces, configure it with wg and ip, measure, stop.
run_wg_peer() {
    local peer=$1; shift
    local dir=$RUN_DIR/$peer side
    mkdir -p "$dir"
    [[ ! -e /var/run/wireguard/$IF_LAP.sock && ! -e /var/run/wireguard/$IF_GW.sock ]] ||
        fail "$peer: /var/run/wireguard/$IF_LAP.sock or $IF_GW.sock already exists"
    (umask 077 && wg genkey >"$dir/lap.key" && wg genkey >"$dir/gw.key")
    local lap_pub gw_pub
    lap_pub=$(wg pubkey <"$dir/lap.key")
    gw_pub=$(wg pubkey <"$dir/gw.key")

    bg_start "$peer-gw" gw "$@" "$IF_GW"
    bg_start "$peer-lap" lap "$@" "$IF_LAP"
    for side in gw lap; do
        local ifn=$IF_GW
        [[ $side == lap ]] && ifn=$IF_LAP
        local deadline=$((SECONDS + 15))
        until wg_socket_ready "$ifn" && link_exists "$side" "$ifn"; do
            is_running "$peer-$side" || fail "$peer ($side) exited at start"
            ((SECONDS < deadline)) || fail "$peer ($side): no UAPI socket or TUN $ifn after 15 s"
            sleep 0.1
        done
    done
    nsx gw wg set "$IF_GW" private-key "$dir/gw.key" listen-port "$PORT" \
        peer "$lap_pub" allowed-ips 10.77.0.2/32,fd77::2/128 || fail "$peer: wg set (gateway) failed"
    nsx lap wg set "$IF_LAP" private-key "$dir/lap.key" \
        peer "$gw_pub" endpoint "10.10.0.1:$PORT" allowed-ips 10.77.0.0/24,fd77::/64 ||
        fail "$peer: wg set (laptop) failed"
    tunnel_addrs gw "$IF_GW" 1
    tunnel_addrs lap "$IF_LAP" 2
    wait_ping lap 10.77.0.1 30
    nsx lap wg show "$IF_LAP" >"$OUT/$peer-wg-show.log" 2>&1 || true
    measure "$peer" 10.77.0.1
    bg_stop "$peer-lap" TERM 10 || warn "$peer (laptop) had to be killed"
    bg_stop "$peer-gw" TERM 10 || warn "$peer (gateway) had to be killed"
    # The TUN devices go with the processes; remove them if an implementation leaves them.
    ip -n "$(ns lap)" link del "$IF_LAP" 2>/dev/null || true
    ip -n "$(ns gw)" link del "$IF_GW" 2>/dev/null || true
    rm -f "/var/run/wireguard/$IF_LAP.sock" "/var/run/wireguard/$IF_GW.sock"
}

run_jvpn() {
    local dir=$RUN_DIR/jvpn
    mkdir -p "$dir"
    local gw_pub lap_pub
    gw_pub=$(jvpn_keygen "$dir/gateway.key")
    lap_pub=$(jvpn_keygen "$dir/laptop.key")
    cat >"$dir/gateway.toml" <<EOF
identity = "gateway.key"
listen = "0.0.0.0:$PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24", "fd77::1/64"]
mtu = $MTU

[[peer]]
public_key = "$lap_pub"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
EOF
    cat >"$dir/laptop.toml" <<EOF
identity = "laptop.key"

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24", "fd77::2/64"]
mtu = $MTU

[gateway]
endpoint = "10.10.0.1:$PORT"
public_key = "$gw_pub"
routes = ["10.77.0.0/24", "fd77::/64"]
EOF
    JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start jvpn-gw gw gateway "$dir/gateway.toml"
    wait_listen gw "$PORT" 15 udp
    JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start jvpn-lap lap up "$dir/laptop.toml"
    wait_ping lap 10.77.0.1 30
    measure jvpn 10.77.0.1
    bg_stop jvpn-lap TERM 10 || warn "jvpn (laptop) had to be killed"
    bg_stop jvpn-gw TERM 10 || warn "jvpn (gateway) had to be killed"
    cp "$RUN_DIR/jvpn-gw.log" "$OUT/jvpn-gw.log"
    cp "$RUN_DIR/jvpn-lap.log" "$OUT/jvpn-lap.log"
}

# ---------------------------------------------------------------------------------------------
for peer in "${PEERS[@]}"; do
    step "$peer"
    case $peer in
        baseline)
            measure baseline 10.10.0.1
            R_VERSION[baseline]="veth, no VPN"
            ;;
        jvpn)
            R_VERSION[jvpn]=$("$JVPN" --version 2>/dev/null | head -n 1 || echo jvpn)
            rev=$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || true)
            [[ -n $rev ]] && R_VERSION[jvpn]+=" ($rev)"
            run_jvpn
            ;;
        boringtun-default|boringtun-nocudp)
            R_VERSION[$peer]=$(boringtun-cli --version 2>/dev/null | head -n 1)
            extra=()
            [[ $peer == boringtun-nocudp ]] && extra=(--disable-connected-udp)
            run_wg_peer "$peer" env WG_LOG_LEVEL=error boringtun-cli --foreground \
                --disable-drop-privileges -l "$RUN_DIR/$peer.out" "${extra[@]}"
            ;;
        wireguard-go)
            R_VERSION[wireguard-go]=$(wireguard-go --version 2>/dev/null | head -n 1)
            run_wg_peer wireguard-go env LOG_LEVEL=error wireguard-go -f
            ;;
    esac
done

# ---------------------------------------------------------------------------------------------
label() {
    case $1 in
        baseline) echo "baseline (bare veth)" ;;
        jvpn) echo "jvpn" ;;
        boringtun-default) echo "boringtun (default)" ;;
        boringtun-nocudp) echo "boringtun --disable-connected-udp" ;;
        wireguard-go) echo "wireguard-go" ;;
    esac
}

table() {
    echo "| peer | TCP throughput (Gbit/s) | TCP retransmits | ping avg (ms) | ping p50 / p99 (ms) | ping min / max / mdev (ms) | ping loss |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    local p rtt pct
    for p in "${PEERS[@]}"; do
        read -r -a rtt <<<"${R_RTT[$p]}"
        read -r -a pct <<<"${R_PCT[$p]}"
        printf '| %s | %s | %s | %s | %s / %s | %s / %s / %s | %s%% |\n' "$(label "$p")" \
            "$(awk -v b="${R_BPS[$p]}" 'BEGIN { printf "%.2f", b / 1e9 }')" "${R_RETR[$p]}" \
            "${rtt[1]}" "${pct[0]}" "${pct[1]}" "${rtt[0]}" "${rtt[2]}" "${rtt[3]}" "${R_LOSS[$p]}"
    done
}

# verdict: jvpn against boringtun's best (highest throughput, lowest ping avg and p50), when both
# ran. The issue's target: throughput at least boringtun's best, ping RTT no worse.
verdict() {
    wants jvpn || return 0
    local p bt=()
    for p in boringtun-default boringtun-nocudp; do wants "$p" && bt+=("$p"); done
    ((${#bt[@]})) || return 0
    local rows=""
    for p in "${bt[@]}"; do
        rows+="$(label "$p")|${R_BPS[$p]}|$(awk '{ print $2 }' <<<"${R_RTT[$p]}")|$(awk '{ print $1 }' <<<"${R_PCT[$p]}")"$'\n'
    done
    printf '%s' "$rows" | awk -F'|' \
        -v j="${R_BPS[jvpn]}" -v javg="$(awk '{ print $2 }' <<<"${R_RTT[jvpn]}")" \
        -v jp50="$(awk '{ print $1 }' <<<"${R_PCT[jvpn]}")" '
        function better(a, b) { return b == "" || (a != "-" && a + 0 < b + 0) }
        {
            if ($2 + 0 > bps + 0) { bps = $2; bpsn = $1 }
            if ($3 != "-" && better($3, avg)) { avg = $3; avgn = $1 }
            if ($4 != "-" && better($4, p50)) { p50 = $4; p50n = $1 }
        }
        END {
            printf "jvpn against boringtun'\''s best in this run: TCP throughput %.2f against %.2f Gbit/s (%.0f%%, %s %s)", \
                j / 1e9, bps / 1e9, (bps > 0 ? 100 * j / bps : 0), bpsn, (j + 0 >= bps + 0 ? "met" : "NOT met")
            if (javg == "-" || avg == "") { print "; ping not comparable." ; exit }
            printf "; ping avg %s against %s ms (%s, %s)", javg, avg, avgn, (javg + 0 <= avg + 0 ? "no worse" : "worse")
            printf "; ping p50 %s against %s ms (%s, %s).\n", jp50, p50, p50n, (jp50 + 0 <= p50 + 0 ? "no worse" : "worse")
        }'
}

machine() {
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- cores (nproc): $(nproc)"
    echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    echo "- kernel: $(uname -r)"
    echo "- OS: $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- iperf3: $(iperf3 --version | head -n 1)"
    echo "- ping: $(ping -V 2>&1 | head -n 1)"
    local p
    for p in "${PEERS[@]}"; do
        [[ $p == baseline ]] && continue
        echo "- $(label "$p"): ${R_VERSION[$p]}"
    done
    if wants_prefix boringtun || wants wireguard-go; then
        echo "- wireguard-tools: $(wg --version | awk '{ print $2 }')"
    fi
    if wants jvpn; then
        echo "- rustc (jvpn build): $(rustc --version)"
    fi
}

criterion_summary() {
    # Keep the benchmark names and their time / throughput lines.
    awk '
        /^Benchmarking|^Warming|^Found|^Gnuplot|^  [0-9]+ \(|^Analyzing|^Collecting/ { next }
        /time:|thrpt:/ { if (name != "") { print name; name = "" } print; next }
        /^[^ ]/ { name = $0 }
    ' "$1"
}

CRIT=""
if ((CRITERION)); then
    step "criterion: cargo bench --bench datapath"
    if (cd "$REPO_DIR" && timeout 1800 cargo bench --bench datapath) >"$OUT/criterion.txt" 2>&1; then
        CRIT=$(criterion_summary "$OUT/criterion.txt")
    else
        warn "cargo bench --bench datapath failed (see $OUT/criterion.txt)"
        CRIT="(cargo bench --bench datapath failed; see bench/criterion.txt)"
    fi
fi

step "results"
TABLE=$(table)
VERDICT=$(verdict)
echo "$TABLE"
[[ -n $VERDICT ]] && echo && echo "$VERDICT"

if ((WRITE_DOCS)); then
    DOC=$REPO_DIR/docs/BENCHMARKS.md
    {
        echo "# Benchmarks"
        echo
        echo "Written by \`scripts/bench.sh\`; do not edit by hand (run it again instead)."
        echo "Peers measured in this run: ${PEERS[*]}."
        echo
        echo "## Machine"
        echo
        machine
        echo
        echo "## Results"
        echo
        echo "$TABLE"
        if [[ -n $VERDICT ]]; then echo; echo "$VERDICT"; fi
        echo
        echo "## Method"
        echo
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
  the per-packet times (less sensitive to one scheduling hiccup than avg).
- jvpn: \`jvpn gateway\` and \`jvpn up\` with keys from \`jvpn keygen\` and the configs the script
  writes (release build, \`RUST_LOG=${JVPN_BENCH_LOG:-info}\`).
- boringtun: \`boringtun-cli --foreground --disable-drop-privileges <if>\` (its defaults: 4
  threads, multi-queue TUN, connected UDP sockets), and the same with \`--disable-connected-udp\`;
  configured through its UAPI socket with \`wg set\`, addresses with \`ip\`.
- wireguard-go: \`wireguard-go -f <if>\` (Debian package), configured the same way.
- Both sides of every tunnel share the machine's $(nproc) cores with iperf3 and ping, so the
  numbers compare the implementations against each other on this machine, not against a network.
  Expect a few percent of run-to-run noise; compare rows within one run.
- Raw outputs: \`docs/bench/<peer>-iperf3.json\`, \`docs/bench/<peer>-ping.txt\`.
EOF
        if [[ -n $CRIT ]]; then
            echo
            echo "## Criterion: \`cargo bench --bench datapath\`"
            echo
            echo '```'
            echo "$CRIT"
            echo '```'
        fi
    } >"$DOC"
    log "wrote $DOC and $OUT/"
fi
