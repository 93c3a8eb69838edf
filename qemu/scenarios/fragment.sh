# fragment: pageblock retypes that need no CMA, no isolation and no gigantic pages, so that a
# kernel built without CONFIG_CMA (every Debian amd64 kernel from 6.12 on) can be judged on the
# retypes its tracepoints do reveal.  tmpfs files fill most of memory (movable) with pipes held by
# processes in between (unmovable), every other file is deleted (half-used movable blocks), then
# bursts of unmovable pages (pipes, process stacks and page tables) with min_free_kbytes raised
# and watermark_boost_factor 0 must fall back to movable blocks: mm_page_alloc_extfrag dates
# every steal and every claim of a block.  A second tmpfs fill makes movable allocations fall
# back into the unmovable blocks, compaction moves what is left, everything is released.
# mtaudit: memory=512 smp=2 timeout=600 buffer_mb=32 phases=6
H2M=2048
mkdir -p /tmp/fill && mount -t tmpfs -o size=400m fill /tmp/fill
PIDS=""; NP=0
unmovable() {  # unmovable N: N processes each holding a full pipe (64 KiB of unmovable pages)
  local i=0        # (stops early below 64 MiB free: no OOM with nothing to kill)
  while [ $i -lt $1 ] && [ "$(meminfo MemFree)" -gt 65536 ]; do
    NP=$((NP + 1)); mkfifo /tmp/pipe.$NP
    ( exec 3<>/tmp/pipe.$NP; dd if=/dev/zero bs=4096 count=16 >&3 2>/dev/null; exec sleep 600 ) &
    PIDS="$PIDS $!"; i=$((i + 1))
  done
  log "unmovable: $i more processes holding pipes ($NP in all)"
  sleep 1
}
release_unmovable() { [ -n "$PIDS" ] && kill $PIDS 2>/dev/null; wait 2>/dev/null; PIDS=""; rm -f /tmp/pipe.*; }
fill() {  # fill PREFIX COUNT: 1 MiB files, stop early below 96 MiB free
  local i=0
  while [ $i -lt $2 ]; do
    [ "$(meminfo MemFree)" -lt 98304 ] && break
    dd if=/dev/zero of=/tmp/fill/$1.$i bs=1M count=1 2>/dev/null
    [ $((i % 32)) -eq 31 ] && unmovable 4
    i=$((i + 1))
  done
  log "fill $1: $i files of 1 MiB, MemFree $(meminfo MemFree) kB"
}

phase "tmpfs fill (movable) with pipes in between (unmovable)"
snap 00-start
fill a 320
snap 10-filled

phase "holes: delete every other file (half-used movable blocks)"
for f in /tmp/fill/a.*; do n=${f##*.}; [ $((n % 2)) -eq 0 ] && rm -f "$f"; done
snap 11-holes

phase "unmovable bursts with min_free_kbytes doubled and no watermark boost"
MF=$(cat /proc/sys/vm/min_free_kbytes); WB=$(cat /proc/sys/vm/watermark_boost_factor)
echo $((MF * 2)) > /proc/sys/vm/min_free_kbytes; echo 0 > /proc/sys/vm/watermark_boost_factor
log "min_free_kbytes $MF -> $((MF * 2)), watermark_boost_factor $WB -> 0"
unmovable 96
hp $H2M 24
unmovable 96
snap 20-unmovable

phase "second fill (movable falls back into unmovable blocks), then compaction"
fill b 128
echo 1 > /proc/sys/vm/compact_memory
snap 30-compacted

phase "release pipes, 2 MiB pool and files; compaction again"
release_unmovable
hp $H2M 0
rm -f /tmp/fill/*
echo "$MF" > /proc/sys/vm/min_free_kbytes; echo "$WB" > /proc/sys/vm/watermark_boost_factor
echo 1 > /proc/sys/vm/compact_memory
snap 40-released

phase "end"
umount /tmp/fill
snap 99-end
