#!/usr/bin/env bash
# netns-tests/accountable.sh: accountable jumps (E5), unlinkable paths (J11) and the moving
# target (J10) in the two-bearer topology of roam.sh (laptop with Wi-Fi, and cellular behind a
# NAT; see tb_topology in lib.sh).
# netns-timeout: 600
#
#   case          what happens                             what is checked
#   jumps         Wi-Fi down at 3 s, back at 7 s, media    `jvpn audit verify` passes on both
#                 at 50 packets/s each way, audit on at    files; one record per jump, matching
#                 both ends, tcpdump on wlan0 and wwan0    the events (reason, old and new class);
#                                                          the gateway witnessed each; the two
#                                                          captures share no routing tag; events
#                                                          carry no address or interface name
#   unrecordable  the laptop's audit file is /dev/full     the jump happens within its budget; the
#                                                          failure is logged, the session goes on
#   moving        policy/moving-target.toml for 60 s,      0 packets lost each way; >= 10 moves, each
#                 media at 50 packets/s each way           on a new source port with its own tags;
#                                                          one audit record per move, both chains good
#
# Usage: netns-tests/accountable.sh [CASE...]
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
lib_init accountable
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_cmds conntrack:conntrack python3:python3 || fail "cannot install conntrack/python3"
ensure_jvpn
jvpn_supports audit || fail "$JVPN has no 'audit' subcommand"

PORT=51900
PPS=50

step "topology: laptop with Wi-Fi and cellular (through NAT), gateway"
tb_topology lap gw rtr
ok "gateway $TB_ENDPOINT reachable over both bearers"

cd "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
LAP_PUB=$(jvpn_keygen laptop.key)

# gateway_config AUDIT OUT / laptop_config POLICY AUDIT OUT ("" = none)
gateway_config() {
    {
        echo 'identity = "gateway.key"'
        [[ -n $1 ]] && echo "audit = \"$1\""
        cat <<EOF
listen = "0.0.0.0:$PORT"
[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]
[[peer]]
name = "laptop"
public_key = "$LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOF
    } >"$2"
}
laptop_config() {
    {
        echo 'identity = "laptop.key"'
        [[ -n $1 ]] && echo "policy = \"$1\""
        [[ -n $2 ]] && echo "audit = \"$2\""
        echo "events = \"$3.events.jsonl\""
        cat <<EOF
[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]
[gateway]
endpoint = "$TB_ENDPOINT:$PORT"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24"]
EOF
    } >"$3"
}

CASE=""
# start_nodes CASE GATEWAY_CONFIG LAPTOP_CONFIG: fresh nodes, session up on Wi-Fi.
start_nodes() {
    CASE=$1
    tb_restore
    jvpn_start "$CASE-gw" gw gateway "$RUN_DIR/$2"
    wait_listen gw "$PORT" 10 udp
    jvpn_start "$CASE-lap" lap up "$RUN_DIR/$3"
    wait_log "$CASE-lap" 'session established' 15 "the laptop's session"
    wait_ping lap 10.77.0.1 10
}

# probes SECONDS: receivers and 50 packets/s senders both ways through the tunnel.
PROBE_SECS=0
probes() {
    local secs=$1
    PROBE_SECS=$secs
    bg_start "$CASE-up-recv" gw sh -c "exec '$JVPN' probe recv --listen 10.77.0.1:5001 --seconds $((secs + 3)) --json >'$RUN_DIR/$CASE-up.json'"
    bg_start "$CASE-down-recv" lap sh -c "exec '$JVPN' probe recv --listen 10.77.0.2:5002 --seconds $((secs + 3)) --json >'$RUN_DIR/$CASE-down.json'"
    wait_listen gw 5001 5 udp
    wait_listen lap 5002 5 udp
    bg_start "$CASE-up-send" lap "$JVPN" probe send --to 10.77.0.1:5001 --pps "$PPS" --seconds "$secs"
    bg_start "$CASE-down-send" gw "$JVPN" probe send --to 10.77.0.2:5002 --pps "$PPS" --seconds "$secs"
}

# finish_probes: wait for the probes (started at most PROBE_SECS ago) to end on their own.
finish_probes() {
    local p
    for p in up-send down-send up-recv down-recv; do
        wait_pid_exit "$(pid_of "$CASE-$p")" $((PROBE_SECS + 15)) || fail "$CASE: probe $p did not finish"
        wait "$(pid_of "$CASE-$p")" 2>/dev/null || fail "$CASE: probe $p failed (see $CASE-$p.log)"
    done
}

