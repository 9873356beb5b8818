#!/usr/bin/env bash
# netns-tests/privileges.sh: after setup every thread of a node runs as an unprivileged user with
# no capabilities (REQUIREMENTS H5), and the tunnel still works.
#
#   ns lap (laptop) eth0 10.10.1.2 --- veth --- ga 10.10.1.1 ns gw (gateway, listen :51900)
#   jvpn0 10.77.0.2 ================ tunnel ================ jvpn0 10.77.0.1
#
# Asserts: `jvpn check` and `jvpn up` refuse a mode-0644 identity ("permissions 0644 for ... are
# too open"); a gateway whose events path is a symlink refuses to start, naming it; then, with
# the gateway on the default user and the laptop on `user = "nobody"` (both with an events and an
# audit file), every thread in /proc/PID/task/*/status has Uid/Gid lines without 0,
# CapEff/CapPrm/CapInh/CapAmb all 0 and NoNewPrivs 1, events are still written, and ping passes
# both ways through the tunnel.
set -euo pipefail
# shellcheck source=netns-tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root
lib_init privileges
ensure_netns_tools || fail "cannot install the tools the netns tests need"
ensure_jvpn
id nobody >/dev/null 2>&1 || skip "no user 'nobody' on this system"

PORT=51900

step "topology"
ns_add gw lap
veth_link gw ga "10.10.1.1/24" lap eth0 "10.10.1.2/24"
assert_ok "underlay lap -> gw answers" nsx lap ping -n -c 1 -W 2 10.10.1.1

step "keys and configs"
cd "$RUN_DIR"
GW_PUB=$(jvpn_keygen gateway.key)
LAP_PUB=$(jvpn_keygen laptop.key)
cat >gateway.toml <<EOF
identity = "gateway.key"
listen = "0.0.0.0:$PORT"
events = "gw.jsonl"
audit = "gw-audit.jsonl"

[tunnel]
name = "jvpn0"
address = ["10.77.0.1/24"]

[[peer]]
public_key = "$LAP_PUB"
allowed_ips = ["10.77.0.2/32"]
EOF
# laptop_config FILE KEY
laptop_config() {
    cat >"$1" <<EOF
identity = "$2"
user = "nobody"
events = "lap.jsonl"
audit = "lap-audit.jsonl"

[tunnel]
name = "jvpn0"
address = ["10.77.0.2/24"]

[gateway]
endpoint = "10.10.1.1:$PORT"
public_key = "$GW_PUB"
routes = ["10.77.0.0/24"]
EOF
}
laptop_config laptop.toml laptop.key
assert_ok "jvpn check laptop.toml" "$JVPN" check laptop.toml
assert_ok "jvpn check gateway.toml" "$JVPN" check gateway.toml
"$JVPN" check gateway.toml | grep -qx 'user = "nobody"' || fail "check does not show the default user nobody"
ok "the gateway's user defaults to nobody"

step "refusals: an identity others can read, a symlinked events path"
cp laptop.key open.key
chmod 644 open.key
laptop_config open.toml open.key
out=$("$JVPN" check open.toml 2>&1) && fail "jvpn check accepted a mode-0644 identity"
grep -q "permissions 0644 for '$RUN_DIR/open.key' are too open" <<<"$out" || fail "check: unexpected error: $out"
ok "jvpn check refuses the 0644 identity: $out"
out=$(nsx lap "$JVPN" up --config open.toml 2>&1) && fail "jvpn up accepted a mode-0644 identity"
grep -q "permissions 0644 for '$RUN_DIR/open.key' are too open" <<<"$out" || fail "up: unexpected error: $out"
ok "jvpn up refuses the 0644 identity"
touch elsewhere
ln -s elsewhere linked.jsonl
sed -e 's/^events = "gw.jsonl"/events = "linked.jsonl"/' gateway.toml >linked.toml
out=$(nsx gw timeout 20 "$JVPN" gateway --config linked.toml 2>&1) && fail "a symlinked events path was accepted"
grep -q "$RUN_DIR/linked.jsonl is a symbolic link" <<<"$out" || fail "gateway: unexpected error: $out"
[[ ! -s elsewhere ]] || fail "the symlink's target was written"
ok "the gateway refuses the symlinked events path, naming it"

step "start the gateway and the laptop"
jvpn_start gw gw gateway "$RUN_DIR/gateway.toml"
wait_listen gw "$PORT" 15 udp
jvpn_start lap lap up "$RUN_DIR/laptop.toml"
wait_ping lap 10.77.0.1 30
ok "the tunnel answers"
wait_log gw 'privileges dropped on every thread' 5 "the gateway's own check of its threads"
wait_log lap 'privileges dropped on every thread' 5 "the laptop's own check of its threads"

# check_threads NAME: every thread of NAME's process is unprivileged; sets THREADS to their count.
THREADS=0
check_threads() {
    local name=$1 pid status task n=0 line
    pid=$(pid_of "$name")
    for status in /proc/"$pid"/task/*/status; do
        task=${status%/status}
        task=${task##*/}
        for field in Uid Gid; do
            line=$(grep "^$field:" "$status" | cut -f2-)
            for id in $line; do
                [[ $id != 0 ]] || fail "$name thread $task ($(cat /proc/"$pid"/task/"$task"/comm)): $field: $line"
            done
        done
        for field in CapEff CapPrm CapInh CapAmb; do
            line=$(grep "^$field:" "$status" | cut -f2)
            [[ $line =~ ^0+$ ]] || fail "$name thread $task ($(cat /proc/"$pid"/task/"$task"/comm)): $field: $line"
        done
        line=$(grep '^NoNewPrivs:' "$status" | cut -f2)
        [[ $line == 1 ]] || fail "$name thread $task: NoNewPrivs: $line"
        n=$((n + 1))
    done
    THREADS=$n
}

step "every thread of both nodes"
for name in gw lap; do
    check_threads "$name"
    threads=$THREADS
    ((threads >= 3)) || fail "$name has only $threads threads (expected the packet loop, the runtime's worker and the writers)"
    ok "$name: $threads threads, Uid/Gid not 0, no capabilities, NoNewPrivs 1: $(grep -E '^(Uid|CapEff):' /proc/"$(pid_of "$name")"/status | tr '\t\n' '  ')"
done

step "the tunnel after the drop"
assert_ok "laptop -> gateway through the tunnel" nsx lap ping -n -c 3 -i 0.2 -W 2 10.77.0.1
assert_ok "gateway -> laptop through the tunnel" nsx gw ping -n -c 3 -i 0.2 -W 2 10.77.0.2
assert_file_has "events are still written after the drop" "$RUN_DIR/lap.jsonl" SessionStateChange

bg_stop lap TERM 10 || fail "laptop did not stop"
bg_stop gw TERM 10 || fail "gateway did not stop"
assert_fails "the laptop's TUN device is gone after SIGTERM" link_exists lap jvpn0
echo "PASS privileges"
