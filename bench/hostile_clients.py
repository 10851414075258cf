#!/usr/bin/env python3
"""Hostile HTTP clients for bench/hostile.sh: each subcommand attacks one
listener on 127.0.0.1 and prints one JSON line saying what the server did.

  partflood PORT MB          one POST of MB megabytes of empty multipart parts
  hugebody PORT MB           one POST streaming a single MB-megabyte part
  slowheaders PORT N SECS    N connections that never finish their headers
  manyconns PORT N SECS      N idle connections held open
  destination PORT MB        a STOW-RS destination answering every POST with
                             200 and MB megabytes of anonymous failures
                             (runs until killed)

Only loopback is ever contacted. Standard library only.
"""

import asyncio
import json
import socket
import sys
import time

HOST = "127.0.0.1"
BOUNDARY = b"hostile"
CT = b'multipart/related; type="application/dicom"; boundary=hostile'


def report(**kw):
    print(json.dumps(kw), flush=True)


def read_response(sock, limit=1 << 20):
    """Status code and the number of body bytes read (up to limit)."""
    sock.settimeout(120)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else None
        n = len(rest)
        length = None
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v.strip())
        while (length is None or n < length) and n < limit:
            chunk = sock.recv(65536)
            if not chunk:
                break
            n += len(chunk)
        return status, n
    except (OSError, ValueError, IndexError):
        return None, 0


def post_stream(port, chunks, content_length=None):
    """POSTs the byte chunks (chunked unless content_length is given);
    returns (status, body bytes, bytes sent, seconds, how it ended)."""
    t0 = time.monotonic()
    s = socket.create_connection((HOST, port))
    head = (
        b"POST /stowrs/studies HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: " + CT + b"\r\nAccept: application/dicom+json\r\n"
    )
    if content_length is None:
        head += b"Transfer-Encoding: chunked\r\n\r\n"
    else:
        head += b"Content-Length: %d\r\n\r\n" % content_length
    sent = 0
    ended = "sent all"
    try:
        s.sendall(head)
        for c in chunks:
            if content_length is None:
                s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
            else:
                s.sendall(c)
            sent += len(c)
        if content_length is None:
            s.sendall(b"0\r\n\r\n")
    except OSError as e:
        # The server stopped reading (it answered early and closed).
        ended = f"server closed while sending ({e.__class__.__name__})"
    status, n = read_response(s)
    s.close()
    return status, n, sent, time.monotonic() - t0, ended


def partflood(port, mb):
    part = b"--hostile\r\n\r\n\r\n"
    per_chunk = (1 << 20) // len(part)
    total = int(mb * (1 << 20)) // len(part)
    block = part * per_chunk

    def chunks():
        left = total
        while left > 0:
            n = min(left, per_chunk)
            yield block if n == per_chunk else part * n
            left -= n
        yield b"--hostile--\r\n"

    status, n, sent, secs, ended = post_stream(port, chunks())
    report(attack="partflood", parts=total, sent=sent, status=status, reply_bytes=n,
           seconds=round(secs, 2), ended=ended)


def dicom_head():
    """A Part-10 preamble and minimal meta, so the part is taken for DICOM."""

    def el(group, elem, vr, value):
        if vr in (b"OB",):
            return (group.to_bytes(2, "little") + elem.to_bytes(2, "little") + vr
                    + b"\0\0" + len(value).to_bytes(4, "little") + value)
        return (group.to_bytes(2, "little") + elem.to_bytes(2, "little") + vr
                + len(value).to_bytes(2, "little") + value)

    uid = b"1.2.826.0.1.3680043.10.1000.%d" % (time.time_ns() % 10**12)
    if len(uid) % 2:
        uid += b"\0"
    body = (el(0x0002, 0x0001, b"OB", b"\0\1")
            + el(0x0002, 0x0002, b"UI", b"1.2.840.10008.5.1.4.1.1.7\0")
            + el(0x0002, 0x0003, b"UI", uid)
            + el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0"))
    gl = el(0x0002, 0x0000, b"UL", len(body).to_bytes(4, "little"))
    return b"\0" * 128 + b"DICM" + gl + body


def hugebody(port, mb):
    total = int(mb * (1 << 20))
    junk = b"\0" * (1 << 20)

    def chunks():
        yield b"--hostile\r\nContent-Type: application/dicom\r\n\r\n" + dicom_head()
        left = total
        while left > 0:
            n = min(left, len(junk))
            yield junk[:n]
            left -= n
        yield b"\r\n--hostile--\r\n"

    status, n, sent, secs, ended = post_stream(port, chunks())
    report(attack="hugebody", declared_mb=mb, sent=sent, status=status, reply_bytes=n,
           seconds=round(secs, 2), ended=ended)


async def hold(port, n, secs, payload, trickle):
    """Opens n connections, writes payload, then (if trickle) one header byte
    every second; returns how many the server closed within secs."""
    closed_at = []
    opened = 0
    t0 = time.monotonic()

    async def one():
        nonlocal opened
        try:
            r, w = await asyncio.open_connection(HOST, port)
        except OSError:
            return
        opened += 1
        w.write(payload)
        try:
            await w.drain()
            while time.monotonic() - t0 < secs:
                try:
                    data = await asyncio.wait_for(r.read(4096), timeout=1.0)
                    if not data:
                        closed_at.append(time.monotonic() - t0)
                        return
                except asyncio.TimeoutError:
                    if trickle:
                        w.write(b"X")
                        await w.drain()
        except OSError:
            closed_at.append(time.monotonic() - t0)
        finally:
            w.close()

    await asyncio.gather(*(one() for _ in range(n)))
    return opened, closed_at


def probe(port):
    """Whether a normal request is answered while the attack is on."""
    try:
        s = socket.create_connection((HOST, port), timeout=10)
        s.sendall(b"GET /dcm4chee-arc/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: close\r\n\r\n")
        status, _ = read_response(s)
        s.close()
        return status
    except OSError:
        return None


def slowheaders(port, n, secs):
    opened, closed = asyncio.run(
        hold(port, n, secs, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", True))
    report(attack="slowheaders", connections=n, opened=opened, closed_by_server=len(closed),
           first_closed_s=round(min(closed), 1) if closed else None, after=probe(port))


def manyconns(port, n, secs):
    opened, closed = asyncio.run(hold(port, n, secs, b"", False))
    report(attack="manyconns", connections=n, opened=opened, closed_by_server=len(closed),
           after=probe(port))


def destination(port, mb):
    item = {"00081197": {"vr": "US", "Value": [0xC000]}}
    items = [item] * max(1, int(mb * (1 << 20)) // len(json.dumps(item)))
    body = json.dumps({"00081198": {"vr": "SQ", "Value": items}}).encode()

    async def handle(r, w):
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                length, chunked = 0, False
                for line in head.split(b"\r\n"):
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                    if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                        chunked = True
                if chunked:
                    while True:
                        size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                        await r.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    await r.readexactly(length)
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/dicom+json\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            w.close()

    async def main():
        server = await asyncio.start_server(handle, HOST, port)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "partflood":
        partflood(int(args[0]), float(args[1]))
    elif cmd == "hugebody":
        hugebody(int(args[0]), float(args[1]))
    elif cmd == "slowheaders":
        slowheaders(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "manyconns":
        manyconns(int(args[0]), int(args[1]), float(args[2]))
    elif cmd == "destination":
        destination(int(args[0]), float(args[1]))
    else:
        sys.exit(f"unknown attack {cmd}")


if __name__ == "__main__":
    main()
