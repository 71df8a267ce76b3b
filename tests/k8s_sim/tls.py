"""A serving certificate for the simulated API server, as a cluster's CA would issue one.

A real API server serves HTTPS with a certificate signed by the cluster's CA, which
clients trust through `ca.crt` (a pod's service account, a kubeconfig's
`certificate-authority-data`). `ServingCert()` makes a throwaway CA and a certificate for
127.0.0.1 signed by it; `.context()` is the server's side, `.ca_pem` the clients'.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_PEM = serialization.Encoding.PEM


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class ServingCert:
    """A CA (`ca_pem`) and the server certificate it signed for IP 127.0.0.1."""

    def __init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("slipway-sim-ca"))
            .issuer_name(_name("slipway-sim-ca"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("kube-apiserver"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = ca.public_bytes(_PEM).decode()
        self._cert_pem = cert.public_bytes(_PEM) + ca.public_bytes(_PEM)
        self._key_pem = key.private_bytes(
            _PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def context(self) -> ssl.SSLContext:
        """The server side: this certificate and its key."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # load_cert_chain reads files only: a private temporary directory, gone at once.
        with tempfile.TemporaryDirectory(prefix="k8s-sim-tls-") as tmp:
            cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
            cert.write_bytes(self._cert_pem)
            key.write_bytes(self._key_pem)
            key.chmod(0o600)
            context.load_cert_chain(cert, key)
        return context
