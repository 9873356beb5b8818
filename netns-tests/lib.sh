# shellcheck shell=bash disable=SC2034
# netns-tests/lib.sh: helpers shared by the netns test scripts, demo.sh and bench.sh.
#
# Source it from a script that runs with `set -euo pipefail`, then:
#
#   need_root                  # exit 77 (skip) unless root with `ip netns`, veth and /dev/net/tun
#   lib_init basic             # per-run directory, unique namespace prefix, `trap cleanup EXIT`
#   ns_add gw; ns_add a        # namespaces "<prefix>gw", "<prefix>a" (loopback up)
#   veth_link gw ga "10.10.1.1/24 fd10:1::1/64" a eth0 "10.10.1.2/24 fd10:1::2/64"
#   nsx a ping -c1 10.10.1.1   # run a command inside a namespace
#   jvpn_start gw gw gateway "$RUN_DIR/gateway.toml"  # process "gw" in ns gw, log $RUN_DIR/gw.log
#   wait_ping a 10.77.0.1 20   # until one ping through the tunnel answers, or fail
#
# Everything a run creates is recorded: cleanup (on EXIT, INT, TERM) stops only the processes this
# run started (by PID) and whatever still runs inside this run's own namespaces, then deletes only
# those namespaces. Nothing is matched by name across the machine.
#
# Exit codes: 0 pass, 1 fail, 77 skip (not root, no `ip netns`, no TUN).
# (SC2034 is off: globals such as BG_RC and NETNS_SKIP_REASON are read by the sourcing scripts.)

# ---------------------------------------------------------------------------------------------
# Globals
# ---------------------------------------------------------------------------------------------

LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LIB_DIR/.." && pwd)
JVPN=${JVPN:-$REPO_DIR/target/release/jvpn}
SKIP_CODE=77

RUN_NAME=""
RUN_DIR=""
RUN_TAG=""
NS_PREFIX=""
KEEP_RUN_DIR=${KEEP_RUN_DIR:-0}
NAMESPACES=()      # full names of the namespaces this run created
PIDS=()            # PIDs of the background processes this run started
declare -A NAME_PID=()   # short name -> PID
CLEANUP_HOOKS=()   # commands run first by cleanup (e.g. removing files outside RUN_DIR)

# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

if [[ -t 1 && -z ${NO_COLOR:-} ]]; then
    C_RED=$'\e[31m' C_GREEN=$'\e[32m' C_YELLOW=$'\e[33m' C_BOLD=$'\e[1m' C_DIM=$'\e[2m' C_OFF=$'\e[0m'
else
    C_RED="" C_GREEN="" C_YELLOW="" C_BOLD="" C_DIM="" C_OFF=""
fi

log()  { printf '%s[%s %s]%s %s\n' "$C_DIM" "$(date +%H:%M:%S)" "${RUN_NAME:-netns}" "$C_OFF" "$*"; }
step() { printf '\n%s==> %s%s\n' "$C_BOLD" "$*" "$C_OFF"; }
ok()   { printf '%s  ok%s   %s\n' "$C_GREEN" "$C_OFF" "$*"; }
warn() { printf '%s  warn%s %s\n' "$C_YELLOW" "$C_OFF" "$*" >&2; }

# skip REASON: this test cannot run here; exits with the distinct skip code.
skip() {
    printf '%sSKIP%s %s: %s\n' "$C_YELLOW" "$C_OFF" "${RUN_NAME:-$(basename "$0")}" "$*" >&2
    exit "$SKIP_CODE"
}

# fail MESSAGE: print what failed, dump every node log of this run, exit 1 (cleanup still runs).
fail() {
    printf '\n%sFAIL%s %s: %s\n' "$C_RED" "$C_OFF" "${RUN_NAME:-$(basename "$0")}" "$*" >&2
    dump_logs >&2
    exit 1
}

