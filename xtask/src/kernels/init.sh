#!/bin/busybox sh
# The kernel matrix guest's /init (cargo xtask kernels, xtask/src/kernels.rs):
# mounts what the kernel tests use, makes /sys/fs/cgroup a pure cgroup2 with the
# memory controller on for child cgroups, brings up loopback, loads the modules
# the host copied for this kernel, runs /inspeq/job.sh (written for each
# run) between markers on the serial console, and powers off. The host reads the
# markers: no "begin" means the guest never reached its test driver.

/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
for controller in memory pids cpu io; do
    echo "+$controller" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
done
ip link set lo up 2>/dev/null
# Modules the tests need that Debian builds as modules (inet_diag and tcp_diag
# for the sock_diag dump): the host copies them per kernel release, with their
# load order, as there is no modprobe here.
modules=/lib/modules/$(uname -r)
if [ -f "$modules/inspeq-load" ]; then
    while read -r module; do
        insmod "$modules/$module.ko" || echo "inspeq-guest: insmod $module failed"
    done < "$modules/inspeq-load"
fi

echo "inspeq-guest: uname $(uname -r)"
echo "inspeq-guest: cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
# Only emergencies on the console from here on: kernel lines (an OOM kill's
# report) would land in the middle of the test output. `dmesg` still has them.
dmesg -n 1

cd /tmp
echo "==== inspeq-guest begin ===="
sh /inspeq/job.sh
echo "==== inspeq-guest end rc=$? ===="
sync
poweroff -f
