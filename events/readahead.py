"""Reading the next batch while the warehouse commits this one.

`ReadAhead` wraps a `StreamReader` and gives it a thread of its own: the thread
fetches and decodes batches, in position order, into a queue at most ``depth``
batches long, while the consumer's thread writes the previous batch to the warehouse.
Every call on the broker (fetch, acknowledge, tail, close) runs on that one thread,
so a client that is not thread-safe (pika's blocking connection, a nats-py event
loop) is only ever used from one thread at a time.

The guarantee does not change: a batch still reaches the warehouse with the
position it ends at in one transaction, batches commit in the order they were read,
and `acknowledge` is only asked for after the commit. What was read ahead and not
committed when the process stops is never acknowledged; the next run reads it again
from the stored position.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from events.decode import Message
from events.engine import StreamReader

T = TypeVar("T")
# How long the thread waits for messages per fetch, at most, so that an
# acknowledgement or a tail request waits no longer than this for its turn.
FETCH_SLICE_S = 0.1


# While a read-ahead thread runs, the interpreter hands the GIL over every 0.5 ms
# instead of every 5: the reading thread is busy in Python (the broker client,
# parsing), and the writing thread needs the GIL back after each warehouse round
# trip (about ten per batch when this was measured; two since `write_batch` sends a
# batch at once), so at 5 ms a batch waited up to ~50 ms for it.
SWITCH_INTERVAL_S = 0.0005
_switch_lock = threading.Lock()
_switch_users = 0
_switch_before = sys.getswitchinterval()


def _fast_switching(on: bool) -> None:
    """Lower the switch interval while any read-ahead runs (counted), then restore it."""
    global _switch_users, _switch_before
    with _switch_lock:
        if on:
            if _switch_users == 0:
                _switch_before = sys.getswitchinterval()
                sys.setswitchinterval(min(SWITCH_INTERVAL_S, _switch_before))
            _switch_users += 1
        elif _switch_users > 0:
            _switch_users -= 1
            if _switch_users == 0:
                sys.setswitchinterval(_switch_before)


@dataclass(frozen=True)
class Fetched(Generic[T]):
    """One fetched batch (possibly empty) and what ``prepare`` made of it."""

    messages: list[Message]
    prepared: T


class ReadAhead(Generic[T]):
    """Fetches up to ``depth`` batches ahead of the consumer on a thread of its own."""

    def __init__(
        self,
        reader: StreamReader,
        prepare: Callable[[list[Message]], T],
        *,
        batch_size: int,
        max_wait_s: float,
        depth: int = 2,
    ) -> None:
        self.reader = reader
        self.prepare = prepare
        self.batch_size = batch_size
        self.depth = depth
        self.slice_s = min(max_wait_s, FETCH_SLICE_S)
        self.ready: queue.Queue[Fetched[T]] = queue.Queue()
        self.commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self.started = False
        self.thread = threading.Thread(
            target=self._run, name=f"{threading.current_thread().name}-read-ahead", daemon=True
        )

    def start(self) -> None:
        _fast_switching(True)
        self.started = True
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._serve_commands()
                if self.ready.qsize() >= self.depth:
                    self._wait_for_command(self.slice_s)
                    continue
                messages = self.reader.fetch(self.batch_size, self.slice_s)
                if messages:
                    self.ready.put(Fetched(messages, self.prepare(messages)))
        except BaseException as exc:  # raised again on the consumer's thread
            self.error = exc
        finally:
            self._fail_commands()

    def _serve_commands(self) -> None:
        while True:
            try:
                call, future = self.commands.get_nowait()
            except queue.Empty:
                return
            self._serve(call, future)

    def _wait_for_command(self, timeout: float) -> None:
        try:
            call, future = self.commands.get(timeout=timeout)
        except queue.Empty:
            return
        self._serve(call, future)

    @staticmethod
    def _serve(call: Callable[[], Any], future: Future[Any]) -> None:
        try:
            future.set_result(call())
        except BaseException as exc:
            future.set_exception(exc)
            raise  # a broker call that failed ends the thread: the consumer reconnects

    def _fail_commands(self) -> None:
        while True:
            try:
                _, future = self.commands.get_nowait()
            except queue.Empty:
                return
            if not future.done():
                future.set_exception(self._stopped())

    def _stopped(self) -> BaseException:
        return self.error or RuntimeError("the stream's read-ahead thread has stopped")

    def next(self, max_wait_s: float) -> Fetched[T] | None:
        """The next batch in position order, or None if none came within ``max_wait_s``;
        raises what stopped the reading thread once the batches it read are taken."""
        try:
            return self.ready.get_nowait()
        except queue.Empty:
            if self.error is not None:
                raise self.error from None
        try:
            return self.ready.get(timeout=max_wait_s)
        except queue.Empty:
            if self.error is not None:
                raise self.error from None
            return None

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` (a call on the reader) on the reader's thread and return
        its result, or raise what it raised (or what stopped the thread)."""
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            return function()  # not started (or closed): no other thread uses the reader
        future: Future[T] = Future()
        self.commands.put((function, future))
        while True:
            try:
                return future.result(timeout=0.5)
            except TimeoutError:
                if not self.thread.is_alive() and not future.done():
                    self._fail_commands()

    def post(self, function: Callable[[], Any]) -> None:
        """Run ``function`` on the reader's thread without waiting for it (an
        acknowledgement: it only returns credit to the broker; a failure stops the
        thread, and the consumer sees it on its next call)."""
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            function()
            return
        self.commands.put((function, Future()))

    def close(self) -> None:
        """Stop the thread, then close the reader (never raises)."""
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join()
        if self.started:
            self.started = False
            _fast_switching(False)
        self.reader.close()
