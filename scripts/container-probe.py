#!/usr/bin/env python3
"""Checks a cloudpop server listening on the image's ports of 127.0.0.1 (run inside the
container's network namespace by scripts/container-test): POP3 with STLS on 1110, POP3S on 1995,
/healthz and /readyz on 9110, grpc.health.v1 over TLS on 7110.
Usage: container-probe.py USER PASSWORD CERT (the certificate the image generated)"""

import poplib
import ssl
import sys
import urllib.request

import grpc

user, password, cert = sys.argv[1], sys.argv[2], sys.argv[3]
# The image generates a self-signed certificate on first start: nothing to verify it against.
insecure = ssl.create_default_context()
insecure.check_hostname = False
insecure.verify_mode = ssl.CERT_NONE


def check(what, ok, detail=""):
    if not ok:
        sys.exit(f"container-probe: {what} failed {detail}")
    print(f"    ok: {what}")


def retrieve(pop):
    pop.user(user)
    pop.pass_(password)
    count, _ = pop.stat()
    check("one message in the maildrop", count == 1, f"(STAT says {count})")
    _, lines, _ = pop.retr(1)
    check("RETR returns the delivered message", b"Subject: container smoke test" in lines, repr(lines))
    pop.quit()


pop = poplib.POP3("127.0.0.1", 1110, timeout=10)
check("POP3 greeting on 1110", pop.getwelcome().startswith(b"+OK"))
capa = pop.capa()
# The image turns the loopback exemption off: no password in clear, even from loopback.
check("CAPA before STLS offers STLS, not USER or SASL", "STLS" in capa and "SASL" not in capa and "USER" not in capa, repr(capa))
pop.stls(context=insecure)
capa = pop.capa()
check("CAPA after STLS offers USER and SASL", "USER" in capa and "SASL" in capa, repr(capa))
retrieve(pop)

pops = poplib.POP3_SSL("127.0.0.1", 1995, timeout=10, context=insecure)
check("POP3S greeting on 1995", pops.getwelcome().startswith(b"+OK"))
tls = pops.sock.version()
check("POP3S negotiates TLS 1.2 or 1.3", tls in ("TLSv1.2", "TLSv1.3"), tls)
retrieve(pops)

for path in ("/healthz", "/readyz"):
    with urllib.request.urlopen(f"http://127.0.0.1:9110{path}", timeout=5) as reply:
        check(f"GET {path} -> 200", reply.status == 200, str(reply.status))
with urllib.request.urlopen("http://127.0.0.1:9110/metrics", timeout=5) as reply:
    check("GET /metrics is OpenMetrics", b"cloudpop_ready" in reply.read())

# grpc.health.v1.Health/Check with an empty request (the API runs once a token is configured;
# health itself needs none). SERVING is field 1 = 1: bytes 08 01.
with open(cert, "rb") as f:
    credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
with grpc.secure_channel("127.0.0.1:7110", credentials) as channel:
    check_call = channel.unary_unary("/grpc.health.v1.Health/Check")
    answer = check_call(b"", timeout=5)
    check("gRPC health over TLS on 7110 says SERVING", answer == b"\x08\x01", repr(answer))
