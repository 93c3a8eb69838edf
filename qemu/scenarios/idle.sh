# idle: boot, trace a few seconds of an idle system, stop. Baseline and CI smoke test.
# mtaudit: memory=1024 timeout=120 buffer_mb=16 phases=2
phase "idle 3s"
snap 00-start
sleep 3
phase "end"
snap 99-end
