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
#   ping RTT:       1000 pings at a 10 ms interval through the tunnel (min/avg/max/mdev, p50/p99)
# plus a baseline over the bare veth. Peers: jvpn; boringtun (default, and
# --disable-connected-udp); wireguard-go. All tunnels use MTU 1420.
#
# Then the handover table: the bearer-handover cases of netns-tests/roam.sh (Wi-Fi down, address
# gone, downlink only, silent blackhole, Wi-Fi returns, flapping, NAT rebinding) against every
# peer in roam.sh's two-bearer topology (laptop with wlan0 and wwan0-through-NAT, gateway endpoint
# 10.10.0.1), with `jvpn probe` at 50 packets/s each way through the tunnel; each (case, peer)
# from a fresh start of the VPN pair, 3 runs, the median per direction (see the "Handover" comment further down).
#
# Writes docs/BENCHMARKS.md (machine, versions, tables, method) and the raw outputs under
# docs/bench/ (handover: docs/bench/handover/). A benchmark never fails on a number; it fails only
# if a peer cannot be run.
#
# Usage: scripts/bench.sh [--only LIST] [--handover | --no-handover] [--runs N] [--cases LIST]
#                         [--criterion] [--duration SECONDS] [--pings N] [--no-docs]
#   --only LIST     comma-separated subset of: baseline, jvpn, boringtun (both variants),
#                   boringtun-default, boringtun-nocudp, wireguard-go (default: all)
#   --handover      only the handover table (no throughput/latency); docs/BENCHMARKS.md keeps the
#                   throughput/latency part of the last full run and gets a new "Handover" section
#   --no-handover   only throughput and latency (keeps the last "Handover" section in the docs)
#   --runs N        handover runs per (case, peer) (default 3; the table shows the median)
#   --cases LIST    comma-separated subset of the handover cases: link-down, addr-gone,
#                   downlink-only, blackhole, wifi-returns, flapping, nat-rebinding (default: all)
#   --criterion     also run `cargo bench --bench datapath` and append its summary
#   --no-docs       print the tables, keep raw outputs in a temporary directory, leave docs/ alone
# Environment: JVPN (the jvpn binary; default target/release/jvpn, built if stale unless
# JVPN_NO_BUILD=1), JVPN_REV (the source revision the docs name for it), JVPN_BENCH_LOG (its log
# level, default info), KEEP_RUN_DIR=1 (keep the per-run directory with every process log).
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../netns-tests/lib.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ALL_PEERS=(baseline jvpn boringtun-default boringtun-nocudp wireguard-go)
ALL_CASES=(link-down addr-gone downlink-only blackhole wifi-returns flapping nat-rebinding)
ONLY="" CRITERION=0 DURATION=10 PINGS=1000 WRITE_DOCS=1
RUN_THROUGHPUT=1 RUN_HANDOVER=1 HO_RUNS=3 HO_CASES_ARG=""
while (($#)); do
    case $1 in
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --only=*) ONLY=${1#--only=}; shift ;;
        --handover) RUN_THROUGHPUT=0 RUN_HANDOVER=1; shift ;;
        --no-handover) RUN_HANDOVER=0; shift ;;
        --runs) HO_RUNS=${2:?--runs needs a number}; shift 2 ;;
        --cases) HO_CASES_ARG=${2:?--cases needs a list}; shift 2 ;;
        --criterion) CRITERION=1; shift ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --pings) PINGS=${2:?}; shift 2 ;;
        --no-docs) WRITE_DOCS=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done
((RUN_THROUGHPUT || RUN_HANDOVER)) || { echo "--handover and --no-handover leave nothing to run" >&2; exit 2; }
[[ $HO_RUNS =~ ^[1-9][0-9]*$ ]] || { echo "--runs needs a positive number" >&2; exit 2; }

HO_CASES=()
if [[ -z $HO_CASES_ARG ]]; then
    HO_CASES=("${ALL_CASES[@]}")
else
    IFS=, read -r -a wanted <<<"$HO_CASES_ARG"
    for w in "${wanted[@]}"; do
        [[ " ${ALL_CASES[*]} " == *" $w "* ]] ||
            { echo "unknown case '$w' in --cases (known: ${ALL_CASES[*]})" >&2; exit 2; }
        HO_CASES+=("$w")
    done
fi

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
BENCH_T0=$SECONDS