# dump_logs: the tail (DUMP_LINES, default 80) of every log in this run's directory.
dump_logs() {
    local lines=${DUMP_LINES:-80} f
    [[ -n $RUN_DIR && -d $RUN_DIR ]] || return 0
    for f in "$RUN_DIR"/*.log; do
        [[ -e $f ]] || continue
        printf '%s----- %s (last %s lines) -----%s\n' "$C_BOLD" "$f" "$lines" "$C_OFF"
        tail -n "$lines" "$f" | strip_ansi
    done
    printf '%s----- end of logs -----%s\n' "$C_BOLD" "$C_OFF"
}

strip_ansi() { sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

# ---------------------------------------------------------------------------------------------
# Preconditions and installation
# ---------------------------------------------------------------------------------------------

# need_root: skip (exit 77) unless we are root and namespaces, veth and TUN are usable.
need_root() {
    [[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces, veth, TUN); run as root or with sudo"
    command -v ip >/dev/null 2>&1 || skip "the ip command (iproute2) is not installed"
    ip netns list >/dev/null 2>&1 || skip "'ip netns' is not available here"
    [[ -c /dev/net/tun ]] || skip "/dev/net/tun is missing (no TUN support)"
    local probe="jvpn-probe-$$-$RANDOM"
    ip netns add "$probe" >/dev/null 2>&1 || skip "cannot create a network namespace (ip netns add failed)"
    if ! ip -n "$probe" link add p0 type veth peer name p1 >/dev/null 2>&1; then
        ip netns del "$probe" >/dev/null 2>&1 || true
        skip "cannot create veth links inside a namespace"
    fi
    ip netns del "$probe" >/dev/null 2>&1 || true
}

# netns_available: like need_root, but returns 0/1 instead of exiting; on 1 the reason is in
# NETNS_SKIP_REASON.
NETNS_SKIP_REASON=""
netns_available() {
    local out
    if out=$( (need_root) 2>&1 ); then return 0; fi
    NETNS_SKIP_REASON=${out#*: }
    return 1
}

APT_UPDATED=0
# ensure_cmds CMD[:PACKAGE] ...: install the Debian packages of missing commands (root only).
ensure_cmds() {
    local spec cmd pkg missing=()
    for spec in "$@"; do
        cmd=${spec%%:*}
        pkg=${spec#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        echo "missing commands (install as root): ${missing[*]}" >&2
        return 1
    fi
    apt_install "${missing[@]}"
}

# apt_install PACKAGE...: apt-get update once per run, then install without recommends.
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ $APT_UPDATED -eq 0 ]]; then
        echo "installing Debian packages: $*" >&2
        timeout 600 apt-get update -qq >&2 || { echo "apt-get update failed" >&2; return 1; }
        APT_UPDATED=1
    fi
    timeout 900 apt-get install -y -qq --no-install-recommends "$@" >&2 </dev/null ||
        { echo "apt-get install $* failed" >&2; return 1; }
}

# The commands every netns test uses.
NETNS_TOOLS=(ip:iproute2 ping:iputils-ping iperf3:iperf3 tcpdump:tcpdump nft:nftables
             jq:jq timeout:coreutils ss:iproute2)
ensure_netns_tools() { ensure_cmds "${NETNS_TOOLS[@]}"; }

# ensure_jvpn: build target/release/jvpn if it is missing or older than the sources.
ensure_jvpn() {
    if [[ ${JVPN_NO_BUILD:-0} == 1 ]]; then
        [[ -x $JVPN ]] || fail "JVPN_NO_BUILD=1 but $JVPN does not exist"
        return 0
    fi
    local stale=""
    if [[ ! -x $JVPN ]]; then
        stale="missing"
    else
        stale=$(find "$REPO_DIR/src" "$REPO_DIR/Cargo.toml" "$REPO_DIR/Cargo.lock" \
                     -newer "$JVPN" -print -quit 2>/dev/null || true)
    fi
    if [[ -n $stale ]]; then
        log "building jvpn (release) ..."
        local locked=()
        [[ ${CI:-} == true ]] && locked=(--locked)
        (cd "$REPO_DIR" && cargo build --release --bin jvpn "${locked[@]}" >&2) ||
            fail "cargo build --release failed"
    fi
    [[ -x $JVPN ]] || fail "$JVPN was not built"
}

# jvpn_supports SUBCOMMAND: does this jvpn binary have that subcommand?
jvpn_supports() { "$JVPN" help "$1" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Run set-up and cleanup
# ---------------------------------------------------------------------------------------------

# lib_init NAME: create the per-run directory and namespace prefix, install the cleanup trap.
lib_init() {
    RUN_NAME=$1
    # scripts/netns.sh passes JVPN_RUN_TAG so that it can check for leaked namespaces afterwards.
    RUN_TAG=${JVPN_RUN_TAG:-$(printf '%05d%04x' "$$" "$((RANDOM % 65536))")}
    NS_PREFIX="jvpn-${RUN_NAME}-${RUN_TAG}-"
    RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/jvpn-${RUN_NAME}.XXXXXX")
    chmod 700 "$RUN_DIR"
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "run directory $RUN_DIR, namespaces ${NS_PREFIX}*"
}

# on_cleanup COMMAND...: run COMMAND (as one string, eval'd) at cleanup, before namespaces go.
on_cleanup() { CLEANUP_HOOKS+=("$*"); }

cleanup() {
    local rc=$? pid ns h
    trap - EXIT INT TERM
    set +e
    for h in "${CLEANUP_HOOKS[@]}"; do eval "$h" >/dev/null 2>&1; done
    # 1. The processes this run started, by PID: TERM, then KILL if they linger.
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait_pid_exit "$pid" 5 || kill -KILL "$pid" 2>/dev/null; done
    # 2. Anything else still inside this run's namespaces (children of ours) is ours too.
    for ns in "${NAMESPACES[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    # 3. The namespaces (their links and TUN devices go with them).
    for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null; done
    wait 2>/dev/null
    if [[ -n $RUN_DIR && -d $RUN_DIR ]]; then
        if [[ $rc -ne 0 || $KEEP_RUN_DIR == 1 ]]; then
            echo "logs kept in $RUN_DIR" >&2
        else
            rm -rf "$RUN_DIR"
        fi
    fi
    exit "$rc"
}

# wait_pid_exit PID SECONDS: true once PID has exited (reaped if it is our child).
wait_pid_exit() {
    local pid=$1 deadline=$((SECONDS + $2))
    while kill -0 "$pid" 2>/dev/null; do
        # A zombie child of ours still answers kill -0; reap it if it is done.
        if [[ $(ps -o stat= -p "$pid" 2>/dev/null) == Z* ]]; then wait "$pid" 2>/dev/null; break; fi
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
    return 0
}

# ---------------------------------------------------------------------------------------------
# Namespaces and links
# ---------------------------------------------------------------------------------------------

# ns NAME: the full namespace name of short NAME.
ns() { printf '%s%s' "$NS_PREFIX" "$1"; }

# ns_add NAME...: create namespaces with loopback up.
ns_add() {
    local n full
    for n in "$@"; do
        full=$(ns "$n")
        ip netns add "$full" || fail "ip netns add $full failed"
        NAMESPACES+=("$full")
        ip -n "$full" link set lo up
        # Quiet kernels: no router solicitations or DAD delays on our test links.
        nsx "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
            >/dev/null 2>&1 || true
    done
}

# nsx NAME COMMAND...: run COMMAND inside namespace NAME.
nsx() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# veth_link NS_A IF_A ADDRS_A NS_B IF_B ADDRS_B: a veth pair between two namespaces, both ends up.
# ADDRS are space-separated CIDRs ("10.10.1.1/24 fd10:1::1/64"); IPv6 ones get `nodad`.
veth_link() {
    local na=$1 ia=$2 aa=$3 nb=$4 ib=$5 ab=$6
    ip link add "$ia" netns "$(ns "$na")" type veth peer name "$ib" netns "$(ns "$nb")" ||
        fail "cannot create veth $na/$ia <-> $nb/$ib"
    if_addrs "$na" "$ia" "$aa"
    if_addrs "$nb" "$ib" "$ab"
    ip -n "$(ns "$na")" link set "$ia" up
    ip -n "$(ns "$nb")" link set "$ib" up
}

# if_addrs NS IF "CIDR ...": add addresses to an interface (IPv6 with nodad).
if_addrs() {
    local n=$1 dev=$2 a
    for a in $3; do
        if [[ $a == *:* ]]; then
            ip -n "$(ns "$n")" addr add "$a" dev "$dev" nodad || fail "addr add $a on $n/$dev"
        else
            ip -n "$(ns "$n")" addr add "$a" dev "$dev" || fail "addr add $a on $n/$dev"
        fi
    done
}

# ns_route NS DEST VIA: add a route (v4 or v6) inside a namespace.
ns_route() { ip -n "$(ns "$1")" route add "$2" via "$3" || fail "route $2 via $3 in $1"; }

# ns_forwarding NS: enable IPv4 and IPv6 forwarding inside a namespace.
ns_forwarding() {
    nsx "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 >/dev/null ||
        fail "cannot enable forwarding in $1"
}

# link_exists NS IF: does the interface exist in the namespace?
link_exists() { ip -n "$(ns "$1")" link show dev "$2" >/dev/null 2>&1; }

# ---------------------------------------------------------------------------------------------
# Background processes
# ---------------------------------------------------------------------------------------------

ENV_DEFAULT_SIGNALS=()
if env --default-signal=INT true >/dev/null 2>&1; then
    ENV_DEFAULT_SIGNALS=(env "--default-signal=INT,QUIT")
fi

# bg_start NAME NS COMMAND...: start COMMAND in namespace NS in the background, stdout and stderr
# to $RUN_DIR/NAME.log; records the PID (ip netns exec execs, so $! is the command itself).
bg_start() {
    local name=$1 n=$2; shift 2
    [[ -z ${NAME_PID[$name]:-} ]] || fail "bg_start: process name '$name' already used"
    : >"$RUN_DIR/$name.log"
    # bash starts background commands with SIGINT and SIGQUIT ignored; give them back their
    # defaults so a process sees SIGINT as it would from a terminal.
    ip netns exec "$(ns "$n")" "${ENV_DEFAULT_SIGNALS[@]}" "$@" >>"$RUN_DIR/$name.log" 2>&1 </dev/null &
    local pid=$!
    PIDS+=("$pid")
    NAME_PID[$name]=$pid
}

# pid_of NAME: the PID of a process started with bg_start.
pid_of() { printf '%s' "${NAME_PID[$1]:?no process named $1}"; }

# is_running NAME
is_running() {
    local pid
    pid=$(pid_of "$1")
    kill -0 "$pid" 2>/dev/null && [[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]]
}

# bg_stop NAME [SIGNAL] [TIMEOUT]: signal a process and wait for it; sets BG_RC to its exit code
# (128+n for a signal). Returns 1 if it did not exit in time (then it is killed).
BG_RC=0
bg_stop() {
    local name=$1 sig=${2:-TERM} t=${3:-10} pid
    pid=$(pid_of "$name")
    kill -"$sig" "$pid" 2>/dev/null || true
    if ! wait_pid_exit "$pid" "$t"; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        BG_RC=137
        return 1
    fi
    BG_RC=0
    wait "$pid" 2>/dev/null || BG_RC=$?
    return 0
}

# wait_log NAME REGEX TIMEOUT [DESC]: wait until a process log matches an extended regex.
wait_log() {
    local name=$1 re=$2 t=$3 desc=${4:-"'$2' in $1.log"}
    local deadline=$((SECONDS + t))
    until strip_ansi <"$RUN_DIR/$name.log" 2>/dev/null | grep -Eq -- "$re"; do
        if [[ -n ${NAME_PID[$name]:-} ]] && ! is_running "$name"; then
            fail "$name exited while waiting for $desc"
        fi
        ((SECONDS < deadline)) || fail "timed out after ${t}s waiting for $desc"
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------------------------
# jvpn nodes
# ---------------------------------------------------------------------------------------------

JVPN_LOG_LEVEL=${JVPN_LOG_LEVEL:-info}

# jvpn_keygen FILE: write an identity, print its public key.
jvpn_keygen() {
    local pub
    pub=$("$JVPN" keygen --out "$1") || fail "jvpn keygen --out $1 failed"
    pub=$(printf '%s\n' "$pub" | tail -n 1 | tr -d '[:space:]')
    [[ -n $pub ]] || fail "jvpn keygen printed no public key"
    printf '%s' "$pub"
}

# jvpn_start NAME NS ROLE CONFIG: start `jvpn gateway|up --config CONFIG` in NS, log to NAME.log.
jvpn_start() {
    local name=$1 n=$2 role=$3 cfg=$4
    case $role in gateway|up) ;; *) fail "jvpn_start: role must be gateway or up" ;; esac
    bg_start "$name" "$n" env RUST_LOG="${RUST_LOG:-$JVPN_LOG_LEVEL}" NO_COLOR=1 RUST_BACKTRACE=1 \
        "$JVPN" "$role" --config "$cfg"
}

# session_id_of NAME: the session_id of the last `session established` line in NAME.log.
session_id_of() {
    strip_ansi <"$RUN_DIR/$1.log" | grep 'session established' |
        grep -Eo 'session_id="?[0-9a-f]{32}' | tail -n 1 | grep -Eo '[0-9a-f]{32}$' || true
}

# ---------------------------------------------------------------------------------------------
# Waits and assertions
# ---------------------------------------------------------------------------------------------

# wait_until TIMEOUT DESC COMMAND...: retry COMMAND every 0.2 s until it succeeds, or fail.
wait_until() {
    local t=$1 desc=$2; shift 2
    local deadline=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "timed out after ${t}s waiting until $desc"
        sleep 0.2
    done
}

# wait_ping NS ADDR [TIMEOUT]: until one ping from NS to ADDR answers (each try waits 1 s).
wait_ping() {
    local n=$1 addr=$2 t=${3:-20}
    local deadline=$((SECONDS + t))
    until nsx "$n" ping -n -c 1 -W 1 "$addr" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "no ping reply from $addr in namespace $n within ${t}s"
    done
}

# wait_listen NS PORT [TIMEOUT] [tcp|udp]: until something listens on PORT inside NS.
wait_listen() {
    local n=$1 port=$2 t=${3:-10} proto=${4:-tcp} flag=-ltnH
    [[ $proto == udp ]] && flag=-lunH
    wait_until "$t" "port $proto/$port listens in $n" \
        bash -c "ip netns exec '$(ns "$n")' ss $flag 'sport = :$port' | grep -q ."
}

# assert_ok DESC COMMAND...: COMMAND must succeed; its output is shown on failure.
assert_ok() {
    local desc=$1 out; shift
    if out=$("$@" 2>&1); then
        ok "$desc"
    else
        printf '%s\n' "$out" | tail -n 30 >&2
        fail "$desc (command failed: $*)"
    fi
}

# assert_fails DESC COMMAND...: COMMAND must fail.
assert_fails() {
    local desc=$1 out; shift
    if out=$("$@" 2>&1); then
        printf '%s\n' "$out" | tail -n 30 >&2
        fail "$desc (command unexpectedly succeeded: $*)"
    fi
    ok "$desc"
}

# assert_eq DESC EXPECTED ACTUAL
assert_eq() {
    [[ $2 == "$3" ]] || fail "$1: expected '$2', got '$3'"
    ok "$1"
}

# assert_gt DESC A B: A > B for decimal numbers.
assert_gt() {
    awk -v a="$2" -v b="$3" 'BEGIN { exit !(a + 0 > b + 0) }' || fail "$1: expected $2 > $3"
    ok "$1"
}

# assert_file_has DESC FILE REGEX / assert_file_lacks DESC FILE FIXED-STRING (binary-safe)
assert_file_has() {
    grep -Eaq -- "$3" "$2" || fail "$1: '$3' not found in $2"
    ok "$1"
}
assert_file_lacks() {
    if grep -Faq -- "$3" "$2"; then fail "$1: '$3' found in $2"; fi
    ok "$1"
}

# ---------------------------------------------------------------------------------------------
# Captures
# ---------------------------------------------------------------------------------------------

# capture_start NAME NS IF [FILTER...]: tcpdump on IF into $RUN_DIR/NAME.pcap; waits until it
# is listening. Stop it with capture_stop NAME before reading the file.
capture_start() {
    local name=$1 n=$2 dev=$3; shift 3
    bg_start "$name" "$n" tcpdump -i "$dev" -n -U -s 0 -w "$RUN_DIR/$name.pcap" "$@"
    wait_log "$name" 'listening on' 10 "tcpdump on $n/$dev to start"
}

# capture_stop NAME: stop tcpdump (it flushes on SIGINT).
capture_stop() {
    bg_stop "$1" INT 5 || warn "tcpdump $1 had to be killed"
    [[ -f $RUN_DIR/$1.pcap ]] || fail "capture $1 wrote no file"
}

# capture_count NAME [FILTER...]: how many packets of the capture match a tcpdump filter.
capture_count() {
    local name=$1; shift
    timeout 30 tcpdump -n -r "$RUN_DIR/$name.pcap" "$@" 2>/dev/null | wc -l
}

# ---------------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------------

# iperf_server NAME NS [PORT]: a one-shot iperf3 server in NS, waits until it listens.
iperf_server() {
    local name=$1 n=$2 port=${3:-5201}
    bg_start "$name" "$n" iperf3 -s -1 -p "$port"
    wait_listen "$n" "$port" 10
}

# iperf_bps JSON_FILE: received bits per second from iperf3 --json output.
iperf_bps() { jq -r '.end.sum_received.bits_per_second // 0' "$1" 2>/dev/null || echo 0; }

# human_bps BITS_PER_SECOND
human_bps() { awk -v b="$1" 'BEGIN { printf "%.2f Gbit/s", b / 1e9 }'; }

# ping_rtt FILE: "min avg max mdev" (ms) from a ping output file, or "- - - -".
ping_rtt() {
    local line
    line=$(grep -E '^(rtt|round-trip)' "$1" 2>/dev/null | tail -n 1 | sed -e 's/.*= //' -e 's/ ms.*//')
    if [[ -n $line ]]; then tr '/' ' ' <<<"$line"; else echo "- - - -"; fi
}

