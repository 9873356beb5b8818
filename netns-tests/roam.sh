#!/usr/bin/env bash
# netns-tests/roam.sh: one laptop with two bearers jumping between them under a media stream.
#
#   ns lap (laptop)                                                   ns gw (gateway)
#  +--------------------+                                        +-----------------------+
#  | wlan0 10.20.0.2/24 |------------- veth (Wi-Fi) -------------| gwifi 10.20.0.1/24    |
#  |                    |              ns rtr (NAT)              |                       |
#  | wwan0 10.30.0.2/24 |--- veth ---| lan 10.30.0.1  |          | lo 10.10.0.1/32       |
#  |                    |  (cellular)| wan 10.40.0.2  |--- veth -| gcell 10.40.0.1/24    |
#  | routes to 10.10.0.1: wlan0 metric 100, wwan0 metric 200      | listen :51900         |
#  | jvpn0 10.77.0.2    |========= one session, two bearers ======| jvpn0 10.77.0.1       |
#  +--------------------+                                        | gatk 10.50.0.1/24 ----|-- ns atk
#                                                                +-----------------------+   10.50.0.2
#
# Each case starts a fresh gateway and laptop (on Wi-Fi), runs `jvpn probe` at 50 packets/s in
# both directions through the tunnel (or downlink only), changes the bearers, and asserts the
# case's budget on lost packets and the longest silence per direction, that the SessionID did not
# change and no new handshake happened, and that the logs show the jump.
#
#   case                                           budget (each direction)
#   Wi-Fi link down (address stays)                <= 1 lost, longest silence <= 60 ms
#   Wi-Fi link down and its address removed        <= 1 lost, <= 60 ms
#   same, media only gateway -> laptop             <= 1 lost, <= 60 ms
#   Wi-Fi up but dropping everything (nftables)    silence <= 500 ms (voice.toml), <= 3 s (default)
#   Wi-Fi comes back while on cellular             0 lost
#   Wi-Fi flaps 10 times in 2 s                    <= 8 switches/min; media keeps flowing
#   the NAT changes the laptop's port on cellular  <= 1 lost
#   an attacker replays and relays captured packets  the session stays with the laptop
#
# Usage: netns-tests/roam.sh [CASE...]   (case names: see `cases` at the bottom)
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
lib_init roam
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_cmds conntrack:conntrack python3:python3 || fail "cannot install conntrack/python3"
ensure_jvpn
jvpn_supports probe || fail "$JVPN has no 'probe' subcommand"

ENDPOINT=10.10.0.1
PORT=51900
PPS=50

# ---------------------------------------------------------------------------------------------
# Topology (built once; each case restores the bearers and restarts the nodes)
# ---------------------------------------------------------------------------------------------

step "topology: laptop with Wi-Fi and cellular (through NAT), gateway, attacker"
ns_add lap gw rtr atk
veth_link lap wlan0 "10.20.0.2/24" gw gwifi "10.20.0.1/24"
veth_link lap wwan0 "10.30.0.2/24" rtr lan "10.30.0.1/24"
veth_link rtr wan "10.40.0.2/24" gw gcell "10.40.0.1/24"
veth_link atk eth0 "10.50.0.2/24" gw gatk "10.50.0.1/24"
ip -n "$(ns gw)" addr add "$ENDPOINT/32" dev lo
ns_forwarding rtr
ip -n "$(ns rtr)" route add "$ENDPOINT/32" via 10.40.0.1
ip -n "$(ns atk)" route add "$ENDPOINT/32" via 10.50.0.1
nsx rtr nft -f - <<'EOF'
table ip nat {
    chain post {
        type nat hook postrouting priority srcnat;
        oifname "wan" meta l4proto udp masquerade to :20000-20999
        oifname "wan" masquerade
    }
}
EOF

