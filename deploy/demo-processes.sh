#!/usr/bin/env bash
# The topology of `lienthong demo`, run as separate processes on this machine: the built-in
# backends, the registries of VN (NDXP) and VN-NA (Nghệ An's LGSP), federated, four nodes and
# one audit service per instance, each one a `lienthong` process with its own configuration
# file (from config/demo/) and its own log. Every step goes through the ordinary CLI, as an
# operator would run it.
#
#   deploy/demo-processes.sh            set up (first run) or reopen (later runs), start
#                                       everything, print the URLs, run until Ctrl-C
#   deploy/demo-processes.sh --check    the same, then one cross-instance call and one denied
#                                       call; stop everything and exit 0 if both came out right
#   --dir DIR                           run directory (default: target/demo-processes)
#
# The binary is target/release/lienthong (built with `cargo build --release` when missing), or
# $LIENTHONG. Ports are fixed (see config/demo/); they must be free.

set -euo pipefail

usage() {
    cat <<'EOF'
Usage: deploy/demo-processes.sh [--check] [--dir DIR]

Runs the `lienthong demo` topology (two federated instances, their registries, four nodes,
the backends and two audit services) as separate processes on this machine.

  --check     stop after one successful cross-instance call and one denied call (exit 0)
  --dir DIR   run directory: keys, stores, configurations, logs (default: target/demo-processes);
              a second run reuses what the first one set up
  -h, --help  this help

Environment: LIENTHONG  the lienthong binary (default: target/release/lienthong, built if
missing).
EOF
}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
TEMPLATES="$ROOT/config/demo"

CHECK=0
DIR_ARG="$ROOT/target/demo-processes"
while (($# > 0)); do
    case "$1" in
        --check) CHECK=1 ;;
        --dir)
            (($# >= 2)) || { echo "error: --dir needs a directory" >&2; exit 2; }
            DIR_ARG=$2
            shift
            ;;
        --dir=*) DIR_ARG=${1#--dir=} ;;
        -h | --help) usage; exit 0 ;;
        *) echo "error: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# ----- the topology (the same as crates/lienthong-demo/src/world.rs) ---------------------------

# Fixed ports; they must match config/demo/*.toml.
VN_HTTP=5580
NA_HTTP=5680
VN_AUDIT=5590
NA_AUDIT=5690
BACKEND_PORTS=(7001 7002 7003) # population register, business registration, civil status
ALL_PORTS=(5580 5581 5680 5681 5590 5690 8101 8441 5501 8102 8442 5502 8103 8443 5503
    8201 8444 5601 7001 7002 7003)

LEGAL_BASIS="Nghị định 47/2020/NĐ-CP về quản lý, kết nối và chia sẻ dữ liệu số"

