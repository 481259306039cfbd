#!/usr/bin/env python3
"""wgpkt.py: capture, replay and forge WireGuard UDP datagrams for the netns end-to-end tests.

Subcommands (run inside a namespace with `ip netns exec`):
  capture  Sniff one interface with an AF_PACKET socket and save the UDP payload of the first
           datagram of each requested WireGuard message type sent to a port, as <out>/type<N>.bin.
           Writes <out>/ready once the socket is bound, so callers can poll instead of sleeping.
  send     Send the bytes of a file as one UDP datagram (a replay of a captured message); with
           --counter-add N, a transport-data message is forged instead: its 64-bit counter (the
           AEAD nonce) is raised by N, so the counter is fresh but authentication must fail.
  garbage  Send a seeded mix of invalid datagrams and print, as JSON, how many of them a correct
           receiver drops under each reason (malformed, mac1_invalid, unknown_receiver).

Message sizes and the 4-byte little-endian type field follow the WireGuard paper, section 5.4:
initiation (1) is exactly 148 bytes, response (2) 92, cookie reply (3) 64, transport data (4) at
least 32. The Linux module rejects any other length or any type with non-zero reserved bytes.
"""

import argparse
import json
import os
import random
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SIZES = {1: 148, 2: 92, 3: 64}
DATA_MIN = 32


def udp_payload(frame):
    """Returns (dst_port, payload) of an Ethernet frame carrying UDP over IPv4/IPv6, else None."""
    if len(frame) < 14:
        return None
    ethertype = struct.unpack_from("!H", frame, 12)[0]
    ip = frame[14:]
    if ethertype == 0x0800 and len(ip) >= 20 and ip[9] == 17:
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        udp = ip[ihl:total]
    elif ethertype == 0x86DD and len(ip) >= 40 and ip[6] == 17:
        plen = struct.unpack_from("!H", ip, 4)[0]
        udp = ip[40:40 + plen]
    else:
        return None
    if len(udp) < 8:
        return None
    dport, ulen = struct.unpack_from("!2xHH", udp, 0)
    return dport, bytes(udp[8:ulen])


def looks_batched(payload):
    """True if a type-4 payload is several messages glued together (a GSO/GRO super-packet):
    every segment of one batch starts with the same type and receiver index."""
    head = payload[:8]
    return any(payload[off:off + 8] == head for off in range(16, len(payload) - 7, 16))


def cmd_capture(args):
    wanted = {int(t) for t in args.types.split(",")}
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, 0))
    sock.settimeout(0.2)
    os.makedirs(args.out, exist_ok=True)
    open(os.path.join(args.out, "ready"), "w").close()
    deadline = time.monotonic() + args.timeout
    while wanted and time.monotonic() < deadline:
        try:
            frame, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        parsed = udp_payload(frame)
        if parsed is None or parsed[0] != args.port or len(parsed[1]) < 4:
            continue
        payload = parsed[1]
        mtype = struct.unpack_from("<I", payload, 0)[0]
        if mtype not in wanted:
            continue
        if mtype in SIZES and len(payload) != SIZES[mtype]:
            continue
        if mtype == 4 and (len(payload) < args.min_data or len(payload) > 1500
                           or looks_batched(payload)):
            continue
        path = os.path.join(args.out, "type%d.bin" % mtype)
        with open(path + ".tmp", "wb") as f:
            f.write(payload)
        os.rename(path + ".tmp", path)
        print("captured type %d, %d bytes" % (mtype, len(payload)), file=sys.stderr)
        wanted.discard(mtype)
    if wanted:
        sys.exit("capture on %s: no message of type(s) %s to port %d within %ss"
                 % (args.iface, sorted(wanted), args.port, args.timeout))


def target(args):
    family = socket.AF_INET6 if ":" in args.dst else socket.AF_INET
    return family, (args.dst, args.port)


def cmd_send(args):
    family, dst = target(args)
    with open(args.file, "rb") as f:
        payload = bytearray(f.read())
    if args.counter_add:
        if len(payload) < DATA_MIN or payload[:4] != b"\x04\0\0\0":
            sys.exit("--counter-add needs a transport-data message")
        counter = struct.unpack_from("<Q", payload, 8)[0] + args.counter_add
        struct.pack_into("<Q", payload, 8, counter)
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.sendto(payload, dst)


