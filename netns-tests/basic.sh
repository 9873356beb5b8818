#!/usr/bin/env bash
# netns-tests/basic.sh: one gateway, two laptops and an unknown peer, all on veth links.
#
#   ns a (laptop A)                    ns gw (gateway)                     ns b (laptop B)
#  +----------------+             +------------------------+            +----------------+
#  | eth0 10.10.1.2 |--- veth ----| ga 10.10.1.1           |            |                |
#  |  fd10:1::2     |             |  fd10:1::1             |            |                |
#  |                |             |           gb 10.10.2.1 |--- veth ---| eth0 10.10.2.2 |
#  |                |             |              fd10:2::1 |            |  fd10:2::2     |
#  | jvpn0          |             | jvpn0  listen :51900   |            | jvpn0          |
#  |  10.77.0.2     |=== tunnel ==|  10.77.0.1  fd77::1    |== tunnel ==|  10.77.0.3     |
#  |  fd77::2       |             |                        |            |  fd77::3       |
#  +----------------+             |           gr 10.10.3.1 |--- veth ---+----------------+
#                                 +------------------------+            | eth0 10.10.3.2 |
#                                                                       | jvpn0 (key not |
#                                                       ns rogue -----> |  a gateway peer)|
#                                                                       +----------------+
#
# Asserts: keygen/pubkey/check work; both laptops establish a session (same session_id logged
# on both sides); IPv4 and IPv6 ping laptop -> gateway and laptop A -> laptop B through the
# gateway; a 3 s iperf3 TCP transfer; an underlay capture holds the tunnel's UDP packets but not a
# marker string sent through the tunnel (a capture on laptop A's TUN holds it); an unknown key
# gets no packet at all back from the gateway; SIGTERM removes the TUN device.
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
lib_init basic
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_jvpn
for sub in keygen pubkey check gateway up; do
    jvpn_supports "$sub" || fail "$JVPN has no '$sub' subcommand"
done

PORT=51900
# "jvpn-marker-7c1e" as hex: ping -p fills the ICMP payload with it, so it crosses the tunnel.
MARKER=jvpn-marker-7c1e
MARKER_HEX=$(printf '%s' "$MARKER" | od -An -tx1 | tr -d ' \n')

step "topology"
ns_add gw a b rogue
veth_link gw ga "10.10.1.1/24 fd10:1::1/64" a eth0 "10.10.1.2/24 fd10:1::2/64"
veth_link gw gb "10.10.2.1/24 fd10:2::1/64" b eth0 "10.10.2.2/24 fd10:2::2/64"
veth_link gw gr "10.10.3.1/24" rogue eth0 "10.10.3.2/24"
ns_forwarding gw
assert_ok "underlay a -> gw answers" nsx a ping -n -c 1 -W 2 10.10.1.1
assert_ok "underlay b -> gw answers" nsx b ping -n -c 1 -W 2 10.10.2.1

step "keys and configs"
cd "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
A_PUB=$(jvpn_keygen a.key)
B_PUB=$(jvpn_keygen b.key)
ROGUE_PUB=$(jvpn_keygen rogue.key)
assert_eq "identity file mode is 0600" 600 "$(stat -c %a a.key)"
assert_eq "jvpn pubkey prints the keygen public key" "$A_PUB" "$("$JVPN" pubkey --key a.key | tr -d '[:space:]')"
assert_fails "keygen refuses to overwrite an identity" "$JVPN" keygen --out a.key
[[ $A_PUB != "$B_PUB" && $A_PUB != "$ROGUE_PUB" ]] || fail "keygen produced the same key twice"

cat >gateway.toml <<EOF
identity = "gateway.key"
listen = "0.0.0.0:$PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24", "fd77::1/64"]

[[peer]]
public_key = "$A_PUB"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]

[[peer]]
public_key = "$B_PUB"
allowed_ips = ["10.77.0.3/32", "fd77::3/128"]
EOF

