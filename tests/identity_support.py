"""A real token flow for tests: a self-signed certificate for Azurite's HTTPS, and a managed identity
endpoint speaking the App Service protocol that azure-identity's ManagedIdentityCredential calls."""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from durable_ext.host.azurite import AzuriteTls

STORAGE_AUDIENCE = "https://storage.azure.com"
"""The audience of storage tokens (what Azurite's basic OAuth accepts for every account)."""
TOKEN_LIFETIME_SECONDS = 3600


def self_signed_tls(directory: Path) -> AzuriteTls:
    """A new key and self-signed certificate for 127.0.0.1 and localhost, written as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "durable_ext test Azurite")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        # What strict X.509 verification (Python 3.13's default) also asks of a self-signed root.
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return AzuriteTls(cert=cert_path, key=key_path)


@dataclass
class IdentityEndpoint:
    """A running App Service managed identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``)."""

    url: str
    header: str
    tenant: str
    audience: str = STORAGE_AUDIENCE
    requests: list[dict[str, str]] = field(default_factory=list)
    """The query of every token request answered, in order."""

    def environment(self) -> dict[str, str]:
        """The variables that point azure-identity's ManagedIdentityCredential here."""
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.header}

    def issue(self, resource: str, client_id: str) -> dict[str, str]:
        """A token answer: a JWT with the claims Azure AD puts in a managed identity's storage token."""
        now = int(time.time())
        claims = {
            "aud": self.audience,
            "iss": f"https://sts.windows.net/{self.tenant}/",
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECONDS,
            "appid": client_id,
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, client_id)),
            "tid": self.tenant,
            "ver": "1.0",
        }
        token = jwt.encode(claims, secrets.token_bytes(32), algorithm="HS256")
        return {
            "access_token": token,
            "expires_on": str(claims["exp"]),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        }


def _handler(endpoint: IdentityEndpoint) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = {key: values[0] for key, values in parse_qs(urlsplit(self.path).query).items()}
            if self.headers.get("X-IDENTITY-HEADER") != endpoint.header:
                self._answer(401, {"error": "invalid_request", "error_description": "bad identity header"})
                return
            endpoint.requests.append(query)
            client_id = query.get("client_id", "system-assigned-" + endpoint.tenant)
            self._answer(200, endpoint.issue(query.get("resource", ""), client_id))

        def _answer(self, status: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests read :attr:`IdentityEndpoint.requests` instead."""

    return Handler


@contextmanager
def identity_endpoint(audience: str = STORAGE_AUDIENCE) -> Iterator[IdentityEndpoint]:
    """Serve a managed identity endpoint on a free loopback port until the block ends."""
    endpoint = IdentityEndpoint(
        url="", header=secrets.token_hex(16), tenant=str(uuid.uuid4()), audience=audience
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(endpoint))
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/msi/token"
    thread = threading.Thread(target=server.serve_forever, name="identity-endpoint", daemon=True)
    thread.start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
