# shellcheck shell=bash disable=SC2034
# scripts/bench/handover.sh: the handover job of scripts/bench.sh. The cases, their faults and
# jvpn's configs and budgets are netns-tests/handover_cases.sh's (the ones netns-tests/roam.sh
# asserts); this file runs every (case, peer) on lib.sh's two-bearer topology and collects the
# results into the H_* tables (scripts/bench/handover_report.sh turns them into the table).
#
# Every (case, peer) runs HO_RUNS times, round-robin (run 1 of every case and peer, then run 2,
# ...), each from a fresh start of the VPN pair on the same topology: restore both bearers, start
# the pair, wait for one ping through the tunnel, start the probes (50 packets/s; receivers first),
# apply the case's event HO_LEAD seconds after the senders started, let the media run HO_TAIL
# seconds after it, stop the pair. Per direction and run: lost = packets sent - distinct packets
# received (tail loss included even when the end marker never arrives), the longest silence (the
# probe's longest_silence_ms, which counts an open silence at the end), and whether the stream was
# flowing again at its end ("resumed").
# (SC2034 is off: scripts/bench.sh and the report read H_*, HO_N, HO_SECONDS.)

HO_LEAD=2.5      # seconds of media before the event
HO_TAIL=4        # seconds of media after the event (after its end, for flapping)
HO_PPS=50

# Per (case, variant, direction): space-separated per-run values.
declare -A H_LOST=() H_SIL=() H_RES=() H_NOTE=() H_PATH=()
declare -A HO_KEYS=()   # jvpn peer -> "gateway-public-key laptop-public-key"
HO_N=0
HO_SECONDS=0
HO_AUDIT=""

# ho_variants CASE PEER: the rows a peer has in a case. A jvpn peer has one per laptop policy of
# the case (the blackhole: voice.toml, then the default), and one more with the audit trail on at
# both ends (default policy), to show that recording never changes a handover.
ho_variants() {
    case $2 in
        jvpn|jvpn-prev)
            local pol out=()
            for pol in $(hc_policies "$1"); do
                if [[ $pol == default ]]; then out+=("$2"); else out+=("$2-$pol"); fi
            done
            echo "${out[*]} $2-audit"
            ;;
        *) echo "$2" ;;
    esac
}

# ho_policy VARIANT: the laptop policy of a jvpn row (default, voice or audit).
ho_policy() { case $1 in *-voice) echo voice ;; *-audit) echo audit ;; *) echo default ;; esac; }

# ho_peer VARIANT: the peer a row belongs to.
ho_peer() { case $1 in jvpn-prev*) echo jvpn-prev ;; jvpn*) echo jvpn ;; *) echo "$1" ;; esac; }

# ho_run: the whole job.
ho_run() {
    local t0=$SECONDS c p v r total=0
    step "topology (handover): laptop with Wi-Fi and cellular (through NAT), gateway"
    tb_topology hlap hgw hrtr
    ok "gateway $TB_ENDPOINT reachable over both bearers"
    for p in "${HO_PEERS[@]}"; do
        [[ $p == jvpn* ]] || continue
        JVPN=$(jvpn_binary "$p") hc_configs "$RUN_DIR/handover-$p"
        HO_KEYS[$p]="$HC_GW_PUB $HC_LAP_PUB"
    done
    for c in "${HO_CASES[@]}"; do
        for p in "${HO_PEERS[@]}"; do
            for v in $(ho_variants "$c" "$p"); do total=$((total + 1)); done
        done
    done
    log "handover: $total rows x $HO_RUNS runs"
    for r in $(seq "$HO_RUNS"); do
        step "handover run $r of $HO_RUNS"
        for c in "${HO_CASES[@]}"; do
            for p in "${HO_PEERS[@]}"; do
                for v in $(ho_variants "$c" "$p"); do ho_one "$c" "$v" "$r"; done
            done
        done
    done
    tb_restore
    HO_SECONDS=$((SECONDS - t0))
    log "handover: $HO_N runs in ${HO_SECONDS} s"
    for p in "${HO_PEERS[@]}"; do
        if [[ $p == jvpn* ]]; then ho_verify_audit "$p"; fi
    done
    [[ -z $HO_AUDIT ]] || log "audit files after the handover runs:"$'\n'"$HO_AUDIT"
}

