"""The error tree crosses Pyro5 intact: same class, message and details, for every serializer."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import Pyro5.api
import Pyro5.errors
import Pyro5.serializers
import pytest

from pyrostore import errors, tls
from pyrostore.config import SERIALIZERS
from pyrostore.errors import ALL_ERRORS, PyrostoreError
from tests.conftest import identity


def test_the_usual_serializers_are_available() -> None:
    assert {"serpent", "json"} <= set(SERIALIZERS)


def test_tree_shape() -> None:
    assert all(issubclass(cls, PyrostoreError) for cls in ALL_ERRORS)
    assert issubclass(errors.ConflictingRequest, errors.InvalidRequest)
    assert not issubclass(errors.OutOfStock, errors.InvalidRequest)
    assert {cls.__name__ for cls in ALL_ERRORS} == {
        "PyrostoreError", "InvalidRequest", "ConflictingRequest", "NotFound", "OutOfStock",
        "Unavailable", "NotServing", "NotLeader", "StaleEpoch", "OutcomeUnknown", "ConfigError",
        "CertificateError", "Forbidden", "StorageError", "CorruptFile", "BuyUndone",
        "RequestExpired", "ProtocolVersionError", "SchemaVersionError",
    }
    assert issubclass(errors.RequestExpired, errors.InvalidRequest)
    assert issubclass(errors.NotServing, errors.Unavailable)
    assert issubclass(errors.CertificateError, errors.ConfigError)
    assert issubclass(errors.CorruptFile, errors.StorageError)
    assert issubclass(errors.SchemaVersionError, errors.StorageError)
    assert not issubclass(errors.SchemaVersionError, errors.CorruptFile)  # never set aside
    assert not issubclass(errors.ProtocolVersionError, errors.Unavailable)  # waiting won't help


def test_message_and_details() -> None:
    error = errors.OutOfStock("only 3 left", item=1, stock=3)
    assert str(error) == "only 3 left"
    assert error.message == "only 3 left"
    assert error.args == ("only 3 left",)
    assert error.details == {"item": 1, "stock": 3}
    assert errors.NotFound("gone").details == {}


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("error_class", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_survives_every_serializer(
    error_class: type[PyrostoreError], serializer: str
) -> None:
    ser = Pyro5.serializers.serializers[serializer]
    original = error_class("something went wrong", item=7, reason="because", ids=[1, 2])
    rebuilt = ser.loads(ser.dumps(original))
    assert type(rebuilt) is error_class
    assert str(rebuilt) == "something went wrong"
    assert rebuilt.args == ("something went wrong",)
    assert rebuilt.details == {"item": 7, "reason": "because", "ids": [1, 2]}


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_an_error_without_details_survives(serializer: str) -> None:
    ser = Pyro5.serializers.serializers[serializer]
    rebuilt = ser.loads(ser.dumps(errors.Unavailable("no replica answered")))
    assert type(rebuilt) is errors.Unavailable
    assert rebuilt.details == {}


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_an_error_inside_a_call_message_survives(serializer: str) -> None:
    ser = Pyro5.serializers.serializers[serializer]
    data = ser.dumpsCall("obj", "method", (errors.NotFound("no order 4", order_id=4),), {})
    _obj, _method, vargs, _kwargs = ser.loadsCall(data)
    assert type(vargs[0]) is errors.NotFound
    assert vargs[0].details == {"order_id": 4}


@Pyro5.api.expose
class Thrower:
    """A tiny remote object that raises the store's errors."""

    def buy(self) -> None:
        raise errors.OutOfStock("only 3", item=1, stock=3)

    def add(self) -> None:
        raise errors.ConflictingRequest("request id r1 was already used", request_id="r1")


@pytest.fixture(scope="module")
def thrower_uri() -> Iterator[Pyro5.api.URI]:
    with tls.acting_as(identity("node")):  # a server presents a node certificate
        daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Thrower(), "thrower")
    thread = threading.Thread(target=daemon.requestLoop, daemon=True)
    thread.start()
    try:
        yield uri
    finally:
        daemon.shutdown()
        thread.join(10)
        assert not thread.is_alive()


@pytest.mark.parametrize("serializer", SERIALIZERS)
def test_a_remote_out_of_stock_arrives_as_out_of_stock(
    thrower_uri: Pyro5.api.URI, serializer: str
) -> None:
    with Pyro5.api.Proxy(thrower_uri) as proxy:
        proxy._pyroSerializer = serializer
        proxy._pyroTimeout = 10
        with pytest.raises(errors.OutOfStock) as caught:
            proxy.buy()
    assert str(caught.value) == "only 3"
    assert caught.value.details == {"item": 1, "stock": 3}


def test_marshal_is_refused_by_a_store_daemon(thrower_uri: Pyro5.api.URI) -> None:
    """A few bytes of marshal can claim gigabytes: the daemon never decodes it."""
    with Pyro5.api.Proxy(thrower_uri) as proxy:
        proxy._pyroSerializer = "marshal"
        proxy._pyroTimeout = 10
        with pytest.raises(Pyro5.errors.SerializeError, match="marshal serializer is refused"):
            proxy.buy()


def test_a_remote_conflict_is_caught_as_invalid_request(thrower_uri: Pyro5.api.URI) -> None:
    with Pyro5.api.Proxy(thrower_uri) as proxy:
        proxy._pyroTimeout = 10
        with pytest.raises(errors.InvalidRequest) as caught:
            proxy.add()
    assert type(caught.value) is errors.ConflictingRequest
    assert caught.value.details == {"request_id": "r1"}
    assert not isinstance(caught.value, Pyro5.errors.CommunicationError)
