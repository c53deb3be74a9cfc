"""The cluster file: parsing, checks, the settings it gives each host, and what status shows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography import x509
from rich.console import Console

from pyrostore import certs
from pyrostore.cli import main
from pyrostore.client.views import hosts_table, status_table
from pyrostore.clusterfile import ClusterSpec, host_report, uri_address
from pyrostore.config import Settings
from pyrostore.errors import ConfigError

THREE_HOSTS = """
[store]
ns_port = 9999
coordinator_port = 9100
raft_port = 9200

[settings]
lease = 2.0

[hosts.alpha]
address = "10.213.0.10"
nameserver = true
coordinator = [1]
catalog = [1]
order = [1]

[hosts.beta]
address = "10.213.0.11"
coordinator = [2]
catalog = [2]
order = [2]

[hosts.gamma]
address = "10.213.0.12"
coordinator = [3]
frontend = [1, 2]
"""


def render(renderable: object) -> str:
    console = Console(file=io.StringIO(), width=160)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def test_each_host_gets_the_clusters_settings_and_its_own_address() -> None:
    spec = ClusterSpec.parse(THREE_HOSTS)
    assert [h.name for h in spec.hosts] == ["alpha", "beta", "gamma"]
    assert spec.nameserver_host.name == "alpha"
    assert list(spec.host("gamma").runs()) == [("coordinator", 3), ("frontend", 1),
                                               ("frontend", 2)]
    settings = Settings.from_env({}, **spec.settings_values("beta"))
    assert (settings.ns_host, settings.ns_port, settings.host) == ("10.213.0.10", 9999,
                                                                   "10.213.0.11")
    assert settings.lease == 2.0
    assert [(a.host, a.port, a.raft_port) for a in settings.coordinator_addresses()] == [
        ("10.213.0.10", 9100, 9200), ("10.213.0.11", 9101, 9201), ("10.213.0.12", 9102, 9202)]
    assert "host" not in spec.settings_values()  # a machine that only talks to the store


def test_defaults_for_the_store_table() -> None:
    text = THREE_HOSTS.split("[settings]")[1].replace("lease = 2.0", "")
    spec = ClusterSpec.parse(text)
    assert (spec.ns_port, spec.coordinator_port, spec.raft_port) == (9090, 9100, 9200)


@pytest.mark.parametrize(("change", "words"), [
    (("nameserver = true", "nameserver = false"), "exactly one host runs the name server"),
    (('[hosts.beta]', '[hosts.beta]\nnameserver = true'), "(alpha, beta)"),
    (("catalog = [2]", "catalog = [1]"), "catalog 1 is on both alpha and beta"),
    (("coordinator = [3]", "coordinator = [4]"), "numbered 1..3"),
    (("frontend = [1, 2]", "frontend = []"), "no host runs a frontend"),
    (("frontend = [1, 2]", "frontend = [1, 1]"), "lists an id twice"),
    (("frontend = [1, 2]", 'frontend = ["1"]'), "list of replica ids"),
    (('address = "10.213.0.12"', 'address = "gamma.example"'), "IP address"),
    (('address = "10.213.0.12"\n', ""), "hosts.gamma.address is missing"),
    (("lease = 2.0", "leese = 2.0"), "unknown setting(s): leese"),
    (("lease = 2.0", 'lease = "long"'), "lease must be a float"),
    (("lease = 2.0", 'ns_host = "10.0.0.1"'), "[settings] cannot set ns_host"),
    (("lease = 2.0", 'data_dir = "/srv"'), "cannot set data_dir"),
    (("raft_port = 9200", "raft_port = 65534"), "the last coordinator's"),
    (("ns_port = 9999", "ns_port = 0"), "store.ns_port must be a port"),
    (("[hosts.gamma]", "[hosts.gamma]\nfrontends = [1]"), "unknown key(s) in [hosts.gamma]"),
    (("[hosts.gamma]", '[hosts."bad name"]'), "host name 'bad name'"),
    (("[store]", "[store\n"), "is not valid TOML"),
])
def test_a_bad_file_is_one_clear_error(change: tuple[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        ClusterSpec.parse(THREE_HOSTS.replace(*change, 1), path=Path("c.toml"))
    assert words in str(caught.value) and str(caught.value).startswith("c.toml")


def test_an_unknown_host_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(THREE_HOSTS)
    with pytest.raises(ConfigError, match=r"no host 'delta'.*alpha, beta, gamma"):
        ClusterSpec.load(path).host("delta")
    with pytest.raises(ConfigError, match="cannot read the cluster file"):
        ClusterSpec.load(tmp_path / "missing.toml")


def test_status_shows_every_host_and_what_is_missing() -> None:
    spec = ClusterSpec.parse(THREE_HOSTS)
    rows = [
        {"name": "pyrostore.coordinator.1", "uri": "PYRO:x@10.213.0.10:9100", "state": "leader"},
        {"name": "pyrostore.catalog.1", "uri": "PYRO:x@10.213.0.10:4711", "state": "primary"},
        {"name": "pyrostore.order.1", "uri": "PYRO:x@10.213.0.10:4712", "state": "down"},
        {"name": "pyrostore.coordinator.2", "uri": "PYRO:x@10.213.0.11:9101", "state": "leader"},
    ]
    report = {row["host"]: row for row in host_report(spec, rows, nameserver_up=True)}
    assert (report["alpha"]["up"], report["alpha"]["expected"]) == (2, 3)
    assert report["alpha"]["missing"] == ["order 1"]
    assert report["alpha"]["nameserver"] is True and report["beta"]["nameserver"] is None
    assert report["gamma"]["missing"] == ["coordinator 3", "frontend 1", "frontend 2"]
    text = render(hosts_table(report.values()))
    assert "2/3" in text and "order 1" in text and "0/3" in text
    table = render(status_table(rows, hosts={"10.213.0.10": "alpha", "10.213.0.11": "beta"}))
    assert [line.split()[3] for line in text.splitlines() if "10.213" in line] == [
        "10.213.0.10", "10.213.0.11", "10.213.0.12"]
    assert table.count("alpha") == 3 and table.count("beta") == 1
    assert uri_address("PYRO:a@[::1]:4711") == "::1"


def test_certs_cluster_gives_each_host_a_node_certificate_for_its_address(
        tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(THREE_HOSTS)
    ca = tmp_path / "ca"
    assert main(["certs", "init", "--certs-dir", str(ca)]) == 0
    assert main(["certs", "cluster", "--cluster", str(path), "--certs-dir", str(ca)]) == 0
    secret = (ca / "raft.secret").read_text()
    for name, address in (("alpha", "10.213.0.10"), ("gamma", "10.213.0.12")):
        host = ca / "hosts" / name
        assert sorted(p.name for p in host.iterdir()) == ["ca.crt", "node.crt", "node.key",
                                                          "raft.secret"]
        assert (host / "raft.secret").read_text().strip() == secret.strip()
        cert = x509.load_pem_x509_certificate((host / "node.crt").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert address in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
        assert certs.describe(host / "node.crt")["name"] == name
        # a host's directory is enough for that host, and only for that address
        certs.ensure(host, hosts=[address], roles=("node",))
        with pytest.raises(ConfigError, match="no CA key"):
            certs.ensure(host, hosts=["10.213.0.99"], roles=("node",))
    assert (ca / "admin.crt").exists()  # the operator's certificate, beside the CA


def test_flags_that_contradict_the_file_are_refused(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(THREE_HOSTS)
    assert main(["config", "--cluster", str(path), "--ns-port", "1234"]) == 2
    assert "--ns-port: the cluster file says where the store is" in capsys.readouterr().err
    assert main(["up", "--cluster", str(path), "--data", str(tmp_path / "d")]) == 2
    assert "--cluster needs --on HOST: which of alpha, beta, gamma" in capsys.readouterr().err
    assert main(["up", "--on", "alpha", "--data", str(tmp_path / "d")]) == 2
    assert "--on HOST needs --cluster FILE" in capsys.readouterr().err