# instance key|member|name
MEMBERS=(
    "vn|VN/GOV/000.00.00.G01|Bộ Công an"
    "vn|VN/GOV/000.00.00.G09|Bộ Tài chính"
    "vn|VN/GOV/000.00.00.G02|Văn phòng Chính phủ"
    "na|VN-NA/GOV/000.00.00.H40|Ủy ban nhân dân tỉnh Nghệ An"
)
# instance key|member|subsystem code|name
SUBSYSTEMS=(
    "vn|VN/GOV/000.00.00.G01|dancu|Cơ sở dữ liệu quốc gia về dân cư"
    "vn|VN/GOV/000.00.00.G09|dkkd|Hệ thống thông tin quốc gia về đăng ký doanh nghiệp"
    "vn|VN/GOV/000.00.00.G02|cong-dvc|Cổng Dịch vụ công quốc gia"
    "na|VN-NA/GOV/000.00.00.H40|so-tu-phap|Sở Tư pháp"
    "na|VN-NA/GOV/000.00.00.H40|so-khdt|Sở Kế hoạch và Đầu tư"
)
# node key|instance key|node id|r1 port|peer port|hosted subsystems (space-separated)
NODES=(
    "bca|vn|VN/GOV/000.00.00.G01/ss-bca|8101|5501|VN/GOV/000.00.00.G01/dancu"
    "btc|vn|VN/GOV/000.00.00.G09/ss-btc|8102|5502|VN/GOV/000.00.00.G09/dkkd"
    "vpcp|vn|VN/GOV/000.00.00.G02/ss-vpcp|8103|5503|VN/GOV/000.00.00.G02/cong-dvc"
    "lgsp-na|na|VN-NA/GOV/000.00.00.H40/lgsp-na|8201|5601|VN-NA/GOV/000.00.00.H40/so-tu-phap VN-NA/GOV/000.00.00.H40/so-khdt"
)
# node key|service|description
SERVICES=(
    "bca|VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan|Tra cứu thông tin công dân theo số định danh"
    "btc|VN/GOV/000.00.00.G09/dkkd/tra-cuu-doanh-nghiep|Tra cứu thông tin doanh nghiệp theo mã số thuế"
    "lgsp-na|VN-NA/GOV/000.00.00.H40/so-tu-phap/khai-sinh|Tra cứu đăng ký khai sinh"
)
# granting instance key|service|client
GRANTS=(
    "vn|VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan|VN/GOV/000.00.00.G02/cong-dvc"
    "vn|VN/GOV/000.00.00.G09/dkkd/tra-cuu-doanh-nghiep|VN/GOV/000.00.00.G02/cong-dvc"
    "vn|VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan|VN-NA/GOV/000.00.00.H40/so-tu-phap"
    "vn|VN/GOV/000.00.00.G09/dkkd/tra-cuu-doanh-nghiep|VN-NA/GOV/000.00.00.H40/so-khdt"
    "na|VN-NA/GOV/000.00.00.H40/so-tu-phap/khai-sinh|VN/GOV/000.00.00.G02/cong-dvc"
)
AUDITOR="kiem-toan-demo"

# The calls that prove the topology: a Nghệ An department asks the national population register
# (granted), and another one asks the same (no grant: denied).
CALL_URL="http://127.0.0.1:8201/r1/VN/GOV/000.00.00.G01/dancu/tra-cuu-cong-dan/cong-dan/040088356789"
GRANTED_CLIENT="VN-NA/GOV/000.00.00.H40/so-tu-phap"
DENIED_CLIENT="VN-NA/GOV/000.00.00.H40/so-khdt"
DENIED_ERROR="server.serverproxy.access_denied"

# In the templates: the run directory's default, relative to config/demo/, and the auditor key
# digest's placeholder.
TEMPLATE_RUN_DIR="../../target/demo-processes"
DIGEST_PLACEHOLDER="0000000000000000000000000000000000000000000000000000000000000000"

instance_id() { if [[ $1 == vn ]]; then echo VN; else echo VN-NA; fi; }
other_key() { if [[ $1 == vn ]]; then echo na; else echo vn; fi; }

# ----- output, failure ----------------------------------------------------------------------

say() { printf '%s\n' "$*" >&2; }

# The last lines of a log, indented.
show_tail() {
    local log=$1
    if [[ -s $log ]]; then
        say "--- last lines of $log:"
        tail -n 25 "$log" | sed 's/^/    /' >&2
        say "---"
    fi
}

