"""Interop helper for tests/interop.rs, run with the virtual environment scripts/test makes
(`target/interop-venv`: py-spiffe and cryptography from PyPI).

  svid_tool.py load CERT KEY BUNDLE TRUST_DOMAIN
      py-spiffe loads the X.509-SVID and the bundle; prints the SPIFFE ID and the number of roots.
  svid_tool.py get PORT CERT KEY BUNDLE
      Python's ssl, with the files as they are: one HTTPS request to 127.0.0.1:PORT as that
      workload; prints the status line.
  svid_tool.py make DIR KEY_TYPE SPIFFE_ID [DEFECT]
      An X.509-SVID made independently of Palisade, with `cryptography`: DIR/ca.pem (a root with the
      trust domain's ID), DIR/cert.pem and DIR/key.pem (the leaf). KEY_TYPE is p256 or ed25519.
      DEFECT, if given, breaks one rule of the X.509-SVID profile: ca-leaf (CA:true on the leaf),
      two-uris, ku-not-critical, no-digital-signature.
"""
import datetime
import socket
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def load(cert, key, bundle, trust_domain):
    from spiffe import TrustDomain, X509Bundle, X509Svid

    pem = serialization.Encoding.PEM
    svid = X509Svid.load(cert, key, pem)
    roots = X509Bundle.load(TrustDomain(trust_domain), bundle, pem)
    print(svid.spiffe_id, len(roots.x509_authorities))


def get(port, cert, key, bundle):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SVIDs name workloads by URI SAN, not by host name
    ctx.load_verify_locations(bundle)
    ctx.load_cert_chain(cert, key)
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            print(s.recv(200).split(b"\r\n")[0].decode())


def new_key(key_type):
    return ec.generate_private_key(ec.SECP256R1()) if key_type == "p256" else ed25519.Ed25519PrivateKey.generate()


def sign(builder, key):
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def make(out, key_type, spiffe_id, defect=None):
    trust_domain = spiffe_id.split("/")[2]
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = new_key(key_type)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Independent CA")])
    ca = sign(
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://" + trust_domain)]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False),
        ca_key,
    )
    leaf_key = new_key(key_type)
    uris = [x509.UniformResourceIdentifier(spiffe_id)]
    if defect == "two-uris":
        uris.append(x509.UniformResourceIdentifier(spiffe_id + "2"))
    leaf = sign(
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=defect == "ca-leaf", path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                defect != "no-digital-signature", False, defect == "no-digital-signature",
                False, False, False, False, False, False,
            ),
            critical=defect != "ku-not-critical",
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(uris), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        ),
        ca_key,
    )
    pem = serialization.Encoding.PEM
    with open(f"{out}/ca.pem", "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(f"{out}/cert.pem", "wb") as f:
        f.write(leaf.public_bytes(pem))
    with open(f"{out}/key.pem", "wb") as f:
        f.write(
            leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"load": load, "get": get, "make": make}[command](*args)
