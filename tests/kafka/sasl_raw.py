"""A tiny raw Kafka SASL client (standard library only) for the bad cases kcat and
confluent-kafka cannot be made to send: tampered SCRAM proofs and nonces, requests before
authentication, oversized SASL messages. Prints one JSON object per line.

usage: sasl_raw.py CASE HOST:PORT [USER PASSWORD MECHANISM]
"""
import base64, hashlib, hmac, json, os, socket, struct, sys, time

CORRELATION = [0]


def frame(api_key, version, body):
    CORRELATION[0] += 1
    client = b"sasl-raw"
    header = struct.pack(">hhih", api_key, version, CORRELATION[0], len(client)) + client
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def call(sock, api_key, version, body):
    """The response body (after the correlation id), or None when the broker closed."""
    try:
        sock.sendall(frame(api_key, version, body))
        size = read_exact(sock, 4)
        if size is None:
            return None
        data = read_exact(sock, struct.unpack(">i", size)[0])
    except (ConnectionResetError, BrokenPipeError):
        return None
    if data is None:
        return None
    return data[4:]


def closed(sock):
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def handshake(sock, mechanism):
    body = call(sock, 17, 1, string(mechanism))
    if body is None:
        return None, []
    (error,) = struct.unpack(">h", body[:2])
    (count,) = struct.unpack(">i", body[2:6])
    at, names = 6, []
    for _ in range(count):
        (n,) = struct.unpack(">h", body[at:at + 2])
        names.append(body[at + 2:at + 2 + n].decode())
        at += 2 + n
    return error, names


def authenticate(sock, token):
    """SaslAuthenticate v1: (error, message, auth_bytes, session_lifetime_ms), or None."""
    body = call(sock, 36, 1, struct.pack(">i", len(token)) + token)
    if body is None:
        return None
    (error, n) = struct.unpack(">hh", body[:4])
    at = 4
    message = None
    if n >= 0:
        message = body[at:at + n].decode()
        at += n
    (m,) = struct.unpack(">i", body[at:at + 4])
    auth = body[at + 4:at + 4 + m]
    (lifetime,) = struct.unpack(">q", body[at + 4 + m:at + 12 + m])
    return error, message, auth, lifetime


def scram(sock, mechanism, user, password, tamper=None):
    digest = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[mechanism]
    error, _ = handshake(sock, mechanism)
    if error != 0:
        return {"step": "handshake", "error": error}
    nonce = base64.b64encode(os.urandom(18)).decode()
    bare = "n=%s,r=%s" % (user, nonce)
    answer = authenticate(sock, ("n,," + bare).encode())
    if answer is None or answer[0] != 0:
        return {"step": "client-first", "error": None if answer is None else answer[0],
                "message": None if answer is None else answer[1]}
    server_first = answer[2].decode()
    fields = dict(f.split("=", 1) for f in server_first.split(","))
    salt, iterations, full_nonce = base64.b64decode(fields["s"]), int(fields["i"]), fields["r"]
    if not full_nonce.startswith(nonce):
        return {"step": "server-first", "error": "server nonce does not extend ours"}
    if tamper == "nonce":
        full_nonce = full_nonce[:-1] + ("A" if full_nonce[-1] != "A" else "B")
    salted = hashlib.pbkdf2_hmac(digest().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", digest).digest()
    stored_key = digest(client_key).digest()
    without_proof = "c=biws,r=" + full_nonce
    auth_message = ",".join([bare, server_first, without_proof]).encode()
    signature = hmac.new(stored_key, auth_message, digest).digest()
    proof = bytearray(a ^ b for a, b in zip(client_key, signature))
    if tamper == "proof":
        proof[0] ^= 1
    final = without_proof + ",p=" + base64.b64encode(bytes(proof)).decode()
    started = time.monotonic()
    answer = authenticate(sock, final.encode())
    elapsed_ms = (time.monotonic() - started) * 1000
    if answer is None:
        return {"step": "client-final", "error": None}
    result = {"step": "client-final", "error": answer[0], "message": answer[1],
              "lifetime_ms": answer[3], "final_ms": elapsed_ms, "salt": fields["s"]}
    if answer[0] == 0:
        server_key = hmac.new(salted, b"Server Key", digest).digest()
        expected = "v=" + base64.b64encode(
            hmac.new(server_key, auth_message, digest).digest()).decode()
        result["server_verified"] = answer[2].decode() == expected
    return result


def connect(address):
    host, port = address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def main():
    case, address = sys.argv[1], sys.argv[2]
    user, password, mechanism = (sys.argv[3:6] + [None, None, None])[:3]
    sock = connect(address)
    out = {"case": case}
    if case in ("scram", "tamper-proof", "tamper-nonce"):
        tamper = {"scram": None, "tamper-proof": "proof", "tamper-nonce": "nonce"}[case]
        out.update(scram(sock, mechanism, user, password, tamper))
        if out.get("error") == 0:
            # Authenticated: Metadata v0 (all topics) is served now.
            out["metadata_after"] = call(sock, 3, 0, struct.pack(">i", 0)) is not None
        else:
            out["closed"] = closed(sock)
    elif case == "expire":
        # Authenticate, let the session's lifetime run out, then ask for Metadata.
        out.update(scram(sock, mechanism, user, password))
        time.sleep(out["lifetime_ms"] / 1000 + 0.5)
        out["answered_after_expiry"] = call(sock, 3, 0, struct.pack(">i", 0)) is not None
    elif case == "plain":
        error, _ = handshake(sock, "PLAIN")
        answer = authenticate(sock, b"\0" + user.encode() + b"\0" + password.encode())
        out.update({"handshake": error, "error": answer and answer[0],
                    "message": answer and answer[1]})
        if answer and answer[0] != 0:
            out["closed"] = closed(sock)
    elif case == "before-auth":
        # Metadata v0 (all topics) before any SASL: the broker closes the connection.
        out["answered"] = call(sock, 3, 0, struct.pack(">i", 0)) is not None
        out["closed"] = closed(sock)
    elif case == "handshake":
        error, names = handshake(sock, mechanism)
        out.update({"error": error, "mechanisms": names, "closed": False})
        # The connection stays usable on a listener without SASL.
        out["metadata_after"] = call(sock, 3, 0, struct.pack(">i", 0)) is not None
    elif case == "oversized-token":
        error, _ = handshake(sock, mechanism)
        answer = authenticate(sock, b"n,,n=" + b"x" * (100 << 10) + b",r=abc")
        out.update({"error": answer and answer[0], "message": answer and answer[1]})
        out["closed"] = closed(sock)
    elif case == "oversized-frame":
        error, _ = handshake(sock, mechanism)
        out["answered"] = authenticate(sock, b"x" * (600 << 10)) is not None
        out["closed"] = closed(sock)
    else:
        raise SystemExit("unknown case " + case)
    print(json.dumps(out), flush=True)


main()