# laptop_config NAME HOST_NUMBER ENDPOINT
laptop_config() {
    cat >"$1.toml" <<EOF
identity = "$1.key"

[tunnel]
name = "jvpn0"
address = ["10.77.0.$2/24", "fd77::$2/64"]
mtu = 1420

[gateway]
endpoint = "$3:$PORT"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24", "fd77::/64"]
EOF
}
laptop_config a 2 10.10.1.1
laptop_config b 3 10.10.2.1
laptop_config rogue 9 10.10.3.1
for f in gateway.toml a.toml b.toml rogue.toml; do
    assert_ok "jvpn check $f" "$JVPN" check "$f"
done
printf 'identity = "a.key"\nlisten = 42\n' >broken.toml
assert_fails "jvpn check rejects a broken config" "$JVPN" check broken.toml

step "start the gateway and two laptops"
jvpn_start gw gw gateway "$RUN_DIR/gateway.toml"
wait_listen gw "$PORT" 15 udp
jvpn_start a a up "$RUN_DIR/a.toml"
jvpn_start b b up "$RUN_DIR/b.toml"
wait_ping a 10.77.0.1 30
ok "laptop A's tunnel answers"
wait_ping b 10.77.0.1 30
ok "laptop B's tunnel answers"
assert_ok "jvpn0 exists in laptop A" link_exists a jvpn0
assert_ok "jvpn0 exists in the gateway" link_exists gw jvpn0

step "session identity"
wait_log a 'session established' 10 "laptop A to log 'session established'"
wait_log b 'session established' 10 "laptop B to log 'session established'"
SID_A=$(session_id_of a)
SID_B=$(session_id_of b)
[[ $SID_A =~ ^[0-9a-f]{32}$ ]] || fail "laptop A logged no session_id=<32 hex> with 'session established'"
[[ $SID_B =~ ^[0-9a-f]{32}$ ]] || fail "laptop B logged no session_id=<32 hex> with 'session established'"
ok "laptop A session_id=$SID_A"
ok "laptop B session_id=$SID_B"
[[ $SID_A != "$SID_B" ]] || fail "two laptops got the same session_id"
wait_log gw "session established.*session_id=\"?$SID_A|session_id=\"?$SID_A.*session established" 10 \
    "the gateway to log laptop A's session_id"
ok "gateway logged laptop A's session_id"
wait_log gw "session established.*session_id=\"?$SID_B|session_id=\"?$SID_B.*session established" 10 \
    "the gateway to log laptop B's session_id"
ok "gateway logged laptop B's session_id"

step "IPv4 and IPv6 through the tunnel"
assert_ok "IPv4 laptop A -> gateway (5 pings)" nsx a ping -n -c 5 -i 0.2 -W 2 10.77.0.1
assert_ok "IPv4 laptop B -> gateway (5 pings)" nsx b ping -n -c 5 -i 0.2 -W 2 10.77.0.1
wait_ping a 10.77.0.3 15
assert_ok "IPv4 laptop A -> laptop B via the gateway" nsx a ping -n -c 5 -i 0.2 -W 2 10.77.0.3
assert_ok "IPv4 laptop B -> laptop A via the gateway" nsx b ping -n -c 5 -i 0.2 -W 2 10.77.0.2
wait_ping a fd77::1 15
assert_ok "IPv6 laptop A -> gateway" nsx a ping -n -c 5 -i 0.2 -W 2 fd77::1
assert_ok "IPv6 laptop B -> gateway" nsx b ping -n -c 5 -i 0.2 -W 2 fd77::1
wait_ping a fd77::3 15
assert_ok "IPv6 laptop A -> laptop B via the gateway" nsx a ping -n -c 5 -i 0.2 -W 2 fd77::3
assert_ok "large IPv4 packets (1300 bytes) laptop A -> gateway" \
    nsx a ping -n -c 3 -i 0.2 -W 2 -s 1300 10.77.0.1

step "TCP through the tunnel (iperf3, 3 s)"
iperf_server iperf gw 5201
timeout 30 ip netns exec "$(ns a)" iperf3 -c 10.77.0.1 -p 5201 -t 3 -J >"$RUN_DIR/iperf-a.json" ||
    { cat "$RUN_DIR/iperf-a.json" >&2; fail "iperf3 laptop A -> gateway through the tunnel failed"; }
BPS=$(iperf_bps "$RUN_DIR/iperf-a.json")
assert_gt "iperf3 laptop A -> gateway reports throughput ($(human_bps "$BPS"))" "$BPS" 0