# ping_percentiles FILE: "p50 p99" (ms) of the per-packet times in a ping output file.
ping_percentiles() {
    grep -Eo 'time=[0-9.]+' "$1" 2>/dev/null | cut -d= -f2 | sort -g | awk '
        { t[NR] = $1 }
        END {
            if (NR == 0) { print "- -"; exit }
            i50 = int(0.50 * NR + 0.5); if (i50 < 1) i50 = 1
            i99 = int(0.99 * NR + 0.5); if (i99 < 1) i99 = 1; if (i99 > NR) i99 = NR
            print t[i50], t[i99]
        }'
}

# ping_loss FILE: the packet loss percentage from a ping output file.
ping_loss() { grep -Eo '[0-9.]+% packet loss' "$1" 2>/dev/null | grep -Eo '^[0-9.]+' || echo 100; }

# ---------------------------------------------------------------------------------------------
# Two-bearer topology (netns-tests/roam.sh, accountable.sh, scripts/bench/handover.sh; the
# handover cases on it: netns-tests/handover_cases.sh)
# ---------------------------------------------------------------------------------------------
#
#   ns LAP (laptop)                                         ns GW (gateway)
#   wlan0 10.20.0.2/24 ---------- veth (Wi-Fi) ------------ gwifi 10.20.0.1/24
#   wwan0 10.30.0.2/24 -- veth -- ns RTR (NAT) -- veth ---- gcell 10.40.0.1/24
#                                 lan 10.30.0.1 / wan 10.40.0.2 (masquerade, UDP to :20000-20999)
#   routes to 10.10.0.1/32: via wlan0 metric 100, via wwan0 metric 200;  GW: 10.10.0.1/32 on lo
#
# tb_topology LAP GW RTR: build it (namespaces with these short names) and check that the
# gateway's endpoint answers over both bearers. The tb_* functions below act on it.
TB_ENDPOINT=10.10.0.1
TB_LAP="" TB_GW="" TB_RTR=""
tb_topology() {
    TB_LAP=$1 TB_GW=$2 TB_RTR=$3
    ns_add "$TB_LAP" "$TB_GW" "$TB_RTR"
    veth_link "$TB_LAP" wlan0 "10.20.0.2/24" "$TB_GW" gwifi "10.20.0.1/24"
    veth_link "$TB_LAP" wwan0 "10.30.0.2/24" "$TB_RTR" lan "10.30.0.1/24"
    veth_link "$TB_RTR" wan "10.40.0.2/24" "$TB_GW" gcell "10.40.0.1/24"
    ip -n "$(ns "$TB_GW")" addr add "$TB_ENDPOINT/32" dev lo
    ns_forwarding "$TB_RTR"
    ip -n "$(ns "$TB_RTR")" route add "$TB_ENDPOINT/32" via 10.40.0.1
    nsx "$TB_RTR" nft -f - <<'NFT' || fail "cannot set up the NAT in $TB_RTR"
table ip nat {
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "wan" meta l4proto udp masquerade to :20000-20999
        oifname "wan" masquerade
    }
}
NFT
    tb_gateway_source
    tb_wifi_route
    tb_cell_route
    nsx "$TB_LAP" ping -n -c1 -W2 -I wlan0 "$TB_ENDPOINT" >/dev/null ||
        fail "gateway $TB_ENDPOINT not reachable over Wi-Fi"
    nsx "$TB_LAP" ping -n -c1 -W2 -I wwan0 "$TB_ENDPOINT" >/dev/null ||
        fail "gateway $TB_ENDPOINT not reachable over cellular"
}

