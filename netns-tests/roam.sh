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
# The handover cases, their faults, jvpn's configs and these budgets are defined once in
# netns-tests/handover_cases.sh (scripts/bench.sh runs the same cases against other VPNs); this
# script adds the attacker, its own timing per case and the checks on jvpn's logs.
#
# Usage: netns-tests/roam.sh [CASE...]   (case names: see `cases` at the bottom)
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=netns-tests/handover_cases.sh
source "$(dirname "${BASH_SOURCE[0]}")/handover_cases.sh"

need_root
lib_init roam
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_cmds conntrack:conntrack python3:python3 || fail "cannot install conntrack/python3"
ensure_jvpn
jvpn_supports probe || fail "$JVPN has no 'probe' subcommand"

ENDPOINT=$TB_ENDPOINT
PORT=$HC_PORT
PPS=50

# ---------------------------------------------------------------------------------------------
# Topology (built once; each case restores the bearers and restarts the nodes)
# ---------------------------------------------------------------------------------------------

step "topology: laptop with Wi-Fi and cellular (through NAT), gateway, attacker"
# The gateway answers from whatever source the kernel picks: jvpn must answer from the address it
# was reached at by itself.
TB_GATEWAY_SOURCE=0
tb_topology lap gw rtr
ns_add atk
veth_link atk eth0 "10.50.0.2/24" gw gatk "10.50.0.1/24"
ip -n "$(ns atk)" route add "$ENDPOINT/32" via 10.50.0.1
ok "gateway $ENDPOINT reachable over both bearers"

# ---------------------------------------------------------------------------------------------
# Keys and configs (gateway.toml, laptop-default.toml, laptop-voice.toml, ... in the run directory)
# ---------------------------------------------------------------------------------------------

cd "$RUN_DIR"
hc_configs "$RUN_DIR"

# ---------------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------------

CASE=""
# start_nodes CASE LAPTOP_CONFIG: fresh gateway and laptop for a case, session up on Wi-Fi.
start_nodes() {
    CASE=$1
    tb_restore
    jvpn_start "$CASE-gw" gw gateway "$RUN_DIR/gateway.toml"
    wait_listen gw "$PORT" 10 udp
    jvpn_start "$CASE-lap" lap up "$RUN_DIR/$2"
    wait_log "$CASE-lap" 'session established' 15 "the laptop's session"
    wait_ping lap 10.77.0.1 10
    wait_log "$CASE-lap" 'transport attached.*transport_class="?wifi' 5 "the session attached on Wi-Fi"
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

# roam_case TAG CASE POLICY EVENT_AT MEDIA_SECONDS TITLE: one case of handover_cases.sh under a
# laptop policy: media for MEDIA_SECONDS, the fault EVENT_AT seconds in, its budget per direction,
# one session throughout and the jump in the laptop's log.
roam_case() {
    local c=$2 pol=$3 at=$4 secs=$5 d up=0 down=0 max_lost max_ms
    step "$6"
    start_nodes "$1" "laptop-$pol.toml"
    if [[ $(hc_start "$c") == cellular ]]; then
        tb_wifi_down
        wait_log "$CASE-lap" 'transport switch.*new_transport="?cellular' 10 "the move to cellular"
    fi
    for d in $(hc_dirs "$c"); do
        if [[ $d == up ]]; then up=1; else down=1; fi
    done
    probes "$secs" "$up" "$down"
    probes_started
    at_second "$at" hc_event "$c"
    finish_probes
    [[ $c != flapping ]] || check_switch_rate
    read -r max_lost max_ms <<<"$(hc_budget "$c" "$pol")"
    for d in $(hc_dirs "$c"); do
        check_dir "$d" "$max_lost" "$max_ms"
    done
    if [[ $c == nat-rebinding ]]; then
        wait_log "$CASE-gw" 'session binding moved' 5 "the gateway validating the new port"
    fi
    stop_nodes "$(hc_jump "$c")"
}

# check_switch_rate: the laptop tried at most max_switches_per_min = 8 reattachments.
check_switch_rate() {
    local attempts
    attempts=$(strip_ansi <"$RUN_DIR/$CASE-lap.log" | grep -c 'reattach attempt' || true)
    log "$CASE: $attempts reattach attempts"
    awk -v a="$attempts" 'BEGIN { exit !(a <= 8) }' || fail "$CASE: $attempts switch attempts (policy allows 8 a minute)"
    ok "$CASE: $attempts switch attempts within max_switches_per_min = 8"
}

case_link_down() { roam_case link-down link-down default 2.5 6 "Wi-Fi link goes down (address stays)"; }
case_link_down_addr() {
    roam_case addr-gone addr-gone default 2.5 6 "Wi-Fi link goes down and its address is removed"
}
case_downlink_only() {
    roam_case downlink-only downlink-only default 2.5 6 "Wi-Fi goes down while media flows only gateway -> laptop"
}
# The Wi-Fi path silently drops everything: the laptop's link stays up and its sends succeed.
case_blackhole_voice() {
    roam_case blackhole-voice blackhole voice 2.5 6 "Wi-Fi stays up but drops everything (voice.toml)"
}
case_blackhole_default() {
    roam_case blackhole-default blackhole default 2.5 8 "Wi-Fi stays up but drops everything (default policy)"
}
case_wifi_returns() {
    roam_case wifi-returns wifi-returns default 2 7 "Wi-Fi comes back while on cellular (preferred, make-before-break)"
}
case_flapping() { roam_case flapping flapping default 2 8 "Wi-Fi flaps 10 times in 2 s"; }
case_nat_rebinding() {
    roam_case nat-rebinding nat-rebinding default 2.5 6 "the NAT on the cellular path changes the laptop's port"
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