# ho_verify_audit PEER: the audit rows' files (every record of every run), checked as one chain
# per node with PEER's binary, into HO_AUDIT and $HO_OUT/PEER-audit-<node>.jsonl.
ho_verify_audit() {
    local p=$1 node f key out keys who=""
    read -r -a keys <<<"${HO_KEYS[$p]}"
    [[ $p == jvpn ]] || who=" ($p)"
    for node in laptop gateway; do
        f=$RUN_DIR/handover-$p/$node-audit.jsonl
        key=${keys[1]}
        [[ $node == gateway ]] && key=${keys[0]}
        if out=$("$(jvpn_binary "$p")" audit verify --key "$key" "$f" 2>&1); then
            HO_AUDIT+="- $node$who: \`jvpn audit verify\`: $(head -n 1 <<<"$out" | sed 's/^[^:]*: //'); $(grep '^bearer transitions' <<<"$out")"$'\n'
        else
            HO_AUDIT+="- $node$who: \`jvpn audit verify\` FAILED: $out"$'\n'
        fi
        cp "$f" "$HO_OUT/$p-audit-$node.jsonl" 2>/dev/null || true
    done
}

# ho_pair_start VARIANT TAG / ho_pair_stop VARIANT TAG: the VPN pair of one run.
ho_pair_start() {
    local v=$1 tag=$2 p pol gw=gateway.toml
    p=$(ho_peer "$v")
    case $p in
        jvpn|jvpn-prev)
            pol=$(ho_policy "$v")
            [[ $pol == audit ]] && gw=gateway-audit.toml
            jvpn_pair_start "$p" "$tag" hlap hgw "$RUN_DIR/handover-$p/$gw" "$RUN_DIR/handover-$p/laptop-$pol.toml"
            ;;
        *) wg_pair_start "$v" "$tag" hlap hgw ;;
    esac
}
ho_pair_stop() {
    case $1 in
        jvpn*) jvpn_pair_stop "$2" ;;
        *) wg_pair_stop "$2" hlap hgw ;;
    esac
}

# ho_wait_tunnel TIMEOUT: until one ping from the laptop through the tunnel answers.
ho_wait_tunnel() {
    local deadline=$((SECONDS + $1))
    until nsx hlap ping -n -c 1 -W 0.5 10.77.0.1 >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
    done
}

# ho_wait_log NAME REGEX TIMEOUT: until the log of a process matches (no failure on timeout).
ho_wait_log() {
    local deadline=$((SECONDS + $3))
    until grep -Eq -- "$2" "$RUN_DIR/$1.log" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.05
    done
}

# ho_at T0 SECONDS COMMAND...: run COMMAND (in the foreground) SECONDS after T0 (date +%s.%N).
ho_at() {
    local t0=$1 n=$2; shift 2
    sleep "$(awk -v t0="$t0" -v n="$n" -v now="$(date +%s.%N)" 'BEGIN { w = t0 + n - now; print (w > 0 ? w : 0) }')"
    "$@"
}

# ho_one CASE VARIANT RUN: one run of one (case, variant); results into H_*.
ho_one() {
    local c=$1 v=$2 r=$3 d p media count dirs note="" t0 c1=""
    HO_N=$((HO_N + 1))
    local tag="ho$HO_N-$v-$c"
    media=$(awk -v l="$HO_LEAD" -v e="$(hc_event_len "$c")" -v t="$HO_TAIL" 'BEGIN { print l + e + t }')
    count=$(awk -v s="$media" -v p="$HO_PPS" 'BEGIN { printf "%d", s * p + 0.5 }')
    read -r -a dirs <<<"$(hc_dirs "$c")"

    tb_restore
    [[ $(hc_start "$c") == cellular ]] && tb_wifi_down
    ho_pair_start "$v" "$tag"
    if ! ho_wait_tunnel 20; then
        warn "$tag: no ping through the tunnel within 20 s; measuring anyway"
        note="no tunnel at start"
    fi
    if [[ $v == jvpn* ]]; then
        ho_wait_log "$tag-lap" 'transport attached' 5 || warn "$tag: jvpn logged no 'transport attached'"
    fi

    ho_probes_start "$tag" "$media" "${dirs[@]}"
    t0=$(date +%s.%N)
    ho_at "$t0" "$HO_LEAD" hc_event "$c"
    # Where does the traffic go once Wi-Fi is back? Packet counters from 1.5 s after the return
    # to the end of the media.
    [[ $c == wifi-returns ]] && c1=$(ho_at "$t0" "$(awk -v l="$HO_LEAD" 'BEGIN { print l + 1.5 }')" ho_counters)
    for d in "${dirs[@]}"; do
        wait_pid_exit "$(pid_of "$tag-$d-send")" 30 || true
    done
    if [[ -n $c1 ]]; then
        local path
        path=$(ho_paths "$c1" "$(ho_counters)")
        H_PATH["$v"]+="$path;"
        log "$tag: after Wi-Fi returned: $path"
    fi
    for d in "${dirs[@]}"; do
        for p in send recv; do
            wait_pid_exit "$(pid_of "$tag-$d-$p")" 30 || fail "$tag: probe $d $p did not finish"
            wait "$(pid_of "$tag-$d-$p")" 2>/dev/null || fail "$tag: probe $d $p failed (see $tag-$d-$p.log)"
        done
    done
    ho_pair_stop "$v" "$tag"
    [[ -n $note ]] && H_NOTE["$c|$v"]=$note
    for d in "${dirs[@]}"; do ho_record "$tag" "$c" "$v" "$r" "$d" "$count"; done
}

