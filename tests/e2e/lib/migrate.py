#!/usr/bin/env python3
"""Starts a live migration on a `vireo run` control socket and follows it to the end.

    migrate.py API_SOCKET DESTINATION TIMEOUT_SECONDS [REQUEST_JSON_EXTRA]

PUT /vm/migrate {"destination": DESTINATION, ...} must answer 202; then GET /vm/migration is
polled every few milliseconds (no process per poll: the source exits soon after the switch-over,
and the final progress is only there until it does) until the phase is completed, failed or
cancelled, the socket goes away, or the timeout passes. Prints key=value lines for the caller:
    put_status=202            put_answer=<JSON>
    ended=completed|failed|cancelled|gone|timeout   (gone: the socket went away before an end)
    phase=<last phase seen>   downtime_ms=  elapsed_ms=  rounds=  ram_bytes_transferred=
    phases=<each phase seen, with the milliseconds since the request when first seen>
    polls=<count>             last=<the last progress JSON seen>
Exit status 0 when the run ended completed, 1 otherwise (the lines say why).
"""
import json
import socket
import sys
import time


def call(api, method, path, body=b"", timeout=10.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(api)
        head = f"{method} {path} HTTP/1.1\r\nHost: vm\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
        if body:
            head += "Content-Type: application/json\r\n"
        sock.sendall(head.encode() + b"\r\n" + body)
        raw = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
            # Done once the whole body (by content-length) is in.
            header, sep, rest = raw.partition(b"\r\n\r\n")
            if sep:
                for line in header.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length" and len(rest) >= int(value):
                        return int(header.split(b" ", 2)[1]), rest[: int(value)].decode(errors="replace")
    finally:
        sock.close()
    header, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError("no HTTP answer")
    if b"transfer-encoding: chunked" in header.lower():
        body, rest = b"", rest
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
        rest = body
    return int(header.split(b" ", 2)[1]), rest.decode(errors="replace")


def main():
    api, destination, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    request = {"destination": destination}
    if len(sys.argv) > 4:
        request.update(json.loads(sys.argv[4]))
    started = time.monotonic()
    try:
        status, answer = call(api, "PUT", "/vm/migrate", json.dumps(request).encode(), timeout=30)
    except OSError as error:
        print(f"put_status=none\nput_answer=cannot reach {api}: {error}\nended=failed")
        return 1
    print(f"put_status={status}")
    print(f"put_answer={answer.strip()}")
    if status != 202:
        print("ended=failed")
        return 1
    last, phases, polls, ended = None, [], 0, "timeout"
    while time.monotonic() - started < timeout:
        try:
            status, body = call(api, "GET", "/vm/migration", timeout=10)
            progress = json.loads(body)
        except (OSError, ValueError):
            # The source is going (or gone): after a switch-over it exits.
            ended = "gone"
            phases.append(("gone", int((time.monotonic() - started) * 1000)))
            break
        polls += 1
        last = progress
        phase = progress.get("phase")
        if not phases or phases[-1][0] != phase:
            phases.append((phase, int((time.monotonic() - started) * 1000)))
        if phase in ("completed", "failed", "cancelled"):
            ended = phase
            break
        time.sleep(0.005)
    print(f"ended={ended}")
    last = last or {}
    for key in ("phase", "downtime_ms", "elapsed_ms", "rounds", "ram_bytes_transferred", "ram_bytes_total",
                "expected_downtime_ms", "throttle_percent", "error"):
        value = last.get(key)
        if isinstance(value, float):
            value = f"{value:.1f}"
        print(f"{key}={'' if value is None else value}")
    print("phases=" + " ".join(f"{phase}@{ms}ms" for phase, ms in phases))
    print(f"polls={polls}")
    print("last=" + json.dumps(last, sort_keys=True))
    return 0 if ended == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