# check_dir DIR MAX_LOST MAX_SILENCE_MS
check_dir() {
    local dir=$1 max_lost=$2 max_ms=$3 f="$RUN_DIR/$CASE-$1.json" lost silence received
    [[ -s $f ]] || fail "$CASE: no probe result for $dir"
    lost=$(jq -r '.lost' "$f")
    silence=$(jq -r '.longest_silence_ms' "$f")
    received=$(jq -r '.received' "$f")
    log "$CASE $dir: received $received, lost $lost, longest silence ${silence} ms"
    assert_gt "$CASE $dir: media was received" "$received" 100
    awk -v l="$lost" -v m="$max_lost" 'BEGIN { exit !(l <= m) }' ||
        fail "$CASE $dir: lost $lost packets (budget $max_lost)"
    awk -v s="$silence" -v m="$max_ms" 'BEGIN { exit !(s <= m) }' ||
        fail "$CASE $dir: longest silence $silence ms (budget $max_ms ms)"
    ok "$CASE $dir: lost $lost <= $max_lost, longest silence $silence ms <= $max_ms ms"
}

stop_nodes() {
    bg_stop "$CASE-lap" TERM 10 || fail "$CASE: laptop did not stop"
    bg_stop "$CASE-gw" TERM 10 || fail "$CASE: gateway did not stop"
    local sessions
    sessions=$(strip_ansi <"$RUN_DIR/$CASE-lap.log" | grep -c 'session established' || true)
    assert_eq "$CASE: one session, no new handshake" "$sessions" 1
}

PROBE_T0=0
probes_started() { PROBE_T0=$(date +%s.%N); }
at_second() {
    local n=$1; shift
    sleep "$(awk -v t0="$PROBE_T0" -v n="$n" -v now="$(date +%s.%N)" 'BEGIN { w = t0 + n - now; print (w > 0 ? w : 0) }')"
    "$@"
}

# pcap_tags PCAP: one line per jvpn datagram in the capture: "<laptop port> <tag hex>" for every
# routing tag in clear (handshake sender/receiver tags, the receiver tag of Data and Control).
# The laptop port is the UDP port on the laptop's side (10.20.0.2 / 10.30.0.2 / the NAT's).
pcap_tags() {
    python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
magic = struct.unpack("<I", data[:4])[0]
e = "<" if magic in (0xa1b2c3d4, 0xa1b23c4d) else ">"
link = struct.unpack(e + "I", data[20:24])[0]
off = 24
while off + 16 <= len(data):
    _, _, incl, _ = struct.unpack(e + "IIII", data[off:off + 16])
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if link == 1:            # Ethernet
        if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
            continue
        ip = pkt[14:]
    elif link == 113:        # Linux cooked
        ip = pkt[16:]
    else:
        ip = pkt
    if len(ip) < 20 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    sport, dport = struct.unpack(">HH", ip[ihl:ihl + 4])
    p = ip[ihl + 8:]
    laptop_port = sport if dport == 51900 else dport
    kind = p[0] if p else 0
    tags = []
    if kind == 1 and len(p) >= 8:
        tags = [p[4:8]]
    elif kind == 2 and len(p) >= 12:
        tags = [p[4:8], p[8:12]]
    elif kind in (4, 5) and len(p) >= 16:
        tags = [p[4:8]]
    for t in tags:
        print(laptop_port, t.hex())
PY
}

# pcap_counter_steps PCAP: "<data packets> <steps>" for the laptop -> gateway Data packets of a
# capture: how many there are, and how many of them carry the counter of the one before plus
# one in clear (header protection makes that 0; plain counters would make it nearly all).
pcap_counter_steps() {
    python3 - "$1" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
e = "<" if struct.unpack("<I", data[:4])[0] in (0xa1b2c3d4, 0xa1b23c4d) else ">"
off, prev, n, steps = 24, None, 0, 0
while off + 16 <= len(data):
    incl = struct.unpack(e + "IIII", data[off:off + 16])[2]
    pkt = data[off + 16:off + 16 + incl]
    off += 16 + incl
    if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
        continue
    ip = pkt[14:]
    if len(ip) < 20 or ip[9] != 17:
        continue
    ihl = (ip[0] & 15) * 4
    dport = struct.unpack(">H", ip[ihl + 2:ihl + 4])[0]
    p = ip[ihl + 8:]
    if dport != 51900 or len(p) < 32 or p[0] != 4:
        continue
    c = struct.unpack("<Q", p[8:16])[0]
    n += 1
    steps += prev is not None and c == prev + 1
    prev = c
print(n, steps)
PY
}

