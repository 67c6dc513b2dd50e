#!/usr/bin/env python3
"""A stand-in DNS server for the demo: answers A queries for one name, NXDOMAIN otherwise.

    fake-dns.py ADDRESS NAME ANSWER

Listens on UDP ADDRESS:53 until killed. Used by scripts/demo.sh as "the internet's" resolver
in a namespace of the demo's own (the machine's network is never touched).
"""
import socket
import sys


def question(q):
    labels, i = [], 12
    while q[i]:
        labels.append(q[i + 1:i + 1 + q[i]].decode())
        i += 1 + q[i]
    return ".".join(labels), i + 5


def main():
    addr, name, answer = sys.argv[1:4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, 53))
    ip = bytes(int(x) for x in answer.split("."))
    while True:
        q, peer = s.recvfrom(4096)
        try:
            asked, end = question(q)
        except (IndexError, UnicodeDecodeError):
            continue
        found = asked.lower() == name.lower()
        r = q[:2] + bytes([0x81, 0x80 if found else 0x83, 0, 1, 0, int(found), 0, 0, 0, 0])
        r += q[12:end]
        if found:
            r += bytes([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]) + ip
        s.sendto(r, peer)


if __name__ == "__main__":
    main()
