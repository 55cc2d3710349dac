#!/bin/sh
# Set-up shared by README's two commands, idempotent, for a fresh Debian 12 machine as root:
# Debian packages (python3: the partner-link attacker of test/integration/partner-channel.test.ts;
# ipmitool: IPMI fencing; openipmi: ipmi_sim, the simulated BMCs of `chassis up --fencing ipmi`;
# snmp: snmptrap, which sends the alarm notifications; snmptrapd: the manager of test/integration/alarms-snmp.test.ts;
# keepalived: the VRRP peer of bench/peers; nftables: the peers' boards forward the service address to their guests;
# pacemaker corosync crmsh pcs resource-agents fence-agents: `chassis up --manager pacemaker`, the OCF agent
# board/ocf/guest and the fence agent board/fence/fence_understudy_chassis, docs/pacemaker.md; libxml2-utils: xmllint, with which ocf-tester checks the agent's meta-data),
# npm dependencies (npm ci when the lockfile changed), the TypeScript build and the guest images
# (cached by build-guest.sh).
set -eu
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

PACKAGES="qemu-system-x86 socat busybox-static cpio xz-utils gcc libc6-dev iproute2 util-linux kmod u-boot-tools libubootenv-tool grub-common lrzsz iputils-arping python3 ipmitool openipmi snmp snmptrapd keepalived nftables pacemaker corosync crmsh pcs resource-agents fence-agents libxml2-utils"
missing=""
for p in $PACKAGES; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing"
  if [ "$(id -u)" != 0 ]; then echo "setup: must run as root to install packages" >&2; exit 1; fi
  apt-get update -qq
  # Debian starts a package's services as it installs them. None may run on the machine itself (the
  # cluster daemons corosync, pacemaker and pcsd least of all: the chassis runs them inside each
  # simulated board, and the tests start every service they use): deny starts while installing,
  # unless the machine already has its own policy.
  guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# setup.sh: no service starts while it installs packages\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    guard=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends $missing
  if [ -n "$guard" ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# QEMU's own user (board profile qemuUser, default understudy-qemu): a system user with no home and no
# login; in the kvm group when the host has one (/dev/kvm). QEMU is started as it by setpriv.
if [ "$(id -u)" = 0 ]; then
  getent passwd understudy-qemu >/dev/null || useradd --system --no-create-home --shell /usr/sbin/nologin understudy-qemu
  if getent group kvm >/dev/null && ! id -nG understudy-qemu | tr ' ' '\n' | grep -qx kvm; then usermod -a -G kvm understudy-qemu; fi
elif ! getent passwd understudy-qemu >/dev/null; then
  echo "setup: user understudy-qemu missing: run this as root once (or set qemuUser to root in the board profile)" >&2
fi

# The OCF resource agent ocf:understudy:guest (board/ocf/guest, docs/pacemaker.md), where Pacemaker looks for it.
if [ "$(id -u)" = 0 ] && [ -d /usr/lib/ocf/resource.d ]; then
  install -D -m 0755 board/ocf/guest /usr/lib/ocf/resource.d/understudy/guest
fi
# The fence agent fence_understudy_chassis (board/fence, docs/pacemaker.md), where Pacemaker looks for
# fence agents (/usr/sbin/fence_*), beside fence-agents' own; it runs on their library in /usr/share/fence.
if [ "$(id -u)" = 0 ] && [ -f /usr/share/fence/fencing.py ]; then
  install -m 0755 board/fence/fence_understudy_chassis /usr/sbin/fence_understudy_chassis
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.understudy-lock.sha256
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
  echo "$lock_sum" > "$stamp"
fi

echo "setup: compiling TypeScript"
# From scratch: tsc never deletes the output of a source that is gone (a stale test would still run).
rm -rf dist
npx tsc -p tsconfig.json

# The reference guest v1, v2 (call forwarding, state format v2), a deliberately broken v2 for
# aborted-upgrade tests, side by side in image-build/out/; each is skipped when its stamp matches.
sh image-build/build-guest.sh
DX_VERSION=2.0.0 sh image-build/build-guest.sh
DX_VERSION=2.0.0 DX_BREAK=crash sh image-build/build-guest.sh
# A v1 with poison triggers (a REG of crash* crashes it, hang* hangs it) for the poison-input tests
# and `npm start -- --poison`; guests/dx-legacy-poison.json.
DX_BREAK=poison sh image-build/build-guest.sh
