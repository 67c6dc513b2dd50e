#!/bin/bash
# The systemd tier (DESIGN.md §9, tier 4), run as root inside the Debian VM by its agent as
# /tm/run.sh (tests/tests/vm_systemd.rs puts it there with the package and the fake guest).
# systemd is pid 1. It installs the package as a user would, runs the README's first-screen
# command as an unprivileged user, and checks with systemd's own tools what the package
# promises. One line per check, which the test requires by name:
#
#   TM-CHECK <name> ok [detail]  |  TM-CHECK <name> FAIL <detail>
#
# Inputs in /tm: lib.sh (tests/vm/guest/lib.sh), tapmanager_*.deb, fake-qemu (installed as /usr/local/bin/qemu-system-x86_64).
# No network leaves this VM: it has no NIC; uplinks here are dummy links.
set -u
# pass, fail, wait_until, PATH and T0: the helpers both VM tiers share.
. /tm/lib.sh
export DEBIAN_FRONTEND=noninteractive

# check NAME CMD...: ok if CMD succeeds, else FAIL with the end of its output on one line.
check() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(tail -n 6 <<<"$out" | tr '\n' '|')"; fi
}
section() { echo "TM-STEP $* (at $((SECONDS - T0)) s)"; }

# Guests: each runs as alice with a FIFO as its stdin (held open here) so it stays up until
# we close it; its output goes to /run/tm-guest-NAME.out.
declare -A GFD
guest() {
    local name=$1 cmd=$2 fd
    rm -f "/run/tm-guest-$name.in"
    mkfifo "/run/tm-guest-$name.in"
    runuser -l alice -c "$cmd" <"/run/tm-guest-$name.in" >"/run/tm-guest-$name.out" 2>&1 &
    exec {fd}>"/run/tm-guest-$name.in"
    GFD[$name]=$fd
}
stop_guest() {
    local fd=${GFD[$1]:-}
    [ -n "$fd" ] && exec {fd}>&-
    unset "GFD[$1]"
}
guest_out() { cat "/run/tm-guest-$1.out" 2>/dev/null; }
lease_of() { guest_out "$1" | sed -n 's/^TM-LEASE nic=0 .* ip=\([^ ]*\) .*/\1/p' | head -n1; }
# The attachment of network NET in `tapmanager list`: "VM TAP ADDRESS".
listed() { tapmanager list 2>/dev/null | awk -v n="$1" 'NR > 1 && $4 == n { print $1, $5, $7 }'; }
renewals() { guest_out "$1" | grep -c '^TM-RENEW'; }
more_renewals() { [ "$(renewals "$1")" -gt "$2" ]; }
# renew NAME IP: the guest renews its lease (unicast REQUEST at T1) and gets IP again.
renew() {
    local name=$1 want=$2 n
    n=$(renewals "$name")
    echo renew >&"${GFD[$name]}"
    wait_until 20 more_renewals "$name" "$n" || { echo "no answer to the renewal"; return 1; }
    guest_out "$name" | grep '^TM-RENEW' | tail -n1 | grep -qx "TM-RENEW nic=0 ip=$want" ||
        { guest_out "$name" | grep '^TM-RENEW' | tail -n1; return 1; }
}

section boot
systemctl is-system-running --wait >/dev/null
echo "TM-NOTE system $(systemctl is-system-running) after $(cut -d' ' -f1 /proc/uptime) s of uptime"
echo "TM-NOTE /run is mounted $(findmnt -n -o OPTIONS /run)"
netns_before=$(lsns -t net -n -o NS | sort -u | wc -l)
pins_before=$(findmnt -n -t nsfs | wc -l)
install -m 0755 /tm/fake-qemu /usr/local/bin/qemu-system-x86_64

