#!/usr/bin/env python3
"""Live migration benchmark driver: Vireo vs QEMU on the same guest, in one run.

Called by benchmarks/migration/run.sh (which builds Vireo and the guest, and picks QEMU's -cpu and
Vireo's host profile); see that script for what is measured and how.

One guest per VMM is booted once and then migrated from process to process ("hops"): every hop
starts a fresh destination process, migrates the running guest into it, checks the guest's
output there, and the destination becomes the next hop's source. The configurations are
interleaved hop by hop (so host load drifts hit them alike):
  Vireo: unix socket, tcp 127.0.0.1              (max_downtime_ms = --downtime)
  QEMU:  tcp @ --downtime, unix @ --downtime, tcp @ 300 ms (QEMU's default downtime-limit)
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time

# Whole lines only: a line still being written ("user: tick 1" of "user: tick 187") is not a tick.
TICK = re.compile(rb"^user: tick (\d+)\n", re.M)


def log(message):
    print(f"migration: {message}", file=sys.stderr, flush=True)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def ticks(path):
    return [int(m) for m in TICK.findall(read(path))]


def last_tick(path):
    found = ticks(path)
    return found[-1] if found else None


class Failure(Exception):
    pass


def wait_until(what, predicate, timeout, procs=(), poll=0.002):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for proc in procs:
            if proc.poll() is not None:
                raise Failure(f"{what}: process {proc.args[0]} (pid {proc.pid}) exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise Failure(f"{what}: timed out after {timeout} s")
        time.sleep(poll)


def tick_rate(path, seconds, procs=()):
    """Ticks per second over about `seconds`, from the times the tick lines appear (polled every 2 ms)."""
    seen = []  # (tick, monotonic time it was first seen)
    deadline = time.monotonic() + seconds
    last = last_tick(path)
    while time.monotonic() < deadline or len(seen) < 3:
        now = last_tick(path)
        if now is not None and now != last:
            seen.append((now, time.monotonic()))
            last = now
        for proc in procs:
            if proc.poll() is not None:
                raise Failure(f"guest process exited with {proc.returncode} while measuring its tick rate")
        if time.monotonic() > deadline + 30:
            raise Failure("the guest stopped ticking")
        time.sleep(0.002)
    (k0, t0), (k1, t1) = seen[0], seen[-1]
    return (k1 - k0) / (t1 - t0)


def kill(proc):
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def check_continues(name, src_out, dst_out, dst_proc, after=3, timeout=60):
    """The guest runs on at the destination: its first tick follows the source's last one and it
    ticks `after` more times (the first of them re-checks every churned page), without a corrupt line."""
    src_last = last_tick(src_out)
    wait_until(f"{name}: {after} ticks on the destination",
               lambda: len(ticks(dst_out)) > after or b"corrupt" in read(dst_out), timeout, [dst_proc])
    for path in (src_out, dst_out):
        text = read(path)
        if b"corrupt" in text:
            line = [l for l in text.splitlines() if b"corrupt" in l][0].decode(errors="replace")
            raise Failure(f"{name}: the guest reports corruption in {os.path.basename(path)}: {line}")
    if b"entering cpl3" in read(dst_out):
        raise Failure(f"{name}: the destination started the guest from the beginning")
    first = ticks(dst_out)[0]
    # The source may have stopped in the middle of a tick line: the destination then finishes
    # that line (so it is not a whole "user: tick" line) and its first whole one is one later.
    if src_last is None or not (src_last + 1 <= first <= src_last + 2):
        raise Failure(f"{name}: tick count does not continue: source's last tick {src_last}, destination's first {first}")
    return src_last, first


# ---------------------------------------------------------------- Vireo

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("vm", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def vireo_request(conn, method, path, body=None):
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    answer = conn.getresponse()
    data = answer.read()
    return answer.status, data


class Vireo:
    def __init__(self, args):
        self.args = args
        self.work = args.work
        self.hop = 0
        # Whether this build writes the final progress into the status file (seen once).
        self.status_file_progress = False

    def base(self):
        return [self.args.vireo, "run", "--host-profile", self.args.profile]

    def spawn(self, name, extra):
        out = os.path.join(self.work, f"{name}.out")
        err = os.path.join(self.work, f"{name}.err")
        sock = os.path.join(self.work, f"{name}.sock")
        status = os.path.join(self.work, f"{name}.status")
        for path in (out, err, status):
            if os.path.exists(path):
                os.unlink(path)
        proc = subprocess.Popen(self.base() + extra + ["--api-socket", sock, "--status-file", status], stdin=subprocess.DEVNULL,
                                stdout=open(out, "wb"), stderr=open(err, "wb"))
        return {"name": name, "proc": proc, "out": out, "err": err, "sock": sock, "status": status}

    def boot(self, cmdline):
        vm = self.spawn("vireo-0", ["--kernel", self.args.guest, "--memory", self.args.memory, "--cmdline", cmdline])
        started = time.monotonic()
        wait_until("vireo: the guest fills its memory and ticks", lambda: b"user: tick 2\n" in read(vm["out"]),
                   300, [vm["proc"]])
        log(f"vireo: booted and filled in {time.monotonic() - started:.1f} s")
        return vm

    def migrate(self, src, transport):
        self.hop += 1
        name = f"vireo-{self.hop}"
        mig_sock = os.path.join(self.work, f"{name}.mig")
        # "postcopy": over unix, switched to post-copy after the first full round (a target
        # too small for pre-copy to meet forces the switch).
        postcopy = transport == "postcopy"
        address = f"unix:{mig_sock}" if transport in ("unix", "postcopy") else "tcp:127.0.0.1:0"
        dst = self.spawn(name, ["--incoming", address])
        try:
            line = wait_until(f"{name}: destination listening",
                              lambda: re.search(rb"waiting for a migration on (\S+)", read(dst["err"])), 30, [dst["proc"]])
            destination = line.group(1).decode()
            rate = tick_rate(src["out"], self.args.rate_seconds, [src["proc"]])
            conn = UnixHTTP(src["sock"])
            body = json.dumps({"destination": destination, "max_downtime_ms": 0.001 if postcopy else self.args.downtime,
                               **({"postcopy": True} if postcopy else {})})
            status_file_progress = self.status_file_progress
            ticks_before = last_tick(src["out"])
            put_at = time.monotonic()
            status, answer = vireo_request(conn, "PUT", "/vm/migrate", body)
            if status != 202:
                raise Failure(f"{name}: PUT /vm/migrate answered {status}: {answer.decode(errors='replace')}")
            # Poll over one kept-alive connection (progress, throttle, phases for --json); the
            # source exits right after it completes, so the final answer is there only for a moment.
            last, polls, max_throttle, phases, timeline, errors, answers_stopped = None, 0, 0, [], [], [], []
            deadline = put_at + self.args.timeout
            while True:
                try:
                    status, data = vireo_request(conn, "GET", "/vm/migration")
                    polls += 1
                    last = json.loads(data)
                    max_throttle = max(max_throttle, last.get("throttle_percent", 0))
                    at = round((time.monotonic() - put_at) * 1000, 1)
                    if last["phase"] == "stop-and-copy":
                        answers_stopped.append(at)
                    if not phases or phases[-1][0] != last["phase"] or phases[-1][1] != last["rounds"]:
                        phases.append((last["phase"], last["rounds"], at))
                    if not timeline or at - timeline[-1][0] >= 100:
                        timeline.append((at, last["ram_bytes_transferred"] >> 20))
                    if last["phase"] in ("completed", "failed", "cancelled"):
                        break
                except (OSError, http.client.HTTPException, ValueError) as error:
                    if len(errors) < 3:
                        errors.append((round((time.monotonic() - put_at) * 1000, 1), repr(error)))
                    if src["proc"].poll() is not None:
                        break
                    conn.close()
                    conn = UnixHTTP(src["sock"])
                if time.monotonic() > deadline:
                    stuck = json.dumps(last)
                    try:
                        vireo_request(UnixHTTP(src["sock"]), "PUT", "/vm/migrate/cancel")
                    except Exception:
                        pass
                    raise Failure(f"{name}: migration not over after {self.args.timeout} s; last GET /vm/migration: {stuck}")
                # Every 5 ms, as QEMU's query-migrate below (the final answer comes from the status
                # file; older builds without it: every 1 ms once the guest is stopped, to catch it).
                time.sleep(0.001 if last and last["phase"] == "stop-and-copy" and not status_file_progress else 0.005)
            try:
                src["proc"].wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise Failure(f"{name}: the source did not exit 30 s after the migration ended; last GET /vm/migration: {json.dumps(last)}")
            exit_at = time.monotonic()
            stop_seen = next((at for phase, _, at in phases if phase == "stop-and-copy"), None)
            # The source writes its final progress into its status file as it exits (builds from
            # 1878837 on); GET /vm/migration can show it only for the moment before the exit.
            try:
                with open(src["status"]) as f:
                    final = json.load(f).get("migration")
            except (OSError, ValueError):
                final = None
            if final:
                last = final
            ticks_end = last_tick(src["out"])
            unobserved = (last is not None and last["phase"] == "stop-and-copy" and src["proc"].returncode == 0
                          and b"migrated to" in read(src["err"]))
            if unobserved:
                # The source said it handed the guest over and exited before a GET could read the
                # final answer: the figures only the final answer carries (downtime, total) are lost.
                log(f"{name}: the source exited before GET /vm/migration showed 'completed' (last answer: {json.dumps(last)}; "
                    f"phases seen {phases}; then {errors})")
            elif last is None or last["phase"] != "completed":
                raise Failure(f"{name}: the migration did not complete (source exit status {src['proc'].returncode}); "
                              f"last GET /vm/migration: {json.dumps(last)}")
            if src["proc"].returncode != 0:
                raise Failure(f"{name}: the source exited with {src['proc'].returncode} after a completed migration")
            src_last, first = check_continues(name, src["out"], dst["out"], dst["proc"])
            pc = None
            if postcopy:
                # The destination's own account: pages, time after the switch-over, fault latency.
                pc = wait_until(f"{name}: post-copy complete on the destination",
                                lambda: re.search(rb"post-copy complete: (\d+) pages in (\d+) ms after the switch-over; (\d+) faults "
                                                  rb"fetched on demand \(latency avg (\d+) \S*s, max (\d+) \S*s\)", read(dst["err"])),
                                60, [dst["proc"]])
        except Failure as failure:
            failure.details = {"source stderr": read(src["err"]).decode(errors="replace"),
                               "destination stderr": read(dst["err"]).decode(errors="replace"),
                               "destination serial (tail)": read(dst["out"])[-400:].decode(errors="replace")}
            kill(dst["proc"])
            if src["proc"].poll() is not None:
                raise Failure(str(failure) + " (and the source is gone: no further Vireo hops)") from failure
            failure.keep_source = True
            raise
        if final:
            self.status_file_progress = True
        precopy_s = max(1e-3, (last["elapsed_ms"] - (last.get("downtime_ms") or 0)) / 1000)
        result = {
            "vmm": "vireo", "transport": transport, "target_ms": self.args.downtime, "unobserved": unobserved,
            "total_ms": None if unobserved else last["elapsed_ms"], "downtime_ms": last.get("downtime_ms"),
            "rounds": last["rounds"], "ram_mib": last["ram_bytes_transferred"] / 2**20,
            "throttle": max_throttle, "tick_hz": rate, "tick_hz_during": (ticks_end - ticks_before) / precopy_s,
            "wall_ms": (exit_at - put_at) * 1000, "polls": polls, "phases": phases,
            "ticks": f"{src_last}->{first}", "final": last, "final_from": "status file" if final else "GET",
            "timeline": timeline, "errors": errors, "answers_stopped": answers_stopped,
            # Seen from outside: the first answer in stop-and-copy -> the source process gone.
            "ext_downtime_ms": None if stop_seen is None else (exit_at - put_at) * 1000 - stop_seen,
        }
        if pc:
            result.update({"postcopy_pages": int(pc.group(1)), "postcopy_ms": int(pc.group(2)), "faults": int(pc.group(3)),
                           "fault_avg_us": int(pc.group(4)), "fault_max_us": int(pc.group(5))})
        return dst, result


# ---------------------------------------------------------------- QEMU

class QMP:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.events = []
        self._line()  # greeting
        self.cmd("qmp_capabilities")

    def _line(self):
        line = self.file.readline()
        if not line:
            raise Failure("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, arguments=None):
        message = {"execute": name}
        if arguments is not None:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            answer = self._line()
            if "event" in answer:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise Failure(f"QMP {name}: {answer['error']}")
            return answer.get("return")

    def event(self, name, timeout):
        """The first `name` event since the list was cleared (waits for it, blocking reads)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                for e in self.events:
                    if e["event"] == name:
                        return e
                self.events.append(self._line())
        except socket.timeout:
            raise Failure(f"no QMP {name} event within {timeout} s")
        finally:
            self.sock.settimeout(30)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def event_seconds(e):
    return e["timestamp"]["seconds"] + e["timestamp"]["microseconds"] / 1e6


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Qemu:
    def __init__(self, args, cmdline):
        self.args = args
        self.work = args.work
        self.hop = 0
        self.command = ["qemu-system-x86_64", "-accel", "kvm", "-cpu", args.qemu_cpu, "-M", "pc", "-m", args.memory,
                        "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-kernel", args.guest, "-append", cmdline]

    def spawn(self, name, extra):
        out = os.path.join(self.work, f"{name}.out")
        err = os.path.join(self.work, f"{name}.err")
        qmp = os.path.join(self.work, f"{name}.qmp")
        for path in (out, err, qmp):
            if os.path.exists(path):
                os.unlink(path)
        proc = subprocess.Popen(self.command + ["-serial", f"file:{out}", "-qmp", f"unix:{qmp},server=on,wait=off"] + extra,
                                stdin=subprocess.DEVNULL, stdout=open(err, "wb"), stderr=subprocess.STDOUT)

        def connect():
            try:
                return QMP(qmp)
            except (FileNotFoundError, ConnectionRefusedError):
                return None
        vm = {"name": name, "proc": proc, "out": out, "err": err}
        vm["qmp"] = wait_until(f"{name}: QMP socket", connect, 60, [proc], poll=0.01)
        return vm

    def boot(self):
        vm = self.spawn("qemu-0", [])
        started = time.monotonic()
        wait_until("qemu: the guest fills its memory and ticks", lambda: b"user: tick 2\n" in read(vm["out"]), 300, [vm["proc"]])
        log(f"qemu: booted and filled in {time.monotonic() - started:.1f} s")
        defaults = vm["qmp"].cmd("query-migrate-parameters")
        log(f"qemu: default migration parameters: downtime-limit {defaults.get('downtime-limit')} ms, "
            f"max-bandwidth {defaults.get('max-bandwidth', 0) / 2**20:.0f} MiB/s")
        return vm

    def migrate(self, src, transport, target):
        self.hop += 1
        name = f"qemu-{self.hop}"
        if transport == "unix":
            path = os.path.join(self.work, f"{name}.mig")
            uri = f"unix:{path}"
        else:
            uri = f"tcp:127.0.0.1:{free_port()}"
        dst = self.spawn(name, ["-incoming", uri])
        try:
            if transport == "unix":
                wait_until(f"{name}: destination listening", lambda: os.path.exists(path), 30, [dst["proc"]])
            rate = tick_rate(src["out"], self.args.rate_seconds, [src["proc"]])
            qmp = src["qmp"]
            qmp.events.clear()
            dst["qmp"].events.clear()
            # The same settings as Vireo's defaults: no bandwidth limit, auto-converge on.
            qmp.cmd("migrate-set-capabilities", {"capabilities": [{"capability": "auto-converge", "state": True}]})
            qmp.cmd("migrate-set-parameters", {"downtime-limit": int(target), "max-bandwidth": 100 << 30})
            ticks_before = last_tick(src["out"])
            put_at = time.monotonic()
            qmp.cmd("migrate", {"uri": uri})
            info, max_throttle = {}, 0
            while True:
                info = qmp.cmd("query-migrate")
                max_throttle = max(max_throttle, info.get("cpu-throttle-percentage", 0))
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                if time.monotonic() - put_at > self.args.timeout:
                    qmp.cmd("migrate_cancel")
                    raise Failure(f"{name}: migration not over after {self.args.timeout} s: {json.dumps(info)}")
                time.sleep(0.005)
            done_at = time.monotonic()
            if info["status"] != "completed":
                raise Failure(f"{name}: migration {info['status']}: {json.dumps(info)}")
            ticks_end = last_tick(src["out"])
            stop = qmp.event("STOP", 5)
            resume = dst["qmp"].event("RESUME", 30)
            qmp.cmd("quit")
            src["proc"].wait(timeout=30)
            src["qmp"].close()
            src_last, first = check_continues(name, src["out"], dst["out"], dst["proc"])
        except Failure as failure:
            failure.details = {"source output": read(src["err"]).decode(errors="replace"),
                               "destination output": read(dst["err"]).decode(errors="replace")}
            kill(dst["proc"])
            if src["proc"].poll() is not None:
                raise Failure(str(failure) + " (and the source is gone: no further QEMU hops)") from failure
            failure.keep_source = True
            raise
        ram = info["ram"]
        precopy_s = max(1e-3, (info["total-time"] - info["downtime"]) / 1000)
        result = {
            "vmm": "qemu", "transport": transport, "target_ms": target,
            "total_ms": info["total-time"], "downtime_ms": info["downtime"], "setup_ms": info.get("setup-time"),
            "stop_resume_ms": (event_seconds(resume) - event_seconds(stop)) * 1000,
            "rounds": ram.get("dirty-sync-count"), "ram_mib": ram["transferred"] / 2**20,
            "throttle": max_throttle, "tick_hz": rate, "tick_hz_during": (ticks_end - ticks_before) / precopy_s,
            "wall_ms": (done_at - put_at) * 1000, "ticks": f"{src_last}->{first}",
        }
        return dst, result


