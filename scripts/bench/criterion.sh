# shellcheck shell=bash
# scripts/bench/criterion.sh: the criterion job of scripts/bench.sh (`--criterion`): runs
# `cargo bench --bench datapath` in the repository, keeps its output in $OUT/criterion.txt and its
# summary (benchmark names with their time and throughput lines) in CRIT for the docs.

CRIT=""

# criterion_run: run the benchmarks; CRIT gets the summary, or a note when they failed.
criterion_run() {
    step "criterion: cargo bench --bench datapath"
    if (cd "$REPO_DIR" && timeout 1800 cargo bench --bench datapath) >"$OUT/criterion.txt" 2>&1; then
        CRIT=$(criterion_summary "$OUT/criterion.txt")
    else
        warn "cargo bench --bench datapath failed (see $OUT/criterion.txt)"
        CRIT="(cargo bench --bench datapath failed; see bench/criterion.txt)"
    fi
}

# criterion_summary FILE: keep the benchmark names and their time / throughput lines.
criterion_summary() {
    awk '
        /^Benchmarking|^Warming|^Found|^Gnuplot|^  [0-9]+ \(|^Analyzing|^Collecting/ { next }
        /time:|thrpt:/ { if (name != "") { print name; name = "" } print; next }
        /^[^ ]/ { name = $0 }
    ' "$1"
}

# criterion_section: the docs' "## Criterion" section (nothing when the job did not run).
criterion_section() {
    [[ -n $CRIT ]] || return 0
    echo
    echo "## Criterion: \`cargo bench --bench datapath\`"
    echo
    echo '```'
    echo "$CRIT"
    echo '```'
}