section install
# The README's first command, verbatim, by alice in her home, sudo allowed for it alone.
useradd -m -s /bin/bash alice
echo 'alice ALL=(ALL) NOPASSWD: ALL' >/etc/sudoers.d/tm-tier-alice
cp /tm/tapmanager_*.deb /home/alice/
chown alice: /home/alice/tapmanager_*.deb
check install runuser -l alice -c 'sudo apt install ./tapmanager_*_amd64.deb && sudo adduser "$USER" tapmanager'
rm -f /etc/sudoers.d/tm-tier-alice
check adduser sh -c 'id -nG alice | grep -qw tapmanager'
check unit-files test -f /usr/lib/systemd/system/tapmanager.service -a -f /usr/lib/systemd/system/tapmanager.socket
check socket-enabled-and-listening sh -c 'systemctl is-enabled tapmanager.socket && systemctl is-active tapmanager.socket && test -S /run/tapmanager/tapmanager.sock'
before=$(systemctl is-active tapmanager.service)
[ "$before" = inactive ] && pass service-inactive-before-first-vmwrapper || fail service-inactive-before-first-vmwrapper "$before"

section "the README's first-screen command, as alice"
# Verbatim but for its first word: qemu-system-x86_64 is the fake guest (fake-qemu), which
# ignores the image argument, so the command line is the README's to the letter.
guest default "sg tapmanager -c 'vmwrapper --net default -- qemu-system-x86_64 -accel kvm -m 1G -nographic -snapshot debian-12-nocloud-amd64.qcow2'"
if wait_until 60 grep -q '^TM-LEASE nic=0' /run/tm-guest-default.out &&
    guest_out default | grep -q '^TM-LEASE nic=0 .* ip=10\.77\.0\.[0-9]*/24 router=10\.77\.0\.1 dns=10\.77\.0\.1 '; then
    pass readme-command "$(guest_out default | grep '^TM-LEASE')"
else
    fail readme-command "$(guest_out default | tail -n 5 | tr '\n' '|')"
fi
after=$(systemctl is-active tapmanager.service)
triggered=$(systemctl show -p TriggeredBy --value tapmanager.service)
# The daemon serves the socket systemd holds: ss lists both processes on that listener.
listeners=$(ss -xlpn | grep -F /run/tapmanager/tapmanager.sock)
if [ "$before" = inactive ] && [ "$after" = active ] && grep -q tapmanager.socket <<<"$triggered" &&
    grep -q '"systemd",pid=1' <<<"$listeners" && grep -q '"tapmanager",pid=' <<<"$listeners"; then
    pass socket-activation "inactive -> $after, TriggeredBy=$triggered"
else
    fail socket-activation "before=$before after=$after TriggeredBy=$triggered listeners=$listeners"
fi
state=$(systemctl show -p Type,NotifyAccess,ActiveState,SubState,StatusText tapmanager.service | tr '\n' ' ')
started=$(journalctl -b -u tapmanager.service -o cat | grep -c 'Started tapmanager.service' || true)
# Type=notify: systemd says Started and active only once READY=1 came.
if grep -q 'Type=notify' <<<"$state" && grep -q 'ActiveState=active' <<<"$state" &&
    grep -q 'SubState=running' <<<"$state" && [ "$started" -ge 1 ]; then
    pass ready-notify "$state"
else
    fail ready-notify "$state started=$started"
fi
read -r vm tap addr <<<"$(listed default)"
fields=$(journalctl -t tapmanager "VM=${vm:-none}" -o export 2>/dev/null | grep -aE '^(MESSAGE|VM|UID|PID|NICS|MICROS|SYSLOG_IDENTIFIER)=')
if grep -qx 'MESSAGE=attached' <<<"$fields" && grep -qx "UID=$(id -u alice)" <<<"$fields" &&
    grep -qx 'NICS=1' <<<"$fields" && grep -qx "VM=$vm" <<<"$fields"; then
    pass journal-attach "$(tr '\n' ' ' <<<"$fields")"
else
    fail journal-attach "vm=$vm fields=$(tr '\n' ' ' <<<"$fields")"
fi

