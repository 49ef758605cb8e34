"""A pjsua2 phone in a process of its own, driven over stdin/stdout (JSON lines).

pjsua2's Endpoint is a process-wide singleton with threads of its own, so it never
runs inside pytest: the test starts `python tests/helpers/pjsua_phone.py LOGFILE`, writes
commands as JSON lines and reads events back as JSON lines. Everything pjsua2 does
happens on this process's main thread (no SIP worker threads: `threadCnt = 0`, the main
loop polls `libHandleEvents`), commands included, so no callback races a command.

Commands (`{"cmd": ...}`):
  start      transport, server [host, port], domain, user, password, params
             (RFC 8599 Contact URI params), instance (+sip.instance URN),
             at_address (registrar URI at the server's address, no outbound proxy;
             else registrar sip:<domain> through an outbound proxy at the address)
  register / unregister   the account's registration on / off (same Contact)
  answer     call, code       answer an incoming call (180, 200, ...)
  call       uri, no_sdp      a new call; no_sdp: INVITE without an offer
  hangup     call
  quit                        hang up, destroy the library, exit
Events (`{"event": ...}`): ready, started, reg (code, expiration, active),
incoming (call, msg), calling (call), state (call, state, code, role),
sip (dir: tx|rx, msg: the whole message, as pjsua2 logged it), error (what), bye.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import traceback
from typing import Any

# pjsua2 prints to fd 1 before any config applies: keep fd 1 for our JSON lines only.
_out = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
_lock = threading.Lock()


def emit(event: str, **fields: Any) -> None:
    with _lock:
        _out.write(json.dumps({"event": event, **fields}) + "\n")


try:
    import pjsua2 as pj
except ImportError as exc:  # the test skips on this
    emit("error", what=f"import pjsua2: {exc}")
    sys.exit(3)

# "TX 512 bytes Request msg INVITE/cseq=1 (tdta0x...) to TCP 127.0.0.1:5060:\n<msg>\n--end msg--"
_SIP_LOG = re.compile(
    r"\b(TX|RX) \d+ bytes .*?(?:to|from) \S+ [^:\n]+:\d+:\r?\n(.*?)\r?\n--end msg--", re.S
)


class Logger(pj.LogWriter):  # type: ignore[misc]
    def __init__(self, path: str) -> None:
        super().__init__()
        self.file = open(path, "a", buffering=1)  # lives as long as the process

    def write(self, entry: Any) -> None:
        text = entry.msg
        with _lock:
            self.file.write(text if text.endswith("\n") else text + "\n")
        m = _SIP_LOG.search(text)
        if m:
            emit("sip", dir=m.group(1).lower(), msg=m.group(2))


class Phone(pj.Call):  # type: ignore[misc]
    def __init__(self, acc: pj.Account, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)

    def onCallState(self, prm: Any) -> None:
        ci = self.getInfo()
        emit("state", call=ci.id, state=ci.stateText, code=ci.lastStatusCode, role=ci.role)


class App(pj.Account):  # type: ignore[misc]
    def __init__(self, driver: Driver) -> None:
        super().__init__()
        self.driver = driver

    def onRegState(self, prm: Any) -> None:
        info = self.getInfo()
        emit("reg", code=prm.code, expiration=prm.expiration, active=info.regIsActive)

    def onIncomingCall(self, prm: Any) -> None:
        call = Phone(self, prm.callId)
        self.driver.calls[prm.callId] = call
        emit("incoming", call=prm.callId, msg=prm.rdata.wholeMsg)


class Driver:
    def __init__(self, log_path: str) -> None:
        self.log_path = log_path
        self.ep: Any = None
        self.acc: App | None = None
        self.calls: dict[int, Phone] = {}
        self.commands: queue.Queue[dict[str, Any] | None] = queue.Queue()

    def read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip():
                self.commands.put(json.loads(line))
        self.commands.put(None)  # the test went away: quit

    def run(self) -> None:
        threading.Thread(target=self.read_stdin, daemon=True).start()
        emit("ready")
        while True:
            if self.ep is not None:
                self.ep.libHandleEvents(10)
            try:
                cmd = self.commands.get(timeout=0 if self.ep is not None else 1)
            except queue.Empty:
                continue
            if cmd is None or cmd["cmd"] == "quit":
                self.quit()
                return
            try:
                getattr(self, "do_" + cmd["cmd"])(cmd)
            except Exception:
                emit("error", what=traceback.format_exc())

    def do_start(self, cmd: dict[str, Any]) -> None:
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.userAgent = "pjsua2 (sipwake test)"
        cfg.medConfig.threadCnt = 0
        self.logger = Logger(self.log_path)
        cfg.logConfig.writer = self.logger
        cfg.logConfig.level = 5
        cfg.logConfig.consoleLevel = 5  # what reaches our writer
        cfg.logConfig.msgLogging = True
        ep.libInit(cfg)
        ep.audDevManager().setNullDev()

        kind = cmd["transport"]
        tcfg = pj.TransportConfig()
        tcfg.port = 0
        tcfg.boundAddress = "127.0.0.1"
        tcfg.publicAddress = "127.0.0.1"
        if kind == "tls":
            tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
            tcfg.tlsConfig.verifyServer = False  # the test server's certificate is self-signed
        types = {
            "udp": pj.PJSIP_TRANSPORT_UDP,
            "tcp": pj.PJSIP_TRANSPORT_TCP,
            "tls": pj.PJSIP_TRANSPORT_TLS,
        }
        ep.transportCreate(types[kind], tcfg)
        ep.libStart()

        host, port = cmd["server"]
        domain, user = cmd["domain"], cmd["user"]
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{user}@{domain}"
        acfg.regConfig.timeoutSec = 300
        acfg.regConfig.retryIntervalSec = 0  # a failed REGISTER is reported, not retried
        if cmd.get("at_address"):
            acfg.regConfig.registrarUri = f"sip:{host}:{port};transport={kind}"
        else:  # no DNS for the domain here: the outbound proxy is the server's address
            acfg.regConfig.registrarUri = f"sip:{domain};transport={kind}"
            acfg.sipConfig.proxies.append(f"sip:{host}:{port};transport={kind};lr")
        acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, cmd["password"]))
        acfg.sipConfig.contactUriParams = cmd.get("params", "")
        if cmd.get("instance"):
            acfg.natConfig.sipOutboundInstanceId = f"<{cmd['instance']}>"
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        self.acc = App(self)
        self.acc.create(acfg)
        emit("started")

    def do_register(self, cmd: dict[str, Any]) -> None:
        assert self.acc is not None
        self.acc.setRegistration(True)

    def do_unregister(self, cmd: dict[str, Any]) -> None:
        assert self.acc is not None
        self.acc.setRegistration(False)

    def do_answer(self, cmd: dict[str, Any]) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = cmd.get("code", 200)
        self.calls[cmd["call"]].answer(prm)

    def do_call(self, cmd: dict[str, Any]) -> None:
        assert self.acc is not None
        call = Phone(self.acc)
        prm = pj.CallOpParam(True)
        if cmd.get("no_sdp"):
            prm.opt.flag |= pj.PJSUA_CALL_NO_SDP_OFFER
        call.makeCall(cmd["uri"], prm)
        self.calls[call.getId()] = call
        emit("calling", call=call.getId())

    def do_hangup(self, cmd: dict[str, Any]) -> None:
        self.calls[cmd["call"]].hangup(pj.CallOpParam())

    def quit(self) -> None:
        if self.ep is not None:
            self.ep.hangupAllCalls()
            self.calls.clear()
            self.acc = None
            self.ep.libDestroy(pj.PJSUA_DESTROY_NO_NETWORK)  # no unregistering: fast
        emit("bye")
        _out.flush()
        os._exit(0)  # no interpreter teardown racing pjsua2's SWIG destructors


if __name__ == "__main__":
    Driver(sys.argv[1] if len(sys.argv) > 1 else os.devnull).run()
