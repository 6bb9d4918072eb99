"""Stand-ins for a provider's identity services, for tests/suite/auth_mechanisms.rs and auth_directories.rs (through common/identity.rs).

  pki DIR                      a CA, a server certificate for localhost/127.0.0.1 and a client
                               certificate, made with the openssl command line
  serve --state DIR ...        an HTTPS server: POST /auth is the HTTP directory (mutual TLS and
                               a bearer token required), GET /jwks.json an identity provider's
                               key set, GET /calls how often each was called
  newkey --state DIR KID ALG   a signing key (RS256 or ES256) in the key set
  mint --state DIR KID CLAIMS  a JWT signed by PyJWT with that key (ALG none: unsigned)

The directory's users and its behaviour are files in the state directory the test writes:
users.json ({login: {"password": ..., "answer": {...}}}) and mode ("ok", "500", "garbage").
"""

import json
import os
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def pki(directory):
    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec_key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=cloudpop test CA")
    for name, ext in [
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ]:
        with open(os.path.join(directory, name + ".ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        run("req", *ec_key, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")


def keys(state):
    folder = os.path.join(state, "keys")
    os.makedirs(folder, exist_ok=True)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            yield name[:-4], serialization.load_pem_private_key(f.read(), None)


def jwks(state):
    out = []
    for kid, key in keys(state):
        if isinstance(key, rsa.RSAPrivateKey):
            jwk, alg = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "RS256"
        else:
            jwk, alg = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "ES256"
        jwk.update(kid=kid, alg=alg, use="sig")
        out.append(jwk)
    return {"keys": out}


def newkey(state, kid, alg):
    if alg == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    os.makedirs(os.path.join(state, "keys"), exist_ok=True)
    with open(os.path.join(state, "keys", kid + ".pem"), "wb") as f:
        f.write(pem)


def mint(state, kid, claims, alg=None):
    claims = json.loads(claims)
    now = int(time.time())
    for field in ("exp", "nbf", "iat"):
        if isinstance(claims.get(field), str):  # "+300" or "-60": relative to now
            claims[field] = now + int(claims[field])
    if alg == "none":
        return jwt.encode(claims, None, algorithm="none")
    path = os.path.join(state, "keys", kid + ".pem")
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), None)
    algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def serve(state, port_file, cert, key, client_ca, token):
    calls = {"auth": 0, "jwks": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status, body):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/jwks.json":
                with lock:
                    calls["jwks"] += 1
                self.reply(200, jwks(state))
            elif self.path == "/calls":
                with lock:
                    self.reply(200, dict(calls))
            else:
                self.reply(404, {})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/auth":
                return self.reply(404, {})
            if not self.connection.getpeercert():
                return self.reply(403, {"error": "client certificate required"})
            if self.headers.get("Authorization") != "Bearer " + token:
                return self.reply(401, {"error": "bad token"})
            with lock:
                calls["auth"] += 1
            with open(os.path.join(state, "mode")) as f:
                mode = f.read().strip()
            if mode == "500":
                return self.reply(500, {"error": "database down"})
            if mode == "garbage":
                return self.reply(200, b"<html>maintenance</html>")
            request = json.loads(body)
            with open(os.path.join(state, "users.json")) as f:
                user = json.load(f).get(request["user"])
            if request.get("lookup") is True and request.get("protocol") in ("lmtp", "pop3") and "password" not in request:
                found = user is not None
            else:
                found = user is not None and user["password"] == request["password"] and request.get("protocol") == "pop3"
            if not found:
                return self.reply(200, {"result": "fail"})
            self.reply(200, {"result": "ok", **user.get("answer", {})})

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(port_file + ".tmp", port_file)
    server.serve_forever()


def main(argv):
    command = argv[0]
    if command == "pki":
        pki(argv[1])
    elif command == "newkey":
        newkey(argv[2], argv[3], argv[4])
    elif command == "mint":
        print(mint(argv[2], argv[3], argv[4], argv[5] if len(argv) > 5 else None))
    elif command == "serve":
        options = dict(zip(argv[1::2], argv[2::2]))
        serve(options["--state"], options["--port-file"], options["--cert"], options["--key"],
              options["--client-ca"], options["--token"])
    else:
        sys.exit("unknown command " + command)


if __name__ == "__main__":
    main(sys.argv[1:])