# ---------------------------------------------------------------------------------------------

case_jumps() {
    step "jumps with the audit on at both ends, captured on both bearers"
    gateway_config gw-audit.jsonl jumps-gw.toml
    laptop_config "" lap-audit.jsonl jumps-lap.toml
    rm -f gw-audit.jsonl lap-audit.jsonl jumps-lap.toml.events.jsonl
    start_nodes jumps jumps-gw.toml jumps-lap.toml
    capture_start cap-wifi lap wlan0 udp
    capture_start cap-cell lap wwan0 udp
    probes 11
    probes_started
    at_second 3 tb_wifi_down
    at_second 7 tb_wifi_up
    finish_probes
    sleep 1 # the last record's round trip to the gateway
    check_dir up 1 60
    check_dir down 1 60
    local lap_audit gw_audit
    lap_audit=$(nsx lap "$JVPN" status --json --config "$RUN_DIR/jumps-lap.toml" | jq -c '.audit')
    gw_audit=$(nsx gw "$JVPN" status --json --config "$RUN_DIR/jumps-gw.toml" | jq -c '.audit')
    log "status: laptop audit $lap_audit, gateway audit $gw_audit"
    assert_eq "jvpn status: the laptop appended and the gateway acknowledged both records" \
        "$(jq -c '[.appended, .acknowledged, .failed, .undelivered]' <<<"$lap_audit")" "[2,2,0,0]"
    assert_eq "jvpn status: the gateway witnessed both, refused none" \
        "$(jq -c '[.appended, .rejected, .failed]' <<<"$gw_audit")" "[2,0,0]"
    capture_stop cap-wifi
    capture_stop cap-cell
    stop_nodes

    local events=jumps-lap.toml.events.jsonl switches records
    switches=$(jq -c 'select(.event_type == "TransportSwitch") | [.reason_code, .previous_transport, .new_transport]' "$events")
    log "switches from the events: $(echo $switches)"
    assert_eq "two jumps happened (Wi-Fi -> cellular, back to Wi-Fi)" "$(printf '%s\n' "$switches" | grep -c .)" 2

    assert_ok "laptop chain verifies under the laptop's key" "$JVPN" audit verify --key "$LAP_PUB" lap-audit.jsonl
    assert_ok "gateway chain verifies under the gateway's key" "$JVPN" audit verify --key "$GW_PUB" gw-audit.jsonl
    "$JVPN" audit verify lap-audit.jsonl | sed 's/^/    /'
    assert_fails "the laptop chain does not verify under the gateway's key" "$JVPN" audit verify --key "$GW_PUB" lap-audit.jsonl
    records=$(jq -c '[.reason, .old_path.bearer, .new_path.bearer]' lap-audit.jsonl)
    assert_eq "one record per jump, with the jump's reason and bearer classes" "$records" "$switches"
    assert_eq "the gateway witnessed exactly the laptop's records" \
        "$(jq -r '.record.hash' gw-audit.jsonl)" "$(jq -r '.hash' lap-audit.jsonl)"
    assert_eq "the records keep the interface detail" \
        "$(jq -r '[.old_path.iface, .new_path.iface] | join(">")' lap-audit.jsonl | paste -sd ' ')" "wlan0>wwan0 wwan0>wlan0"
    jq -e 'select(.media_window.resume_seq != .media_window.last_seq + 1)' lap-audit.jsonl >/dev/null &&
        fail "a record's media window is not contiguous"
    ok "media windows are contiguous (resume_seq = last_seq + 1)"

    local needle
    for needle in 10.20.0.2 10.30.0.2 10.40.0.2 wlan0 wwan0; do
        assert_file_lacks "events do not carry '$needle'" "$events" "$needle"
    done

    local wifi_tags cell_tags common
    wifi_tags=$(pcap_tags "$RUN_DIR/cap-wifi.pcap" | awk '{ print $2 }' | sort -u)
    cell_tags=$(pcap_tags "$RUN_DIR/cap-cell.pcap" | awk '{ print $2 }' | sort -u)
    assert_gt "the Wi-Fi capture has jvpn tags" "$(printf '%s\n' "$wifi_tags" | grep -c .)" 1
    assert_gt "the cellular capture has jvpn tags" "$(printf '%s\n' "$cell_tags" | grep -c .)" 1
    common=$(comm -12 <(printf '%s\n' "$wifi_tags") <(printf '%s\n' "$cell_tags") | grep -c . || true)
    assert_eq "the Wi-Fi and cellular captures share no routing tag" "$common" 0
    log "tags: Wi-Fi $(echo $wifi_tags), cellular $(echo $cell_tags)"
    local n steps
    read -r n steps < <(pcap_counter_steps "$RUN_DIR/cap-wifi.pcap")
    assert_gt "the Wi-Fi capture has laptop data packets" "$n" 100
    assert_eq "no counter in clear follows the one before ($n packets)" "$steps" 0
}

