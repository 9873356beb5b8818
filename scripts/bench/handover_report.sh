# shellcheck shell=bash
# scripts/bench/handover_report.sh: the handover job's results (scripts/bench/handover.sh's H_*
# tables) as the printed table, the budget lines (jvpn's medians against the budgets of
# netns-tests/handover_cases.sh) and the "## Handover" section of docs/BENCHMARKS.md.

# ho_label VARIANT: a row's peer name ("jvpn (voice.toml)", "jvpn-prev, audit on", ...).
ho_label() {
    local p
    p=$(ho_peer "$1")
    case $p in
        jvpn|jvpn-prev)
            case $(ho_policy "$1") in
                voice) echo "$p (voice.toml)" ;;
                audit) echo "$p, audit on" ;;
                *) echo "$p" ;;
            esac
            ;;
        *) label "$1" ;;
    esac
}
# ho_row_label CASE VARIANT: the label, naming the default policy where a case has two.
ho_row_label() {
    local p
    p=$(ho_peer "$2")
    if [[ $p == jvpn* && $(hc_policies "$1") == *" "* && $(ho_policy "$2") != voice ]]; then
        ho_label "$2" | sed "s/^$p/$p (default policy)/"
    else
        ho_label "$2"
    fi
}

# ho_path_note VARIANT: the paths of the wifi-returns runs, "up X, down Y" (with counts if they differ).
ho_path_note() {
    local all=${H_PATH[$1]:-}
    [[ -n $all ]] || return 0
    printf '%s' "$all" | tr ';' '\n' | sed '/^$/d' | sort | uniq -c |
        awk '{ c = $1; $1 = ""; sub(/^ /, ""); out = out (out == "" ? "" : "; ") $0 (c > 1 || NR > 1 ? " (" c "×)" : "") } END { print out }'
}

# median VALUES...: the median (values may be "inf").
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } if (NR % 2) print v[(NR + 1) / 2]; else if (v[NR / 2] == "inf" || v[NR / 2 + 1] == "inf") print "inf"; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# ho_lost / ho_sil CASE VARIANT DIR: the medians for the table ("–" for a direction not run).
ho_lost() {
    local k="$1|$2|$3"
    [[ -n ${H_LOST[$k]:-} ]] || { echo "–"; return; }
    # shellcheck disable=SC2086
    awk -v m="$(median ${H_LOST[$k]})" 'BEGIN { printf "%g", m }'
}
ho_sil() {
    local k="$1|$2|$3" m
    [[ -n ${H_SIL[$k]:-} ]] || { echo "–"; return; }
    # shellcheck disable=SC2086
    m=$(median ${H_SIL[$k]})
    if [[ $m == inf ]]; then echo "never"; else awk -v m="$m" 'BEGIN { printf "%.0f", m }'; fi
}
# ho_resumed CASE VARIANT: yes / no / per direction "up k/n, down k/n".
ho_resumed() {
    local c=$1 v=$2 d all=1 none=1 parts=() k n
    for d in $(hc_dirs "$c"); do
        # shellcheck disable=SC2086
        read -r k n < <(printf '%s\n' ${H_RES["$c|$v|$d"]} | awk '{ s += $1; n++ } END { print s + 0, n + 0 }')
        ((k == n)) || all=0
        ((k == 0)) || none=0
        parts+=("$d $k/$n")
    done
    if ((all)); then echo yes; elif ((none)); then echo no; else
        local joined
        joined=$(IFS=,; echo "${parts[*]}")
        echo "${joined//,/, }"
    fi
}

ho_table() {
    echo "| case | peer | up lost | up longest silence (ms) | down lost | down longest silence (ms) | resumed? |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | --- |"
    local c p v n
    for c in "${HO_CASES[@]}"; do
        n=0
        for p in "${HO_PEERS[@]}"; do
            for v in $(ho_variants "$c" "$p"); do
                local first=""
                ((n == 0)) && first="$(hc_desc "$c")"
                n=$((n + 1))
                local res
                res=$(ho_resumed "$c" "$v")
                [[ -n ${H_NOTE["$c|$v"]:-} ]] && res+=" (${H_NOTE["$c|$v"]})"
                printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$first" "$(ho_row_label "$c" "$v")" \
                    "$(ho_lost "$c" "$v" up)" "$(ho_sil "$c" "$v" up)" \
                    "$(ho_lost "$c" "$v" down)" "$(ho_sil "$c" "$v" down)" "$res"
            done
        done
    done
}