# tb_gateway_source: the gateway answers from its endpoint address whatever socket it uses, as a
# gateway with one public address does. (A VPN whose replies leave from an unbound socket would
# otherwise answer from 10.20.0.1 or 10.40.0.1: its peer then learns an endpoint only reachable
# over Wi-Fi, and the NAT drops every reply on the cellular path.) TB_GATEWAY_SOURCE=0 leaves the
# kernel's choice, for a test that wants to see jvpn answer from the address it was reached at.
TB_GATEWAY_SOURCE=${TB_GATEWAY_SOURCE:-1}
tb_gateway_source() {
    ((TB_GATEWAY_SOURCE)) || return 0
    ip -n "$(ns "$TB_GW")" route replace 10.20.0.0/24 dev gwifi proto kernel scope link src "$TB_ENDPOINT"
    ip -n "$(ns "$TB_GW")" route replace 10.40.0.0/24 dev gcell proto kernel scope link src "$TB_ENDPOINT"
}

# tb_wifi_route / tb_cell_route: the laptop's routes to the gateway endpoint, by metric (what a
# connection manager installs for each bearer).
tb_wifi_route() { ip -n "$(ns "$TB_LAP")" route replace "$TB_ENDPOINT/32" via 10.20.0.1 dev wlan0 metric 100; }
tb_cell_route() { ip -n "$(ns "$TB_LAP")" route replace "$TB_ENDPOINT/32" via 10.30.0.1 dev wwan0 metric 200; }

