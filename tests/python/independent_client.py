"""A client generated independently from proto/ (Python grpcio-tools), used by tests/suite/api_python.rs.

Usage: independent_client.py PROTO_DIR API_ADDR POP3_PORT ADMIN_TOKEN INGEST_TOKEN
Generates stubs from the .proto files, creates an account and delivers mail over gRPC, then
retrieves the mail over POP3 and checks it is byte-exact. Prints "ok" on success.
"""
import importlib, importlib.resources, os, poplib, sys, tempfile

import grpc
from grpc_tools import protoc



def check(condition, what):
    """An assertion that `python3 -O` cannot remove."""
    if not condition:
        raise SystemExit(f"check failed: {what}")


proto_dir, api, pop3_port, admin_token, ingest_token = sys.argv[1:6]
out = tempfile.mkdtemp()
# The well-known types (google/protobuf/field_mask.proto) ship inside grpcio-tools.
well_known = str(importlib.resources.files("grpc_tools") / "_proto")
for name in ("admin", "ingest"):
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{well_known}", f"--python_out={out}",
                      f"--grpc_python_out={out}", f"{proto_dir}/cloudpop/v1/{name}.proto"])
    check(rc == 0, f"protoc failed for {name}.proto")
sys.path.insert(0, out)
admin_pb = importlib.import_module("cloudpop.v1.admin_pb2")
admin_grpc = importlib.import_module("cloudpop.v1.admin_pb2_grpc")
ingest_pb = importlib.import_module("cloudpop.v1.ingest_pb2")
ingest_grpc = importlib.import_module("cloudpop.v1.ingest_pb2_grpc")

channel = grpc.insecure_channel(api)
admin = admin_grpc.AdminStub(channel)
ingest = ingest_grpc.IngestStub(channel)
as_admin = [("authorization", f"Bearer {admin_token}")]
as_ingest = [("authorization", f"Bearer {ingest_token}")]

account = admin.CreateAccount(admin_pb.CreateAccountRequest(name="Py.User", password="py secret",
                              quota=admin_pb.Quota(max_messages=10)), metadata=as_admin)
check(account.name == "py.user" and account.enabled and account.quota.max_messages == 10, account)

try:
    admin.CreateAccount(admin_pb.CreateAccountRequest(name="py.user", password="x"), metadata=as_admin)
    raise SystemExit("duplicate account accepted")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.ALREADY_EXISTS, e.code())
try:
    admin.GetServerInfo(admin_pb.GetServerInfoRequest(), metadata=as_ingest)
    raise SystemExit("ingest token accepted by Admin")
except grpc.RpcError as e:
    check(e.code() == grpc.StatusCode.PERMISSION_DENIED, e.code())

message = b"From: py@example.com\nSubject: from python\n\n.dotted\n" + b"".join(b"line %d\n" % i for i in range(2000))

def frames():
    yield ingest_pb.DeliverRequest(envelope=ingest_pb.Envelope(recipients=["py.user"], idempotency_key="py-1"))
    for i in range(0, len(message), 4096):
        yield ingest_pb.DeliverRequest(chunk=message[i:i + 4096])
    yield ingest_pb.DeliverRequest(end=ingest_pb.End(size=len(message)))

reply = ingest.Deliver(frames(), metadata=as_ingest)
check(reply.results[0].status == ingest_pb.DELIVERY_STATUS_STORED, reply)
again = ingest.Deliver(frames(), metadata=as_ingest)
check(again.results[0].status == ingest_pb.DELIVERY_STATUS_DUPLICATE, again)
check(again.results[0].message_id == reply.results[0].message_id, "the duplicate names the first message")

stats = admin.GetMailboxStats(admin_pb.GetMailboxStatsRequest(name="py.user"), metadata=as_admin)
want = message.replace(b"\n", b"\r\n")
check(stats.messages == 1 and stats.bytes == len(want) == reply.size, (stats, len(want), reply.size))

pop = poplib.POP3("127.0.0.1", int(pop3_port))
pop.user("py.user")
pop.pass_("py secret")
_, lines, octets = pop.retr(1)
check(b"\r\n".join(lines) + b"\r\n" == want, "message differs")
uid = pop.uidl(1).split()[2].decode()
check(uid == reply.results[0].message_id, (uid, reply.results[0].message_id))
pop.quit()
print("ok")
