"""The store's private certificate authority: one CA that signs a certificate per identity.

A certs directory (``<data_dir>/certs``, mode 0700) holds, every file mode 0600:

    ca.crt, ca.key                      the CA (EC P-256, self-signed, 10 years)
    node.crt, node.key                  role node: the services, TLS server and client
    admin.crt, admin.key                role admin: a TLS client only
    client.<name>.crt, client.<name>.key  role client (a shopper): a TLS client only

A certificate's role is its subject's OU and its name its CN; a node certificate lists its
hosts as subject alternative names. Only a node certificate allows ``serverAuth``, so an admin
or client certificate can never pose as a server of the store. Every failure is a
:class:`~pyrostore.errors.CertificateError` with one clear line.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import secrets
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pyrostore.errors import CertificateError

ROLES = ("node", "admin", "client")
LOCAL_HOSTS = ("127.0.0.1", "localhost")
CA_DAYS = 3650
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_PATTERN = re.compile(r"(?!-)[A-Za-z0-9*-]{1,63}(?:\.(?!-)[A-Za-z0-9-]{1,63})*\.?")
_BACKDATE = datetime.timedelta(hours=1)  # tolerate clocks a little behind the CA's
_EKU_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
              ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
_KEY_USAGES = ("digital_signature", "content_commitment", "key_encipherment",
               "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign")


@dataclass(frozen=True)
class CertPaths:
    """What a process needs to present one identity: its certificate, its key, the CA's cert."""

    cert: Path
    key: Path
    ca: Path


def default_directory(data_dir: Path) -> Path:
    """The certs directory of a data directory: ``<data_dir>/certs``."""
    return Path(data_dir) / "certs"


def paths(directory: Path, role: str, name: str | None = None) -> CertPaths:
    """Where the files of identity ``role`` (``name``: a client's) are in ``directory``; no I/O."""
    directory = Path(directory)
    if role not in ROLES:
        raise CertificateError(f"unknown certificate role {role!r}: one of {', '.join(ROLES)}")
    stem = role
    if role == "client":
        if name is None:
            raise CertificateError("a client certificate needs a name")
        stem = f"client.{_checked_name(name)}"
    return CertPaths(directory / f"{stem}.crt", directory / f"{stem}.key", directory / "ca.crt")


