"""The LiveKit stack: Redis, livekit-server and livekit-sip, configured for a private net.

    with LiveKitStack(workdir) as stack:      # started and ready, stopped on exit
        stack.env()                           # LIVEKIT_URL/KEY/SECRET for dialplan
        stack.sip_uri("+15550100")            # where a phone dials the inbound number

The binaries come from `.ci/build-livekit` (built once from the Go module proxy, cached).
Readiness is what each service itself reports: Redis answers PING, livekit-server's HTTP
port answers "OK", livekit-sip logs 'sip service ready' — never a fixed sleep.
"""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

from phonelab.processes import LabError, Process

REPO = Path(__file__).resolve().parent.parent
API_KEY = "devkey"
API_SECRET = "dialplan-lab-secret-0123456789abcdef"  # 32+ bytes: PyJWT warns below that
SERVER_PORT = 7880
SIP_PORT = 5060
SIP_HEALTH_PORT = 8080
REDIS_PORT = 6379


def private_ip() -> str:
    """The namespace's own address, set by `.ci/in-private-net`."""
    ip = os.environ.get("DIALPLAN_PRIVATE_NET", "")
    if not ip:
        raise LabError(
            "the phone lab runs inside a private network namespace: start it with "
            "`.ci/in-private-net <command>` (as `make phone-tests` and `make phone-demo` "
            "do): loopback alone breaks ICE, and the stack must not be reachable from outside"
        )
    return ip


def built_binaries() -> dict[str, Path]:
    """Build (once) or find the pinned livekit-server and livekit-sip."""
    result = subprocess.run(
        [str(REPO / ".ci" / "build-livekit"), "all"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise LabError(f".ci/build-livekit failed:\n{result.stderr.strip()}")
    paths = [Path(line) for line in result.stdout.split()]
    server = next(p for p in paths if p.name.startswith("livekit-server-"))
    sip = next(p for p in paths if p.name.startswith("livekit-sip-"))
    return {"server": server, "sip": sip}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _redis_pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class LiveKitStack:
    def __init__(self, workdir: Path, ip: str | None = None) -> None:
        self.workdir = workdir
        self.ip = ip or private_ip()
        self.processes: list[Process] = []
        self.server: Process | None = None
        self.sip: Process | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.ip}:{SERVER_PORT}"

    def env(self) -> dict[str, str]:
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": API_KEY,
            "LIVEKIT_API_SECRET": API_SECRET,
        }

    def sip_uri(self, number: str) -> str:
        return f"sip:{number}@{self.ip}:{SIP_PORT}"

    def __enter__(self) -> LiveKitStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        binaries = built_binaries()
        self.workdir.mkdir(parents=True, exist_ok=True)
        redis = self._spawn(
            "redis",
            [
                "redis-server",
                "--port",
                str(REDIS_PORT),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        redis.wait_until(lambda: _redis_pong(REDIS_PORT), "PONG", timeout=20)
        server_yaml = self.workdir / "livekit-server.yaml"
        server_yaml.write_text(self._server_config())
        self.server = self._spawn("livekit-server", [binaries["server"], "--config", server_yaml])
        self.server.wait_until(
            lambda: _answers(f"http://{self.ip}:{SERVER_PORT}/"), "HTTP OK", timeout=60
        )
        sip_yaml = self.workdir / "livekit-sip.yaml"
        sip_yaml.write_text(self._sip_config())
        self.sip = self._spawn("livekit-sip", [binaries["sip"], "--config", sip_yaml])
        # v1.0.0 reads health_port but serves nothing there: its own log says when ready
        self.sip.wait_for_output("sip service ready", timeout=60)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def _spawn(self, name: str, argv: list[str | Path]) -> Process:
        process = Process(name, argv, self.workdir / f"{name}.log", cwd=self.workdir)
        self.processes.append(process)
        return process

    def _server_config(self) -> str:
        # a config with keys must name bind addresses; use_external_ip off and a dead
        # local STUN server: otherwise public STUN servers are handed to clients
        return f"""\
port: {SERVER_PORT}
bind_addresses: ["{self.ip}", "127.0.0.1"]
rtc:
  tcp_port: 7881
  udp_port: 7882
  use_external_ip: false
  node_ip: {self.ip}
  stun_servers: ["{self.ip}:3478"]
redis:
  address: 127.0.0.1:{REDIS_PORT}
keys:
  {API_KEY}: {API_SECRET}
logging:
  level: info
"""

    def _sip_config(self) -> str:
        # max_cpu_utilization 1.0: a busy 2-core machine would otherwise refuse calls
        return f"""\
api_key: {API_KEY}
api_secret: {API_SECRET}
ws_url: {self.url}
redis:
  address: 127.0.0.1:{REDIS_PORT}
sip_port: {SIP_PORT}
rtp_port: 10000-10200
use_external_ip: false
nat_1_to_1_ip: {self.ip}
health_port: {SIP_HEALTH_PORT}
max_cpu_utilization: 1.0
logging:
  level: debug
"""
