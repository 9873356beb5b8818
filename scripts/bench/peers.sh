# shellcheck shell=bash
# scripts/bench/peers.sh: the VPNs under test, each started and stopped as a pair (one process in
# the gateway's namespace, one in the laptop's): jvpn, jvpn-prev (the same with the binary in
# $JVPN_PREV, a previous build to compare with), boringtun in its two socket modes, wireguard-go.
# Sourced by scripts/bench.sh after netns-tests/lib.sh; reads PORT, MTU, RUN_DIR, JVPN, JVPN_PREV.

# Interface names for the WireGuard implementations: their UAPI sockets live in the shared
# /var/run/wireguard/<name>.sock, so the names must be unique on the machine, not only per netns.
IF_LAP="" IF_GW=""
peers_init() {
    local tag
    tag=$(printf '%04x' "$((RANDOM % 65536))")
    IF_LAP=jbl$tag
    IF_GW=jbg$tag
    on_cleanup "rm -f /var/run/wireguard/$IF_LAP.sock /var/run/wireguard/$IF_GW.sock"
}

# label PEER: the peer's name in the tables.
label() {
    case $1 in
        baseline) echo "baseline (bare veth)" ;;
        jvpn) echo "jvpn" ;;
        jvpn-prev) echo "jvpn-prev" ;;
        boringtun-default) echo "boringtun (default)" ;;
        boringtun-nocudp) echo "boringtun --disable-connected-udp" ;;
        wireguard-go) echo "wireguard-go" ;;
    esac
}

# version_of PEER: the version line the docs show for a peer.
version_of() {
    case $1 in
        baseline) echo "veth, no VPN" ;;
        jvpn|jvpn-prev)
            local v rev
            v=$("$(jvpn_binary "$1")" --version 2>/dev/null | head -n 1 || echo jvpn)
            # JVPN_REV / JVPN_PREV_REV: what the binary was built from, when it is a build of
            # another tree.
            if [[ $1 == jvpn ]]; then
                rev=${JVPN_REV:-$(git -C "$REPO_DIR" describe --always --dirty 2>/dev/null || true)}
            else
                rev=${JVPN_PREV_REV:-$JVPN_PREV}
            fi
            [[ -n $rev ]] && v+=" ($rev)"
            echo "$v"
            ;;
        boringtun-*) boringtun-cli --version 2>/dev/null | head -n 1 ;;
        wireguard-go) wireguard-go --version 2>/dev/null | head -n 1 ;;
    esac
}

# jvpn_binary PEER_OR_VARIANT: the binary a jvpn peer runs (jvpn-prev*: $JVPN_PREV).
jvpn_binary() { if [[ $1 == jvpn-prev* ]]; then echo "$JVPN_PREV"; else echo "$JVPN"; fi; }

# jvpn_pair_start PEER TAG LAP_NS GW_NS GW_CONFIG LAP_CONFIG: `jvpn gateway` (process TAG-gw) and,
# once it listens, `jvpn up` (TAG-lap), with PEER's binary.
jvpn_pair_start() {
    local bin
    bin=$(jvpn_binary "$1")
    JVPN=$bin JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start "$2-gw" "$4" gateway "$5"
    wait_listen "$4" "$PORT" 15 udp
    JVPN=$bin JVPN_LOG_LEVEL=${JVPN_BENCH_LOG:-info} jvpn_start "$2-lap" "$3" up "$6"
}

# jvpn_pair_stop TAG: stop both jvpn processes.
jvpn_pair_stop() {
    bg_stop "$1-lap" TERM 10 || warn "$1: jvpn (laptop) had to be killed"
    bg_stop "$1-gw" TERM 10 || warn "$1: jvpn (gateway) had to be killed"
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