wifi_route() { ip -n "$(ns lap)" route replace "$ENDPOINT/32" via 10.20.0.1 dev wlan0 metric 100; }
cell_route() { ip -n "$(ns lap)" route replace "$ENDPOINT/32" via 10.30.0.1 dev wwan0 metric 200; }
wifi_route
cell_route
nsx lap ping -n -c1 -W2 -I wlan0 "$ENDPOINT" >/dev/null || fail "gateway not reachable over Wi-Fi"
nsx lap ping -n -c1 -W2 -I wwan0 "$ENDPOINT" >/dev/null || fail "gateway not reachable over cellular"
ok "gateway $ENDPOINT reachable over both bearers"

# Restores both bearers to working order.
restore_bearers() {
    nsx gw nft delete table inet blackhole 2>/dev/null || true
    ip -n "$(ns lap)" link set wlan0 up
    ip -n "$(ns lap)" addr replace 10.20.0.2/24 dev wlan0
    wifi_route
    cell_route
}

# ---------------------------------------------------------------------------------------------
# Keys and configs
# ---------------------------------------------------------------------------------------------

cd "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
LAP_PUB=$(jvpn_keygen laptop.key)
cat >gateway.toml <<EOF
identity = "gateway.key"
listen = "0.0.0.0:$PORT"
[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]
[[peer]]
name = "laptop"
public_key = "$LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOF
laptop_config() { # POLICY_FILE|"" OUT
    {
        echo 'identity = "laptop.key"'
        [[ -n $1 ]] && echo "policy = \"$1\""
        cat <<EOF
[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]
[gateway]
endpoint = "$ENDPOINT:$PORT"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24"]
EOF
    } >"$2"
}
laptop_config "" laptop-default.toml
laptop_config "$REPO_DIR/policy/voice.toml" laptop-voice.toml
"$JVPN" check laptop-voice.toml >/dev/null || fail "laptop-voice.toml does not check"

# ---------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------

CASE=""
# start_nodes CASE LAPTOP_CONFIG: fresh gateway and laptop for a case, session up on Wi-Fi.
start_nodes() {
    CASE=$1
    restore_bearers
    jvpn_start "$CASE-gw" gw gateway "$RUN_DIR/gateway.toml"
    wait_listen gw "$PORT" 10 udp
    jvpn_start "$CASE-lap" lap up "$RUN_DIR/$2"
    wait_log "$CASE-lap" 'session established' 15 "the laptop's session"
    wait_ping lap 10.77.0.1 10
    wait_log "$CASE-lap" 'transport attached.*bearer="?wifi' 5 "the session attached on Wi-Fi"
}

# probes SECONDS UP DOWN: start receivers and senders (50 packets/s) in the wanted directions.
probes() {
    local secs=$1 up=$2 down=$3
    if ((up)); then
        bg_start "$CASE-up-recv" gw sh -c "exec '$JVPN' probe recv --listen 10.77.0.1:5001 --seconds $((secs + 3)) --json >'$RUN_DIR/$CASE-up.json'"
        wait_listen gw 5001 5 udp
        bg_start "$CASE-up-send" lap "$JVPN" probe send --to 10.77.0.1:5001 --pps "$PPS" --seconds "$secs"
    fi
    if ((down)); then
        bg_start "$CASE-down-recv" lap sh -c "exec '$JVPN' probe recv --listen 10.77.0.2:5002 --seconds $((secs + 3)) --json >'$RUN_DIR/$CASE-down.json'"
        wait_listen lap 5002 5 udp
        bg_start "$CASE-down-send" gw "$JVPN" probe send --to 10.77.0.2:5002 --pps "$PPS" --seconds "$secs"
    fi
}

# finish_probes: wait for the probes to end on their own.
finish_probes() {
    local p
    for p in up-send down-send up-recv down-recv; do
        [[ -n ${NAME_PID[$CASE-$p]:-} ]] || continue
        wait_pid_exit "$(pid_of "$CASE-$p")" 20 || fail "$CASE: probe $p did not finish"
        wait "$(pid_of "$CASE-$p")" 2>/dev/null || fail "$CASE: probe $p failed (see $CASE-$p.log)"
    done
}