case_unrecordable() {
    step "the laptop cannot write its audit file: the jump is not affected"
    gateway_config "" unrec-gw.toml
    laptop_config "" /dev/full unrec-lap.toml
    start_nodes unrec unrec-gw.toml unrec-lap.toml
    probes 6
    probes_started
    at_second 2.5 tb_wifi_down
    finish_probes
    check_dir up 1 60
    check_dir down 1 60
    assert_eq "jvpn status counts the record that could not be written" \
        "$(nsx lap "$JVPN" status --json --config "$RUN_DIR/unrec-lap.toml" | jq -c '[.audit.failed, .audit.appended]')" "[1,0]"
    stop_nodes
    assert_file_has "the failure to record is logged" "$RUN_DIR/unrec-lap.log" 'could not record a transport.rebind'
    assert_file_has "the jump happened" "$RUN_DIR/unrec-lap.log" 'transport switch'
}

case_moving() {
    step "moving target: a new source port every 5 s ± 1 s for 60 s"
    gateway_config mt-gw-audit.jsonl mt-gw.toml
    laptop_config "$REPO_DIR/policy/moving-target.toml" mt-lap-audit.jsonl mt-lap.toml
    rm -f mt-gw-audit.jsonl mt-lap-audit.jsonl mt-lap.toml.events.jsonl
    # The capture spans the nodes' whole life, so every port they used is in it.
    tb_restore
    capture_start cap-mt lap wlan0 udp
    start_nodes moving mt-gw.toml mt-lap.toml
    probes 60
    probes_started
    finish_probes
    sleep 1
    check_dir up 0 100
    check_dir down 0 100
    stop_nodes
    sleep 1 # let tcpdump write what it already received (it drops the rest on SIGINT)
    capture_stop cap-mt

    local events=mt-lap.toml.events.jsonl moves records ports
    moves=$(jq -c 'select(.event_type == "TransportSwitch" and .reason_code == "moving_target")' "$events" | grep -c . || true)
    assert_gt "at least 10 moves in 60 s" "$moves" 9
    assert_eq "every switch was a moving-target move on Wi-Fi" \
        "$(jq -c 'select(.event_type == "TransportSwitch") | [.reason_code, .previous_transport, .new_transport]' "$events" | sort -u)" \
        '["moving_target","wifi","wifi"]'
    assert_ok "laptop chain verifies" "$JVPN" audit verify --key "$LAP_PUB" mt-lap-audit.jsonl
    assert_ok "gateway chain verifies" "$JVPN" audit verify --key "$GW_PUB" mt-gw-audit.jsonl
    records=$(grep -c . mt-lap-audit.jsonl)
    assert_eq "one record per move" "$records" "$moves"
    assert_eq "the gateway witnessed every move" "$(grep -c . mt-gw-audit.jsonl)" "$moves"
    assert_eq "every record names a new local port" \
        "$(jq -r '.new_path.local' mt-lap-audit.jsonl | sort -u | grep -c .)" "$moves"

    # Every source port carried its own tags: no tag on two ports.
    pcap_tags "$RUN_DIR/cap-mt.pcap" | sort -u >mt-tags.txt
    ports=$(awk '{ print $1 }' mt-tags.txt | sort -u | grep -c .)
    assert_gt "the capture shows the first port and one per move ($ports ports)" "$ports" "$moves"
    assert_eq "no routing tag appears on two source ports" \
        "$(awk '{ print $2 }' mt-tags.txt | sort | uniq -d | grep -c . || true)" 0
}

cases=(jumps unrecordable moving)
selected=("$@")
((${#selected[@]})) || selected=("${cases[@]}")
for c in "${selected[@]}"; do
    [[ " ${cases[*]} " == *" $c "* ]] || fail "unknown case '$c' (known: ${cases[*]})"
    "case_$c"
done
step "accountable: all cases passed"
