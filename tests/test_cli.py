"""The ``pyrostore`` command, demo.py and nameserver.sh, run as a user would run them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pyrostore.config import Settings
from pyrostore.discovery import name_server_answers
from pyrostore.launcher import Cluster
from tests.conftest import ROOT, free_port, make_settings, run_cli, wait_until

pytestmark = pytest.mark.timeout(120)


def cli_json(settings: Settings, *args: str) -> object:
    done = run_cli(settings, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_lookup_buy_lookup(store: Cluster) -> None:
    before = cli_json(store.settings, "lookup", "1")["stock"]
    order = cli_json(store.settings, "buy", "1")
    assert (order["item"], order["qty"]) == (1, 1)
    assert cli_json(store.settings, "lookup", "1")["stock"] == before - 1
    shown = run_cli(store.settings, "lookup", "1")
    assert "How to get a good grade" in shown.stdout and str(before - 1) in shown.stdout


def test_unknown_item_is_one_clear_line(store: Cluster) -> None:
    done = run_cli(store.settings, "lookup", "99")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: no book with item number 99"


def test_out_of_stock_exits_1_and_changes_nothing(store: Cluster) -> None:
    stock = cli_json(store.settings, "lookup", "3")["stock"]
    done = run_cli(store.settings, "buy", "3", "--qty", str(stock + 1))
    assert done.returncode == 1 and "in stock" in done.stderr
    assert cli_json(store.settings, "lookup", "3")["stock"] == stock


def test_outcome_of_a_buy_by_its_request_id(store: Cluster) -> None:
    order = cli_json(store.settings, "buy", "5")
    outcome = cli_json(store.settings, "outcome", order["request_id"])
    assert (outcome["state"], outcome["order"]) == ("done", order)
    shown = run_cli(store.settings, "outcome", order["request_id"])
    assert shown.returncode == 0 and "done" in shown.stdout and "How to finish" in shown.stdout
    never = cli_json(store.settings, "outcome", "0" * 12 + "7" + "0" * 3 + "8" + "0" * 15)
    assert never["state"] == "unknown"


def test_bad_quantity_is_refused(store: Cluster) -> None:
    done = run_cli(store.settings, "buy", "1", "--qty", "-2")
    assert done.returncode == 1 and "qty must be between 1" in done.stderr


def test_admin_commands(store: Cluster) -> None:
    book = cli_json(store.settings, "add-book", "Raft in Practice", "consensus",
                    "--stock", "2", "--cost", "9.5")
    updated = cli_json(store.settings, "update", str(book["item"]), "--stock-delta", "3",
                       "--cost", "11")
    assert (updated["stock"], updated["cost"]) == (5, 11.0)
    assert {"item": book["item"], "title": "Raft in Practice"} in cli_json(
        store.settings, "search", "Consensus")
    assert "consensus" in cli_json(store.settings, "topics")


def test_orders(store: Cluster) -> None:
    order = cli_json(store.settings, "buy", "5", "--qty", "2")
    assert cli_json(store.settings, "orders", "--limit", "1") == [order]
    assert cli_json(store.settings, "orders", "--id", str(order["order_id"])) == order


def test_status_json_finds_every_process(store: Cluster) -> None:
    rows = cli_json(store.settings, "status")
    assert {(r["role"], r["id"]) for r in rows} == {
        *(("coordinator", i) for i in (1, 2, 3)), ("frontend", 1),
        *((g, i) for g in ("catalog", "order") for i in (1, 2))}
    for row in rows:
        assert row["pid"] == store.child(row["role"], row["id"]).pid
        assert row["uri"].startswith("PYRO:")
        assert row["state"] in {"catalog": ("primary", "backup"), "order": ("primary", "backup"),
                                "coordinator": ("leader", "follower")}.get(row["role"],
                                                                          ("serving",))
        assert {"epoch", "applied"} <= set(row)


def test_config_shows_flags_and_environment(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    values = cli_json(settings, "config", "--ns-host", "127.0.0.2")
    assert values["PYROSTORE_NS_HOST"] == "127.0.0.2"
    assert values["PYROSTORE_NS_PORT"] == str(settings.ns_port)


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), "lookup", "1", "--serializer", "pickle")
    assert done.returncode == 2 and done.stderr.startswith("error: serializer must be")


def test_no_store_exits_3(tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), "lookup", "1")
    assert done.returncode == 3 and "no name server answers" in done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def own_certs(settings: Settings) -> Settings:
    """The settings of a store that ``up`` started with its defaults: it made a CA and
    certificates of its own, in ``<data>/certs``, on its first start."""
    return settings.replace(certs_dir=settings.data_dir / "certs")


def test_up_starts_everything_and_ctrl_c_stops_it(tmp_path: Path) -> None:
    settings = own_certs(make_settings(tmp_path))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    up = subprocess.Popen(
        [sys.executable, "-m", "pyrostore", "up", "--ns-port", str(settings.ns_port),
         "--data", str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        rows = wait_until(lambda: _services(settings), timeout=90, what="pyrostore up")
        pids = [row["pid"] for row in rows]
        assert cli_json(settings, "lookup", "1")["stock"] == 10
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=30)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, output
    assert "stopped every process of the store" in output
    assert not [pid for pid in pids if _alive(pid)]
    assert not name_server_answers(settings)


def _services(settings: Settings) -> list[dict[str, object]] | None:
    done = run_cli(settings, "status", "--json")
    rows = json.loads(done.stdout) if done.returncode == 0 else []
    ready = len(rows) == 8 and all(r["state"] in ("serving", "primary", "backup", "leader",
                                                  "follower") for r in rows)
    return rows if ready else None


def test_demo_runs_to_the_end() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    done = subprocess.run([sys.executable, "demo.py", "--ns-port", str(free_port())],
                          cwd=ROOT, env={**env, "COLUMNS": "120"}, capture_output=True,
                          text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in ("Topics", "Buy more than the stock", "OutOfStock", "Restock",
                 "Kill the catalog primary", "back, and level", "done"):
        assert text in done.stdout


def test_nameserver_sh_serves_on_the_given_port(tmp_path: Path) -> None:
    """In mutual TLS with the store's certificates: this (admin) process can look it up."""
    settings = make_settings(tmp_path)
    env = {**os.environ, "PYROSTORE_NS_PORT": str(settings.ns_port),
           "PYROSTORE_CERTS_DIR": str(settings.certificates)}
    ns = subprocess.Popen([str(ROOT / "nameserver.sh")], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: name_server_answers(settings), what="nameserver.sh")
    finally:
        ns.terminate()
        ns.wait(10)


def test_nameserver_sh_without_certificates_says_what_to_do(tmp_path: Path) -> None:
    env = {**os.environ, "PYROSTORE_NS_PORT": str(free_port()),
           "PYROSTORE_CERTS_DIR": str(tmp_path / "none")}
    done = subprocess.run([str(ROOT / "nameserver.sh")], env=env, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "pyrostore certs init" in done.stderr


def test_up_refuses_to_start_a_second_store_on_the_same_name_server(
        store: Cluster, tmp_path: Path) -> None:
    done = run_cli(store.settings, "up", "--ns-port", str(store.settings.ns_port),
                   "--data", str(tmp_path))  # the same directory is refused before (test_datadir)
    assert done.returncode == 2
    assert "a store is already running" in done.stderr
    assert cli_json(store.settings, "lookup", "1")["item"] == 1  # the first one is unharmed
