"""sipp as a callee that answers with a chosen SIP status, or rings and never answers.

    with SippCallee(workdir, ip, 5080, status=486) as callee: ...   # busy
    with SippCallee(workdir, ip, 5080, status=None) as callee: ...  # rings until CANCEL

`callee.messages()` is sipp's own trace of what it received and sent.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from phonelab.processes import Process

_HEAD = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="dialplan lab callee">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 100 Trying
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
"""

_REFUSE = """\
  <send><![CDATA[
SIP/2.0 {status} {reason}
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""

# ringing until the caller gives up: CANCEL → 200 OK, then 487 for the INVITE
_RING = """\
  <recv request="CANCEL"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <send><![CDATA[
SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
CSeq: [cseq] INVITE
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
"""

REASONS = {
    404: "Not Found",
    480: "Temporarily Unavailable",
    486: "Busy Here",
    600: "Busy Everywhere",
    603: "Decline",
}


class SippCallee:
    def __init__(
        self, workdir: Path, ip: str, port: int, *, status: int | None, calls: int = 1
    ) -> None:
        self.dir = workdir / f"sipp-{status or 'ring'}-{port}"
        self.ip, self.port, self.status, self.calls = ip, port, status, calls
        self.process: Process | None = None

    def __enter__(self) -> SippCallee:
        self.dir.mkdir(parents=True, exist_ok=True)
        tail = (
            _RING
            if self.status is None
            else _REFUSE.format(status=self.status, reason=REASONS.get(self.status, "Refused"))
        )
        scenario = self.dir / "callee.xml"
        scenario.write_text(_HEAD + tail)
        self.process = Process(
            "sipp",
            [
                "sipp",
                "-sf",
                scenario,
                "-i",
                self.ip,
                "-p",
                str(self.port),
                "-m",
                str(self.calls),
                "-trace_msg",
                "-message_file",
                self.dir / "messages.log",
                "-nostdin",
            ],
            self.dir / "sipp.log",
            cwd=self.dir,
        )
        return self

    def messages(self) -> str:
        path = self.dir / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process is not None:
            self.process.stop(timeout=5)