# hardening TAG: each hardening option of the installed unit, as the running daemon has it.
hardening() {
    python3 - "$1" <<'EOF'
import os, re, subprocess, sys
tag = sys.argv[1]
unit = "/usr/lib/systemd/system/tapmanager.service"
def res(name, ok, detail=""):
    print(f"TM-CHECK hardening-{tag}-{name} {'ok' if ok else 'FAIL'} {detail}".rstrip())
pid = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "tapmanager.service"],
                     capture_output=True, text=True).stdout.strip()
if not pid or pid == "0":
    res("running", False, "no MainPID"); sys.exit(0)
status = dict(l.split(":", 1) for l in open(f"/proc/{pid}/status") if ":" in l)
status = {k: v.strip() for k, v in status.items()}
ns = lambda p, n: os.readlink(f"/proc/{p}/ns/{n}")
caps = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_SETPCAP": 8, "CAP_NET_BIND_SERVICE": 10,
        "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21,
        "CAP_MKNOD": 27}
def names(mask):
    return [n for n, b in caps.items() if mask >> b & 1] + (["other"] if mask & ~sum(1 << b for b in caps.values()) else [])
opts = {}
for line in open(unit):
    m = re.match(r"^(\w+)=(.*)$", line.strip())
    if m and m.group(1) not in ("Type", "ExecStart", "Restart", "Description", "Documentation",
                                 "After", "Wants", "WantedBy"):
        opts[m.group(1)] = m.group(2).strip()
def shown(prop):
    return subprocess.run(["systemctl", "show", "-p", prop, "--value", "tapmanager.service"],
                          capture_output=True, text=True).stdout.strip()
seccomp = status.get("Seccomp") == "2" and int(status.get("Seccomp_filters", "0")) > 0
for opt, val in opts.items():
    if opt == "CapabilityBoundingSet":
        allowed = sum(1 << caps[c] for c in val.split())
        bnd, eff = int(status["CapBnd"], 16), int(status["CapEff"], 16)
        res(opt, bnd & ~allowed == 0 and eff & ~allowed == 0,
            f"bounding={','.join(names(bnd))} effective={','.join(names(eff))}")
    elif opt == "NoNewPrivileges":
        res(opt, status.get("NoNewPrivs") == "1", f"NoNewPrivs={status.get('NoNewPrivs')}")
    elif opt == "UMask":
        res(opt, status.get("Umask") == val, f"Umask={status.get('Umask')}")
    elif opt == "LimitNOFILE":
        lim = [l for l in open(f"/proc/{pid}/limits") if l.startswith("Max open files")][0].split()
        res(opt, lim[3] == val and lim[4] == val, f"soft={lim[3]} hard={lim[4]}")
    elif opt == "ProtectHostname":
        res(opt, ns(pid, "uts") != ns(1, "uts"), f"uts={ns(pid, 'uts')} pid1={ns(1, 'uts')}")
    elif opt in ("RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality",
                 "MemoryDenyWriteExecute", "RestrictRealtime", "RestrictSUIDSGID",
                 "SystemCallArchitectures"):
        # seccomp filters: systemd applied the option as written, and the daemon runs filtered.
        have = shown(opt)
        same = sorted(have.split()) == sorted(val.split())
        res(opt, seccomp and same, f"systemd: {opt}={have} Seccomp={status.get('Seccomp')} filters={status.get('Seccomp_filters')}")
    else:
        res(opt, False, "no check for this option: add one")
# DESIGN.md §6: the daemon must share the host's mount namespace (its namespace pins, pods).
res("host-mount-namespace", ns(pid, "mnt") == ns(1, "mnt"), f"mnt={ns(pid, 'mnt')} pid1={ns(1, 'mnt')}")
res("host-network-namespace", ns(pid, "net") == ns(1, "net"), f"net={ns(pid, 'net')}")
EOF
}
section "hardening, default network"
hardening default