die() {
    say "error: $1"
    if (($# > 1)); then show_tail "$2"; fi
    exit 1
}

# ----- preparation --------------------------------------------------------------------------

command -v curl >/dev/null || die "curl is needed"
mkdir -p "$DIR_ARG"
RUN=$(cd "$DIR_ARG" && pwd -P)
# The path goes into TOML strings as it is.
case "$RUN" in
    *'"'* | *\\*) die "the run directory's path must not contain '\"' or '\\': $RUN" ;;
esac
LOGS="$RUN/logs"
CONFIG="$RUN/config"
SETUP_LOG="$LOGS/setup.log"
mkdir -p "$LOGS" "$CONFIG"

if [[ -n ${LIENTHONG:-} ]]; then
    [[ -x $LIENTHONG ]] || die "LIENTHONG=$LIENTHONG is not an executable"
else
    LIENTHONG="$ROOT/target/release/lienthong"
    if [[ ! -x $LIENTHONG ]]; then
        say "• building the release binary (cargo build --release -p lienthong-cli)"
        (cd "$ROOT" && cargo build --release -p lienthong-cli) || die "the build failed"
    fi
fi

for port in "${ALL_PORTS[@]}"; do
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port is in use (is the demo already running?); the demo's ports are fixed"
    fi
done

# Plain log files.
export NO_COLOR=1

# ----- child processes ----------------------------------------------------------------------

PIDS=()
PID_NAMES=()
RUNNING=0 # 1 once everything is up: Ctrl-C is then the ordinary way to stop

# Starts `lienthong ARGS...` in the background, in its own session (Ctrl-C reaches only this
# script, which stops the children in order), with its output in LOGS/NAME.log.
start() {
    local name=$1
    shift
    local log="$LOGS/$name.log"
    : >"$log"
    if command -v setsid >/dev/null; then
        setsid "$LIENTHONG" "$@" </dev/null >>"$log" 2>&1 &
    else
        "$LIENTHONG" "$@" </dev/null >>"$log" 2>&1 &
    fi
    PIDS+=("$!")
    PID_NAMES+=("$name")
}

alive() { kill -0 "$1" 2>/dev/null; }

# Stops one child: SIGTERM (each process shuts down cleanly on it), SIGKILL after 15 s.
stop_one() {
    local pid=$1 name=$2 i
    alive "$pid" || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        alive "$pid" || break
        sleep 0.2
    done
    if alive "$pid"; then
        say "  $name did not stop within 15 s; killing it"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# Newest first: the audit services, the nodes (each closes its log with a checkpoint its
# registry witnesses), the registries, the backends.
stop_all() {
    local i
    ((${#PIDS[@]} > 0)) || return 0
    say "• stopping ${#PIDS[@]} processes"
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_one "${PIDS[$i]}" "${PID_NAMES[$i]}"
    done
    PIDS=()
    PID_NAMES=()
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    exit "$rc"
}
on_signal() {
    if ((RUNNING)); then exit 0; else exit "$1"; fi
}
trap on_exit EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# A child that has died: its name and the tail of its log.
check_children() {
    local i
    for i in "${!PIDS[@]}"; do
        if ! alive "${PIDS[$i]}"; then
            die "${PID_NAMES[$i]} stopped unexpectedly" "$LOGS/${PID_NAMES[$i]}.log"
        fi
    done
}

# Waits (at most SECONDS_MAX) until URL answers; `ok` wants a 2xx status, `any` any HTTP answer.
wait_http() {
    local name=$1 url=$2 want=$3 max=$4 code deadline
    deadline=$((SECONDS + max))
    while ((SECONDS < deadline)); do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" 2>/dev/null) || true
        if [[ $want == any && $code != 000 && -n $code ]] || [[ $code == 2?? ]]; then
            return 0
        fi
        check_children
        sleep 0.3
    done
    die "$name did not answer $url within $max s (last status: ${code:-none})" "$LOGS/$name.log"
}

# ----- running the CLI ----------------------------------------------------------------------

OUT=""
# Runs `lienthong ARGS...` in the foreground: its output in OUT and appended to setup.log.
cli() {
    local rc=0
    OUT=$("$LIENTHONG" "$@" 2>&1) || rc=$?
    {
        printf '$ lienthong'
        printf ' %q' "$@"
        printf '\n%s\n(exit %s)\n\n' "$OUT" "$rc"
    } >>"$SETUP_LOG"
    return "$rc"
}

# The same, failing the script (with the output) if the command fails.
must() {
    if ! cli "$@"; then
        say "error: lienthong $1 $2 failed:"
        printf '%s\n' "$OUT" | tail -n 25 | sed 's/^/    /' >&2
        exit 1
    fi
}

# Whether TEXT has a line starting with PREFIX (literally).
has_line_prefix() {
    local text=$1 prefix=$2 line
    while IFS= read -r line; do
        [[ $line == "$prefix"* ]] && return 0
    done <<<"$text"
    return 1
}

# Whether `registry member list` output TEXT shows subsystem CODE under MEMBER.
has_subsystem() {
    local text=$1 member=$2 code=$3 line current=""
    while IFS= read -r line; do
        if [[ $line != " "* ]]; then
            current=${line%%  *}
        elif [[ $current == "$member" && $line == "    subsystem $code  "* ]]; then
            return 0
        fi
    done <<<"$text"
    return 1
}

# Writes CONFIG/NAME from config/demo/NAME: paths into the run directory, the key digest (if
# given) in place of the placeholder.
render() {
    local name=$1 digest=${2:-} text
    text=$(<"$TEMPLATES/$name")
    [[ $text == *"$TEMPLATE_RUN_DIR"* ]] || die "$TEMPLATES/$name does not mention $TEMPLATE_RUN_DIR"
    text=${text//"$TEMPLATE_RUN_DIR"/"$RUN"}
    if [[ -n $digest ]]; then
        [[ $text == *"$DIGEST_PLACEHOLDER"* ]] || die "$TEMPLATES/$name has no key digest placeholder"
        text=${text//"$DIGEST_PLACEHOLDER"/"$digest"}
    fi
    {
        printf '# Written by deploy/demo-processes.sh from config/demo/%s: edit that file.\n\n' "$name"
        printf '%s\n' "$text"
    } >"$CONFIG/$name"
}

registry_config() { echo "$CONFIG/registry-$1.toml"; }
anchor_of() { echo "$RUN/$1/registry/anchor.json"; }

# ----- 1. backends ----------------------------------------------------------------------------

: >"$SETUP_LOG"
say "• run directory: $RUN (logs in $LOGS)"
say "• backends: population register, business registration, civil status"
start backends demo --backends "$(IFS=,; echo "${BACKEND_PORTS[*]}")"
wait_http backends "http://127.0.0.1:${BACKEND_PORTS[0]}/cong-dan/040088356789" ok 30
wait_http backends "http://127.0.0.1:${BACKEND_PORTS[2]}/khai-sinh/KS-2023-000125" ok 30

# ----- 2. registries --------------------------------------------------------------------------

for key in vn na; do
    render "registry-$key.toml"
    if [[ -f "$RUN/$key/registry/registry.redb" ]]; then
        say "• registry $(instance_id "$key"): set up already"
    else
        say "• registry $(instance_id "$key"): registry init"
        must registry init --config "$(registry_config "$key")" --no-passphrase \
            --admin-name "Quản trị viên demo" --member-class "GOV=Cơ quan nhà nước"
    fi
    start "registry-$key" registry serve --config "$(registry_config "$key")"
done
wait_http registry-vn "http://127.0.0.1:$VN_HTTP/anchor.json" ok 30
wait_http registry-na "http://127.0.0.1:$NA_HTTP/anchor.json" ok 30

# Members, subsystems and the federation partner, those not there yet.
for key in vn na; do
    cfg=$(registry_config "$key")
    must registry member list --config "$cfg"
    members=$OUT
    for entry in "${MEMBERS[@]}"; do
        IFS='|' read -r inst member name <<<"$entry"
        [[ $inst == "$key" ]] || continue
        if ! has_line_prefix "$members" "$member  "; then
            must registry member add "$member" --name "$name" --config "$cfg"
            say "  added member $member ($name)"
        fi
    done
    must registry member list --config "$cfg"
    members=$OUT
    for entry in "${SUBSYSTEMS[@]}"; do
        IFS='|' read -r inst member code name <<<"$entry"
        [[ $inst == "$key" ]] || continue
        if ! has_subsystem "$members" "$member" "$code"; then
            must registry subsystem add "$member/$code" --name "$name" --config "$cfg"
            say "  added subsystem $member/$code ($name)"
        fi
    done
    other=$(other_key "$key")
    must registry partner list --config "$cfg"
    if ! has_line_prefix "$OUT" "$(instance_id "$other")  "; then
        must registry partner add --anchor "$(anchor_of "$other")" --config "$cfg"
        say "  $(instance_id "$key") now trusts $(instance_id "$other")"
    fi
done

# ----- 3. audit services' credentials ---------------------------------------------------------

declare -A API_KEY
for key in vn na; do
    dir="$RUN/$key/audit"
    mkdir -p "$dir"
    if [[ ! -s "$dir/api-key.txt" || ! -s "$dir/api-key.sha256" ]]; then
        must audit api-key --name "$AUDITOR"
        api_key=$(printf '%s\n' "$OUT" | sed -n '2s/^ *//p')
        digest=$(printf '%s\n' "$OUT" | sed -n 's/^api_key_sha256 = "\([0-9a-f]\{64\}\)"$/\1/p')
        [[ -n $api_key && -n $digest ]] || die "could not read the API key from \`audit api-key\`" "$SETUP_LOG"
        (umask 077 && printf '%s\n' "$api_key" >"$dir/api-key.txt")
        printf '%s\n' "$digest" >"$dir/api-key.sha256"
    fi
    API_KEY[$key]=$(<"$dir/api-key.txt")
    render "audit-$key.toml" "$(<"$dir/api-key.sha256")"
    if [[ -f "$dir/collector.pem" ]]; then
        say "• audit service $(instance_id "$key"): set up already"
    else
        say "• audit service $(instance_id "$key"): audit init"
        must audit init --config "$CONFIG/audit-$key.toml" --no-passphrase
    fi
done

# ----- 4. nodes, services, grants ---------------------------------------------------------------

for entry in "${NODES[@]}"; do
    IFS='|' read -r node inst id _ peer subsystems <<<"$entry"
    render "node-$node.toml"
    args=(node init --dir "$RUN/$inst/$node/node" --anchor "$(anchor_of "$inst")" --node "$id"
        --address "https://127.0.0.1:$peer" --no-passphrase --wait 30s)
    for s in $subsystems; do args+=(--subsystem "$s"); done
    if cli "${args[@]}"; then
        [[ $OUT == *" is set up in "* ]] || die "node init of $id did not finish" "$SETUP_LOG"
        say "• node $id: set up (registered, certificates issued, subsystems hosted)"
    elif [[ $OUT == *"already holds a set-up node"* ]]; then
        say "• node $id: set up already"
    else
        die "node init of $id failed" "$SETUP_LOG"
    fi
done

for entry in "${SERVICES[@]}"; do
    IFS='|' read -r node service description <<<"$entry"
    for n in "${NODES[@]}"; do
        IFS='|' read -r key inst _ <<<"$n"
        [[ $key == "$node" ]] && break
    done
    must registry service list --provider "${service%/*}" --config "$(registry_config "$inst")"
    if ! has_line_prefix "$OUT" "$service  "; then
        must node publish --dir "$RUN/$inst/$node/node" --service "$service" --endpoint 'GET:/*' \
            --description "$description"
        say "  published $service"
    fi
done

for entry in "${GRANTS[@]}"; do
    IFS='|' read -r inst service client <<<"$entry"
    cfg=$(registry_config "$inst")
    must registry grant list --service "$service" --config "$cfg"
    granted=0
    while IFS= read -r line; do
        if [[ $line == *" $client -> $service  "* && $line == *"in force" ]]; then granted=1; fi
    done <<<"$OUT"
    if ((!granted)); then
        must registry grant add --service "$service" --client "$client" --endpoint "GET /*" \
            --legal-basis "$LEGAL_BASIS" --config "$cfg"
        say "  granted $client -> $service"
    fi
done

# ----- 5. serving ---------------------------------------------------------------------------------

say "• starting the nodes and the audit services"
for entry in "${NODES[@]}"; do
    IFS='|' read -r node _ <<<"$entry"
    start "node-$node" node serve --config "$CONFIG/node-$node.toml"
done
for key in vn na; do
    start "audit-$key" audit serve --config "$CONFIG/audit-$key.toml"
done
for entry in "${NODES[@]}"; do
    IFS='|' read -r node _ _ r1 _ <<<"$entry"
    wait_http "node-$node" "http://127.0.0.1:$r1/readyz" ok 30
done
wait_http audit-vn "http://127.0.0.1:$VN_AUDIT/" any 30
wait_http audit-na "http://127.0.0.1:$NA_AUDIT/" any 30

# ----- 6. the first cross-instance call -------------------------------------------------------------

# One call: prints the status; the headers go to $1.headers, the body to $1.body.
call() {
    local base=$1 client=$2
    curl -s --max-time 30 -D "$base.headers" -o "$base.body" -w '%{http_code}' \
        -H "X-Road-Client: $client" "$CALL_URL" 2>/dev/null || echo 000
}

say "• waiting for the first cross-instance call (VN-NA → VN) to go through"
deadline=$((SECONDS + 60))
status=000
while ((SECONDS < deadline)); do
    status=$(call "$LOGS/call" "$GRANTED_CLIENT")
    [[ $status == 200 ]] && break
    check_children
    sleep 1
done
if [[ $status != 200 ]]; then
    say "error: the cross-instance call did not succeed within 60 s (last status $status)"
    sed 's/^/    /' "$LOGS/call.headers" "$LOGS/call.body" >&2 2>/dev/null || true
    show_tail "$LOGS/node-lgsp-na.log"
    show_tail "$LOGS/node-bca.log"
    exit 1
fi
say "  200 OK: $(tr -d '\n' <"$LOGS/call.body" | cut -c1-160)"

cat <<EOF

Lienthong demo topology as separate processes: NDXP (VN) and Nghệ An LGSP (VN-NA)

dashboards (log in with the API key):
  VN     http://127.0.0.1:$VN_AUDIT/  key ${API_KEY[vn]}
  VN-NA  http://127.0.0.1:$NA_AUDIT/  key ${API_KEY[na]}

X-Road REST r1 endpoints:
EOF
for entry in "${NODES[@]}"; do
    IFS='|' read -r _ _ id r1 _ <<<"$entry"
    printf '  %-36s http://127.0.0.1:%s/r1/\n' "$id" "$r1"
done
cat <<EOF

a cross-instance call (a Nghệ An department asks the national population register):
  curl -H 'X-Road-Client: $GRANTED_CLIENT' $CALL_URL

configurations: $CONFIG
logs:           $LOGS
EOF

if ((CHECK)); then
    status=$(call "$LOGS/denied" "$DENIED_CLIENT")
    error=$(tr -d '\r' <"$LOGS/denied.headers" | sed -n 's/^[Xx]-[Rr]oad-[Ee]rror: *//p' | head -n 1)
    if [[ $error != "$DENIED_ERROR" ]]; then
        die "the call without a grant came back $status with X-Road-Error '${error}', not $DENIED_ERROR" \
            "$LOGS/node-bca.log"
    fi
    say "• check: the call without a grant ($DENIED_CLIENT) was refused: $status $error"
    # The audit service takes the auditor's key (the digest in its configuration).
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
        -H "Authorization: Bearer ${API_KEY[vn]}" "http://127.0.0.1:$VN_AUDIT/api/v1/sharing") || true
    [[ $code == 200 ]] || die "the VN audit API refused the demo's API key ($code)" "$LOGS/audit-vn.log"
    say "• check: the VN audit API accepts the demo's API key"
    stop_all
    # Stopped, each node's log closes with a witnessed checkpoint: all of it must verify.
    for entry in "${NODES[@]}"; do
        IFS='|' read -r node inst id _ <<<"$entry"
        must log verify "$RUN/$inst/$node/node/log" --anchor "$(anchor_of "$inst")"
        records=$(printf '%s\n' "$OUT" | sed -n 's/^records: *//p')
        checkpoints=$(printf '%s\n' "$OUT" | sed -n 's/^checkpoints: *//p')
        say "• check: the log of $id verifies: $records records; checkpoints: $checkpoints"
    done
    say "• check passed"
    exit 0
fi

RUNNING=1
say ""
say "running; Ctrl-C stops everything"
while true; do
    check_children
    sleep 1
done
