#!/usr/bin/env python3
"""Open a TAP the way tapmanager hands one out, then exec a command holding it at a fixed fd.

    tapfd-exec.py IFNAME FDNUM [--pre 'shell command'] -- qemu-system-x86_64 ... -netdev tap,id=n0,fd=FDNUM

Creates (or attaches to) TAP IFNAME in the current network namespace with
/dev/net/tun + TUNSETIFF(IFF_TAP | IFF_NO_PI | IFF_VNET_HDR), runs the optional --pre
command (with the TAP existing, e.g. to give it an address and start a DHCP server), moves
the fd to FDNUM without CLOEXEC and execs the rest of argv (same pid). Used by
tests/guest/run-smoke.sh to check QEMU's `-netdev tap,fd=N` path.
"""
import fcntl
import os
import struct
import subprocess
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def main() -> int:
    args = sys.argv[1:]
    if len(args) < 4 or "--" not in args:
        print(__doc__, file=sys.stderr)
        return 2
    sep = args.index("--")
    head, cmd = args[:sep], args[sep + 1:]
    ifname, fdnum = head[0], int(head[1])
    pre = None
    if len(head) >= 4 and head[2] == "--pre":
        pre = head[3]
    if not cmd or len(ifname.encode()) > 15:
        print("bad arguments", file=sys.stderr)
        return 2

    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    ifr = struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    if pre:
        subprocess.run(["/bin/sh", "-c", pre], check=True)
    if fd != fdnum:
        os.dup2(fd, fdnum, inheritable=True)
        os.close(fd)
    else:
        os.set_inheritable(fd, True)
    os.execvp(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main())
