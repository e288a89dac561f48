"""The low-level surface of the actor runtime, for code that *implements*
what actors run on rather than code that writes actors (compare
``trio.lowlevel``).

Actor code, supervision trees and node wiring need only :mod:`actors` (actors,
refs, supervision, errors, :class:`~actors.ActorSystem`,
:class:`~actors.TrioDriver`), :mod:`actors.remote` (attaching remote
messaging to a system) and :mod:`actors.seams`. This module is for:

**Driver implementers** such as the simulator kernel
(``simulations.kernel.SimDriver``), which steps actor coroutines in virtual
time. An :class:`~actors.ActorSystem` schedules everything through a
:class:`Driver`; an actor's coroutine may await only a :class:`Waiter` the
driver hands out, which returns :data:`TIMED_OUT` when its timeout elapses.
:class:`TaskHandle` and :class:`TimerHandle` are what ``start`` and
``call_later`` return.

**Transport implementers** such as the TCP + Noise transport
(``nodes.tcp_transport.TcpNoiseTransport``) and the simulated network
(``simulations.network.SimTransport``). The seam itself is
:class:`actors.seams.transport.Transport`; from here they take the reconnect
schedule both share (:class:`Backoff`) and the node link's handshake payload
(:class:`NodeHello`, the ``actor.hello`` wire message).

The names here are public on purpose and change as deliberately as those of
:mod:`actors`. Everything under ``actors._core`` and ``actors._remote`` is
private: import it from here, :mod:`actors` or :mod:`actors.remote`.
"""

from actors._core._driver import TIMED_OUT, Driver, TaskHandle, TimerHandle, Waiter
from actors._remote.backoff import Backoff
from actors._remote.messages import NodeHello

__all__ = [
    "TIMED_OUT",
    "Backoff",
    "Driver",
    "NodeHello",
    "TaskHandle",
    "TimerHandle",
    "Waiter",
]
