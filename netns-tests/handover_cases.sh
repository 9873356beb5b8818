# shellcheck shell=bash disable=SC2034
# netns-tests/handover_cases.sh: the bearer-handover cases, defined once for the test that asserts
# jvpn's budgets on them (netns-tests/roam.sh) and the benchmark that runs every VPN peer through
# them (scripts/bench/handover.sh). Source it after lib.sh.
#
# The topology is lib.sh's two-bearer one (tb_topology: laptop with wlan0, and wwan0 behind a NAT;
# gateway endpoint 10.10.0.1), restored before every run with tb_restore. A case is:
#
#   case            starts on   media     fault (hc_event)                         jvpn budget per direction
#   link-down       Wi-Fi       up, down  wlan0 down, address stays                <= 1 lost, <= 60 ms
#   addr-gone       Wi-Fi       up, down  wlan0 down, address flushed              <= 1 lost, <= 60 ms
#   downlink-only   Wi-Fi       down      wlan0 down, address flushed              <= 1 lost, <= 60 ms
#   blackhole       Wi-Fi       up, down  the gateway's Wi-Fi side drops all       voice.toml: <= 26, <= 500 ms
#                                                                                  default: <= 151, <= 3000 ms
#   wifi-returns    cellular    up, down  wlan0 up, its route 0.2 s later          0 lost, <= 60 ms
#   flapping        Wi-Fi       up, down  wlan0 down/up 10 times in 2 s            <= 2 lost, <= 100 ms
#   nat-rebinding   cellular    up, down  the NAT moves to new ports, forgets all  <= 1 lost, <= 100 ms
#
# "Starts on cellular": Wi-Fi is down (address kept) before the fault. jvpn's laptop configs come
# in three policies: default, voice (policy/voice.toml) and audit (default policy, audit trail on
# at both ends); the blackhole runs under voice and default, every other case under default.

HC_CASES=(link-down addr-gone downlink-only blackhole wifi-returns flapping nat-rebinding)
HC_PORT=51900     # the gateway's UDP port
HC_MTU=1420       # the tunnel's MTU (jvpn's default)

# hc_desc CASE: one line on what happens.
hc_desc() {
    case $1 in
        link-down) echo "Wi-Fi link goes down (address stays)" ;;
        addr-gone) echo "Wi-Fi link goes down and its address is removed" ;;
        downlink-only) echo "same as above, media only gateway → laptop" ;;
        blackhole) echo "Wi-Fi stays up but drops everything (nftables on the gateway's Wi-Fi side)" ;;
        wifi-returns) echo "Wi-Fi comes back while on cellular (preferred)" ;;
        flapping) echo "Wi-Fi flaps 10 times in 2 s" ;;
        nat-rebinding) echo "the NAT on the cellular path changes the laptop's port" ;;
        *) fail "hc_desc: unknown case '$1'" ;;
    esac
}

# hc_start CASE: the bearer the session is on when the fault comes (wifi or cellular).
hc_start() { case $1 in wifi-returns|nat-rebinding) echo cellular ;; *) echo wifi ;; esac; }

# hc_dirs CASE: the media directions ("up": laptop -> gateway).
hc_dirs() { case $1 in downlink-only) echo down ;; *) echo "up down" ;; esac; }

# hc_event_len CASE: how long the fault itself takes (s).
hc_event_len() { case $1 in flapping) echo 2 ;; *) echo 0 ;; esac; }

# hc_event CASE: apply the case's fault (and return when it is complete).
hc_event() {
    case $1 in
        link-down) tb_wifi_down ;;
        addr-gone|downlink-only) tb_wifi_down flush ;;
        blackhole) tb_blackhole_wifi ;;
        wifi-returns) tb_wifi_up ;;
        flapping) tb_flap_wifi ;;
        nat-rebinding) tb_nat_rebind ;;
        *) fail "hc_event: unknown case '$1'" ;;
    esac
}

# hc_policies CASE: the laptop policies jvpn runs the case under.
hc_policies() { case $1 in blackhole) echo "voice default" ;; *) echo default ;; esac; }

# hc_budget CASE POLICY: jvpn's budget per direction, "MAX_LOST MAX_SILENCE_MS" (the audit policy
# is the default one with the audit trail on, and has its budget).
hc_budget() {
    case $1/$2 in
        blackhole/voice) echo "26 500" ;;
        blackhole/*) echo "151 3000" ;;
        link-down/*|addr-gone/*|downlink-only/*) echo "1 60" ;;
        wifi-returns/*) echo "0 60" ;;
        flapping/*) echo "2 100" ;;
        nat-rebinding/*) echo "1 100" ;;
        *) fail "hc_budget: unknown case '$1'" ;;
    esac
}

# hc_jump CASE: the laptop log line (extended regex) that shows jvpn's jump; empty when the case
# moves no bearer (the NAT rebinding moves only the laptop's port, which the gateway sees).
hc_jump() {
    local switch='transport switch.*reason_code="?'
    case $1 in
        link-down) echo "${switch}transport_dead.*previous_transport=\"?wifi.*new_transport=\"?cellular" ;;
        addr-gone|downlink-only|flapping) echo "transport switch.*previous_transport=\"?wifi.*new_transport=\"?cellular" ;;
        blackhole) echo "${switch}(heartbeat_timeout|consecutive_drop_exceeded).*previous_transport=\"?wifi.*new_transport=\"?cellular" ;;
        wifi-returns) echo "${switch}preferred_bearer_available.*previous_transport=\"?cellular.*new_transport=\"?wifi" ;;
        nat-rebinding) echo "" ;;
        *) fail "hc_jump: unknown case '$1'" ;;
    esac
}

# hc_configs DIR: jvpn's identities and configs for the cases in DIR, checked with $JVPN:
# gateway.toml, gateway-audit.toml, laptop-{default,voice,audit}.toml (the audit ones write
# DIR/{gateway,laptop}-audit.jsonl, emptied here). Sets HC_GW_PUB and HC_LAP_PUB.
HC_GW_PUB="" HC_LAP_PUB=""
hc_configs() {
    local dir=$1 pol
    mkdir -p "$dir"
    HC_GW_PUB=$(jvpn_keygen "$dir/gateway.key")
    HC_LAP_PUB=$(jvpn_keygen "$dir/laptop.key")
    cat >"$dir/gateway.toml" <<EOT
identity = "gateway.key"
listen = "0.0.0.0:$HC_PORT"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]
mtu = $HC_MTU

[[peer]]
name = "laptop"
public_key = "$HC_LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOT
    { echo "audit = \"$dir/gateway-audit.jsonl\""; cat "$dir/gateway.toml"; } >"$dir/gateway-audit.toml"
    rm -f "$dir/gateway-audit.jsonl" "$dir/laptop-audit.jsonl"
    for pol in default voice audit; do
        {
            echo 'identity = "laptop.key"'
            [[ $pol != voice ]] || echo "policy = \"$REPO_DIR/policy/voice.toml\""
            [[ $pol != audit ]] || echo "audit = \"$dir/laptop-audit.jsonl\""
            cat <<EOT

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]
mtu = $HC_MTU

[gateway]
endpoint = "$TB_ENDPOINT:$HC_PORT"
public_key = "$HC_GW_PUB"
routes = ["10.77.0.0/24"]
EOT
        } >"$dir/laptop-$pol.toml"
        "$JVPN" check "$dir/laptop-$pol.toml" >/dev/null || fail "laptop-$pol.toml does not check"
    done
}