# check_dir DIR MAX_LOST MAX_SILENCE_MS: one direction's probe result against a budget.
check_dir() {
    local dir=$1 max_lost=$2 max_ms=$3 f="$RUN_DIR/$CASE-$1.json" lost silence received
    [[ -s $f ]] || fail "$CASE: no probe result for $dir"
    lost=$(jq -r '.lost' "$f")
    silence=$(jq -r '.longest_silence_ms' "$f")
    received=$(jq -r '.received' "$f")
    log "$CASE $dir: received $received, lost $lost, longest silence ${silence} ms"
    printf '%s %s %s %s\n' "$CASE" "$dir" "$lost" "$silence" >>"$RUN_DIR/results.txt"
    assert_gt "$CASE $dir: media was received" "$received" 100
    awk -v l="$lost" -v m="$max_lost" 'BEGIN { exit !(l <= m) }' ||
        fail "$CASE $dir: lost $lost packets (budget $max_lost)"
    awk -v s="$silence" -v m="$max_ms" 'BEGIN { exit !(s <= m) }' ||
        fail "$CASE $dir: longest silence $silence ms (budget $max_ms ms)"
    ok "$CASE $dir: lost $lost <= $max_lost, longest silence $silence ms <= $max_ms ms"
}

# stop_nodes EXPECT_SWITCH_REGEX: stop the nodes and check one session, one handshake, the jump.
stop_nodes() {
    local lap="$RUN_DIR/$CASE-lap.log" sessions
    bg_stop "$CASE-lap" TERM 10 || fail "$CASE: laptop did not stop"
    bg_stop "$CASE-gw" TERM 10 || fail "$CASE: gateway did not stop"
    sessions=$(strip_ansi <"$lap" | grep -c 'session established' || true)
    assert_eq "$CASE: one session, no new handshake (SessionID unchanged)" "$sessions" 1
    if [[ -n ${1:-} ]]; then
        strip_ansi <"$lap" | grep -Eq -- "$1" || fail "$CASE: the laptop log does not show the jump ($1)"
        ok "$CASE: the laptop log shows the jump"
    fi
}

# at_second N COMMAND...: run COMMAND N seconds after the probes started (in the foreground).
PROBE_T0=0
probes_started() { PROBE_T0=$(date +%s.%N); }
at_second() {
    local n=$1; shift
    local wait
    wait=$(awk -v t0="$PROBE_T0" -v n="$n" -v now="$(date +%s.%N)" 'BEGIN { w = t0 + n - now; print (w > 0 ? w : 0) }')
    sleep "$wait"
    "$@"
}

# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------

case_link_down() {
    step "Wi-Fi link goes down (address stays)"
    start_nodes link-down laptop-default.toml
    probes 6 1 1
    probes_started
    at_second 2.5 ip -n "$(ns lap)" link set wlan0 down
    finish_probes
    check_dir up 1 60
    check_dir down 1 60
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular.*reason="?transport_dead'
}

case_link_down_addr() {
    step "Wi-Fi link goes down and its address is removed"
    start_nodes addr-gone laptop-default.toml
    probes 6 1 1
    probes_started
    at_second 2.5 sh -c "ip -n '$(ns lap)' link set wlan0 down && ip -n '$(ns lap)' addr flush dev wlan0"
    finish_probes
    check_dir up 1 60
    check_dir down 1 60
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular'
}

case_downlink_only() {
    step "Wi-Fi goes down while media flows only gateway -> laptop"
    start_nodes downlink-only laptop-default.toml
    probes 6 0 1
    probes_started
    at_second 2.5 sh -c "ip -n '$(ns lap)' link set wlan0 down && ip -n '$(ns lap)' addr flush dev wlan0"
    finish_probes
    check_dir down 1 60
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular'
}

