# Helpers for scenario scripts (sourced by /init before the scenario; runs in /tmp).
# phase TEXT   - numbered phase marker: trace_marker + workload.log + host progress
# snap NAME    - pagetypeinfo/buddyinfo/meminfo into /out/snap/<kind>-NAME.txt
# log TEXT     - timestamped line in workload.log
# fail RC TEXT - stop the scenario with a non-zero result
T=/sys/kernel/tracing
_PHASE=0
_now() { cut -d' ' -f1 /proc/uptime; }
log() { echo "[$(_now)] $*"; }
phase() {
  _PHASE=$((_PHASE + 1))
  echo "mtaudit phase $_PHASE: $*" > $T/trace_marker
  log "MARK phase $_PHASE: $*"
  echo "MTAUDIT-PHASE $_PHASE $*" > /dev/console
}
snap() {
  cat /proc/pagetypeinfo > /out/snap/pagetypeinfo-$1.txt
  cat /proc/buddyinfo > /out/snap/buddyinfo-$1.txt
  cat /proc/meminfo > /out/snap/meminfo-$1.txt
  log "snap $1: $(grep -E '^(MemFree|CmaFree)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
}
fail() { echo "$1" > /tmp/.scenario-rc; echo "$2" > /tmp/.scenario-fail; log "FAIL: $2"; exit "$1"; }
meminfo() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo; }
hp() {  # hp SIZE_KB COUNT: set the hugetlb pool of that size, print what we got
  f=/sys/kernel/mm/hugepages/hugepages-${1}kB/nr_hugepages
  [ -w "$f" ] || { log "no hugepages-${1}kB"; return 1; }
  echo "$2" > "$f" 2>/dev/null
  log "nr_hugepages(${1}kB): asked $2 got $(cat $f)"
}