section "every kind"
# An uplink for the routed kinds and a LAN for macvtap: dummy links (no way out of the VM).
ip link add up0 type dummy && ip addr add 192.0.2.2/24 dev up0 && ip link set up0 up &&
    ip route add default via 192.0.2.1 dev up0
ip link add lan0 type dummy && ip link set lan0 up
mkdir -p /etc/cni/net.d
cat >/etc/cni/net.d/10-tmcni.conflist <<'EOF'
{"cniVersion": "1.0.0", "name": "tmcni", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.60.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "/run/tm-cni-ipam"}}]}
EOF
cat >>/etc/tapmanager/tapmanager.toml <<'EOF'

# Added by the systemd tier: one network of every other kind.
[networks.iso]
kind = "isolated"
range = "169.254.100.0/22"
uplink = "up0"

[networks.nat]
kind = "masquerade"
uplink = "up0"

[networks.mv]
kind = "macvtap"
lower = "lan0"

[networks.cni]
kind = "cni"
cni_network = "tmcni"
cni_bin_dir = "/usr/lib/cni"

[networks.pods]
kind = "pod"
dns = ["10.89.0.1"]
EOF
check config-valid tapmanager check-config /etc/tapmanager/tapmanager.toml
check restart-with-all-kinds systemctl restart tapmanager.service
check still-adopted-after-config-restart sh -c "tapmanager list | grep -q '^$vm '"

qemu="qemu-system-x86_64 -accel kvm -m 1G -nographic -snapshot debian-12-nocloud-amd64.qcow2"
guest iso "vmwrapper --net iso -- $qemu"
guest nat "vmwrapper --net nat -- $qemu"
guest cni "vmwrapper --net cni -- $qemu"
guest mv "vmwrapper --net mv -- $qemu -tm-no-dhcp"
# The pod: alice's own network namespace (an unprivileged unshare), eth0 addressed in it.
guest podns "unshare -Urn sh -c 'ip link add eth0 type veth peer name gw0 && ip addr add 10.89.0.2/24 dev eth0 && ip link set eth0 up && ip link set gw0 up && ip route add default via 10.89.0.1 && echo \$\$ >/tmp/podns.pid && cat >/dev/null'"
wait_until 10 test -s /tmp/podns.pid
podpid=$(cat /tmp/podns.pid 2>/dev/null)
guest pod "vmwrapper --netns /proc/$podpid/ns/net --net pods,take=eth0 -- $qemu"

kind_lease() {
    local name=$1 pattern=$2
    if wait_until 60 grep -q '^TM-LEASE' "/run/tm-guest-$name.out" &&
        guest_out "$name" | grep -q "^TM-LEASE nic=0 .* ip=$pattern "; then
        pass "attach-$name" "$(guest_out "$name" | grep '^TM-LEASE')"
    else
        fail "attach-$name" "$(guest_out "$name" | tail -n 4 | tr '\n' '|') journal: $(journalctl -t tapmanager -n 3 -o cat | tr '\n' '|')"
    fi
}
kind_lease iso '169\.254\.10[0-3]\.[0-9]*/30 router=169\.254\.10[0-3]\.[0-9]*'
kind_lease nat '10\.0\.2\.2/30 router=10\.0\.2\.1'
kind_lease cni '10\.88\.60\.[0-9]*/24 router=10\.88\.60\.1'
kind_lease pod '10\.89\.0\.2/24 router=10\.89\.0\.1'
if wait_until 30 grep -q '^TM-NIC nic=0' /run/tm-guest-mv.out && [ -n "$(listed mv)" ] &&
    ip -d link show | grep -q macvtap; then
    pass attach-macvtap "$(listed mv) $(guest_out mv | grep '^TM-NIC')"
else
    fail attach-macvtap "$(guest_out mv | tail -n 4 | tr '\n' '|')"
fi
section "hardening, every kind attached"
hardening all-kinds

section doctor
check doctor tapmanager doctor