# ho_probes_start TAG MEDIA_SECONDS DIR...: the receivers (until they listen), then the senders;
# the current build's `jvpn probe` whichever peer runs.
ho_probes_start() {
    local tag=$1 media=$2 d; shift 2
    for d in "$@"; do
        local rns=hgw addr=10.77.0.1:5001
        [[ $d == down ]] && rns=hlap addr=10.77.0.2:5002
        bg_start "$tag-$d-recv" "$rns" sh -c "exec '$JVPN' probe recv --listen $addr --seconds $(awk -v m="$media" 'BEGIN { print m + 1 }') --expect-pps $HO_PPS --json >'$RUN_DIR/$tag-$d.json'"
    done
    for d in "$@"; do
        ho_wait_log "$tag-$d-recv" 'listening on' 10 || fail "$tag: probe recv ($d) did not start (see $tag-$d-recv.log)"
    done
    for d in "$@"; do
        local sns=hlap addr=10.77.0.1:5001
        [[ $d == down ]] && sns=hgw addr=10.77.0.2:5002
        bg_start "$tag-$d-send" "$sns" "$JVPN" probe send --to "$addr" --pps "$HO_PPS" --seconds "$media"
    done
}

# ho_record TAG CASE VARIANT RUN DIR COUNT: one direction's probe result into H_* and runs.tsv.
ho_record() {
    local tag=$1 c=$2 v=$3 r=$4 d=$5 count=$6 f=$RUN_DIR/$1-$5.json
    [[ -s $f ]] || fail "$tag: probe recv ($d) wrote no JSON"
    cp "$f" "$HO_OUT/$v-$c-run$r-$d.json"
    local received sent last sil lost res
    read -r received sent last sil < <(jq -r '[.received, (.sent // "null"), (.last_seq // "null"), (.longest_silence_ms // "null")] | @tsv' "$f")
    [[ $sent == null ]] && sent=$count
    lost=$((sent - received))
    ((lost >= 0)) || lost=0
    # Resumed: the stream was flowing at its end (the end marker or one of the last 6 packets
    # arrived).
    res=0
    if [[ $(jq -r '.sent // "null"' "$f") != null ]]; then
        res=1
    elif [[ $last != null ]] && ((last >= count - 6)); then
        res=1
    fi
    [[ $sil == null ]] && sil=inf
    ((res)) || sil=inf
    local k="$c|$v|$d"
    H_LOST[$k]+="$lost "
    H_SIL[$k]+="$sil "
    H_RES[$k]+="$res "
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$v" "$r" "$d" "$received" "$sent" "$lost" \
        "$( ((res)) && jq -r '.longest_silence_ms' "$f" || echo never)" >>"$HO_OUT/runs.tsv"
    log "$(printf '%-14s %-18s run %s %-4s: received %3s/%s, lost %3s, longest silence %s ms%s' \
        "$c" "$v" "$r" "$d" "$received" "$sent" "$lost" "$(jq -r '.longest_silence_ms' "$f")" \
        "$( ((res)) || echo ', never resumed')")"
}

# ho_counters: "laptop wlan0 tx, laptop wwan0 tx, gateway gwifi tx, gateway gcell tx" packets.
ho_counters() {
    local n i ns_ out=()
    for n in "hlap wlan0" "hlap wwan0" "hgw gwifi" "hgw gcell"; do
        read -r ns_ i <<<"$n"
        out+=("$(ip -n "$(ns "$ns_")" -s -j link show dev "$i" | jq -r '.[0].stats64.tx.packets')")
    done
    echo "${out[*]}"
}
# ho_paths BEFORE AFTER: which bearer carried each direction between two ho_counters samples.
ho_paths() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        split(a, x, " "); split(b, y, " ")
        for (i = 1; i <= 4; i++) d[i] = y[i] - x[i]
        printf "up %s, down %s", which(d[1], d[2]), which(d[3], d[4])
    }
    function which(w, c) {
        if (w + c < 20) return "none"
        if (w >= 0.9 * (w + c)) return "Wi-Fi"
        if (c >= 0.9 * (w + c)) return "cellular"
        return "both"
    }'
}
