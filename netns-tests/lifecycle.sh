#!/usr/bin/env bash
# netns-tests/lifecycle.sh: rekeys, lifetime expiry and operator control of a live session.
#
#   ns lap (laptop)                         ns gw (gateway)
#  +---------------------+                 +---------------------+
#  | eth0 10.30.0.2/24   |----- veth ------| eth0 10.30.0.1/24   |
#  | jvpn0 10.77.0.2     |==== session ====| jvpn0 10.77.0.1     |
#  | events: lap.jsonl   |                 | events: gw.jsonl    |
#  +---------------------+                 +---------------------+
#
# A short policy (keys rekeyed every 3 s, session lifetime 60 s, the shortest a policy allows) under `jvpn probe` at 50
# packets/s each way. Asserts: rekeys lose nothing (a probe run that spans three rekeys loses no
# packet, the SessionID stays); the lifetime expiry is explicit (SessionTerminated with
# session_lifetime_exceeded) and traffic resumes on a new session within 1 s; `jvpn status`
# (table and --json), `jvpn events --follow` and `jvpn terminate` work from a shell, and a
# terminated session is replaced by a new one; SIGHUP refuses an invalid policy (the running one
# stays) and applies a valid one (new key limits rotate the keys at once).
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
lib_init lifecycle
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_jvpn
for sub in status events terminate probe; do
    jvpn_supports "$sub" || fail "$JVPN has no '$sub' subcommand"
done

step "topology and configs"
ns_add lap gw
veth_link lap eth0 "10.30.0.2/24" gw eth0 "10.30.0.1/24"
cd "$RUN_DIR"
# The nodes re-read short.toml on SIGHUP as their unprivileged user (nobody): it must reach it.
chmod 711 "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
LAP_PUB=$(jvpn_keygen laptop.key)
cat >short.toml <<'EOF'
version = "netns-short-1"
name = "short"
[session]
max_lifetime_ms = 60000
transport_lost_ttl_ms = 10000
[keys]
rekey_after_ms = 3000
key_max_age_ms = 5000
min_rekey_interval_ms = 2000
rekey_grace_ms = 1000
EOF
"$JVPN" check short.toml >/dev/null || fail "short.toml does not check: $("$JVPN" check short.toml 2>&1)"
cat >gateway.toml <<EOF
identity = "gateway.key"
policy = "short.toml"
listen = "0.0.0.0:51900"
events = "gw.jsonl"
control_socket = "$RUN_DIR/gw.sock"
[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]
[[peer]]
name = "laptop"
public_key = "$LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOF
cat >laptop.toml <<EOF
identity = "laptop.key"
policy = "short.toml"
events = "lap.jsonl"
[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]
[gateway]
endpoint = "10.30.0.1:51900"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24"]
EOF
ok "policy netns-short-1: rekey every 3 s, keys at most 5 s old, lifetime 60 s"

step "session up"
jvpn_start gw gw gateway "$RUN_DIR/gateway.toml"
wait_listen gw 51900 10 udp
jvpn_start lap lap up "$RUN_DIR/laptop.toml"
wait_log lap 'session established' 15 "the laptop's session"
T0=$SECONDS
wait_ping lap 10.77.0.1 10
SID1=$(session_id_of lap)
ok "session $SID1"

step "jvpn status and events --follow from a shell"
status=$(nsx gw "$JVPN" status --config "$RUN_DIR/gateway.toml")
printf '%s\n' "$status" | sed -e 's/^/    /'
grep -q "$SID1" <<<"$status" || fail "status does not list the session"
grep -q ATTACHED <<<"$status" || fail "status does not show ATTACHED"
state=$(nsx gw "$JVPN" status --json --config "$RUN_DIR/gateway.toml" | jq -r '.sessions[0].state')
assert_eq "status --json: the session is ATTACHED" "$state" ATTACHED
lap_state=$(nsx lap "$JVPN" status --json --config "$RUN_DIR/laptop.toml" | jq -r '.sessions[0].state')
assert_eq "the laptop's own status finds its socket under /run/jvpn and says ATTACHED" "$lap_state" ATTACHED
bg_start follow gw "$JVPN" events --follow --config "$RUN_DIR/gateway.toml"

