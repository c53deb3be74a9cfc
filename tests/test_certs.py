"""The private CA: file modes, the shape of each role's certificate, real TLS handshakes that
accept a role and refuse a misused or foreign certificate, ``ensure``, errors and the CLI."""

from __future__ import annotations

import io
import json
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from rich.console import Console

from pyrostore import certs
from pyrostore.certs import CertPaths, describe, ensure, init_ca, issue
from pyrostore.cli import main
from pyrostore.client.views import certificate_table
from pyrostore.errors import CertificateError, ConfigError

pytestmark = pytest.mark.timeout(30)
SERVER, CLIENT = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_ca(directory)
    return directory


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def extension(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(directory.iterdir())}


def test_every_file_is_private(ca_dir: Path) -> None:
    issue(ca_dir, "node")
    issue(ca_dir, "admin")
    issue(ca_dir, "client", name="alice")
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    names = sorted(p.name for p in ca_dir.iterdir())
    assert names == sorted(f"{stem}.{ext}" for stem in ("ca", "node", "admin", "client.alice")
                           for ext in ("crt", "key"))  # and no temporary file left behind
    for path in ca_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_ca(ca_dir: Path) -> None:
    cert = load(ca_dir / "ca.crt")
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(common_name, str)
    assert common_name.startswith("pyrostore CA ") and len(common_name.split()[-1]) == 8
    assert cert.issuer == cert.subject
    constraints = extension(cert, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = extension(cert, x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=3649)
    assert describe(ca_dir / "ca.crt")["is_ca"] is True


def test_node_certificate_serves_and_connects(ca_dir: Path) -> None:
    made = issue(ca_dir, "node", hosts=["10.0.0.5", "::1", "Store.Example", "10.0.0.5"])
    assert made == CertPaths(ca_dir / "node.crt", ca_dir / "node.key", ca_dir / "ca.crt")
    cert, ca = load(made.cert), load(made.ca)
    assert list(extension(cert, x509.ExtendedKeyUsage).value) == [SERVER, CLIENT]
    sans = extension(cert, x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5", "::1"]
    assert sans.get_values_for_type(x509.DNSName) == ["store.example"]
    assert extension(cert, x509.KeyUsage).critical
    assert not extension(cert, x509.BasicConstraints).value.ca
    assert (extension(cert, x509.AuthorityKeyIdentifier).value.key_identifier
            == extension(ca, x509.SubjectKeyIdentifier).value.digest)
    assert timedelta(days=824) < cert.not_valid_after_utc - datetime.now(UTC) < timedelta(days=826)
    shown = describe(made.cert)
    assert (shown["role"], shown["name"], shown["is_ca"]) == ("node", "node", False)
    assert shown["extended_key_usage"] == ["serverAuth", "clientAuth"]
    assert shown["key_usage"] == ["digital_signature", "key_agreement"]


def test_node_hosts_default_to_this_machine(ca_dir: Path) -> None:
    assert describe(issue(ca_dir, "node").cert)["sans"] == ["127.0.0.1", "localhost"]


@pytest.mark.parametrize(("role", "name", "file"), [("admin", None, "admin.crt"),
                                                    ("admin", "ops", "admin.crt"),
                                                    ("client", "alice", "client.alice.crt")])
def test_admin_and_client_are_clients_only(ca_dir: Path, role: str, name: str | None,
                                           file: str) -> None:
    made = issue(ca_dir, role, name=name)
    assert made.cert == ca_dir / file and made.key == ca_dir / file.replace(".crt", ".key")
    shown = describe(made.cert)
    assert (shown["role"], shown["name"]) == (role, name or role)
    assert shown["extended_key_usage"] == ["clientAuth"] and shown["sans"] == []


def server_context(identity: CertPaths, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca))
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(identity.cert, identity.key)
    return context


def client_context(identity: CertPaths, ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.load_cert_chain(identity.cert, identity.key)
    return context


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[Any, Any]:
    """One TLS connection on 127.0.0.1: the peer certificate each side saw, or its error."""
    seen: dict[str, Any] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5)

        def serve() -> None:
            try:
                connection, _ = listener.accept()
                connection.settimeout(5)
                with server.wrap_socket(connection, server_side=True) as tls:
                    seen["server"] = tls.getpeercert()
                    tls.sendall(b"ok")
            except OSError as exc:
                seen["server"] = exc

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                    client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                peer = tls.getpeercert()
                if tls.recv(2) != b"ok":  # TLS 1.3: a refused client certificate shows here
                    raise ConnectionError("the server closed the connection")
                seen["client"] = peer
        except OSError as exc:
            seen["client"] = exc
        thread.join(10)
    return seen["server"], seen["client"]


@pytest.mark.parametrize(("role", "name"), [("client", "alice"), ("admin", "admin")])
def test_a_server_sees_the_role_and_name_of_its_client(ca_dir: Path, role: str,
                                                       name: str) -> None:
    node, ca = issue(ca_dir, "node"), ca_dir / "ca.crt"
    server_saw, client_saw = handshake(server_context(node, ca),
                                       client_context(issue(ca_dir, role, name=name), ca))
    assert isinstance(server_saw, dict), server_saw
    assert certs.role_from_subject(server_saw["subject"]) == role
    assert certs.name_from_subject(server_saw["subject"]) == name
    assert isinstance(client_saw, dict), client_saw
    assert certs.role_from_subject(client_saw["subject"]) == "node"


def test_a_client_certificate_cannot_act_as_a_server(ca_dir: Path) -> None:
    alice, bob, ca = issue(ca_dir, "client", name="alice"), issue(ca_dir, "client", name="bob"), \
        ca_dir / "ca.crt"
    _, client_saw = handshake(server_context(alice, ca), client_context(bob, ca))
    assert isinstance(client_saw, ssl.SSLCertVerificationError), client_saw
    assert "purpose" in client_saw.verify_message


def test_a_certificate_of_another_ca_is_refused(ca_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    stranger, node, ca = issue(other, "client", name="eve"), issue(ca_dir, "node"), \
        ca_dir / "ca.crt"
    server_saw, client_saw = handshake(server_context(node, ca), client_context(stranger, ca))
    assert isinstance(server_saw, ssl.SSLError) and isinstance(client_saw, OSError)
    fake_node = issue(other, "node")
    _, client_saw = handshake(server_context(fake_node, other / "ca.crt"),
                              client_context(issue(ca_dir, "client", name="alice"), ca))
    assert isinstance(client_saw, ssl.SSLCertVerificationError)


@pytest.mark.parametrize("subject", [
    None, (), "node", ((("commonName", "x"),),), ((("organizationalUnitName", "root"),),),
    ((("organizationalUnitName", "node"),), (("organizationalUnitName", "admin"),)),
    ((("organizationalUnitName", 7),),), (("organizationalUnitName", "node"),),
])
def test_no_role_unless_one_known_ou(subject: object) -> None:
    assert certs.role_from_subject(subject) is None


def test_role_and_name_from_a_subject() -> None:
    subject = ((("organizationName", "pyrostore"),), (("organizationalUnitName", "client"),),
               (("commonName", "alice"),))
    assert (certs.role_from_subject(subject), certs.name_from_subject(subject)) == ("client",
                                                                                   "alice")


def test_ensure_makes_everything_once(tmp_path: Path) -> None:
    directory = tmp_path / "data" / "certs"
    made = ensure(directory, hosts=["127.0.0.1"])
    assert made == {"node": certs.paths(directory, "node"),
                    "admin": certs.paths(directory, "admin"),
                    "client": certs.paths(directory, "client", "shopper")}
    before = snapshot(directory)
    assert len(before) == 8
    assert ensure(directory, hosts=["localhost"]) == made
    assert snapshot(directory) == before


def test_ensure_reissues_the_node_certificate_for_a_new_host(ca_dir: Path) -> None:
    issue(ca_dir, "node", name="node-a", hosts=["127.0.0.1", "localhost", "10.0.0.1"])
    ensure(ca_dir, hosts=[])
    before = snapshot(ca_dir)
    ensure(ca_dir, hosts=["10.0.0.2"])
    after = snapshot(ca_dir)
    assert {name for name in after if after[name] != before[name]} == {"node.crt", "node.key"}
    shown = describe(ca_dir / "node.crt")
    assert shown["sans"] == ["127.0.0.1", "localhost", "10.0.0.1", "10.0.0.2"]
    assert shown["name"] == "node-a"


def test_ensure_without_the_ca_key(ca_dir: Path) -> None:
    ensure(ca_dir, hosts=[])
    (ca_dir / "ca.key").unlink()
    before = snapshot(ca_dir)
    ensure(ca_dir, hosts=["127.0.0.1"])  # an offline CA: what exists is enough
    with pytest.raises(CertificateError, match=r"does not cover 10\.9\.9\.9, store\.example"):
        ensure(ca_dir, hosts=["store.example", "10.9.9.9"])
    (ca_dir / "admin.key").unlink()
    with pytest.raises(CertificateError, match=r"admin\.crt is missing"):
        ensure(ca_dir, hosts=[])
    assert snapshot(ca_dir) == {k: v for k, v in before.items() if k != "admin.key"}


def test_ensure_reissues_what_an_old_ca_signed(ca_dir: Path) -> None:
    ensure(ca_dir, hosts=[])
    init_ca(ca_dir, force=True)
    ensure(ca_dir, hosts=[])
    issuer = describe(ca_dir / "ca.crt")["name"]
    for role in ("node.crt", "admin.crt", "client.shopper.crt"):
        assert describe(ca_dir / role)["issuer"] == issuer


@pytest.mark.parametrize("name", ["", "-a", ".hidden", "a/b", "a b", "x" * 65, "é"])
def test_bad_names_are_refused(ca_dir: Path, name: str) -> None:
    with pytest.raises(CertificateError, match="bad certificate name"):
        issue(ca_dir, "client", name=name)


@pytest.mark.parametrize(("role", "options", "message"), [
    ("ca", {}, "unknown certificate role 'ca'"),
    ("client", {}, "a client certificate needs a name"),
    ("node", {"hosts": ["bad host"]}, "bad host 'bad host'"),
    ("node", {"days": 0}, "valid for 1 day or more"),
])
def test_bad_requests_are_refused(ca_dir: Path, role: str, options: dict[str, Any],
                                  message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        issue(ca_dir, role, **options)


def test_nothing_is_overwritten_without_force(ca_dir: Path) -> None:
    first = issue(ca_dir, "admin").cert.read_bytes()
    with pytest.raises(CertificateError, match=r"admin\.crt already exists"):
        issue(ca_dir, "admin")
    with pytest.raises(CertificateError, match=r"ca\.crt already exists"):
        init_ca(ca_dir)
    assert issue(ca_dir, "admin", force=True).cert.read_bytes() != first


def test_missing_or_broken_files(tmp_path: Path, ca_dir: Path) -> None:
    with pytest.raises(CertificateError, match=r"no CA in .*: run `pyrostore certs init`"):
        issue(tmp_path / "empty", "node")
    (ca_dir / "ca.key").write_text("not a key")
    with pytest.raises(CertificateError, match=r"ca\.key is not an unencrypted PEM key"):
        issue(ca_dir, "node")
    with pytest.raises(CertificateError, match="is not a PEM certificate"):
        describe(ca_dir / "ca.key")
    with pytest.raises(CertificateError, match="cannot read"):
        describe(tmp_path / "nothing.crt")
    assert issubclass(CertificateError, ConfigError)


def test_the_table_shows_each_certificate(ca_dir: Path) -> None:
    rows = [describe(issue(ca_dir, "node").cert), describe(ca_dir / "ca.crt")]
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(certificate_table(rows, title="certs"))
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "node.crt" in text and "127.0.0.1, localhost" in text and "serverAuth" in text
    assert "CA" in text and rows[1]["sha256"][:23] in text


def test_a_fingerprint_is_shown_as_it_is_never_as_emoji(ca_dir: Path) -> None:
    row = {**describe(ca_dir / "ca.crt"), "sha256": "BD:AB:58:F6:74:7E:F9:6F:00"}
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(certificate_table([row]))
    assert "BD:AB:58:F6:74:7E:F9:6F" in console.file.getvalue()  # type: ignore[attr-defined]


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert main(["certs", "init", "--data", str(data)]) == 0
    directory = data / "certs"
    assert main(["certs", "node", "--data", str(data), "--host", "10.1.2.3"]) == 0
    assert main(["certs", "client", "alice", "--certs-dir", str(directory)]) == 0
    assert main(["certs", "admin", "--certs-dir", str(directory), "--name", "ops"]) == 0
    capsys.readouterr()
    assert main(["certs", "show", "--certs-dir", str(directory), "--json"]) == 0
    shown = {Path(row["path"]).name: row for row in json.loads(capsys.readouterr().out)}
    assert set(shown) == {"ca.crt", "node.crt", "client.alice.crt", "admin.crt"}
    assert shown["node.crt"]["sans"] == ["127.0.0.1", "localhost", "10.1.2.3"]
    assert shown["admin.crt"]["name"] == "ops"
    assert main(["certs", "show", str(directory / "client.alice.crt")]) == 0
    assert "alice" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["certs", "client", "a/b"], ["certs", "init"],
                                  ["certs", "show", "missing.crt"]])
def test_cli_errors_are_one_line_and_exit_2(ca_dir: Path, argv: list[str],
                                            capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "500")  # long temporary paths: no wrapping
    assert main([*argv, "--certs-dir", str(ca_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
