#!/usr/bin/env bash
# scripts/netns.sh: run every netns-tests/*.sh test (a file with a #! line; the libraries they
# source, lib.sh and handover_cases.sh, have none), one after another, and report
# pass / fail / skip per script. Exit 1 if any failed; skips (exit 77: not root, no netns) do not
# fail the run.
#
#   scripts/netns.sh               # all scripts
#   scripts/netns.sh basic         # only netns-tests/basic.sh
#   NETNS_TIMEOUT=600 scripts/netns.sh   # per-script limit (default 420 s); a script may set
#                                         # its own with a header line "# netns-timeout: 900"
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TEST_DIR=$REPO_DIR/netns-tests
PER_SCRIPT_TIMEOUT=${NETNS_TIMEOUT:-420}
SKIP_CODE=77

scripts=()
if (($#)); then
    for name in "$@"; do
        f=$TEST_DIR/${name%.sh}.sh
        [[ -f $f ]] || { echo "no such netns test: $f" >&2; exit 2; }
        scripts+=("$f")
    done
else
    for f in "$TEST_DIR"/*.sh; do
        [[ $(head -c 2 "$f") == '#!' ]] || continue
        scripts+=("$f")
    done
fi
((${#scripts[@]})) || { echo "no netns tests found in $TEST_DIR" >&2; exit 1; }

export PATH="$HOME/.cargo/bin:$PATH"

# Build the release binary once, outside the per-script timeouts (a cold build takes minutes);
# the scripts then use it as it is. Without root they skip anyway, so nothing is built.
if [[ ${JVPN_NO_BUILD:-0} != 1 && $(id -u) -eq 0 ]]; then
    echo "=== netns: cargo build --release --bin jvpn"
    locked=()
    [[ ${CI:-} == true ]] && locked=(--locked)
    if ! (cd "$REPO_DIR" && cargo build --release --bin jvpn "${locked[@]}"); then
        echo "=== netns: FAIL: cargo build --release failed"
        echo "netns: 0 passed, ${#scripts[@]} failed, 0 skipped"
        exit 1
    fi
    export JVPN_NO_BUILD=1
fi

passed=() failed=() skipped=()
for f in "${scripts[@]}"; do
    name=$(basename "$f" .sh)
    echo "=== netns: $name"
    start=$SECONDS
    rc=0
    # --kill-after: a script that ignores TERM is killed; its own EXIT trap does the cleanup.
    # A script may ask for more time with a header line "# netns-timeout: SECONDS".
    limit=$(sed -n 's/^# netns-timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n 1)
    limit=${limit:-$PER_SCRIPT_TIMEOUT}
    tag=$(printf 'n%05d%04x' "$$" "$((RANDOM % 65536))")
    JVPN_RUN_TAG=$tag timeout --kill-after=30 "$limit" bash "$f" </dev/null || rc=$?
    # Namespaces named with this script's run tag must be gone; delete leftovers and fail.
    leaked=$(ip netns list 2>/dev/null | awk '{ print $1 }' | grep -E "^jvpn-.*-$tag-" || true)
    if [[ -n $leaked ]]; then
        echo "=== netns: $name leaked namespaces: ${leaked//$'\n'/ }"
        for n in $leaked; do
            for pid in $(ip netns pids "$n" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
            ip netns del "$n" 2>/dev/null || true
        done
        ((rc == 0 || rc == SKIP_CODE)) && rc=1
    fi
    secs=$((SECONDS - start))
    case $rc in
        0) passed+=("$name"); echo "=== netns: $name PASS (${secs}s)" ;;
        "$SKIP_CODE") skipped+=("$name"); echo "=== netns: $name SKIP (${secs}s)" ;;
        124|137) failed+=("$name"); echo "=== netns: $name FAIL: timed out after ${limit}s or killed (exit $rc)" ;;
        *) failed+=("$name"); echo "=== netns: $name FAIL (exit $rc, ${secs}s)" ;;
    esac
done

echo
for n in "${passed[@]}"; do echo "  PASS $n"; done
for n in "${skipped[@]}"; do echo "  SKIP $n"; done
for n in "${failed[@]}"; do echo "  FAIL $n"; done
echo "netns: ${#passed[@]} passed, ${#failed[@]} failed, ${#skipped[@]} skipped"
((${#failed[@]} == 0))