# probe NAME SECONDS: 50 packets/s each way through the tunnel; JSON results in NAME-{up,down}.json
probe() {
    local name=$1 secs=$2
    bg_start "$name-up-recv" gw sh -c "exec '$JVPN' probe recv --listen 10.77.0.1:5001 --seconds $((secs + 2)) --json >'$RUN_DIR/$name-up.json'"
    bg_start "$name-down-recv" lap sh -c "exec '$JVPN' probe recv --listen 10.77.0.2:5002 --seconds $((secs + 2)) --json >'$RUN_DIR/$name-down.json'"
    wait_listen gw 5001 5 udp
    wait_listen lap 5002 5 udp
    bg_start "$name-up-send" lap "$JVPN" probe send --to 10.77.0.1:5001 --pps 50 --seconds "$secs"
    bg_start "$name-down-send" gw "$JVPN" probe send --to 10.77.0.2:5002 --pps 50 --seconds "$secs"
    local p
    for p in up-send down-send up-recv down-recv; do
        wait_pid_exit "$(pid_of "$name-$p")" $((secs + 15)) || fail "probe $name-$p did not finish"
    done
}

step "rekeys under a 50 packets/s stream lose nothing"
probe rekeys 8
for dir in up down; do
    lost=$(jq -r '.lost' "$RUN_DIR/rekeys-$dir.json")
    silence=$(jq -r '.longest_silence_ms' "$RUN_DIR/rekeys-$dir.json")
    log "rekeys $dir: lost $lost, longest silence $silence ms"
    assert_eq "rekeys $dir: no packet lost" "$lost" 0
done
rotated=$(jq -r "select(.event_type == \"KeyRotated\" and .session_id == \"$SID1\") | .key_epoch" lap.jsonl | wc -l)
assert_gt "the laptop rotated keys at least twice in the same session" "$rotated" 1
assert_eq "the SessionID did not change across rekeys" "$(session_id_of lap)" "$SID1"

step "lifetime expiry: explicit, and traffic resumes on a new session within 1 s"
# The 60 s lifetime ends inside this run: start it a few seconds before.
while ((SECONDS - T0 < 56)); do sleep 0.5; done
probe expiry 8
terminated=$(jq -r "select(.event_type == \"SessionTerminated\" and .session_id == \"$SID1\") | .reason_code" lap.jsonl | head -n1)
assert_eq "the laptop ended the first session explicitly" "$terminated" session_lifetime_exceeded
SID2=$(jq -r "select(.event_type == \"SessionEstablished\" and .previous_session_id == \"$SID1\") | .session_id" lap.jsonl | head -n1)
[[ -n $SID2 && $SID2 != "$SID1" ]] || fail "no new session replacing $SID1 in lap.jsonl"
ok "new session $SID2 replaces $SID1 (and says so in its events)"
for dir in up down; do
    silence=$(jq -r '.longest_silence_ms' "$RUN_DIR/expiry-$dir.json")
    log "expiry $dir: longest silence $silence ms"
    awk -v s="$silence" 'BEGIN { exit !(s <= 1000) }' || fail "expiry $dir: silence $silence ms (budget 1000 ms)"
    ok "expiry $dir: traffic resumed within $silence ms"
done