section "restart with guests running"
declare -A TAPS LEASES
for n in default iso nat cni pod mv; do
    net=$n
    case $n in mv) net=mv ;; pod) net=pods ;; esac
    read -r _ t _ <<<"$(listed "$net")"
    TAPS[$n]=$t
    LEASES[$n]=$(lease_of "$n")
done
vms_before=$(tapmanager list | awk 'NR > 1 { print $1 }' | sort)
adopted_before=$(journalctl -b -t tapmanager -o cat | grep -c 'adopted attachment of a live caller')
check restart systemctl restart tapmanager.service
vms_after=$(tapmanager list | awk 'NR > 1 { print $1 }' | sort)
adopted=$(($(journalctl -b -t tapmanager -o cat | grep -c 'adopted attachment of a live caller') - adopted_before))
if [ "$(wc -l <<<"$vms_before")" -eq 6 ] && [ "$vms_before" = "$vms_after" ] && [ "$adopted" -eq 6 ]; then
    pass restart-adopts "$(tr '\n' ' ' <<<"$vms_after")"
else
    fail restart-adopts "before: $(tr '\n' ' ' <<<"$vms_before") after: $(tr '\n' ' ' <<<"$vms_after") adopted: $adopted"
fi
# Each guest's link is the one it had (the host-side TAP or veth; the pod's TAP is in the
# pod) and its DHCP server answers it again.
# A CNI guest's TAP is tap0 in the namespace pinned under the NIC's name.
link_kept() {
    if [ "$1" = cni ]; then
        nsenter --net="/run/tapmanager/netns/$2" ip link show tap0
    else
        ip link show "$2"
    fi
}
for n in default iso nat cni mv; do
    check "restart-keeps-link-$n" link_kept "$n" "${TAPS[$n]:-none}"
done
for n in default iso nat cni pod; do
    check "restart-keeps-dhcp-$n" renew "$n" "${LEASES[$n]:-none}"
done

section "systemd-networkd and NetworkManager running"
links_before=$(ip -o link show | grep -E '^[0-9]+: tm' | sed -E 's/^[0-9]+: //; s/ qlen.*//' | sort)
addrs_before=$(ip -o addr show | grep -E '^[0-9]+: tm' | awk '{print $2, $3, $4}' | sort)
# A host whose networkd would take every link (DHCP on each, foreign addresses dropped): the
# package's 10-tapmanager.network must match tm* first. This test's own links stay out of it.
mkdir -p /etc/systemd/network
printf '[Match]\nName=* !up0 !lan0 !cni0 !veth*\n\n[Network]\nDHCP=ipv4\nLinkLocalAddressing=no\n' \
    >/etc/systemd/network/99-tier-every-link.network
# And whose NetworkManager would manage every device: the package's unmanaged-devices must
# keep tm* out of it.
mkdir -p /etc/NetworkManager/conf.d
printf '[device-tier-every-device]\nmatch-device=*\nmanaged=1\n' \
    >/etc/NetworkManager/conf.d/99-tier-every-device.conf
check enable-networkd-nm systemctl enable --now systemd-networkd.service NetworkManager.service
wait_until 30 sh -c 'nmcli -t -f RUNNING general | grep -q running'
wait_until 30 sh -c 'networkctl list --no-legend | grep -q tm'
sleep 5
nd=$(networkctl list --no-legend --no-pager | awk '$2 ~ /^tm/')
if [ -n "$nd" ] && ! awk '{print $5}' <<<"$nd" | grep -vqx unmanaged; then
    pass networkd-leaves-tm-links "$(awk '{print $2 "=" $5}' <<<"$nd" | tr '\n' ' ')"
else
    fail networkd-leaves-tm-links "$(tr '\n' '|' <<<"$nd")"
fi
nm=$(nmcli -t -f DEVICE,STATE device 2>&1 | grep '^tm')
if [ -n "$nm" ] && ! cut -d: -f2 <<<"$nm" | grep -vqx unmanaged; then
    pass nm-leaves-tm-links "$(tr '\n' ' ' <<<"$nm")"
