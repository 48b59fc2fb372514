"""The public surface of tower_trio.amqp."""

from __future__ import annotations

from tower_trio import amqp


def _ruff_order(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: constants, then classes, then the rest.
    kind = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return kind, name


class TestPublicSurface:
    """tower_trio.amqp.__all__."""

    def test_names(self) -> None:
        """The exported names are exactly these; changing them is an API change."""
        assert set(amqp.__all__) == {
            "PERSISTENT",
            "TRANSIENT",
            "URL",
            "AMQPConfigError",
            "AMQPError",
            "AccessRefusedError",
            "AuthenticationError",
            "BrokerUnreachableError",
            "Channel",
            "ChannelClosedError",
            "ChannelStatistics",
            "Confirmation",
            "Connection",
            "ConnectionClosedError",
            "ConnectionLostError",
            "ConnectionStatistics",
            "EncodedProperties",
            "Message",
            "Outcome",
            "Properties",
            "PropertiesTemplate",
            "QueueDeclared",
            "Returned",
            "TLSError",
            "TLSFailure",
            "VhostNotFoundError",
            "create_ssl_context",
            "open_connection",
        }

    def test_sorted_and_importable(self) -> None:
        """__all__ is sorted (the way ruff sorts it), and a star import brings exactly it."""
        assert amqp.__all__ == sorted(amqp.__all__, key=_ruff_order)
        namespace: dict[str, object] = {}
        exec("from tower_trio.amqp import *", namespace)
        assert sorted(set(namespace) - {"__builtins__"}) == sorted(amqp.__all__)

    def test_errors_share_one_root(self) -> None:
        """Every error is an AMQPError, the client's own root: it is a library, not the tower."""
        assert amqp.AMQPError.__bases__ == (Exception,)
        for name in amqp.__all__:
            value = getattr(amqp, name)
            if isinstance(value, type) and issubclass(value, Exception):
                assert issubclass(value, amqp.AMQPError), name
