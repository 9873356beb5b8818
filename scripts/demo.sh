#!/usr/bin/env bash
# scripts/demo.sh: jvpn end to end on one machine, from nothing.
#
#   ns laptop                                  ns gateway
#  +---------------------+                    +---------------------+
#  | eth0  10.10.0.2/24  |------- veth -------| eth0  10.10.0.1/24  |
#  | jvpn0 10.77.0.2/24  |== Noise session ===| jvpn0 10.77.0.1/24  |
#  |       fd77::2/64    |   (UDP :51900)     |       fd77::1/64    |
#  +---------------------+                    +---------------------+
#
# Installs what it needs (iproute2, iperf3, ...), builds jvpn (release), generates keys and
# configs in a temporary directory, starts a gateway and a laptop in two network namespaces,
# shows IPv4 and IPv6 traffic and a short iperf3 run through the tunnel, prints the session's
# SessionID as both sides logged it, and removes everything again.
#
# Usage: sudo scripts/demo.sh [--keep]
#   --keep   leave the tunnel up until Ctrl-C, and print commands to try
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../netns-tests/lib.sh"

KEEP=0
for arg in "$@"; do
    case $arg in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

if [[ $(id -u) -ne 0 ]]; then
    echo "The demo creates network namespaces and TUN devices, which needs root:" >&2
    echo "    sudo $0 $*" >&2
    exit 1
fi
need_root
lib_init demo
export PATH="$HOME/.cargo/bin:$PATH"

# show COMMAND...: print a command the way a user would type it, then run it.
show() { printf '%s$ %s%s\n' "$C_DIM" "$*" "$C_OFF"; "$@"; }
indent() { sed -e 's/^/    /'; }

step "1/6  Installing what the demo needs"
command -v cargo >/dev/null 2>&1 || fail "cargo is not installed: install Rust (https://rustup.rs) first"
ensure_netns_tools || fail "could not install the Debian packages the demo needs"
ok "iproute2, iputils-ping, iperf3, tcpdump, jq are present"

step "2/6  Building jvpn (cargo build --release)"
ensure_jvpn
ok "$JVPN ($("$JVPN" --version 2>/dev/null || echo jvpn))"

step "3/6  Two namespaces joined by a veth link"
ns_add laptop gateway
veth_link laptop eth0 "10.10.0.2/24 fd10::2/64" gateway eth0 "10.10.0.1/24 fd10::1/64"
ok "namespaces $(ns laptop) and $(ns gateway)"
ok "laptop 10.10.0.2  <--veth-->  gateway 10.10.0.1"

step "4/6  Keys and configs (in $RUN_DIR)"
cd "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
LAPTOP_PUB=$(jvpn_keygen laptop.key)
ok "gateway public key: $GW_PUB"
ok "laptop public key:  $LAPTOP_PUB"
cat >gateway.toml <<EOF
identity = "gateway.key"
listen = "0.0.0.0:51900"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24", "fd77::1/64"]

[[peer]]
public_key = "$LAPTOP_PUB"
allowed_ips = ["10.77.0.2/32", "fd77::2/128"]
EOF
cat >laptop.toml <<EOF
identity = "laptop.key"

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24", "fd77::2/64"]
mtu = 1420

[gateway]
endpoint = "10.10.0.1:51900"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24", "fd77::/64"]
EOF
echo "gateway.toml:"; indent <gateway.toml
echo "laptop.toml:"; indent <laptop.toml
"$JVPN" check gateway.toml >/dev/null || fail "jvpn check gateway.toml failed"
"$JVPN" check laptop.toml >/dev/null || fail "jvpn check laptop.toml failed"
ok "jvpn check accepts both"

step "5/6  Starting the gateway and the laptop"
echo "    ip netns exec $(ns gateway) jvpn gateway --config gateway.toml"
jvpn_start gateway gateway gateway "$RUN_DIR/gateway.toml"
wait_listen gateway 51900 15 udp
echo "    ip netns exec $(ns laptop) jvpn up --config laptop.toml"
jvpn_start laptop laptop up "$RUN_DIR/laptop.toml"
wait_ping laptop 10.77.0.1 30
ok "the tunnel answers"
wait_log laptop 'session established' 10 "the laptop to log 'session established'"
SID_LAPTOP=$(session_id_of laptop)
[[ -n $SID_LAPTOP ]] || fail "the laptop logged no session_id"
wait_log gateway "session_id=\"?$SID_LAPTOP" 10 "the gateway to log the same session_id"
SID_GATEWAY=$(session_id_of gateway)
echo
echo "    laptop device:"
ip -n "$(ns laptop)" -brief addr show dev jvpn0 | indent
ip -n "$(ns laptop)" route show dev jvpn0 | indent

step "6/6  Traffic through the tunnel"
show ip netns exec "$(ns laptop)" ping -n -c 4 -i 0.3 10.77.0.1 | indent
show ip netns exec "$(ns laptop)" ping -n -c 4 -i 0.3 fd77::1 | indent
iperf_server iperf gateway 5201
printf '    %s$ %s%s\n' "$C_DIM" "ip netns exec $(ns laptop) iperf3 -c 10.77.0.1 -t 3" "$C_OFF"
timeout 30 ip netns exec "$(ns laptop)" iperf3 -c 10.77.0.1 -p 5201 -t 3 -J >iperf.json ||
    fail "iperf3 through the tunnel failed"
jq -r '.intervals[] | .sum | "    \(.start | floor)-\(.end | floor) s  \(.bits_per_second / 1e9 * 100 | floor / 100) Gbit/s"' iperf.json
ok "TCP through the tunnel: $(human_bps "$(iperf_bps iperf.json)")"

printf '\n%sSession%s\n' "$C_BOLD" "$C_OFF"
echo "    laptop  logged session_id=$SID_LAPTOP"
echo "    gateway logged session_id=${SID_GATEWAY:-?}"
if [[ $SID_LAPTOP == "$SID_GATEWAY" ]]; then
    ok "both sides name the same session"
else
    warn "the gateway's latest session_id differs from the laptop's"
fi
echo
echo "    from the logs:"
strip_ansi <"$RUN_DIR/laptop.log" | grep -m1 'session established' | sed -e 's/^/    laptop:  /'
strip_ansi <"$RUN_DIR/gateway.log" | grep -m1 'session established' | sed -e 's/^/    gateway: /'

if ((KEEP)); then
    step "The tunnel stays up until Ctrl-C. Try:"
    echo "    ip netns exec $(ns laptop) ping 10.77.0.1"
    echo "    ip netns exec $(ns laptop) ping fd77::1"
    echo "    tail -f $RUN_DIR/laptop.log $RUN_DIR/gateway.log"
    while is_running laptop && is_running gateway; do sleep 1; done
    fail "a jvpn node exited"
fi

step "Stopping (SIGTERM) and cleaning up"
bg_stop laptop TERM 10 || warn "the laptop had to be killed"
if link_exists laptop jvpn0; then warn "the laptop's jvpn0 is still there"; else ok "laptop stopped, jvpn0 removed"; fi
bg_stop gateway TERM 10 || warn "the gateway had to be killed"
if link_exists gateway jvpn0; then warn "the gateway's jvpn0 is still there"; else ok "gateway stopped, jvpn0 removed"; fi
printf '\n%sDemo complete.%s Next: scripts/test.sh runs every test; scripts/bench.sh compares with WireGuard.\n' "$C_GREEN" "$C_OFF"