step "jvpn terminate"
SID=$(nsx gw "$JVPN" status --json --config "$RUN_DIR/gateway.toml" | jq -r '.sessions[0].session_id')
assert_ok "jvpn terminate $SID" nsx gw "$JVPN" terminate "$SID" --config "$RUN_DIR/gateway.toml"
assert_fails "terminating it again fails (TERMINATED is absorbing)" nsx gw "$JVPN" terminate "$SID" --config "$RUN_DIR/gateway.toml"
wait_until 5 "the laptop is on a new session" \
    bash -c "[[ \$(ip netns exec '$(ns gw)' '$JVPN' status --json --config '$RUN_DIR/gateway.toml' | jq -r '.sessions[0].session_id // empty') != '' && \$(ip netns exec '$(ns gw)' '$JVPN' status --json --config '$RUN_DIR/gateway.toml' | jq -r '.sessions[0].session_id') != '$SID' ]]"
ok "a new session replaced the terminated one"
reason=$(jq -r "select(.event_type == \"SessionTerminated\" and .session_id == \"$SID\") | .reason_code" gw.jsonl | head -n1)
assert_eq "the gateway's events record operator_terminated" "$reason" operator_terminated
wait_ping lap 10.77.0.1 10

step "every event line is one JSON object with the common fields; versions are in order"
bg_stop follow TERM 5 || true
followed=$(grep -c '"event_type"' "$RUN_DIR/follow.log" || true)
assert_gt "events --follow printed live events" "$followed" 3
for f in gw.jsonl lap.jsonl; do
    jq -e 'has("ts_ms") and has("event_type") and has("session_id") and has("node_id") and has("policy_version") and has("state_version")' "$f" >/dev/null ||
        fail "$f: a line lacks a common field"
    jq -e 'select(.policy_version != "netns-short-1")' "$f" >/dev/null && fail "$f: wrong policy_version"
    # E3: per session, SessionStateChange versions are 1, 2, 3, ... in order.
    jq -rs 'map(select(.event_type == "SessionStateChange")) | group_by(.session_id) | map([.[].state_version] == [range(1; length + 1)]) | all' "$f" |
        grep -q true || fail "$f: SessionStateChange versions are not 1, 2, 3, ... per session"
    ok "$f: $(wc -l <"$f") events, common fields present, one SessionStateChange per version"
done

step "SIGHUP: an invalid policy is refused and the running one stays; a valid one applies"
cp short.toml short.good
sed -i 's/^max_lifetime_ms = 60000/max_lifetime_ms = 5/' short.toml
kill -HUP "$(pid_of gw)"
wait_log gw 'policy reload refused.*max_lifetime_ms' 5 "the gateway refusing the invalid policy"
ok "the gateway refused the invalid policy, naming the key"
wait_ping lap 10.77.0.1 5
ok "the tunnel still works on the running policy"
sed -e 's/^version = "netns-short-1"/version = "netns-short-2"/' -e 's/^rekey_after_ms = 3000/rekey_after_ms = 4000/' short.good >short.toml
kill -HUP "$(pid_of lap)"
wait_log lap 'policy reloaded.*netns-short-2' 5 "the laptop applying the new policy"
# New key limits ask for a rekey at once (policy_trigger); inside min_rekey_interval_ms of the
# last one the decision is a RekeyDenied. Either way it is an event under the new version.
wait_until 5 "a policy_trigger rekey decision in lap.jsonl" \
    bash -c "jq -e 'select(((.event_type == \"KeyRotated\" and .reason_code == \"policy_trigger\") or (.event_type == \"RekeyDenied\" and .trigger == \"policy_trigger\")) and .policy_version == \"netns-short-2\")' '$RUN_DIR/lap.jsonl' >/dev/null"
ok "the new key limits asked for a rekey (policy_trigger), reported under netns-short-2"

bg_stop lap TERM 10 || fail "laptop did not stop"
bg_stop gw TERM 10 || fail "gateway did not stop"
# The node runs as nobody by then and cannot unlink a socket in a root-owned directory; the
# next start replaces a socket nothing answers on.
assert_fails "the control socket no longer answers after shutdown" nsx gw "$JVPN" status --config "$RUN_DIR/gateway.toml"
echo "PASS lifecycle"
