#!/usr/bin/env bash
# scripts/test.sh: the project's test command (README, CI).
#
#   1. cargo fmt --check
#   2. cargo clippy --all-targets -- -D warnings
#   3. cargo test                      (unit tests, simulation, property tests, doc tests)
#   4. scripts/netns.sh                (the netns ring: real binary, namespaces, veth, TUN)
#
# Step 4 needs root, `ip netns`, veth and /dev/net/tun; without them it is skipped and the script
# says why. As root it first installs the Debian packages the netns tests use (iproute2, iperf3,
# tcpdump, ...), and it adds the rustup components rustfmt and clippy if they are missing.
# Every step runs even if an earlier one failed; the exit code is non-zero if any failed.
#
# Usage: scripts/test.sh [--no-netns]
set -euo pipefail

REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=netns-tests/lib.sh
source "$REPO_DIR/netns-tests/lib.sh"
cd "$REPO_DIR"
export PATH="$HOME/.cargo/bin:$PATH"

RUN_NETNS=1
for arg in "$@"; do
    case $arg in
        --no-netns) RUN_NETNS=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done

LOCKED=()
[[ ${CI:-} == true ]] && LOCKED=(--locked)

PASSED=() FAILED=() SKIPPED=()

# run_step NAME COMMAND...: run one step, record its result and duration.
run_step() {
    local name=$1 start=$SECONDS rc=0; shift
    printf '\n%s==> %s%s\n' "$C_BOLD" "$name" "$C_OFF"
    printf '%s$ %s%s\n' "$C_DIM" "$*" "$C_OFF"
    "$@" || rc=$?
    if ((rc == 0)); then
        PASSED+=("$name")
        printf '%s<== %s: ok (%ss)%s\n' "$C_GREEN" "$name" "$((SECONDS - start))" "$C_OFF"
    else
        FAILED+=("$name")
        printf '%s<== %s: FAILED (exit %s, %ss)%s\n' "$C_RED" "$name" "$rc" "$((SECONDS - start))" "$C_OFF"
    fi
}

skip_step() {
    SKIPPED+=("$1")
    printf '\n%s==> %s: SKIPPED: %s%s\n' "$C_YELLOW" "$1" "$2" "$C_OFF"
}

# ensure_rust_components: rustfmt and clippy, through rustup when it is there.
ensure_rust_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    ((${#missing[@]})) || return 0
    if command -v rustup >/dev/null 2>&1; then
        echo "adding rustup components: ${missing[*]}"
        rustup component add "${missing[@]}"
    else
        echo "missing ${missing[*]} and no rustup to add them" >&2
        return 1
    fi
}

echo "jvpn tests: $(cargo --version), $(nproc) cores, $(uname -sr)"
ensure_rust_components || FAILED+=("rust components")

run_step "cargo fmt --check" cargo fmt --all -- --check
run_step "cargo clippy" cargo clippy "${LOCKED[@]}" --all-targets -- -D warnings
run_step "cargo test" cargo test "${LOCKED[@]}"

if ((RUN_NETNS == 0)); then
    skip_step "netns tests" "--no-netns was given"
elif ! netns_available; then
    skip_step "netns tests" "$NETNS_SKIP_REASON (the netns tests need root, 'ip netns', veth and TUN: run 'sudo scripts/test.sh')"
else
    if ensure_netns_tools; then
        run_step "netns tests" bash scripts/netns.sh
    else
        FAILED+=("netns tests")
        echo "could not install the packages the netns tests need" >&2
    fi
fi

echo
for s in "${PASSED[@]}"; do echo "  PASS $s"; done
for s in "${SKIPPED[@]}"; do echo "  SKIP $s"; done
for s in "${FAILED[@]}"; do echo "  FAIL $s"; done
echo "summary: ${#PASSED[@]} passed, ${#FAILED[@]} failed, ${#SKIPPED[@]} skipped"
((${#FAILED[@]} == 0))
