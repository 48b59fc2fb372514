"""Throwaway certificates for TLS tests: a CA, the broker's certificate, client certificates."""

from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trustme
from cryptography.hazmat.primitives import serialization

if TYPE_CHECKING:
    from collections.abc import Iterator

# The broker's name in its certificate. Its address is deliberately not in
# it, so that connecting by address shows a host name mismatch.
BROKER_NAME = "localhost"


@attrs.frozen
class TLSFiles:
    """PEM files of a throwaway CA, the broker's certificate and client certificates."""

    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    # The client certificate with its key in the same file.
    client_combined: Path
    client_key_encrypted: Path
    # A CA that signed nothing the broker uses, and a client certificate of its own.
    other_ca: Path
    other_client_combined: Path


@contextmanager
def make_tls_files() -> Iterator[TLSFiles]:
    """Write fresh certificates to a folder the broker (another user) can read."""
    # Not pytest's tmp_path: its folders are private to this user, and
    # RabbitMQ runs as its own. These keys protect nothing.
    folder = Path(tempfile.mkdtemp(prefix="tower-trio-tls-"))
    try:
        folder.chmod(0o755)
        ca = trustme.CA()
        server = ca.issue_cert(BROKER_NAME)
        client = ca.issue_cert("tower-trio-test-client")
        other_ca = trustme.CA()
        other_client = other_ca.issue_cert("tower-trio-stranger")
        files = TLSFiles(
            folder=folder,
            ca=folder / "ca.pem",
            server_cert=folder / "server.crt",
            server_key=folder / "server.key",
            client_cert=folder / "client.crt",
            client_key=folder / "client.key",
            client_combined=folder / "client.pem",
            client_key_encrypted=folder / "client-encrypted.key",
            other_ca=folder / "other-ca.pem",
            other_client_combined=folder / "other-client.pem",
        )
        ca.cert_pem.write_to_path(str(files.ca))
        server.cert_chain_pems[0].write_to_path(str(files.server_cert))
        server.private_key_pem.write_to_path(str(files.server_key))
        client.cert_chain_pems[0].write_to_path(str(files.client_cert))
        client.private_key_pem.write_to_path(str(files.client_key))
        client.private_key_and_cert_chain_pem.write_to_path(str(files.client_combined))
        key = serialization.load_pem_private_key(client.private_key_pem.bytes(), None)
        files.client_key_encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        other_ca.cert_pem.write_to_path(str(files.other_ca))
        other_client.private_key_and_cert_chain_pem.write_to_path(str(files.other_client_combined))
        for path in folder.iterdir():
            path.chmod(0o644)
        yield files
    finally:
        shutil.rmtree(folder)