# tb_restore: both bearers in working order, the NAT's first port range, no NAT state.
tb_restore() {
    nsx "$TB_GW" nft delete table inet blackhole 2>/dev/null || true
    ip -n "$(ns "$TB_LAP")" link set wlan0 up
    ip -n "$(ns "$TB_LAP")" addr replace 10.20.0.2/24 dev wlan0
    tb_gateway_source
    tb_wifi_route
    tb_cell_route
    tb_nat_ports 20000-20999
    nsx "$TB_RTR" conntrack -F >/dev/null 2>&1 || true
}

# tb_wifi_down [flush]: the Wi-Fi link goes down (with "flush", its address goes too).
tb_wifi_down() {
    ip -n "$(ns "$TB_LAP")" link set wlan0 down
    [[ ${1:-} != flush ]] || ip -n "$(ns "$TB_LAP")" addr flush dev wlan0
}

# tb_wifi_up: the Wi-Fi link comes back; its route 0.2 s later (as a connection manager would).
tb_wifi_up() {
    ip -n "$(ns "$TB_LAP")" link set wlan0 up
    sleep 0.2
    tb_wifi_route
}

# tb_blackhole_wifi: the Wi-Fi path silently drops everything: the laptop's link stays up and its
# sends succeed, but the gateway's Wi-Fi side drops both directions (as a dead access point would).
tb_blackhole_wifi() {
    nsx "$TB_GW" nft -f - <<'NFT'
table inet blackhole {
    chain in { type filter hook prerouting priority -300; iifname "gwifi" drop; }
    chain out { type filter hook postrouting priority 300; oifname "gwifi" drop; }
}
NFT
}

# tb_flap_wifi: the Wi-Fi link goes down and up 10 times in 2 s (the route comes back each time).
tb_flap_wifi() {
    local i
    for i in $(seq 10); do
        ip -n "$(ns "$TB_LAP")" link set wlan0 down
        sleep 0.1
        ip -n "$(ns "$TB_LAP")" link set wlan0 up
        tb_wifi_route 2>/dev/null || true
        sleep 0.1
    done
}

# tb_nat_ports RANGE: the port range the NAT maps the laptop's UDP flows to.
tb_nat_ports() {
    nsx "$TB_RTR" nft flush chain ip nat post
    nsx "$TB_RTR" nft add rule ip nat post oifname wan meta l4proto udp masquerade to :"$1"
    nsx "$TB_RTR" nft add rule ip nat post oifname wan masquerade
}

# tb_nat_rebind: the NAT forgets its mappings and maps the laptop's flows to new ports.
tb_nat_rebind() {
    tb_nat_ports 30000-30999
    nsx "$TB_RTR" conntrack -F >/dev/null 2>&1
}