# ---------------------------------------------------------------- main

def calibrate(args):
    """Iterations of the guest's spin loop per second, measured in a short Vireo run."""
    probe_spin = 100_000_000
    out = os.path.join(args.work, "calibrate.out")
    proc = subprocess.Popen([args.vireo, "run", "--host-profile", args.profile, "--kernel", args.guest, "--memory", "64M",
                             "--cmdline", f"ticks=1000000 spin={probe_spin}"],
                            stdin=subprocess.DEVNULL, stdout=open(out, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_until("calibration guest ticks", lambda: b"user: tick 2\n" in read(out), 60, [proc])
        rate = tick_rate(out, 1.5, [proc])
    finally:
        kill(proc)
    return probe_spin * rate


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:,.{digits}f}"


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "–"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--vireo", required=True)
    p.add_argument("--guest", required=True)
    p.add_argument("--profile", required=True)
    p.add_argument("--qemu-cpu", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--memory", default="1G")
    p.add_argument("--churn", type=int, default=16, help="MiB rewritten per tick")
    p.add_argument("--tick-hz", type=float, default=4.0, help="target ticks per second (sets spin)")
    p.add_argument("--spin", type=int, default=0, help="spin iterations per tick (0: calibrate for --tick-hz)")
    p.add_argument("--fill", type=int, default=0, help="MiB filled with a pattern (0: RAM - 64 MiB - churn)")
    p.add_argument("--downtime", type=float, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate-seconds", type=float, default=2.0)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--only", choices=["vireo", "qemu", "both"], default="both")
    p.add_argument("--json", help="write every hop's figures here")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)

    mib = int(subprocess.check_output(["numfmt", "--from=iec", args.memory]).decode()) >> 20
    fill = args.fill or mib - 64 - args.churn
    spin = args.spin
    if not spin:
        ips = calibrate(args)
        spin = min(4_000_000_000, int(ips / args.tick_hz))
        log(f"calibration: {ips / 1e9:.2f}e9 spin iterations/s -> spin={spin} for {args.tick_hz} ticks/s")
    cmdline = f"ticks=1000000 spin={spin} fill={fill} churn={args.churn}"
    log(f"guest: {args.memory}, cmdline '{cmdline}' (dirties {args.churn} MiB per tick)")

    results, failures = [], []

    def chain(label, boot, hops):
        """Boots once, then runs the hops in order; a failed hop is recorded and the chain goes on
        from whichever process still holds the guest."""
        try:
            vm = boot()
        except Failure as failure:
            failures.append((label, str(failure), getattr(failure, "details", {})))
            return
        try:
            for hop in hops:
                try:
                    vm, result = hop(vm)
                    results.append(result)
                    log(f"{result['vmm']} {result['transport']} @{result['target_ms']:g} ms: total {fmt(result['total_ms'], 0)} ms, "
                        f"downtime {fmt(result['downtime_ms'])} ms"
                        + (f" (STOP->RESUME {result['stop_resume_ms']:.1f} ms)" if "stop_resume_ms" in result else "")
                        + f", rounds {result['rounds']}, {result['ram_mib']:.0f} MiB, throttle {result['throttle']}%, "
                        f"ticks {result['ticks']}, {result['tick_hz']:.2f} ticks/s before, {result['tick_hz_during']:.2f} during")
                except Failure as failure:
                    failures.append((label, str(failure), getattr(failure, "details", {})))
                    log(f"FAILED: {failure}")
                    if not getattr(failure, "keep_source", False):
                        return
        finally:
            kill(vm["proc"])

    if args.only in ("vireo", "both"):
        v = Vireo(args)

        def vireo_hops():
            # A hop whose final answer could not be read (the source exited first) is repeated,
            # up to twice --rounds hops per transport, so the medians have --rounds downtimes.
            tries = {"unix": 0, "tcp": 0, "postcopy": 0}
            while True:
                pending = [t for t in tries if tries[t] < 2 * args.rounds and sum(
                    1 for r in results if r["vmm"] == "vireo" and r["transport"] == t and not r["unobserved"]) < args.rounds]
                if not pending:
                    return
                for t in pending:
                    tries[t] += 1
                    yield lambda vm, t=t: v.migrate(vm, t)
        chain("vireo", lambda: v.boot(cmdline), vireo_hops())
    if args.only in ("qemu", "both"):
        q = Qemu(args, cmdline)
        hops = []
        for _ in range(args.rounds):
            hops += [lambda vm: q.migrate(vm, "tcp", args.downtime), lambda vm: q.migrate(vm, "unix", args.downtime),
                     lambda vm: q.migrate(vm, "tcp", 300)]
        chain("qemu", q.boot, hops)

    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cmdline": cmdline, "results": results, "failures": [(a, b) for a, b, _ in failures]}, f, indent=1)

    configs = [("vireo", "unix", args.downtime), ("vireo", "tcp", args.downtime), ("qemu", "unix", args.downtime),
               ("qemu", "tcp", args.downtime), ("qemu", "tcp", 300)]
    heads = ["Vireo unix", "Vireo tcp", f"QEMU unix @{args.downtime:g}", f"QEMU tcp @{args.downtime:g}", "QEMU tcp @300 (default)"]

    def of(config):
        return [r for r in results if (r["vmm"], r["transport"], r["target_ms"]) == config]

    def med(config, key):
        return median([r.get(key) for r in of(config)])

    rows = [
        ("hops (Vireo: of which the final progress was read, from the status file or GET /vm/migration)",
         lambda c: f"{len(of(c))}" + (f" ({sum(1 for r in of(c) if not r.get('unobserved'))} read)" if c[0] == "vireo" else ""), None),
        (f"hops with the guest stopped <= {args.downtime:g} ms (Vireo downtime_ms; QEMU STOP → RESUME)",
         lambda c: (lambda v: f"{sum(1 for x in v if x <= args.downtime)} of {len(v)}")(
             [r.get("stop_resume_ms", r["downtime_ms"]) for r in of(c) if r.get("stop_resume_ms", r["downtime_ms"]) is not None]), None),
        ("total time, ms", lambda c: med(c, "total_ms"), "total_ms"),
        (f"downtime, ms (Vireo: downtime_ms of the final progress; QEMU: query-migrate downtime)", lambda c: med(c, "downtime_ms"), "downtime_ms"),
        ("downtime, max of the hops, ms", lambda c: max([r["downtime_ms"] for r in of(c) if r["downtime_ms"] is not None], default=None), None),
        ("QEMU guest stopped → running on the destination (STOP → RESUME events), ms", lambda c: med(c, "stop_resume_ms"), None),
        ("QEMU setup time, ms", lambda c: med(c, "setup_ms"), None),
        ("rounds (Vireo rounds; QEMU dirty-sync-count)", lambda c: med(c, "rounds"), None),
        ("RAM transferred, MiB", lambda c: med(c, "ram_mib"), "ram_mib"),
        ("vCPU throttle, max %", lambda c: med(c, "throttle"), None),
        ("guest ticks/s before the migration", lambda c: med(c, "tick_hz"), None),
        ("guest dirty rate before, MiB/s", lambda c: (lambda h: h * args.churn if h else None)(med(c, "tick_hz")), None),
        ("guest ticks/s during pre-copy", lambda c: med(c, "tick_hz_during"), None),
    ]
    print(f"Live migration, {args.memory} guest ({fill} MiB filled, {args.churn} MiB rewritten per tick), "
          f"spin={spin}, downtime target {args.downtime:g} ms, medians of {args.rounds}")
    print()
    print("| metric | " + " | ".join(heads) + " | Vireo tcp / QEMU tcp @" + f"{args.downtime:g}" +
          " | Vireo tcp / QEMU tcp @300 | Vireo unix / QEMU unix @" + f"{args.downtime:g} |")
    print("|---|" + "---:|" * (len(heads) + 3))
    for label, get, key in rows:
        values = [get(c) for c in configs]
        digits = 2 if "ticks/s" in label else (0 if "MiB" in label and "rate" not in label else 1)
        cells = [fmt(v, digits) for v in values]
        if key:
            ratios = [ratio(values[1], values[3]), ratio(values[1], values[4]), ratio(values[0], values[2])]
        elif label.startswith("QEMU guest stopped"):
            # Vireo's downtime_ms already runs to the destination saying it runs the guest.
            vd = [med(c, "downtime_ms") for c in configs]
            ratios = [f"{ratio(vd[1], values[3])} (Vireo downtime_ms)", f"{ratio(vd[1], values[4])}", f"{ratio(vd[0], values[2])}"]
        else:
            ratios = ["–"] * 3
        print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    print()
    met = [r for r in results if r["vmm"] == "vireo"]
    within = sum(1 for r in met if r["downtime_ms"] is not None and r["downtime_ms"] <= args.downtime)
    missed = sum(1 for r in met if r.get("unobserved"))
    print(f"Vireo hops with downtime <= {args.downtime:g} ms: {within} of the {len(met) - missed} whose final answer was read"
          + (f"; {missed} more completed (guest checked on the destination) but the source exited before GET /vm/migration "
             f"showed its final answer, so their downtime is unknown" if missed else ""))
    post = [r for r in results if r["vmm"] == "vireo" and r["transport"] == "postcopy" and "postcopy_ms" in r]
    if post:
        print(f"Vireo post-copy (unix; switched after the first full round), medians of {len(post)}: "
              f"total {fmt(median([r['total_ms'] for r in post]), 0)} ms, guest stopped {fmt(median([r['downtime_ms'] for r in post]))} ms, "
              f"{fmt(median([r['postcopy_pages'] for r in post]), 0)} pages after the switch-over in {fmt(median([r['postcopy_ms'] for r in post]), 0)} ms, "
              f"{fmt(median([r['faults'] for r in post]), 0)} page faults served on demand, latency avg {fmt(median([r['fault_avg_us'] for r in post]), 0)} µs, "
              f"max {fmt(max(r['fault_max_us'] for r in post), 0)} µs (QEMU's post-copy is not measured here)")
    print("Per hop: " + "; ".join(
        f"{r['vmm']}/{r['transport']}@{r['target_ms']:g}: {fmt(r['total_ms'], 0)} ms, down {fmt(r['downtime_ms'])}"
        + (f"/{r['stop_resume_ms']:.1f}" if "stop_resume_ms" in r else "") + f", r{r['rounds']}" for r in results))
    if failures:
        print()
        print(f"FAILURES ({len(failures)}):")
        for label, message, details in failures:
            print(f"- {label}: {message}")
            for key, text in details.items():
                print(f"  {key}:")
                for line in text.strip().splitlines()[-15:]:
                    print(f"    {line}")
        sys.exit(1)


if __name__ == "__main__":
    main()