def garbage_datagrams(rng):
    """Yields (reason, description, bytes): what a correct WireGuard receiver counts each
    datagram as, and what it is."""
    def rand(n):
        return bytes(rng.getrandbits(8) for _ in range(n))

    def header(mtype, reserved=b"\0\0\0"):
        return bytes([mtype]) + reserved

    # Too short for any message header.
    for n in (0, 1, 2, 3):
        yield "malformed", "%d bytes, shorter than a message header" % n, rand(n)
    # Random bytes of various lengths whose type is none of 1..4.
    for n in (4, 5, 16, 31, 32, 64, 92, 148, 200, 512, 1000, 1400, 1472):
        first = rng.choice([0] + list(range(5, 256)))
        yield ("malformed", "%d random bytes, type byte %d" % (n, first),
               bytes([first]) + rand(n - 1))
    # A valid type with non-zero reserved bytes.
    for mtype in (1, 2, 3, 4):
        n = SIZES.get(mtype, 64)
        yield ("malformed", "type %d, %d bytes, reserved bytes 01 00 00" % (mtype, n),
               header(mtype, b"\x01\0\0") + rand(n - 4))
    # Handshake messages truncated or padded: their lengths are exact.
    for mtype, size in SIZES.items():
        for n in (4, 8, size // 2, size - 1, size + 1):
            yield ("malformed", "type %d with %d bytes instead of %d" % (mtype, n, size),
                   header(mtype) + rand(n - 4))
    # Transport data shorter than its 16-byte header and 16-byte tag.
    for n in (4, 8, 15, 16, 24, 31):
        yield ("malformed", "type 4 with %d bytes, under the minimum of 32" % n,
               header(4) + rand(n - 4))
    # Correctly sized handshake messages with random content: mac1 cannot verify.
    for _ in range(3):
        yield "mac1_invalid", "type 1, 148 random bytes", header(1) + rand(SIZES[1] - 4)
        yield "mac1_invalid", "type 2, 92 random bytes", header(2) + rand(SIZES[2] - 4)
    # Transport data for a receiver index nobody allocated.
    for n in (32, 48, 128, 1420):
        yield ("unknown_receiver", "type 4, %d bytes, random receiver index" % n,
               header(4) + rand(n - 4))


def cmd_garbage(args):
    """Sends the whole mix (prints counts per reason) or, with --index, one datagram of it
    (prints its reason and description), so a miscount can be traced to the datagram."""
    rng = random.Random(args.seed)
    family, dst = target(args)
    counts = {}
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        for index, (reason, what, payload) in enumerate(garbage_datagrams(rng)):
            if args.index is not None:
                if index == args.index:
                    sock.sendto(payload, dst)
                    print(json.dumps({"index": index, "reason": reason, "what": what}))
                    return
                continue
            sock.sendto(payload, dst)
            counts[reason] = counts.get(reason, 0) + 1
            time.sleep(args.gap)
    if args.index is not None:
        sys.exit("no datagram %d in the mix" % args.index)
    print(json.dumps(counts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--iface", required=True)
    cap.add_argument("--port", type=int, required=True, help="destination UDP port")
    cap.add_argument("--types", default="1,4", help="comma-separated message types")
    cap.add_argument("--out", required=True, help="directory for typeN.bin and ready")
    cap.add_argument("--timeout", type=float, default=20)
    cap.add_argument("--min-data", type=int, default=64,
                     help="smallest type-4 payload to keep (32 is a bare keepalive)")
    snd = sub.add_parser("send")
    snd.add_argument("--dst", required=True)
    snd.add_argument("--port", type=int, required=True)
    snd.add_argument("--file", required=True)
    snd.add_argument("--counter-add", type=int, default=0)
    gar = sub.add_parser("garbage")
    gar.add_argument("--dst", required=True)
    gar.add_argument("--port", type=int, required=True)
    gar.add_argument("--seed", type=int, default=1)
    gar.add_argument("--gap", type=float, default=0.002, help="seconds between datagrams")
    gar.add_argument("--index", type=int, help="send only datagram INDEX of the mix")
    args = parser.parse_args()
    {"capture": cmd_capture, "send": cmd_send, "garbage": cmd_garbage}[args.cmd](args)


if __name__ == "__main__":
    main()