# The Wi-Fi path silently drops everything: the laptop's link stays up and its sends succeed,
# but nothing gets through in either direction (dropped on the far side, as a dead access point
# or a broken uplink behind it would).
blackhole_wifi() {
    nsx gw nft -f - <<'EOF'
table inet blackhole {
    chain in { type filter hook prerouting priority -300; iifname "gwifi" drop; }
    chain out { type filter hook postrouting priority 300; oifname "gwifi" drop; }
}
EOF
}

case_blackhole_voice() {
    step "Wi-Fi stays up but drops everything (voice.toml)"
    start_nodes blackhole-voice laptop-voice.toml
    probes 6 1 1
    probes_started
    at_second 2.5 blackhole_wifi
    finish_probes
    check_dir up 26 500
    check_dir down 26 500
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular.*reason="?(heartbeat_timeout|consecutive_drop_exceeded)'
}

case_blackhole_default() {
    step "Wi-Fi stays up but drops everything (default policy)"
    start_nodes blackhole-default laptop-default.toml
    probes 8 1 1
    probes_started
    at_second 2.5 blackhole_wifi
    finish_probes
    check_dir up 151 3000
    check_dir down 151 3000
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular.*reason="?(heartbeat_timeout|consecutive_drop_exceeded)'
}

case_wifi_returns() {
    step "Wi-Fi comes back while on cellular (preferred, make-before-break)"
    start_nodes wifi-returns laptop-default.toml
    ip -n "$(ns lap)" link set wlan0 down
    wait_log "$CASE-lap" 'transport switch.*to="?cellular' 10 "the move to cellular"
    probes 7 1 1
    probes_started
    at_second 2 sh -c "ip -n '$(ns lap)' link set wlan0 up && sleep 0.2 && ip -n '$(ns lap)' route replace $ENDPOINT/32 via 10.20.0.1 dev wlan0 metric 100"
    finish_probes
    check_dir up 0 60
    check_dir down 0 60
    stop_nodes 'transport switch.*from="?cellular.*to="?wifi.*reason="?preferred_bearer_available'
}

flap_wifi() {
    local _i
    for _i in $(seq 10); do
        ip -n "$(ns lap)" link set wlan0 down
        sleep 0.1
        ip -n "$(ns lap)" link set wlan0 up
        ip -n "$(ns lap)" route replace "$ENDPOINT/32" via 10.20.0.1 dev wlan0 metric 100 2>/dev/null || true
        sleep 0.1
    done
}

case_flapping() {
    step "Wi-Fi flaps 10 times in 2 s"
    start_nodes flapping laptop-default.toml
    probes 8 1 1
    probes_started
    at_second 2 flap_wifi
    finish_probes
    local attempts
    attempts=$(strip_ansi <"$RUN_DIR/$CASE-lap.log" | grep -c 'reattach attempt' || true)
    log "$CASE: $attempts reattach attempts"
    awk -v a="$attempts" 'BEGIN { exit !(a <= 8) }' || fail "$CASE: $attempts switch attempts (policy allows 8 a minute)"
    ok "$CASE: $attempts switch attempts within max_switches_per_min = 8"
    check_dir up 2 100
    check_dir down 2 100
    stop_nodes 'transport switch.*from="?wifi.*to="?cellular'
}

case_nat_rebinding() {
    step "the NAT on the cellular path changes the laptop's port"
    start_nodes nat-rebinding laptop-default.toml
    ip -n "$(ns lap)" link set wlan0 down
    wait_log "$CASE-lap" 'transport switch.*to="?cellular' 10 "the move to cellular"
    probes 6 1 1
    probes_started
    at_second 2.5 sh -c "ip netns exec '$(ns rtr)' nft flush chain ip nat post && ip netns exec '$(ns rtr)' nft add rule ip nat post oifname wan meta l4proto udp masquerade to :30000-30999 && ip netns exec '$(ns rtr)' conntrack -F >/dev/null 2>&1"
    finish_probes
    check_dir up 1 100
    check_dir down 1 100
    wait_log "$CASE-gw" 'session binding moved' 5 "the gateway validating the new port"
    stop_nodes ''
    nsx rtr nft flush chain ip nat post
    nsx rtr nft add rule ip nat post oifname wan meta l4proto udp masquerade to :20000-20999
}

