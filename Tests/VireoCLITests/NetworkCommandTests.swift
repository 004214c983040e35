import Foundation
import Testing

/// `vireo run --net` against real TAPs and bridges, each test in a network namespace of its own
/// (unshare -n), so nothing touches the host's interfaces. Needs root (CI runs as root).
@Suite(.serialized, .enabled(if: getuid() == 0, "needs root for network namespaces and TAPs"))
struct NetworkCommandTests {
    /// Runs `script` under `unshare -n sh -c` with $VIREO and $GUEST_DIR set.
    static func inNamespace(_ script: String) throws -> VireoBinary.Result {
        var environment = ProcessInfo.processInfo.environment
        environment["VIREO"] = VireoBinary.executable.path
        environment["GUEST_DIR"] = VireoBinary.packageRoot.appendingPathComponent(".build/test-guests").path
        return try VireoBinary.runProcess("/usr/bin/unshare", ["-n", "sh", "-c", script], environment: environment)
    }

    @Test func bridgeModeCreatesATAPAndAddsItToTheBridge() throws {
        let result = try Self.inNamespace("""
            ip link add br0 type bridge && ip link set br0 up || exit 90
            "$VIREO" run -v --kernel "$GUEST_DIR/mb-echo.elf" --memory 32M --net bridge=br0,mac=52:54:00:aa:bb:cc \
                </dev/null >/dev/null 2>"$TMPDIR/vireo-bridge-$$.err" &
            pid=$!
            for _ in $(seq 50); do
                members=$(ip -o link show master br0)
                [ -n "$members" ] && break
                sleep 0.1
            done
            echo "members: $members"
            kill $pid; wait $pid
            cat "$TMPDIR/vireo-bridge-$$.err" >&2; rm -f "$TMPDIR/vireo-bridge-$$.err"
            """.replacingOccurrences(of: "$TMPDIR", with: NSTemporaryDirectory()))
        #expect(result.stdout.contains("members: "), "\(result.stderr)")
        // The TAP Vireo created is a bridge port, up, while the VM runs.
        #expect(result.stdout.contains("master br0"), "\(result.stdout)\n\(result.stderr)")
        #expect(result.stderr.contains("virtio-net on TAP "))
        #expect(result.stderr.contains("on bridge br0, mac 52:54:00:aa:bb:cc"))
    }

    @Test func missingBridgeIsAClearError() throws {
        let result = try Self.inNamespace("""
            "$VIREO" run --kernel "$GUEST_DIR/mb-hello.elf" --memory 32M --net bridge=nosuchbr
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("vireo: error: cannot add"), "\(result.stderr)")
        #expect(result.stderr.contains("to bridge 'nosuchbr': no such bridge"), "\(result.stderr)")
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test func creatingATAPWithoutCapNetAdminIsAClearError() throws {
        let result = try Self.inNamespace("""
            exec setpriv --inh-caps=-net_admin --bounding-set=-net_admin \
                "$VIREO" run --kernel "$GUEST_DIR/mb-hello.elf" --memory 32M --net tap=vtap9
            """)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot open or create TAP 'vtap9': permission denied (needs CAP_NET_ADMIN"), "\(result.stderr)")
    }

    /// Frames both ways between a guest driver (mb-virtio-net) and a host process on the TAP
    /// (an AF_PACKET socket): guest TX -> TAP -> host, host -> TAP -> guest RX.
    @Test func framesCrossTheTAPBothWays() throws {
        let peer = """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))
            s.bind(("vt0", 0))
            s.settimeout(60)
            open(sys.argv[1], "w").close()
            while True:
                frame = s.recv(2048)
                if frame[12:14] == b"\\x88\\xb5":
                    print("peer got:", frame[14:].split(b"\\0")[0].decode(), flush=True)
                    break
            s.send(frame[6:12] + b"\\x02\\x00\\x00\\x00\\x00\\x01\\x88\\xb5" + b"pong from the host" + bytes(40))
            """
        let result = try Self.inNamespace("""
            ip tuntap add vt0 mode tap && ip link set vt0 up || exit 90
            ready=$(mktemp -u); peerlog=$(mktemp)
            # Its own output file: on the shared stdout its line would interleave with the guest's.
            python3 -c '\(peer)' "$ready" >"$peerlog" 2>&1 &
            peer=$!
            # Boot only once the peer's socket is bound, or the guest's frame could go unseen.
            for _ in $(seq 200); do [ -e "$ready" ] && break; sleep 0.05; done
            rm -f "$ready"
            "$VIREO" run --kernel "$GUEST_DIR/mb-virtio-net.elf" --memory 32M --net tap=vt0,mac=52:54:00:12:34:56
            echo "vireo status $?"
            wait $peer
            cat "$peerlog"; rm -f "$peerlog"
            """)
        #expect(result.stdout.contains("peer got: hello from the guest"), "\(result.stdout)\n\(result.stderr)")
        #expect(result.stdout.contains("virtio-net: received pong from the host"))
        #expect(result.stdout.contains("vireo status 1"))  // the guest's debug-exit 0
    }
}