# ho_budgets: the jvpn peers' medians against the cases' budgets, one line per row.
ho_budgets() {
    local c p v
    for c in "${HO_CASES[@]}"; do
        for p in jvpn jvpn-prev; do
            wants "$p" || continue
            for v in $(ho_variants "$c" "$p"); do ho_budget_line "$c" "$v"; done
        done
    done
}

# ho_budget_line CASE VARIANT: "- case, row: budget ...: met" or what missed it.
ho_budget_line() {
    local c=$1 v=$2 d blost bsil lost sil misses=()
    read -r blost bsil <<<"$(hc_budget "$c" "$(ho_policy "$v")")"
    for d in $(hc_dirs "$c"); do
        lost=$(ho_lost "$c" "$v" "$d")
        sil=$(ho_sil "$c" "$v" "$d")
        if awk -v l="$lost" -v m="$blost" 'BEGIN { exit !(l > m) }'; then
            misses+=("$d lost $lost > $blost (by $(awk -v l="$lost" -v m="$blost" 'BEGIN { print l - m }'))")
        fi
        if [[ $sil == never ]]; then
            misses+=("$d never resumed")
        elif awk -v s="$sil" -v m="$bsil" 'BEGIN { exit !(s > m) }'; then
            misses+=("$d silence $sil ms > $bsil ms (by $(awk -v s="$sil" -v m="$bsil" 'BEGIN { print s - m }') ms)")
        fi
    done
    local verdict="met"
    if ((${#misses[@]})); then
        # (IFS only inside the substitution: a `local IFS` would split every later row.)
        verdict="NOT met: $(IFS=';' && echo "${misses[*]}")"
        verdict=${verdict//;/; }
    fi
    printf -- '- %s, %s: budget ≤ %s lost, ≤ %s ms each direction: %s\n' \
        "$(hc_desc "$c")" "$(ho_row_label "$c" "$v")" "$blost" "$bsil" "$verdict"
}

# ho_paths_summary: per peer, where the media went after Wi-Fi came back (empty without that case).
ho_paths_summary() {
    local p out=""
    [[ " ${HO_CASES[*]} " == *" wifi-returns "* ]] || return 0
    for p in "${HO_PEERS[@]}"; do
        out+="- $(ho_label "$p"): $(ho_path_note "$p")"$'\n'
    done
    printf '%s' "${out%$'\n'}"
}

# ho_section: the "## Handover" part of docs/BENCHMARKS.md (always its last section); reads
# HO_TABLE, HO_PATHS, HO_BUDGETS and HO_AUDIT.
ho_section() {
    echo "## Handover"
    echo
    echo "Run $(date -u '+%Y-%m-%d %H:%M UTC') on the machine above; peers: ${HO_PEERS[*]};"
    echo "$HO_RUNS runs per row, $HO_N runs in $HO_SECONDS s. Each cell is the median over the runs"
    echo "(lost packets; longest silence in ms, \"never\" when the stream did not come back within the run);"
    echo "\"resumed?\" says whether the stream was flowing again at the end of each run (per direction,"
    echo "in how many runs, when not all or none). \"–\": that direction carries no media in this case."
    echo
    echo "$HO_TABLE"
    if [[ -n $HO_PATHS ]]; then
        echo
        echo "Where the media went after Wi-Fi came back (the bearer that carried ≥ 90 % of the packets each"
        echo "way, from 1.5 s after the return to the end of the media; per run):"
        echo
        echo "$HO_PATHS"
    fi
    if [[ -n $HO_BUDGETS ]]; then
        echo
        echo "jvpn against the budgets \`netns-tests/roam.sh\` asserts (issue 3), on the medians above:"
        echo
        echo "$HO_BUDGETS"
    fi
    if [[ -n $HO_AUDIT ]]; then
        echo
        echo "The \"jvpn, audit on\" rows run with \`audit = ...\` in both configs: each completed move is"
        echo "signed and appended on the laptop, sent to the gateway and witnessed there (off the data"
        echo "path). Their files after all runs (\`docs/bench/handover/<peer>-audit-<node>.jsonl\`):"
        echo
        printf '%s' "$HO_AUDIT"
    fi
    echo
    echo "### Method"
    echo
    ho_method
}

ho_method() {
    cat <<EOT
- Cases: defined once in \`netns-tests/handover_cases.sh\` (each case's fault, where the session
  starts, the media directions, jvpn's configs and budgets), which \`netns-tests/roam.sh\` asserts
  and \`scripts/bench/handover.sh\` runs here against every peer.
- Topology: \`netns-tests/roam.sh\`'s, built by \`tb_topology\` in \`netns-tests/lib.sh\`: a
  laptop namespace with two bearers, \`wlan0\` 10.20.0.2/24 (a veth straight to the gateway's
  \`gwifi\`) and \`wwan0\` 10.30.0.2/24 (a veth to a router namespace that masquerades UDP to
  ports 20000-20999 towards the gateway's \`gcell\`); the gateway's endpoint 10.10.0.1 sits on its
  \`lo\`. The laptop reaches 10.10.0.1/32 via \`wlan0\` (metric 100) and via \`wwan0\` (metric 200),
  so when the Wi-Fi route goes the kernel routes via cellular. The tunnel: 10.77.0.2/24 (laptop),
  10.77.0.1/24 (gateway), MTU $MTU, gateway UDP port $PORT.
- One difference from roam.sh: the gateway's routes to the two bearer subnets carry
  \`src 10.10.0.1\`, so the gateway answers from its endpoint address whatever socket it uses, as
  a gateway with a single public address would. boringtun's gateway answers from an unbound
  socket: without this its replies leave from 10.20.0.1 or 10.40.0.1, its laptop learns the
  endpoint 10.20.0.1 (only reachable over Wi-Fi), and the NAT drops its replies on cellular, so
  it could not survive any case for a reason no real deployment has. jvpn and wireguard-go answer
  from the address they were reached at and do not need it.
- Each run starts from both bearers working (the blackhole removed, \`wlan0\` up with its address
  and route, the NAT on its first port range, the NAT's conntrack table flushed), starts the VPN
  pair fresh, waits for one ping through the tunnel, then starts \`jvpn probe recv\` (gateway
  10.77.0.1:5001 for the uplink, laptop 10.77.0.2:5002 for the downlink) and then
  \`jvpn probe send --pps $HO_PPS\` in both directions (downlink only in that case). The event comes
  $HO_LEAD s after the senders start; the media runs $HO_TAIL s after it (after its end, for the
  flapping), then the pair is stopped. Runs go round-robin: run 1 of every row, then run 2, ...
- Events (as in roam.sh): link down = \`ip link set wlan0 down\`; address removed = the same then
  \`ip addr flush dev wlan0\`; blackhole = an nftables table on the gateway dropping everything in
  and out of \`gwifi\`; Wi-Fi returns = \`wlan0\` up and, 0.2 s later, its route back (metric 100);
  flapping = 10 × (down, 0.1 s, up + route, 0.1 s); NAT rebinding = the router's UDP masquerade
  moved to ports 30000-30999 and its conntrack table flushed.
- "Wi-Fi returns" and "NAT rebinding" start with \`wlan0\` already down (address kept), so every
  peer's session is made on cellular; roam.sh instead starts jvpn on Wi-Fi and waits for its
  switch, which the WireGuard peers cannot all do.
- Lost: packets sent − distinct packets received, including the ones after the last arrival when
  the sender's end marker never arrives. Longest silence: the probe's \`longest_silence_ms\`, which
  counts the silence still open when the receiver stops ($HO_TAIL s + 1 s after the event at the
  latest); a run in which the stream never came back counts as "never" (the median is "never" when
  more than half of the runs never came back). Resumed: the end marker or one of the last 6 media
  packets arrived.
- jvpn: the default policy, and \`policy/voice.toml\` as a second row for the blackhole; configs as
  in roam.sh. Every case also runs as "jvpn, audit on": the same with the audit trail on at both
  ends (one file per node for all runs). jvpn-prev, when run: the same rows with a previous build
  (\`JVPN_PREV\`); the probes are the current build's for every peer. boringtun (both socket
  modes) and wireguard-go: started as for throughput above, configured with \`wg set\`: gateway
  \`listen-port $PORT\`, laptop \`endpoint 10.10.0.1:$PORT\`, allowed IPs, no persistent keepalive
  (a WireGuard default, and what a user has unless they set one), addresses with \`ip\`.
- Raw outputs: \`docs/bench/handover/<peer>-<case>-run<N>-<up|down>.json\` (the probe receiver's
  JSON) and \`docs/bench/handover/runs.tsv\` (case, peer, run, direction, received, sent, lost,
  longest silence in ms or "never").
- The 2 cores are shared by both VPN processes, both probes' senders and receivers, and anything
  else the machine runs; a silence of a few tens of ms can be scheduling, not the VPN.
EOT
}
