"""The ``pyrostore`` command, demo.py and nameserver.sh, run as a user would run them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyrostore.cli import version
from pyrostore.config import Settings
from pyrostore.discovery import name_server_answers
from pyrostore.launcher import Cluster, exit_status
from pyrostore.versions import PROTOCOL_VERSION, SCHEMA_VERSION
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
    assert {"item": book["item"], "title": "Raft in Practice", "topic": "consensus"} in cli_json(
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
    assert values["PYROSTORE_NS_PORT"] == settings.ns_port
    shown = run_cli(settings, "config", "--ns-host", "127.0.0.2")
    assert "PYROSTORE_NS_HOST" in shown.stdout and "127.0.0.2" in shown.stdout


def test_config_json_values_are_typed(tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), "config", "--json", "--insecure",
                   "--coordinator-addrs", "127.0.0.1:7001:7002,127.0.0.1:7003:7004",
                   env={"PYROSTORE_CALL_TIMEOUT": "2.5"})
    values = json.loads(done.stdout)
    assert values["PYROSTORE_CALL_TIMEOUT"] == 2.5 and values["PYROSTORE_WORKER_THREADS"] == 4096
    assert values["PYROSTORE_INSECURE"] is True and values["PYROSTORE_CACHE"] is True
    assert values["PYROSTORE_COORDINATORS"] == ["127.0.0.1:7001:7002", "127.0.0.1:7003:7004"]
    assert values["PYROSTORE_DATA_DIR"] == str(tmp_path)


def test_bad_settings_exit_2(tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), "lookup", "1", "--serializer", "pickle")
    assert done.returncode == 2 and done.stderr.startswith("error: serializer must be")


def test_no_store_fails_at_once_with_the_hint(tmp_path: Path) -> None:
    """A failover is ridden out for PYROSTORE_FAILOVER_TIMEOUT; with no name server there is
    no store to wait for, so the command does not wait it out (here 100 s)."""
    settings = make_settings(tmp_path)
    patient = {"PYROSTORE_FAILOVER_TIMEOUT": "100"}
    started = time.monotonic()
    done = run_cli(settings, "lookup", "1", env=patient)
    assert time.monotonic() - started < 20, "it waited for a store that was never found"
    assert done.returncode == 3
    assert done.stderr.strip() == (f"unavailable: no name server at 127.0.0.1:{settings.ns_port}: "
                                   f"start the store with `pyrostore up --ns-port "
                                   f"{settings.ns_port}`")
    failed = run_cli(settings, "buy", "1", "--json", env=patient)
    error = json.loads(failed.stdout)["error"]
    assert failed.returncode == 3 and error["type"] == "Unavailable"
    assert "pyrostore up" in error["message"] and error["ns_port"] == settings.ns_port


def test_errors_with_json_are_json_with_the_same_exit_codes(store: Cluster,
                                                            tmp_path: Path) -> None:
    done = run_cli(store.settings, "lookup", "99", "--json")
    assert done.returncode == 1 and done.stderr == ""
    assert json.loads(done.stdout) == {"error": {"type": "NotFound", "item": 99,
                                                 "message": "no book with item number 99"}}
    done = run_cli(store.settings, "buy", "3", "--qty", "1000", "--json")
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["type"] == "OutOfStock"
    done = run_cli(make_settings(tmp_path), "lookup", "1", "--serializer", "pickle", "--json")
    error = json.loads(done.stdout)["error"]
    assert done.returncode == 2 and error["type"] == "ConfigError"
    assert error["message"].startswith("serializer must be")


def test_output_to_a_pipe_is_never_wrapped(store: Cluster, tmp_path: Path) -> None:
    """No COLUMNS, not a terminal: rich would wrap at 80 columns; lines stay whole."""
    unbounded = {"COLUMNS": ""}
    title = "A Very Long Title " * 8 + "that ends here"
    book = cli_json(store.settings, "add-book", title, "long titles", "--cost", "1")
    shown = run_cli(store.settings, "lookup", str(book["item"]), env=unbounded)
    assert shown.returncode == 0 and any(title in line for line in shown.stdout.splitlines())
    status = run_cli(store.settings, "status", env=unbounded)
    lines = status.stdout.splitlines()
    for row in cli_json(store.settings, "status"):
        assert any(row["uri"] in line and row["role"] in line for line in lines), row["uri"]
    nowhere = make_settings(tmp_path)  # no store there
    failed = run_cli(nowhere, "lookup", "1", env=unbounded)
    [line] = failed.stderr.strip().splitlines()
    assert len(line) > 80 and line.endswith(f"`pyrostore up --ns-port {nowhere.ns_port}`")


def test_search_finds_every_word_in_titles_and_topics(store: Cluster) -> None:
    def items(*words: str) -> set[int]:
        return {book["item"] for book in cli_json(store.settings, "search", *words)}

    assert items("grade") == {1}  # a word of a title
    assert {1, 2, 5} <= items("distrib")  # part of a topic
    assert items("rpc", "DISTRIBUTED") == {2}  # every word, in the title or the topic
    assert {3, 4, 6, 7} <= items("graduate school")  # an exact topic name still works
    assert items("rpc", "graduate") == set()
    shown = run_cli(store.settings, "search", "grade")
    assert shown.returncode == 0 and "1 book(s) matching 'grade'" in shown.stdout
    assert "distributed systems" in shown.stdout  # its topic is shown


def test_version_is_the_package_version() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    done = subprocess.run([sys.executable, "-m", "pyrostore", "--version"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert done.returncode == 0
    assert done.stdout.strip() == (f"pyrostore {version()} (protocol {PROTOCOL_VERSION}, "
                                   f"schema {SCHEMA_VERSION})")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", version())


@pytest.mark.parametrize("argv", [[], ["certs"]])
def test_bare_command_prints_its_help(argv: list[str], tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), *argv)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.startswith(f"usage: pyrostore {' '.join(argv)}".rstrip() + " [-h]")
    if not argv:
        assert "exit codes:" in done.stdout and '{"error": {"type"' in done.stdout
    for note in ("umask", ":mod:", "``", "Pyro5's global"):  # notes for developers
        assert note not in done.stdout


def test_ping_names_the_frontend_that_answered(store: Cluster) -> None:
    frontend = store.child("frontend", 1)
    answer = cli_json(store.settings, "ping")
    assert answer["answered"] == 1 and answer["nameserver"].endswith(f":{store.settings.ns_port}")
    [ping] = answer["pings"]
    assert ping["frontend"] == 1 and ping["ms"] > 0 and ping["error"] == ""
    assert ping["uri"] == next(r["uri"] for r in cli_json(store.settings, "status")
                               if r["pid"] == frontend.pid)
    shown = run_cli(store.settings, "ping", "-c", "2", "-i", "0")
    lines = shown.stdout.splitlines()
    assert shown.returncode == 0 and len(lines) == 3
    assert all(line.startswith("frontend 1 (127.0.0.1:") for line in lines[:2])
    assert "answered in" in lines[0] and lines[2].startswith("2 of 2 answered; round trip")


def test_ping_without_a_store_exits_3(tmp_path: Path) -> None:
    done = run_cli(make_settings(tmp_path), "ping")
    assert done.returncode == 3 and "pyrostore up" in done.stderr


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    """``pyrostore config --json | head -1``: output to a closed pipe ends quietly."""
    reader, writer = os.pipe()
    os.close(reader)  # gone before the first line is written
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYROSTORE_")}
    try:
        done = subprocess.run([sys.executable, "-m", "pyrostore", "config", "--json"],
                              stdout=writer, stderr=subprocess.PIPE, text=True, env=env,
                              cwd=ROOT, timeout=60)
    finally:
        os.close(writer)
    assert done.returncode == 141 and done.stderr == ""


@pytest.mark.parametrize(("returncode", "words"), [
    (None, "ended"), (2, "exited with code 2"), (-signal.SIGKILL, "killed by SIGKILL")])
def test_a_child_s_end_names_its_signal(returncode: int, words: str) -> None:
    assert exit_status(returncode) == words


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