step "the underlay carries no plaintext"
capture_start cap-ga gw ga
capture_start cap-gb gw gb
capture_start cap-tun a jvpn0
assert_ok "marker ping laptop A -> gateway answers" \
    nsx a ping -n -c 3 -i 0.2 -W 2 -s 200 -p "$MARKER_HEX" 10.77.0.1
assert_ok "marker ping laptop A -> laptop B answers" \
    nsx a ping -n -c 3 -i 0.2 -W 2 -s 200 -p "$MARKER_HEX" 10.77.0.3
nsx a bash -c "printf '%s udp\n' '$MARKER' >/dev/udp/10.77.0.3/9" 2>/dev/null || true
nsx a bash -c "printf '%s udp6\n' '$MARKER' >/dev/udp/fd77::1/9" 2>/dev/null || true
sleep 0.5
capture_stop cap-ga
capture_stop cap-gb
capture_stop cap-tun
assert_file_has "the TUN capture holds the marker (it was sent)" "$RUN_DIR/cap-tun.pcap" "$MARKER"
N_UDP=$(capture_count cap-ga "udp port $PORT")
assert_gt "the underlay capture (gw/ga) holds tunnel packets (udp/$PORT: $N_UDP)" "$N_UDP" 0
N_UDP=$(capture_count cap-gb "udp port $PORT")
assert_gt "the underlay capture (gw/gb) holds tunnel packets (udp/$PORT: $N_UDP)" "$N_UDP" 0
assert_file_lacks "no marker on the underlay to laptop A" "$RUN_DIR/cap-ga.pcap" "$MARKER"
assert_file_lacks "no marker on the underlay to laptop B" "$RUN_DIR/cap-gb.pcap" "$MARKER"
N_ICMP=$(capture_count cap-ga icmp)
assert_eq "no plaintext ICMP on the underlay" 0 "$N_ICMP"

step "an unknown peer gets no reply"
capture_start cap-gr gw gr
jvpn_start rogue rogue up "$RUN_DIR/rogue.toml"
wait_until 20 "the unknown peer sends to the gateway" \
    bash -c "[[ \$(tcpdump -n -r '$RUN_DIR/cap-gr.pcap' 'src host 10.10.3.2 and udp dst port $PORT' 2>/dev/null | wc -l) -ge 2 ]]"
assert_fails "the unknown peer cannot ping through a tunnel" nsx rogue ping -n -c 3 -i 0.5 -W 1 10.77.0.1
sleep 2   # room for a late answer, e.g. to a handshake retransmission
capture_stop cap-gr
N_IN=$(capture_count cap-gr "src host 10.10.3.2 and udp dst port $PORT")
N_OUT=$(capture_count cap-gr "ip and src host 10.10.3.1")
assert_gt "the unknown peer sent handshakes ($N_IN)" "$N_IN" 0
assert_eq "the gateway sent nothing to the unknown peer" 0 "$N_OUT"
if strip_ansi <"$RUN_DIR/rogue.log" | grep -q 'session established'; then
    fail "the unknown peer logged 'session established'"
fi
ok "the unknown peer never logged 'session established'"
assert_ok "laptop A's session still works" nsx a ping -n -c 2 -i 0.2 -W 2 10.77.0.1

step "clean shutdown"
bg_stop a TERM 10 || fail "laptop A did not exit within 10 s of SIGTERM"
assert_eq "laptop A exits 0 on SIGTERM" 0 "$BG_RC"
assert_fails "laptop A's jvpn0 is gone after SIGTERM" link_exists a jvpn0
bg_stop b INT 10 || fail "laptop B did not exit within 10 s of SIGINT"
assert_eq "laptop B exits 0 on SIGINT" 0 "$BG_RC"
assert_fails "laptop B's jvpn0 is gone after SIGINT" link_exists b jvpn0
bg_stop gw TERM 10 || fail "the gateway did not exit within 10 s of SIGTERM"
assert_eq "the gateway exits 0 on SIGTERM" 0 "$BG_RC"
assert_fails "the gateway's jvpn0 is gone after SIGTERM" link_exists gw jvpn0

printf '\n%sPASS%s basic\n' "$C_GREEN" "$C_OFF"
