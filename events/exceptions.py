"""Errors raised by the event paths. Each keeps its inputs and says what to do next."""

from __future__ import annotations

from tidewater.exceptions import TidewaterError


class EventsError(TidewaterError):
    """Root of every error the event paths raise on purpose."""


class BrokerUnreachable(EventsError):
    """A broker (RabbitMQ, NATS) could not be reached or refused the login."""

    def __init__(self, broker: str, where: str, reason: str) -> None:
        self.broker = broker
        self.where = where
        self.reason = reason
        super().__init__(
            f"cannot reach {broker} at {where}: {reason}; check that it runs and that "
            "the source's DSN variable (TIDEWATER_SOURCE_<NAME>_DSN) holds its URL"
        )


class MissingBrokerUrl(EventsError):
    """An event source's URL variable is unset."""

    def __init__(self, source: str, variable: str, example: str) -> None:
        self.source = source
        self.variable = variable
        super().__init__(
            f"source {source} needs its broker URL in {variable}; set it, e.g. {variable}={example}"
        )


class StreamMissing(EventsError):
    """A declared stream does not exist on the broker."""

    def __init__(self, broker: str, stream: str, hint: str) -> None:
        self.broker = broker
        self.stream = stream
        super().__init__(f"{broker} has no stream {stream!r}; {hint}")


class PublishNotConfirmed(EventsError):
    """The broker did not confirm a published event; the producer should retry it
    (with the same event id, so the retry creates no duplicate)."""

    def __init__(self, stream: str, event_id: str, reason: str) -> None:
        self.stream = stream
        self.event_id = event_id
        self.reason = reason
        super().__init__(
            f"event {event_id} to stream {stream} was not confirmed: {reason}; publish it "
            "again with the same event_id (the warehouse stores it once)"
        )


class NoEventSources(EventsError):
    """Nothing is declared for the asked path."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        super().__init__(
            f"no source of kind {' or '.join(kinds)} is declared; declare one in the dbt "
            "sources YAML (config: meta: tidewater: kind: ...)"
        )


class StreamReset(EventsError):
    """The broker's stream ends before the position stored in the warehouse: it was
    deleted and created again, so its positions restarted."""

    def __init__(self, source: str, stream: str, tail: int, position: int) -> None:
        self.source = source
        self.stream = stream
        self.tail = tail
        self.position = position
        super().__init__(
            f"stream {stream} ends at {tail}, before the position {position} stored for it: "
            "it was deleted and created again. To read the new stream from its start, delete "
            f"its position: delete from ops.event_streams where source_name = '{source}' and "
            f"stream = '{stream}' (ids already stored are still not stored twice)"
        )
