#!/usr/bin/env python3
"""policy_net.py: the servers and probes of the PeerPolicy scenarios (policy_ci_mesh.sh).

  serve ADDR --tcp P1,P2,... --udp P   TCP echo servers on each port and a UDP echo server,
                                       bound to ADDR; runs until killed.
  tcp ADDR PORT TIMEOUT                exit 0 when a TCP connection opens and echoes a line
                                       within TIMEOUT seconds, 1 otherwise.
  udp ADDR PORT TIMEOUT                exit 0 when a UDP request gets its echo, 1 otherwise.
  hold ADDR PORT TRIGGER RESULT        open a TCP connection and echo once (writes "open" to
                                       RESULT), wait for the file TRIGGER, then send again and
                                       write "alive" or "cut" (no echo within 3 s) to RESULT.
"""
import os
import socket
import sys
import threading
import time


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve_tcp(addr, port):
    s = socket.socket(family(addr), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(16)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=echo_conn, args=(conn,), daemon=True).start()


def echo_conn(conn):
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)


def serve_udp(addr, port):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(data, peer)


def serve(argv):
    addr = argv[0]
    tcp = [int(p) for p in argv[argv.index("--tcp") + 1].split(",")] if "--tcp" in argv else []
    udp = int(argv[argv.index("--udp") + 1]) if "--udp" in argv else None
    for p in tcp:
        threading.Thread(target=serve_tcp, args=(addr, p), daemon=True).start()
    if udp is not None:
        threading.Thread(target=serve_udp, args=(addr, udp), daemon=True).start()
    while True:
        time.sleep(3600)


def round_trip(sock, timeout):
    sock.settimeout(timeout)
    sock.sendall(b"ping\n")
    return sock.recv(16) == b"ping\n"


def tcp(addr, port, timeout):
    try:
        with socket.create_connection((addr, int(port)), timeout=float(timeout)) as s:
            return 0 if round_trip(s, float(timeout)) else 1
    except OSError:
        return 1


def udp(addr, port, timeout):
    s = socket.socket(family(addr), socket.SOCK_DGRAM)
    s.settimeout(float(timeout))
    try:
        s.sendto(b"query", (addr, int(port)))
        data, _ = s.recvfrom(64)
        return 0 if data == b"query" else 1
    except OSError:
        return 1


def hold(addr, port, trigger, result):
    try:
        s = socket.create_connection((addr, int(port)), timeout=3)
        ok = round_trip(s, 3)
    except OSError:
        ok = False
    if not ok:
        with open(result, "w") as f:
            f.write("failed")
        return 1
    with open(result, "w") as f:
        f.write("open")
    while not os.path.exists(trigger):
        time.sleep(0.05)
    try:
        ok = round_trip(s, 3)
    except OSError:
        ok = False
    with open(result + ".tmp", "w") as f:
        f.write("alive" if ok else "cut")
    os.rename(result + ".tmp", result)
    return 0


def main():
    cmd, argv = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(argv)
    elif cmd == "tcp":
        sys.exit(tcp(*argv))
    elif cmd == "udp":
        sys.exit(udp(*argv))
    elif cmd == "hold":
        sys.exit(hold(*argv))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