def init_ca(directory: Path, *, force: bool = False) -> CertPaths:
    """Make a new CA in ``directory``; refuse if it has one (ca.key or ca.crt), unless ``force``."""
    directory = Path(directory)
    ca = CertPaths(directory / "ca.crt", directory / "ca.key", directory / "ca.crt")
    _refuse_to_overwrite(ca, force=force)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyrostore"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"pyrostore CA {secrets.token_hex(4)}"),
    ])
    now = _now()
    cert = (
        _builder(subject, subject, key.public_key(), now - _BACKDATE,
                 now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    _save(ca, key, cert, force=force)
    return ca


def issue(directory: Path, role: str, *, name: str | None = None, hosts: Sequence[str] = (),
          days: int = 825, force: bool = False, into: Path | None = None) -> CertPaths:
    """Sign a new key and certificate of ``role`` with the CA in ``directory``.

    ``name`` is the CN (default: the role; required for a client). ``hosts`` matter for a node
    only (default 127.0.0.1 and localhost): IP addresses and DNS names it answers on. The
    certificate is valid ``days`` days, and never beyond the CA. Refuses to replace existing
    files unless ``force``. The files go to ``into`` (default: ``directory``).
    """
    target = paths(directory if into is None else into, role, name)
    name = _checked_name(role if name is None else name)
    if days < 1:
        raise CertificateError(f"a certificate must be valid for 1 day or more, not {days}")
    names = list(dict.fromkeys(_general_name(host) for host in hosts or LOCAL_HOSTS))
    if role != "node":
        names = []
    _refuse_to_overwrite(target, force=force)
    ca_cert, ca_key = _load_ca(Path(directory))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pyrostore"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role == "node":
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    now = _now()
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), now - _BACKDATE, not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True, key_agreement=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    _save(target, key, builder.sign(ca_key, hashes.SHA256()), force=force)
    return target


def ensure(directory: Path, *, hosts: Sequence[str],
           roles: Sequence[str] = ("node", "admin", "client")) -> dict[str, CertPaths]:
    """Make whatever of the CA, node, admin and client "shopper" identities (of ``roles``)
    is missing.

    What ``pyrostore up`` calls on every start; when all is in place it only reads the
    certificates. The node certificate must cover ``hosts`` plus 127.0.0.1 and localhost. A
    certificate that is missing, expired, signed by another CA or (node) short of a host is
    issued anew, keeping the hosts it had; that needs the CA key, without which it is an error.
    """
    directory = Path(directory)
    wanted = {_general_name(host) for host in (*LOCAL_HOSTS, *hosts)}
    if not (directory / "ca.crt").exists():
        if "admin" not in roles:  # a host of a cluster: its certificates come from the CA's
            raise CertificateError(f"no ca.crt in {directory}: copy this host's certificates "
                                   "there (pyrostore certs cluster makes them)")
        init_ca(directory)
    ca_cert = _read_cert(directory / "ca.crt")
    found = {}
    for role, name in (("node", None), ("admin", None), ("client", "shopper")):
        if role not in roles:
            continue
        target = paths(directory, role, name)
        cert = _read_cert(target.cert) if target.cert.exists() and target.key.exists() else None
        problem = _problem(cert, ca_cert, wanted if role == "node" else set())
        if problem:
            if not (directory / "ca.key").exists():
                raise CertificateError(f"{target.cert} {problem}, and there is no CA key in "
                                       f"{directory} to issue a new one")
            if cert is not None and role != "client":  # a client's name is its file's name
                name = _attribute(cert.subject, NameOID.COMMON_NAME)
            had = list(_sans(cert)) if cert else []
            keep = [_host(general) for general in (*had, *sorted(wanted - set(had), key=str))]
            issue(directory, role, name=name, hosts=keep if role == "node" else (), force=True)
        found[role] = target
    return found


def host_bundle(ca_directory: Path, target: Path, *, name: str, address: str, secret: str,
                force: bool = False) -> CertPaths:
    """What one host of a cluster needs, written to ``target``: the CA's certificate, a node
    certificate named ``name`` for ``address`` (and loopback) signed by the CA in
    ``ca_directory``, and the coordinators' Raft ``secret`` (``raft.secret``). Never the CA's
    key."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(target / "ca.crt", _read(Path(ca_directory) / "ca.crt"), force=force)
    issue(ca_directory, "node", name=name, hosts=[*LOCAL_HOSTS, address], force=force,
          into=target)
    _write_private(target / "raft.secret", secret.encode() + b"\n", force=force)
    return CertPaths(target / "node.crt", target / "node.key", target / "ca.crt")


def describe(path: Path) -> dict[str, Any]:
    """The certificate at ``path`` in plain values, for ``pyrostore certs show``."""
    cert = _read_cert(Path(path))
    extensions = {type(ext.value): ext.value for ext in cert.extensions}
    key_usage = extensions.get(x509.KeyUsage)
    eku = extensions.get(x509.ExtendedKeyUsage)
    constraints = extensions.get(x509.BasicConstraints)
    return {
        "path": str(path),
        "name": _attribute(cert.subject, NameOID.COMMON_NAME),
        "role": _attribute(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME),
        "issuer": _attribute(cert.issuer, NameOID.COMMON_NAME),
        "sans": [_host(general) for general in _sans(cert)],
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": f"{cert.serial_number:x}",
        "sha256": cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        "key_usage": [usage for usage in _KEY_USAGES
                      if isinstance(key_usage, x509.KeyUsage) and getattr(key_usage, usage)],
        "extended_key_usage": [_EKU_NAMES.get(oid, oid.dotted_string) for oid in eku]
        if isinstance(eku, x509.ExtendedKeyUsage) else [],
        "is_ca": isinstance(constraints, x509.BasicConstraints) and constraints.ca,
    }


def role_from_subject(subject: object) -> str | None:
    """The role (OU) in the ``subject`` of :meth:`ssl.SSLSocket.getpeercert`, if one of ROLES.

    Pure and cheap: it runs on every new connection. A subject that is malformed, or with no
    or several OUs, has no role.
    """
    role = _only_value(subject, "organizationalUnitName")
    return role if role in ROLES else None


def name_from_subject(subject: object) -> str | None:
    """The name (CN) in the ``subject`` of :meth:`ssl.SSLSocket.getpeercert`, if just one."""
    return _only_value(subject, "commonName")


def _only_value(subject: object, key: str) -> str | None:
    """The value of ``key`` in a getpeercert() subject: a tuple of RDNs of (key, value) pairs."""
    if not isinstance(subject, tuple):
        return None
    values = [pair[1] for rdn in subject if isinstance(rdn, tuple) for pair in rdn
              if isinstance(pair, tuple) and len(pair) == 2 and pair[0] == key]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


def _problem(cert: x509.Certificate | None, ca_cert: x509.Certificate,
             hosts: set[x509.GeneralName]) -> str:
    """Why ``cert`` cannot serve as it is, or "" if it can."""
    if cert is None:
        return "is missing"
    if cert.issuer != ca_cert.subject:
        return "was signed by another CA"
    if cert.not_valid_after_utc <= _now():
        return "has expired"
    missing = hosts - set(_sans(cert))
    if missing:
        return f"does not cover {', '.join(sorted(_host(general) for general in missing))}"
    return ""


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             not_before: datetime.datetime,
             not_after: datetime.datetime) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _key_usage(*, digital_signature: bool = False, key_agreement: bool = False,
               key_cert_sign: bool = False, crl_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=key_agreement, key_cert_sign=key_cert_sign,
        crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA's certificate and key, checked to be a CA and to belong together."""
    if not (directory / "ca.key").exists():
        raise CertificateError(f"no CA in {directory}: run `pyrostore certs init`")
    cert = _read_cert(directory / "ca.crt")
    try:
        key = serialization.load_pem_private_key(_read(directory / "ca.key"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertificateError(f"{directory / 'ca.key'} is not an unencrypted PEM key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise CertificateError(f"{directory / 'ca.key'} is not the key of {directory / 'ca.crt'}")
    return cert, key


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path))
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read {path}: {exc.strerror or exc}") from None


def _refuse_to_overwrite(target: CertPaths, *, force: bool) -> None:
    existing = [path for path in (target.cert, target.key) if path.exists()]
    if existing and not force:
        raise CertificateError(f"{existing[0]} already exists: use --force to replace it")


def _save(target: CertPaths, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate, *,
          force: bool) -> None:
    """Write the key, then the certificate, each 0600, in a 0700 directory made if missing."""
    directory = target.cert.parent
    try:
        if not directory.is_dir():
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # whatever the umask
    except OSError as exc:
        raise CertificateError(f"cannot make {directory}: {exc.strerror or exc}") from None
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    _write_private(target.key, key_pem, force=force)
    _write_private(target.cert, cert.public_bytes(serialization.Encoding.PEM), force=force)


def _write_private(path: Path, data: bytes, *, force: bool) -> None:
    """Write ``path`` (0600) atomically through a temporary file; replace it only if ``force``.

    Without ``force`` the file is linked into place, which fails if it exists: two processes
    making the same file at once cannot both win.
    """
    try:
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            if force:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
    except FileExistsError:
        raise CertificateError(f"{path} already exists: use --force to replace it") from None
    except OSError as exc:
        raise CertificateError(f"cannot write {path}: {exc.strerror or exc}") from None


def _checked_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise CertificateError(f"bad certificate name {name!r}: 1-64 letters, digits, . _ -, "
                               "the first a letter or digit")
    return name


def _general_name(host: str) -> x509.GeneralName:
    """A host as a SAN entry: an IP address, else a (lower-case) DNS name."""
    if not isinstance(host, str):
        raise CertificateError(f"bad host {host!r}: not a string")
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    if len(host) > 253 or not _DNS_PATTERN.fullmatch(host):
        raise CertificateError(f"bad host {host!r}: not an IP address or a DNS name")
    return x509.DNSName(host.lower())


def _host(general: x509.GeneralName) -> str:
    return str(general.value)


def _sans(cert: x509.Certificate) -> Iterable[x509.GeneralName]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        return []


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
