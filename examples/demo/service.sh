#!/bin/sh
# A misbehaving "service" for `cargo xtask demo`: each step is something inspeq
# must notice the instant it happens. $WORKLOAD is tests' inspeq-workload binary.
set -u
step() { echo "demo: $*" >&2; sleep 0.3; }

step "a worker crashes with exit code 3"
sh -c 'exit 3'

step "a worker is terminated by SIGTERM"
sh -c 'kill -TERM $$'

step "a worker is killed with SIGKILL"
sleep 5 & kill -KILL $!; wait $! 2>/dev/null

step "a worker bloats to 64 MiB (threshold 32 MiB), then frees it"
"$WORKLOAD" alloc 64 300 300

if [ -n "${OOM_CGROUP:-}" ]; then
    step "a worker runs into a 16 MiB memory limit and is OOM-killed"
    sh -c "echo 0 > $OOM_CGROUP/cgroup.procs; exec \"$WORKLOAD\" alloc 128 0 0"
fi

step "the service exits cleanly"
exit 0
