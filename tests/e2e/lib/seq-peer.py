#!/usr/bin/env python3
"""The host end of the counting guest's TCP stream (guest/init/sequence32.c, vireo.seqpeer=).

    seq-peer.py ADDRESS PORT ACCEPT_TIMEOUT IDLE_TIMEOUT READY_FILE COUNT

Listens, creates READY_FILE, takes one connection and echoes every line "K" back; the guest waits
for each echo before its next step. Expects 1..COUNT in order, then "done", then the guest's close.
Prints at the end:
    peer: OK: 1..COUNT in order on one connection, each echoed, then done     (or peer: FAIL: why)
    peer: longest pauses: K (N ms) ...   (the time before number K arrived: migrations show here)
Exit status 0 on OK. Every wait is bounded (no connection, or no line for IDLE_TIMEOUT seconds).
"""
import signal
import socket
import sys
import time


class Terminated(Exception):
    pass


def terminated(signum, frame):
    raise Terminated()


def main():
    address, port, accept_timeout, idle_timeout, ready, count = sys.argv[1:7]
    count = int(count)
    signal.signal(signal.SIGTERM, terminated)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, int(port)))
    server.listen(1)
    server.settimeout(float(accept_timeout))
    open(ready, "w").close()
    try:
        connection, peer = server.accept()
    except (socket.timeout, Terminated) as error:
        why = f"within {accept_timeout}s" if isinstance(error, socket.timeout) else "before the test stopped it"
        print(f"peer: FAIL: no connection {why}", flush=True)
        return 1
    server.close()
    print(f"peer: connection from {peer[0]}:{peer[1]}", flush=True)
    connection.settimeout(float(idle_timeout))
    expected, done, problems, pauses = 1, False, [], []
    last = time.monotonic()
    buffer = b""
    try:
        while True:
            try:
                data = connection.recv(4096)
            except socket.timeout:
                problems.append(f"nothing for {idle_timeout}s after {expected - 1}")
                break
            except OSError as error:
                problems.append(f"connection broke after {expected - 1}: {error}")
                break
            if not data:
                break
            buffer += data
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                now = time.monotonic()
                if line == b"done":
                    done = True
                    continue
                if done:
                    problems.append(f"{line!r} after done")
                    continue
                try:
                    number = int(line)
                except ValueError:
                    problems.append(f"junk line {line[:40]!r}")
                    continue
                if number != expected:
                    problems.append(f"got {number} where {expected} was due")
                pauses.append((now - last, number))
                last = now
                expected = number + 1
                try:
                    connection.sendall(line + b"\n")
                except OSError as error:
                    problems.append(f"cannot echo {number}: {error}")
    except Terminated:
        problems.append(f"stopped by the test while waiting after {expected - 1}")
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print(f"peer: the last number, {expected - 1}, came {time.monotonic() - last:.1f} s before the end", flush=True)
    connection.close()
    if expected - 1 != count:
        problems.append(f"the last number was {expected - 1}, not {count}")
    if not done:
        problems.append("no done line before the connection closed")
    longest = sorted(pauses, reverse=True)[:8]
    print("peer: longest pauses: " + ", ".join(f"{number} ({seconds * 1000:.0f} ms)" for seconds, number in longest), flush=True)
    if problems:
        print("peer: FAIL: " + "; ".join(problems[:10]), flush=True)
        return 1
    print(f"peer: OK: 1..{count} in order on one connection, each echoed, then done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