else
    fail nm-leaves-tm-links "$(nmcli -t -f DEVICE,STATE device 2>&1 | tr '\n' ' ')"
fi
links_after=$(ip -o link show | grep -E '^[0-9]+: tm' | sed -E 's/^[0-9]+: //; s/ qlen.*//' | sort)
addrs_after=$(ip -o addr show | grep -E '^[0-9]+: tm' | awk '{print $2, $3, $4}' | sort)
if [ "$links_before" = "$links_after" ] && [ "$addrs_before" = "$addrs_after" ]; then
    pass tm-links-unchanged "$(wc -l <<<"$links_after") links"
else
    fail tm-links-unchanged "links: $(diff <(echo "$links_before") <(echo "$links_after") | tr '\n' '|') addrs: $(diff <(echo "$addrs_before") <(echo "$addrs_after") | tr '\n' '|')"
fi
check renew-with-network-managers renew default "${LEASES[default]:-none}"

section security
score=$(systemd-analyze security --no-pager tapmanager.service 2>&1 | tail -n 1)
echo "TM-SECURITY-SCORE $score"

section "guests exit, then apt purge"
for n in default iso nat cni mv pod podns; do stop_guest "$n"; done
check guests-released wait_until 30 sh -c '[ $(tapmanager list | tail -n +2 | wc -l) -eq 0 ]'
sleep 1
check purge apt purge -y tapmanager
left_links=$(ip -o link show | grep -E '^[0-9]+: tm' | cut -d: -f2)
[ -z "$left_links" ] && pass purge-no-links || fail purge-no-links "$(tr '\n' ' ' <<<"$left_links")"
sleep 1
netns_after=$(lsns -t net -n -o NS | sort -u | wc -l)
pins_after=$(findmnt -n -t nsfs | wc -l)
# Other network namespaces may only be those of services with PrivateNetwork= (hostnamed's).
foreign=$(lsns -t net -n -o NS,PID | while read -r ns pid; do
    [ "$ns" = "$(readlink /proc/1/ns/net | tr -dc 0-9)" ] && continue
    unit=$(systemctl status "$pid" 2>/dev/null | head -n1 | awk '{print $2}')
    [ "$(systemctl show -p PrivateNetwork --value "$unit" 2>/dev/null)" = yes ] || echo "$ns(pid $pid, $unit)"
done)
[ "$pins_after" -le "$pins_before" ] && [ -z "$foreign" ] &&
    pass purge-no-netns "$netns_after namespaces, $pins_after pinned" ||
    fail purge-no-netns "pins $pins_before -> $pins_after: $(findmnt -n -t nsfs | tr '\n' '|') others: $foreign"
tables=$(nft list tables | grep -i tapmanager)
[ -z "$tables" ] && pass purge-no-nft-tables || fail purge-no-nft-tables "$(tr '\n' ' ' <<<"$tables")"
state=$(ls -d /run/tapmanager /var/lib/tapmanager /etc/tapmanager 2>/dev/null)
[ -z "$state" ] && pass purge-no-state || fail purge-no-state "$(tr '\n' ' ' <<<"$state"): $(find $state | head -n 8 | tr '\n' ' ')"
owned=$(find / \( -path /proc -o -path /sys -o -path /tm \) -prune -o -group tapmanager -print 2>/dev/null)
[ -z "$owned" ] && pass purge-no-group-files || fail purge-no-group-files "$(tr '\n' ' ' <<<"$owned")"
units=$(find /etc/systemd /run/systemd/system /usr/lib/systemd -name 'tapmanager*' 2>/dev/null; systemctl list-units --all --no-legend 'tapmanager*' | awk '$3 != "inactive" && $3 != "not-found"')
[ -z "$units" ] && pass purge-no-units || fail purge-no-units "$(tr '\n' ' ' <<<"$units")"

echo "TM-TIER-DONE $((SECONDS - T0)) s"
