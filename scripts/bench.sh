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
# plus a baseline over the bare veth. Peers: jvpn; jvpn-prev (a previous build, to compare with);
# boringtun (default, and --disable-connected-udp); wireguard-go. All tunnels use MTU 1420.
#
# Then the handover table: the bearer-handover cases of netns-tests/handover_cases.sh (the ones
# netns-tests/roam.sh asserts: Wi-Fi down, address gone, downlink only, silent blackhole, Wi-Fi
# returns, flapping, NAT rebinding) against every peer in roam.sh's two-bearer topology (laptop
# with wlan0 and wwan0-through-NAT, gateway endpoint 10.10.0.1), with `jvpn probe` at 50 packets/s each way through the tunnel; each (case, peer)
# from a fresh start of the VPN pair, 3 runs, the median per direction (see scripts/bench/handover.sh).
#
# This script parses the arguments, runs the jobs and writes the docs; the jobs live in
# scripts/bench/: throughput.sh (throughput/latency), handover.sh and handover_report.sh (the
# handover table), criterion.sh (cargo bench), peers.sh (starting and stopping each peer).
#
# Writes docs/BENCHMARKS.md (machine, versions, tables, method) and the raw outputs under
# docs/bench/ (handover: docs/bench/handover/). A benchmark never fails on a number; it fails only
# if a peer cannot be run.
#
# Usage: scripts/bench.sh [--only LIST] [--handover | --no-handover] [--runs N] [--cases LIST]
#                         [--criterion] [--duration SECONDS] [--pings N] [--no-docs]
#   --only LIST     comma-separated subset of: baseline, jvpn, jvpn-prev, boringtun (both
#                   variants), boringtun-default, boringtun-nocudp, wireguard-go (default: all)
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
# level, default info), KEEP_RUN_DIR=1 (keep the per-run directory with every process log),
# JVPN_PREV (the jvpn binary of the jvpn-prev peer, e.g. a release build of the last landing;
# jvpn-prev is skipped with a note when it is unset), JVPN_PREV_REV (the revision it was built from).
set -euo pipefail
BENCH_DIR=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=netns-tests/lib.sh
source "$BENCH_DIR/../netns-tests/lib.sh"
# shellcheck source=netns-tests/handover_cases.sh
source "$BENCH_DIR/../netns-tests/handover_cases.sh"
# shellcheck source=scripts/bench/peers.sh
source "$BENCH_DIR/bench/peers.sh"
# shellcheck source=scripts/bench/throughput.sh
source "$BENCH_DIR/bench/throughput.sh"
# shellcheck source=scripts/bench/handover.sh
source "$BENCH_DIR/bench/handover.sh"
# shellcheck source=scripts/bench/handover_report.sh
source "$BENCH_DIR/bench/handover_report.sh"
# shellcheck source=scripts/bench/criterion.sh
source "$BENCH_DIR/bench/criterion.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

ALL_PEERS=(baseline jvpn jvpn-prev boringtun-default boringtun-nocudp wireguard-go)
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
    HO_CASES=("${HC_CASES[@]}")
else
    IFS=, read -r -a wanted <<<"$HO_CASES_ARG"
    for w in "${wanted[@]}"; do
        [[ " ${HC_CASES[*]} " == *" $w "* ]] ||
            { echo "unknown case '$w' in --cases (known: ${HC_CASES[*]})" >&2; exit 2; }
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
            baseline|jvpn|jvpn-prev|boringtun-default|boringtun-nocudp|wireguard-go) PEERS+=("$w") ;;
            boringtun) PEERS+=(boringtun-default boringtun-nocudp) ;;
            wg-go|wireguard) PEERS+=(wireguard-go) ;;
            *) echo "unknown peer '$w' in --only (known: ${ALL_PEERS[*]} boringtun)" >&2; exit 2 ;;
        esac
    done
fi
wants() { local p; for p in "${PEERS[@]}"; do [[ $p == "$1" ]] && return 0; done; return 1; }
wants_prefix() { local p; for p in "${PEERS[@]}"; do [[ $p == "$1"* ]] && return 0; done; return 1; }

# jvpn-prev needs the previous build's binary; without JVPN_PREV it is left out, with a note.
NOTES=()
if wants jvpn-prev && [[ -z ${JVPN_PREV:-} ]]; then
    NOTES+=("jvpn-prev skipped: JVPN_PREV (the previous build's jvpn binary) is not set")
    kept=()
    for p in "${PEERS[@]}"; do [[ $p == jvpn-prev ]] || kept+=("$p"); done
    PEERS=("${kept[@]}")
    ((${#PEERS[@]})) || { echo "${NOTES[0]}; no peer left to run" >&2; exit 2; }
fi

need_root
lib_init bench
export PATH="$HOME/.cargo/bin:$PATH"
BENCH_T0=$SECONDS
for note in "${NOTES[@]}"; do warn "$note"; done

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
if wants jvpn-prev; then
    [[ -x $JVPN_PREV ]] || fail "JVPN_PREV=$JVPN_PREV is not an executable"
    if ! JVPN=$JVPN_PREV jvpn_supports gateway || ! JVPN=$JVPN_PREV jvpn_supports up; then
        fail "$JVPN_PREV (JVPN_PREV) has no 'gateway'/'up' subcommands"
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

PORT=$HC_PORT
MTU=$HC_MTU
peers_init
declare -A R_VERSION=()
for p in "${PEERS[@]}"; do R_VERSION[$p]=$(version_of "$p"); done

# ---------------------------------------------------------------------------------------------
# The jobs
# ---------------------------------------------------------------------------------------------
((RUN_THROUGHPUT)) && tp_run
((RUN_HANDOVER)) && ho_run
((CRITERION)) && criterion_run

step "results"
TABLE="" VERDICT="" HO_TABLE="" HO_BUDGETS="" HO_PATHS=""
if ((RUN_THROUGHPUT)); then
    TABLE=$(tp_table)
    VERDICT=$(tp_verdict)
    echo "$TABLE"
    [[ -n $VERDICT ]] && echo && echo "$VERDICT"
fi
if ((RUN_HANDOVER)); then
    HO_TABLE=$(ho_table)
    HO_BUDGETS=$(ho_budgets)
    HO_PATHS=$(ho_paths_summary)
    echo
    echo "Handover (median of $HO_RUNS runs; $HO_N runs in $HO_SECONDS s):"
    echo "$HO_TABLE"
    [[ -n $HO_PATHS ]] && echo && echo "After Wi-Fi came back:" && echo "$HO_PATHS"
    [[ -n $HO_BUDGETS ]] && echo && echo "$HO_BUDGETS"
fi
for note in "${NOTES[@]}"; do echo && echo "Note: $note."; done
log "bench.sh took $((SECONDS - BENCH_T0)) s (throughput/latency ${TP_SECONDS} s, handover ${HO_SECONDS} s)"

# ---------------------------------------------------------------------------------------------
# docs/BENCHMARKS.md
# ---------------------------------------------------------------------------------------------
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

# docs_head: the title and the throughput/latency part (from this run, or kept from the last one
# with --handover).
docs_head() {
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
        tp_method
        criterion_section
    elif [[ -n $OLD_HEAD ]]; then
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
        docs_head
        if ((RUN_HANDOVER)); then
            echo
            ho_section
        elif [[ -n $OLD_HO ]]; then
            # --no-handover: keep the last handover section.
            echo
            printf '%s\n' "$OLD_HO"
        fi
    } >"$DOC.tmp"
    mv "$DOC.tmp" "$DOC"
    log "wrote $DOC and $OUT/"
fi