# An attacker that sees the laptop's packets (a capture on the gateway's Wi-Fi side) relays each
# one at once from its own address, then replays the whole capture later.
case_attacker() {
    step "an attacker relays and replays captured packets from its own address"
    start_nodes attacker laptop-default.toml
    cat >"$RUN_DIR/relay.py" <<'EOF'
import socket, struct, sys
# Reads a pcap stream (tcpdump -w -) on stdin; sends each UDP payload to the gateway from here.
dst = (sys.argv[1], int(sys.argv[2]))
out = open(sys.argv[3], "wb")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
f = sys.stdin.buffer
hdr = f.read(24)
link = struct.unpack("<I", hdr[20:24])[0] if hdr[:4] == b"\xd4\xc3\xb2\xa1" else None
while True:
    rec = f.read(16)
    if len(rec) < 16:
        break
    incl = struct.unpack("<I", rec[8:12])[0]
    pkt = f.read(incl)
    off = 14 if link == 1 else 16  # Ethernet or Linux cooked
    ihl = (pkt[off] & 0x0F) * 4
    payload = pkt[off + ihl + 8:]
    s.sendto(payload, dst)
    out.write(struct.pack("<I", len(payload)) + payload)
    out.flush()
EOF
    cat >"$RUN_DIR/replay.py" <<'EOF'
import socket, struct, sys
dst = (sys.argv[1], int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
data = open(sys.argv[3], "rb").read()
i = n = 0
while i + 4 <= len(data):
    l = struct.unpack("<I", data[i:i + 4])[0]
    s.sendto(data[i + 4:i + 4 + l], dst)
    i += 4 + l
    n += 1
print(n)
EOF
    capture_start "$CASE-atk-cap" gw gatk
    probes 6 1 1
    probes_started
    bg_start "$CASE-relay" gw sh -c "tcpdump -i gwifi -n -U -s 0 -w - 'udp and dst port $PORT' 2>/dev/null | ip netns exec '$(ns atk)' python3 '$RUN_DIR/relay.py' $ENDPOINT $PORT '$RUN_DIR/copies.bin'"
    at_second 4 true
    bg_stop "$CASE-relay" TERM 5 || true
    local n
    n=$(nsx atk python3 "$RUN_DIR/replay.py" "$ENDPOINT" "$PORT" "$RUN_DIR/copies.bin")
    log "$CASE: the attacker relayed and then replayed $n datagrams"
    assert_gt "$CASE: the attacker had packets to replay" "$n" 50
    finish_probes
    capture_stop "$CASE-atk-cap"
    check_dir up 1 100
    check_dir down 1 100
    assert_eq "$CASE: the gateway sent nothing to the attacker" \
        "$(capture_count "$CASE-atk-cap" "src host $ENDPOINT and dst host 10.50.0.2")" 0
    if strip_ansi <"$RUN_DIR/$CASE-gw.log" | grep -q 'session binding moved'; then
        fail "$CASE: the gateway moved the session"
    fi
    ok "$CASE: the session never moved to the attacker"
    stop_nodes ''
}

ALL_CASES=(link_down link_down_addr downlink_only blackhole_voice blackhole_default wifi_returns
    flapping nat_rebinding attacker)
cases=("$@")
((${#cases[@]})) || cases=("${ALL_CASES[@]}")
for c in "${cases[@]}"; do
    "case_$c"
done
step "results (case, direction, lost, longest silence ms)"
cat "$RUN_DIR/results.txt"
echo "PASS roam"