# The peers the handover table runs: every VPN peer asked for (the baseline has no tunnel).
HO_PEERS=()
for p in "${PEERS[@]}"; do [[ $p == baseline ]] || HO_PEERS+=("$p"); done
if ((RUN_HANDOVER && ${#HO_PEERS[@]} == 0)); then
    ((RUN_THROUGHPUT)) || { echo "--handover needs at least one VPN peer in --only" >&2; exit 2; }
    RUN_HANDOVER=0
fi
# The peers whose throughput/latency this run measures.
TP_PEERS=()
((RUN_THROUGHPUT)) && TP_PEERS=("${PEERS[@]}")

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
if ((RUN_HANDOVER)); then
    ensure_cmds conntrack:conntrack || fail "cannot install conntrack"
fi
# The handover table needs `jvpn probe` whichever peers run.
if wants jvpn || ((RUN_HANDOVER)); then
    ensure_jvpn
    if wants jvpn && { ! jvpn_supports gateway || ! jvpn_supports up; }; then
        fail "$JVPN has no 'gateway'/'up' subcommands yet"
    fi
    if ((RUN_HANDOVER)) && ! jvpn_supports probe; then
        fail "$JVPN has no 'probe' subcommand (the handover table measures with it)"
    fi
fi

if ((WRITE_DOCS)); then
    OUT=$REPO_DIR/docs/bench
    mkdir -p "$OUT"
    if ((RUN_THROUGHPUT)); then
        rm -f "$OUT"/*-iperf3.json "$OUT"/*-ping.txt "$OUT"/criterion.txt "$OUT"/*.log
    fi
else
    OUT=$RUN_DIR/out
    mkdir -p "$OUT"
    KEEP_RUN_DIR=1
fi
HO_OUT=$OUT/handover
if ((RUN_HANDOVER)); then
    mkdir -p "$HO_OUT"
    rm -f "$HO_OUT"/*.json "$HO_OUT"/runs.tsv
    printf 'case\tpeer\trun\tdirection\treceived\tsent\tlost\tlongest_silence_ms\n' >"$HO_OUT/runs.tsv"
fi

PORT=51900
MTU=1420
# Interface names for the WireGuard implementations: their UAPI sockets live in the shared
# /var/run/wireguard/<name>.sock, so the names must be unique on the machine, not only per netns.
IF_TAG=$(printf '%04x' "$((RANDOM % 65536))")
IF_LAP=jbl$IF_TAG
IF_GW=jbg$IF_TAG
on_cleanup "rm -f /var/run/wireguard/$IF_LAP.sock /var/run/wireguard/$IF_GW.sock"

declare -A R_BPS=() R_RETR=() R_RTT=() R_PCT=() R_LOSS=() R_VERSION=()

label() {
    case $1 in
        baseline) echo "baseline (bare veth)" ;;
        jvpn) echo "jvpn" ;;
        boringtun-default) echo "boringtun (default)" ;;
        boringtun-nocudp) echo "boringtun --disable-connected-udp" ;;
        wireguard-go) echo "wireguard-go" ;;
    esac
}

# version_of PEER: the version line the docs show for a peer.
version_of() {
    case $1 in
        baseline) echo "veth, no VPN" ;;
        jvpn)
            local v rev
            v=$("$JVPN" --version 2>/dev/null | head -n 1 || echo jvpn)
            # JVPN_REV: what the binary was built from, when JVPN points at a build of another tree.
            rev=${JVPN_REV:-$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || true)}
            [[ -n $rev ]] && v+=" ($rev)"
            echo "$v"
            ;;
        boringtun-*) boringtun-cli --version 2>/dev/null | head -n 1 ;;
        wireguard-go) wireguard-go --version 2>/dev/null | head -n 1 ;;
    esac
}
for p in "${PEERS[@]}"; do R_VERSION[$p]=$(version_of "$p"); done

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

# tunnel_addrs NS IF LOCAL_HOST_NUMBER: addresses and MTU for a WireGuard implementation's TUN.
tunnel_addrs() {
    if_addrs "$1" "$2" "10.77.0.$3/24 fd77::$3/64"
    ip -n "$(ns "$1")" link set "$2" mtu "$MTU" up
}

# wg_socket_ready IF: the implementation's UAPI socket exists.
wg_socket_ready() { [[ -S /var/run/wireguard/$1.sock ]]; }

# wg_command PEER TAG: the command line of PEER's userspace WireGuard, in WG_CMD (the interface
# name gets appended); TAG names its log file.
WG_CMD=()
wg_command() {
    case $1 in
        boringtun-default) WG_CMD=(env WG_LOG_LEVEL=error boringtun-cli --foreground
                                   --disable-drop-privileges -l "$RUN_DIR/$2.out") ;;
        boringtun-nocudp) WG_CMD=(env WG_LOG_LEVEL=error boringtun-cli --foreground
                                  --disable-drop-privileges -l "$RUN_DIR/$2.out" --disable-connected-udp) ;;
        wireguard-go) WG_CMD=(env LOG_LEVEL=error wireguard-go -f) ;;
        *) fail "wg_command: $1 is not a WireGuard peer" ;;
    esac
}

# wg_pair_start PEER TAG LAP_NS GW_NS: start PEER's userspace WireGuard in both namespaces
# (processes TAG-gw and TAG-lap) and configure it with wg and ip, as a user would: the gateway
# listens on :$PORT, the laptop's peer has endpoint 10.10.0.1:$PORT and no persistent keepalive.
# The keys are made once per PEER. Fails if an implementation cannot be started.
wg_pair_start() {
    local peer=$1 tag=$2 nl=$3 ng=$4 side
    local dir=$RUN_DIR/$peer
    mkdir -p "$dir"
    [[ ! -e /var/run/wireguard/$IF_LAP.sock && ! -e /var/run/wireguard/$IF_GW.sock ]] ||
        fail "$peer: /var/run/wireguard/$IF_LAP.sock or $IF_GW.sock already exists"
    [[ -s $dir/lap.key ]] || (umask 077 && wg genkey >"$dir/lap.key" && wg genkey >"$dir/gw.key")
    local lap_pub gw_pub
    lap_pub=$(wg pubkey <"$dir/lap.key")
    gw_pub=$(wg pubkey <"$dir/gw.key")

    wg_command "$peer" "$tag-gw"
    bg_start "$tag-gw" "$ng" "${WG_CMD[@]}" "$IF_GW"
    wg_command "$peer" "$tag-lap"
    bg_start "$tag-lap" "$nl" "${WG_CMD[@]}" "$IF_LAP"
    for side in gw lap; do
        local ifn=$IF_GW n=$ng
        [[ $side == lap ]] && ifn=$IF_LAP n=$nl
        local deadline=$((SECONDS + 15))
        until wg_socket_ready "$ifn" && link_exists "$n" "$ifn"; do
            is_running "$tag-$side" || fail "$peer ($side) exited at start"
            ((SECONDS < deadline)) || fail "$peer ($side): no UAPI socket or TUN $ifn after 15 s"
            sleep 0.05
        done
    done
    nsx "$ng" wg set "$IF_GW" private-key "$dir/gw.key" listen-port "$PORT" \
        peer "$lap_pub" allowed-ips 10.77.0.2/32,fd77::2/128 || fail "$peer: wg set (gateway) failed"
    nsx "$nl" wg set "$IF_LAP" private-key "$dir/lap.key" \
        peer "$gw_pub" endpoint "10.10.0.1:$PORT" allowed-ips 10.77.0.0/24,fd77::/64 ||
        fail "$peer: wg set (laptop) failed"
    tunnel_addrs "$ng" "$IF_GW" 1
    tunnel_addrs "$nl" "$IF_LAP" 2
}

# wg_pair_stop TAG LAP_NS GW_NS: stop both processes, remove what they may leave behind.
wg_pair_stop() {
    local tag=$1 nl=$2 ng=$3
    bg_stop "$tag-lap" TERM 10 || warn "$tag (laptop) had to be killed"
    bg_stop "$tag-gw" TERM 10 || warn "$tag (gateway) had to be killed"
    # The TUN devices go with the processes; remove them if an implementation leaves them.
    ip -n "$(ns "$nl")" link del "$IF_LAP" 2>/dev/null || true
    ip -n "$(ns "$ng")" link del "$IF_GW" 2>/dev/null || true
    rm -f "/var/run/wireguard/$IF_LAP.sock" "/var/run/wireguard/$IF_GW.sock"
}

# run_wg_peer PEER: throughput and latency of a userspace WireGuard.
run_wg_peer() {
    local peer=$1
    wg_pair_start "$peer" "$peer" lap gw
    wait_ping lap 10.77.0.1 30
    nsx lap wg show "$IF_LAP" >"$OUT/$peer-wg-show.log" 2>&1 || true
    measure "$peer" 10.77.0.1
    wg_pair_stop "$peer" lap gw
}

# jvpn_keys DIR: the gateway's and laptop's identities in DIR (made once); sets J_GW_PUB, J_LAP_PUB.
J_GW_PUB="" J_LAP_PUB=""
jvpn_keys() {
    local dir=$1
    mkdir -p "$dir"
    if [[ ! -s $dir/gateway.key ]]; then
        J_GW_PUB=$(jvpn_keygen "$dir/gateway.key")
        J_LAP_PUB=$(jvpn_keygen "$dir/laptop.key")
    fi
}

run_jvpn() {
    local dir=$RUN_DIR/jvpn
    jvpn_keys "$dir"
    cat >"$dir/gateway.toml" <<EOT
identity = "gateway.key"
listen = "0.0.0.0:$PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24", "fd77::1/64"]
mtu = $MTU

[[peer]]
public_key = "$J_LAP_PUB"
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
public_key = "$J_GW_PUB"
routes = ["10.77.0.0/24", "fd77::/64"]
EOT
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
# Throughput and latency
# ---------------------------------------------------------------------------------------------
TP_SECONDS=0
if ((RUN_THROUGHPUT)); then
    TP_T0=$SECONDS
    step "topology (throughput and latency)"
    ns_add lap gw
    veth_link lap eth0 "10.10.0.2/24 fd10::2/64" gw eth0 "10.10.0.1/24 fd10::1/64"
    wait_ping lap 10.10.0.1 10
    bg_start iperf3-server gw iperf3 -s -p 5201
    wait_listen gw 5201 10

    for peer in "${PEERS[@]}"; do
        step "$peer"
        case $peer in
            baseline) measure baseline 10.10.0.1 ;;
            jvpn) run_jvpn ;;
            boringtun-default|boringtun-nocudp|wireguard-go) run_wg_peer "$peer" ;;
        esac
    done
    bg_stop iperf3-server TERM 5 || true
    TP_SECONDS=$((SECONDS - TP_T0))
fi

# ---------------------------------------------------------------------------------------------
# Handover
# ---------------------------------------------------------------------------------------------
#
# Every (case, peer) runs HO_RUNS times, round-robin (run 1 of every case and peer, then run 2,
# ...), each from a fresh start of the VPN pair on the same topology: restore both bearers, start
# the pair, wait for one ping through the tunnel, start the probes (50 packets/s; receivers first),
# apply the case's event HO_LEAD seconds after the senders started, let the media run HO_TAIL
# seconds after it, stop the pair. Per direction and run: lost = packets sent - distinct packets
# received (tail loss included even when the end marker never arrives), the longest silence (the
# probe's longest_silence_ms, which counts an open silence at the end), and whether the stream was
# flowing again at its end ("resumed").

HO_LEAD=2.5      # seconds of media before the event
HO_TAIL=4        # seconds of media after the event (after its end, for flapping)
HO_PPS=50

# ho_case_* CASE: how each case runs.
ho_case_desc() {
    case $1 in
        link-down) echo "Wi-Fi link goes down (address stays)" ;;
        addr-gone) echo "Wi-Fi link goes down and its address is removed" ;;
        downlink-only) echo "same as above, media only gateway → laptop" ;;
        blackhole) echo "Wi-Fi stays up but drops everything (nftables on the gateway's Wi-Fi side)" ;;
        wifi-returns) echo "Wi-Fi comes back while on cellular (preferred)" ;;
        flapping) echo "Wi-Fi flaps 10 times in 2 s" ;;
        nat-rebinding) echo "the NAT on the cellular path changes the laptop's port" ;;
    esac
}
# ho_case_start CASE: "cellular" if the pair starts with the Wi-Fi link down (session on cellular).
ho_case_start() { case $1 in wifi-returns|nat-rebinding) echo cellular ;; *) echo wifi ;; esac; }
# ho_case_dirs CASE: the media directions.
ho_case_dirs() { case $1 in downlink-only) echo down ;; *) echo "up down" ;; esac; }
# ho_case_event_len CASE: how long the event itself takes (s).
ho_case_event_len() { case $1 in flapping) echo 2 ;; *) echo 0 ;; esac; }
# ho_event CASE: apply the case's event.
ho_event() {
    case $1 in
        link-down) tb_wifi_down ;;
        addr-gone|downlink-only) tb_wifi_down flush ;;
        blackhole) tb_blackhole_wifi ;;
        wifi-returns) tb_wifi_up ;;
        flapping) tb_flap_wifi ;;
        nat-rebinding) tb_nat_rebind ;;
    esac
}
# ho_variants CASE PEER: the rows a peer has in a case (jvpn has two for the blackhole: voice.toml
# and the default policy).
# jvpn also runs each case with the audit trail on at both ends (jvpn-audit, default policy), to
# show that recording never changes a handover.
ho_variants() {
    if [[ $2 == jvpn && $1 == blackhole ]]; then
        echo "jvpn-voice jvpn jvpn-audit"
    elif [[ $2 == jvpn ]]; then
        echo "jvpn jvpn-audit"
    else
        echo "$2"
    fi
}
ho_label() {
    case $1 in
        jvpn) echo "jvpn" ;;
        jvpn-voice) echo "jvpn (voice.toml)" ;;
        jvpn-audit) echo "jvpn, audit on" ;;
        *) label "$1" ;;
    esac
}
# ho_row_label CASE VARIANT
ho_row_label() {
    if [[ $1 == blackhole && $2 == jvpn ]]; then
        echo "jvpn (default policy)"
    elif [[ $1 == blackhole && $2 == jvpn-audit ]]; then
        echo "jvpn (default policy), audit on"
    else
        ho_label "$2"
    fi
}
# roam.sh's budgets for jvpn (issue 3), per direction: "MAX_LOST MAX_SILENCE_MS".
ho_budget() {
    case $1/$2 in
        link-down/jvpn*|addr-gone/jvpn*|downlink-only/jvpn*) echo "1 60" ;;
        blackhole/jvpn-voice) echo "26 500" ;;
        blackhole/jvpn|blackhole/jvpn-audit) echo "151 3000" ;;
        wifi-returns/jvpn*) echo "0 60" ;;
        flapping/jvpn*) echo "2 100" ;;
        nat-rebinding/jvpn*) echo "1 100" ;;
    esac
}

# Per (case, variant, direction): space-separated per-run values.
declare -A H_LOST=() H_SIL=() H_RES=() H_NOTE=() H_PATH=()
HO_N=0
HO_SECONDS=0

# ho_jvpn_configs: the jvpn configs of the handover runs (roam.sh's).
ho_jvpn_configs() {
    local dir=$RUN_DIR/jvpn
    jvpn_keys "$dir"
    cat >"$dir/ho-gateway.toml" <<EOT
identity = "gateway.key"
listen = "0.0.0.0:$PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]
mtu = $MTU

[[peer]]
name = "laptop"
public_key = "$J_LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOT
    { echo "audit = \"$dir/ho-gateway-audit.jsonl\""; cat "$dir/ho-gateway.toml"; } >"$dir/ho-gateway-audit.toml"
    rm -f "$dir/ho-gateway-audit.jsonl" "$dir/ho-laptop-audit.jsonl"
    local pol
    for pol in default voice audit; do
        {
            echo 'identity = "laptop.key"'
            [[ $pol == voice ]] && echo "policy = \"$REPO_DIR/policy/voice.toml\""
            [[ $pol == audit ]] && echo "audit = \"$dir/ho-laptop-audit.jsonl\""
            cat <<EOT

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]
mtu = $MTU

[gateway]
endpoint = "$TB_ENDPOINT:$PORT"
public_key = "$J_GW_PUB"
routes = ["10.77.0.0/24"]
EOT
        } >"$dir/ho-laptop-$pol.toml"
        "$JVPN" check "$dir/ho-laptop-$pol.toml" >/dev/null || fail "ho-laptop-$pol.toml does not check"
    done
}

# ho_pair_start VARIANT TAG / ho_pair_stop VARIANT TAG: the VPN pair of one run.
ho_pair_start() {
    local v=$1 tag=$2
    case $v in
        jvpn|jvpn-voice|jvpn-audit)
            local pol=default gw=ho-gateway.toml
            [[ $v == jvpn-voice ]] && pol=voice
            [[ $v == jvpn-audit ]] && pol=audit gw=ho-gateway-audit.toml
            JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start "$tag-gw" hgw gateway "$RUN_DIR/jvpn/$gw"
            wait_listen hgw "$PORT" 15 udp
            JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start "$tag-lap" hlap up "$RUN_DIR/jvpn/ho-laptop-$pol.toml"
            ;;
        *) wg_pair_start "$v" "$tag" hlap hgw ;;
    esac
}
ho_pair_stop() {
    local v=$1 tag=$2
    case $v in
        jvpn|jvpn-voice|jvpn-audit)
            bg_stop "$tag-lap" TERM 10 || warn "$tag: jvpn (laptop) had to be killed"
            bg_stop "$tag-gw" TERM 10 || warn "$tag: jvpn (gateway) had to be killed"
            ;;
        *) wg_pair_stop "$tag" hlap hgw ;;
    esac
}

# ho_wait_tunnel TIMEOUT: until one ping from the laptop through the tunnel answers.
ho_wait_tunnel() {
    local deadline=$((SECONDS + $1))
    until nsx hlap ping -n -c 1 -W 0.5 10.77.0.1 >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
    done
}

# ho_wait_log NAME REGEX TIMEOUT: until the log of a process matches (no failure on timeout).
ho_wait_log() {
    local deadline=$((SECONDS + $3))
    until grep -Eq -- "$2" "$RUN_DIR/$1.log" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# ho_at T0 SECONDS COMMAND...: run COMMAND (in the foreground) SECONDS after T0 (date +%s.%N).
ho_at() {
    local t0=$1 n=$2; shift 2
    sleep "$(awk -v t0="$t0" -v n="$n" -v now="$(date +%s.%N)" 'BEGIN { w = t0 + n - now; print (w > 0 ? w : 0) }')"
    "$@"
}

# ho_one CASE VARIANT RUN: one run of one (case, variant); results into H_*.
ho_one() {
    local c=$1 v=$2 r=$3 d
    HO_N=$((HO_N + 1))
    local tag="ho$HO_N-$v-$c"
    local media
    media=$(awk -v l="$HO_LEAD" -v e="$(ho_case_event_len "$c")" -v t="$HO_TAIL" 'BEGIN { print l + e + t }')
    local count
    count=$(awk -v s="$media" -v p="$HO_PPS" 'BEGIN { printf "%d", s * p + 0.5 }')
    local dirs
    read -r -a dirs <<<"$(ho_case_dirs "$c")"

    tb_restore
    [[ $(ho_case_start "$c") == cellular ]] && tb_wifi_down
    ho_pair_start "$v" "$tag"
    local note=""
    if ! ho_wait_tunnel 20; then
        warn "$tag: no ping through the tunnel within 20 s; measuring anyway"
        note="no tunnel at start"
    fi
    if [[ $v == jvpn* ]]; then
        ho_wait_log "$tag-lap" 'transport attached' 5 || warn "$tag: jvpn logged no 'transport attached'"
    fi

    # Receivers first (until they listen), then the senders.
    for d in "${dirs[@]}"; do
        local rns=hgw addr=10.77.0.1:5001
        [[ $d == down ]] && rns=hlap addr=10.77.0.2:5002
        bg_start "$tag-$d-recv" "$rns" sh -c "exec '$JVPN' probe recv --listen $addr --seconds $(awk -v m="$media" 'BEGIN { print m + 1 }') --expect-pps $HO_PPS --json >'$RUN_DIR/$tag-$d.json'"
    done
    for d in "${dirs[@]}"; do
        ho_wait_log "$tag-$d-recv" 'listening on' 10 || fail "$tag: probe recv ($d) did not start (see $tag-$d-recv.log)"
    done
    for d in "${dirs[@]}"; do
        local sns=hlap addr=10.77.0.1:5001
        [[ $d == down ]] && sns=hgw addr=10.77.0.2:5002
        bg_start "$tag-$d-send" "$sns" "$JVPN" probe send --to "$addr" --pps "$HO_PPS" --seconds "$media"
    done
    local t0 c1=""
    t0=$(date +%s.%N)
    ho_at "$t0" "$HO_LEAD" ho_event "$c"
    # Where does the traffic go once Wi-Fi is back? Packet counters from 1.5 s after the return
    # to the end of the media.
    [[ $c == wifi-returns ]] && c1=$(ho_at "$t0" "$(awk -v l="$HO_LEAD" 'BEGIN { print l + 1.5 }')" ho_counters)
    local p
    for d in "${dirs[@]}"; do
        wait_pid_exit "$(pid_of "$tag-$d-send")" 30 || true
    done
    if [[ -n $c1 ]]; then
        local path
        path=$(ho_paths "$c1" "$(ho_counters)")
        H_PATH["$v"]+="$path;"
        log "$tag: after Wi-Fi returned: $path"
    fi
    for d in "${dirs[@]}"; do
        for p in send recv; do
            wait_pid_exit "$(pid_of "$tag-$d-$p")" 30 || fail "$tag: probe $d $p did not finish"
            wait "$(pid_of "$tag-$d-$p")" 2>/dev/null || fail "$tag: probe $d $p failed (see $tag-$d-$p.log)"
        done
    done
    ho_pair_stop "$v" "$tag"

    for d in "${dirs[@]}"; do
        local f=$RUN_DIR/$tag-$d.json
        [[ -s $f ]] || fail "$tag: probe recv ($d) wrote no JSON"
        cp "$f" "$HO_OUT/$v-$c-run$r-$d.json"
        local received sent last sil lost res
        read -r received sent last sil < <(jq -r '[.received, (.sent // "null"), (.last_seq // "null"), (.longest_silence_ms // "null")] | @tsv' "$f")
        [[ $sent == null ]] && sent=$count
        lost=$((sent - received))
        ((lost >= 0)) || lost=0
        # Resumed: the stream was flowing at its end (the end marker or one of the last 6 packets
        # arrived).
        res=0
        if [[ $(jq -r '.sent // "null"' "$f") != null ]]; then
            res=1
        elif [[ $last != null ]] && ((last >= count - 6)); then
            res=1
        fi
        [[ $sil == null ]] && sil=inf
        ((res)) || sil=inf
        local k="$c|$v|$d"
        H_LOST[$k]+="$lost "
        H_SIL[$k]+="$sil "
        H_RES[$k]+="$res "
        [[ -n $note ]] && H_NOTE["$c|$v"]=$note
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$v" "$r" "$d" "$received" "$sent" "$lost" \
            "$( ((res)) && jq -r '.longest_silence_ms' "$f" || echo never)" >>"$HO_OUT/runs.tsv"
        log "$(printf '%-14s %-18s run %s %-4s: received %3s/%s, lost %3s, longest silence %s ms%s' \
            "$c" "$v" "$r" "$d" "$received" "$sent" "$lost" "$(jq -r '.longest_silence_ms' "$f")" \
            "$( ((res)) || echo ', never resumed')")"
    done
}

# ho_counters: "laptop wlan0 tx, laptop wwan0 tx, gateway gwifi tx, gateway gcell tx" packets.
ho_counters() {
    local n i ns_ out=()
    for n in "hlap wlan0" "hlap wwan0" "hgw gwifi" "hgw gcell"; do
        read -r ns_ i <<<"$n"
        out+=("$(ip -n "$(ns "$ns_")" -s -j link show dev "$i" | jq -r '.[0].stats64.tx.packets')")
    done
    echo "${out[*]}"
}
# ho_paths BEFORE AFTER: which bearer carried each direction between two ho_counters samples.
ho_paths() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= 4; i++) d[i] = y[i] - x[i]
        printf "up %s, down %s", which(d[1], d[2]), which(d[3], d[4])
    }
    function which(w, c) {
        if (w + c < 20) return "none"
        if (w >= 0.9 * (w + c)) return "Wi-Fi"
        if (c >= 0.9 * (w + c)) return "cellular"
        return "both"
    }'
}
# ho_path_note VARIANT: the paths of the wifi-returns runs, "up X, down Y" (with counts if they differ).
ho_path_note() {
    local all=${H_PATH[$1]:-}
    [[ -n $all ]] || return 0
    printf '%s' "$all" | tr ';' '\n' | sed '/^$/d' | sort | uniq -c |
        awk '{ c = $1; $1 = ""; sub(/^ /, ""); out = out (out == "" ? "" : "; ") $0 (c > 1 || NR > 1 ? " (" c "×)" : "") } END { print out }'
}

# median VALUES...: the median (values may be "inf").
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } if (NR % 2) print v[(NR + 1) / 2]; else if (v[NR / 2] == "inf" || v[NR / 2 + 1] == "inf") print "inf"; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ho_cell CASE VARIANT DIR: "lost|silence" medians for the table ("–" for a direction not run).
ho_lost() {
    local k="$1|$2|$3"
    [[ -n ${H_LOST[$k]:-} ]] || { echo "–"; return; }
    # shellcheck disable=SC2086
    awk -v m="$(median ${H_LOST[$k]})" 'BEGIN { printf "%g", m }'
}
ho_sil() {
    local k="$1|$2|$3" m
    [[ -n ${H_SIL[$k]:-} ]] || { echo "–"; return; }
    # shellcheck disable=SC2086
    m=$(median ${H_SIL[$k]})
    if [[ $m == inf ]]; then echo "never"; else awk -v m="$m" 'BEGIN { printf "%.0f", m }'; fi
}
# ho_resumed CASE VARIANT: yes / no / per direction "up k/n, down k/n".
ho_resumed() {
    local c=$1 v=$2 d all=1 none=1 parts=() k n
    for d in $(ho_case_dirs "$c"); do
        # shellcheck disable=SC2086
        read -r k n < <(printf '%s\n' ${H_RES["$c|$v|$d"]} | awk '{ s += $1; n++ } END { print s + 0, n + 0 }')
        ((k == n)) || all=0
        ((k == 0)) || none=0
        parts+=("$d $k/$n")
    done
    if ((all)); then echo yes; elif ((none)); then echo no; else
        local joined
        joined=$(IFS=,; echo "${parts[*]}")
        echo "${joined//,/, }"
    fi
}

ho_table() {
    echo "| case | peer | up lost | up longest silence (ms) | down lost | down longest silence (ms) | resumed? |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    local c p v n
    for c in "${HO_CASES[@]}"; do
        n=0
        for p in "${HO_PEERS[@]}"; do
            for v in $(ho_variants "$c" "$p"); do
                local first=""
                ((n == 0)) && first="$(ho_case_desc "$c")"
                n=$((n + 1))
                local res
                res=$(ho_resumed "$c" "$v")
                [[ -n ${H_NOTE["$c|$v"]:-} ]] && res+=" (${H_NOTE["$c|$v"]})"
                printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$first" "$(ho_row_label "$c" "$v")" \
                    "$(ho_lost "$c" "$v" up)" "$(ho_sil "$c" "$v" up)" \
                    "$(ho_lost "$c" "$v" down)" "$(ho_sil "$c" "$v" down)" "$res"
            done
        done
    done
}

# ho_budgets: jvpn's medians against roam.sh's budgets, one line per row.
ho_budgets() {
    wants jvpn || return 0
    local c v d b lost sil
    for c in "${HO_CASES[@]}"; do
        for v in $(ho_variants "$c" jvpn); do
            b=$(ho_budget "$c" "$v")
            [[ -n $b ]] || continue
            read -r blost bsil <<<"$b"
            local misses=()
            for d in $(ho_case_dirs "$c"); do
                lost=$(ho_lost "$c" "$v" "$d")
                sil=$(ho_sil "$c" "$v" "$d")
                if awk -v l="$lost" -v m="$blost" 'BEGIN { exit !(l > m) }'; then
                    misses+=("$d lost $lost > $blost (by $(awk -v l="$lost" -v m="$blost" 'BEGIN { print l - m }'))")
                fi
                if [[ $sil == never ]]; then
                    misses+=("$d never resumed")
                elif awk -v s="$sil" -v m="$bsil" 'BEGIN { exit !(s > m) }'; then
                    misses+=("$d silence $sil ms > $bsil ms (by $(awk -v s="$sil" -v m="$bsil" 'BEGIN { print s - m }') ms)")
                fi
            done
            local verdict="met"
            if ((${#misses[@]})); then
                # (IFS only inside the substitution: a `local IFS` would split every later row.)
                verdict="NOT met: $(IFS=';' && echo "${misses[*]}")"
                verdict=${verdict//;/; }
            fi
            printf -- '- %s, %s: budget ≤ %s lost, ≤ %s ms each direction: %s\n' \
                "$(ho_case_desc "$c")" "$(ho_row_label "$c" "$v")" "$blost" "$bsil" "$verdict"
        done
    done
}

if ((RUN_HANDOVER)); then
    HO_T0=$SECONDS
    step "topology (handover): laptop with Wi-Fi and cellular (through NAT), gateway"
    tb_topology hlap hgw hrtr
    ok "gateway $TB_ENDPOINT reachable over both bearers"
    wants jvpn && ho_jvpn_configs
    ho_total=0
    for c in "${HO_CASES[@]}"; do
        for p in "${HO_PEERS[@]}"; do
            for v in $(ho_variants "$c" "$p"); do ho_total=$((ho_total + 1)); done
        done
    done
    log "handover: $ho_total rows x $HO_RUNS runs"
    for r in $(seq "$HO_RUNS"); do
        step "handover run $r of $HO_RUNS"
        for c in "${HO_CASES[@]}"; do
            for p in "${HO_PEERS[@]}"; do
                for v in $(ho_variants "$c" "$p"); do ho_one "$c" "$v" "$r"; done
            done
        done
    done
    tb_restore
    HO_SECONDS=$((SECONDS - HO_T0))
    log "handover: $HO_N runs in ${HO_SECONDS} s"
    # The audit rows' files: every record of every run, checked as one chain per node.
    HO_AUDIT=""
    if wants jvpn; then
        for node in laptop gateway; do
            f=$RUN_DIR/jvpn/ho-$node-audit.jsonl
            key=$J_LAP_PUB
            [[ $node == gateway ]] && key=$J_GW_PUB
            if out=$("$JVPN" audit verify --key "$key" "$f" 2>&1); then
                HO_AUDIT+="- $node: \`jvpn audit verify\`: $(head -n 1 <<<"$out" | sed 's/^[^:]*: //'); $(grep '^bearer transitions' <<<"$out")"$'\n'
            else
                HO_AUDIT+="- $node: \`jvpn audit verify\` FAILED: $out"$'\n'
            fi
            cp "$f" "$HO_OUT/jvpn-audit-$node.jsonl" 2>/dev/null || true
        done
        log "audit files after the handover runs:"$'\n'"$HO_AUDIT"
    fi
fi

# ---------------------------------------------------------------------------------------------
# Tables and docs
# ---------------------------------------------------------------------------------------------
table() {
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

# verdict: jvpn against boringtun's best (highest throughput, lowest ping avg and p50), when both
# ran. The issue's target: throughput at least boringtun's best, ping RTT no worse.
verdict() {
    ((RUN_THROUGHPUT)) && wants jvpn || return 0
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
            if (jp50 == "-" || p50 == "") { print "; ping not comparable." ; exit }
            printf "; ping p50 %s against %s ms (%s, %s)", jp50, p50, p50n, (jp50 + 0 <= p50 + 0 ? "no worse" : "worse")
            printf "; ping avg %s against %s ms (%s, %s; the average is the noisier number here).\n", \
                javg, avg, avgn, (javg + 0 <= avg + 0 ? "no worse" : "worse")
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
    if ((RUN_HANDOVER)); then
        echo "- nftables: $(nft --version | head -n 1)"
        echo "- conntrack: $(conntrack --version 2>&1 | head -n 1)"
    fi
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
TABLE="" VERDICT="" HO_TABLE="" HO_BUDGETS="" HO_PATHS=""
if ((RUN_THROUGHPUT)); then
    TABLE=$(table)
    VERDICT=$(verdict)
    echo "$TABLE"
    [[ -n $VERDICT ]] && echo && echo "$VERDICT"
fi
if ((RUN_HANDOVER)); then
    HO_TABLE=$(ho_table)
    HO_BUDGETS=$(ho_budgets)
    HO_PATHS=""
    if [[ " ${HO_CASES[*]} " == *" wifi-returns "* ]]; then
        for p in "${HO_PEERS[@]}"; do
            HO_PATHS+="- $(ho_label "$p"): $(ho_path_note "$p")"$'\n'
        done
        HO_PATHS=${HO_PATHS%$'\n'}
    fi
    echo
    echo "Handover (median of $HO_RUNS runs; $HO_N runs in $HO_SECONDS s):"
    echo "$HO_TABLE"
    [[ -n $HO_PATHS ]] && echo && echo "After Wi-Fi came back:" && echo "$HO_PATHS"
    [[ -n $HO_BUDGETS ]] && echo && echo "$HO_BUDGETS"
fi
log "bench.sh took $((SECONDS - BENCH_T0)) s (throughput/latency ${TP_SECONDS} s, handover ${HO_SECONDS} s)"

# handover_section: the "## Handover" part of docs/BENCHMARKS.md (always its last section).
handover_section() {
    echo "## Handover"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on the machine above; peers: ${HO_PEERS[*]};"
    echo "$HO_RUNS runs per row, $HO_N runs in $HO_SECONDS s. Each cell is the median over the runs"
    echo "(lost packets; longest silence in ms, \"never\" when the stream did not come back within the run);"
    echo "\"resumed?\" says whether the stream was flowing again at the end of each run (per direction,"
    echo "in how many runs, when not all or none). \"–\": that direction carries no media in this case."
    echo
    echo "$HO_TABLE"
    if [[ -n $HO_PATHS ]]; then
        echo
        echo "Where the media went after Wi-Fi came back (the bearer that carried ≥ 90 % of the packets each"
        echo "way, from 1.5 s after the return to the end of the media; per run):"
        echo
        echo "$HO_PATHS"
    fi
    if [[ -n $HO_BUDGETS ]]; then
        echo
        echo "jvpn against the budgets \`netns-tests/roam.sh\` asserts (issue 3), on the medians above:"
        echo
        echo "$HO_BUDGETS"
    fi
    if [[ -n ${HO_AUDIT:-} ]]; then
        echo
        echo "The \"jvpn, audit on\" rows run with \`audit = ...\` in both configs: each completed move is"
        echo "signed and appended on the laptop, sent to the gateway and witnessed there (off the data"
        echo "path). Their files after all runs (\`docs/bench/handover/jvpn-audit-<node>.jsonl\`):"
        echo
        printf '%s' "$HO_AUDIT"
    fi
    echo
    echo "### Method"
    echo
    cat <<EOT
- Topology: \`netns-tests/roam.sh\`'s, built by \`tb_topology\` in \`netns-tests/lib.sh\`: a
  laptop namespace with two bearers, \`wlan0\` 10.20.0.2/24 (a veth straight to the gateway's
  \`gwifi\`) and \`wwan0\` 10.30.0.2/24 (a veth to a router namespace that masquerades UDP to
  ports 20000-20999 towards the gateway's \`gcell\`); the gateway's endpoint 10.10.0.1 sits on its
  \`lo\`. The laptop reaches 10.10.0.1/32 via \`wlan0\` (metric 100) and via \`wwan0\` (metric 200),
  so when the Wi-Fi route goes the kernel routes via cellular. The tunnel: 10.77.0.2/24 (laptop),
  10.77.0.1/24 (gateway), MTU $MTU, gateway UDP port $PORT.
- One difference from roam.sh: the gateway's routes to the two bearer subnets carry
  \`src 10.10.0.1\`, so the gateway answers from its endpoint address whatever socket it uses, as
  a gateway with a single public address would. boringtun's gateway answers from an unbound
  socket: without this its replies leave from 10.20.0.1 or 10.40.0.1, its laptop learns the
  endpoint 10.20.0.1 (only reachable over Wi-Fi), and the NAT drops its replies on cellular, so
  it could not survive any case for a reason no real deployment has. jvpn and wireguard-go answer
  from the address they were reached at and do not need it.
- Each run starts from both bearers working (the blackhole removed, \`wlan0\` up with its address
  and route, the NAT on its first port range, the NAT's conntrack table flushed), starts the VPN
  pair fresh, waits for one ping through the tunnel, then starts \`jvpn probe recv\` (gateway
  10.77.0.1:5001 for the uplink, laptop 10.77.0.2:5002 for the downlink) and then
  \`jvpn probe send --pps $HO_PPS\` in both directions (downlink only in that case). The event comes
  $HO_LEAD s after the senders start; the media runs $HO_TAIL s after it (after its end, for the
  flapping), then the pair is stopped. Runs go round-robin: run 1 of every row, then run 2, ...
- Events (as in roam.sh): link down = \`ip link set wlan0 down\`; address removed = the same then
  \`ip addr flush dev wlan0\`; blackhole = an nftables table on the gateway dropping everything in
  and out of \`gwifi\`; Wi-Fi returns = \`wlan0\` up and, 0.2 s later, its route back (metric 100);
  flapping = 10 × (down, 0.1 s, up + route, 0.1 s); NAT rebinding = the router's UDP masquerade
  moved to ports 30000-30999 and its conntrack table flushed.
- "Wi-Fi returns" and "NAT rebinding" start with \`wlan0\` already down (address kept), so every
  peer's session is made on cellular; roam.sh instead starts jvpn on Wi-Fi and waits for its
  switch, which the WireGuard peers cannot all do.
- Lost: packets sent − distinct packets received, including the ones after the last arrival when
  the sender's end marker never arrives. Longest silence: the probe's \`longest_silence_ms\`, which
  counts the silence still open when the receiver stops ($HO_TAIL s + 1 s after the event at the
  latest); a run in which the stream never came back counts as "never" (the median is "never" when
  more than half of the runs never came back). Resumed: the end marker or one of the last 6 media
  packets arrived.
- jvpn: the default policy, and \`policy/voice.toml\` as a second row for the blackhole; configs as
  in roam.sh. Every case also runs as "jvpn, audit on": the same with the audit trail on at both
  ends (one file per node for all runs). boringtun (both socket modes) and wireguard-go: started as for throughput above,
  configured with \`wg set\`: gateway \`listen-port $PORT\`, laptop \`endpoint 10.10.0.1:$PORT\`,
  allowed IPs, no persistent keepalive (a WireGuard default, and what a user has unless they set
  one), addresses with \`ip\`.
- Raw outputs: \`docs/bench/handover/<peer>-<case>-run<N>-<up|down>.json\` (the probe receiver's
  JSON) and \`docs/bench/handover/runs.tsv\` (case, peer, run, direction, received, sent, lost,
  longest silence in ms or "never").
- The 2 cores are shared by both VPN processes, both probes' senders and receivers, and anything
  else the machine runs; a silence of a few tens of ms can be scheduling, not the VPN.
EOT
}

if ((WRITE_DOCS)); then
    DOC=$REPO_DIR/docs/BENCHMARKS.md
    OLD_HO=""
    OLD_HEAD=""
    if [[ -f $DOC ]]; then
        OLD_HO=$(awk '/^## Handover$/ { on = 1 } on' "$DOC")
        OLD_HEAD=$(awk '/^## Handover$/ { exit } { print }' "$DOC")
    fi
    {
        if ((RUN_THROUGHPUT)); then
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
  the per-packet times (less sensitive to one scheduling hiccup than avg; the sentence under the
  table compares jvpn's p50 with the best boringtun p50 for that reason).
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
        else
            # --handover: keep the throughput/latency part of the last run.
            if [[ -n $OLD_HEAD ]]; then
                printf '%s\n' "$OLD_HEAD" | sed -e :a -e '/^\n*$/{$d;N;ba' -e '}'
            else
                echo "# Benchmarks"
                echo
                echo "Written by \`scripts/bench.sh\`; do not edit by hand (run it again instead)."
                echo
                echo "## Machine"
                echo
                machine
            fi
        fi
        if ((RUN_HANDOVER)); then
            echo
            handover_section
        elif [[ -n $OLD_HO ]]; then
            # --no-handover: keep the last handover section.
            echo
            printf '%s\n' "$OLD_HO"
        fi
    } >"$DOC.tmp"
    mv "$DOC.tmp" "$DOC"
    log "wrote $DOC and $OUT/"
fi
