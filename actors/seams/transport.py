"""The Transport seam: how one node's actor runtime reaches other nodes.

Real nodes use ``nodes.tcp_transport.TcpNoiseTransport`` (TCP, every link a Noise XX
channel); the simulator uses ``simulations.network.SimTransport`` (in-memory,
with latency, loss, duplication, reordering and partitions). The remote
messaging layer above is the same code for both.

The contract is frames and link events, deliberately small:

* :meth:`Transport.send` never blocks. It hands one encoded frame to the link
  for ``peer`` (dialling it if needed) and returns False when the frame
  cannot go anywhere (the peer is unknown or its link is known to be down).
  True does not mean delivered: delivery is at most once, and the simulated
  network may lose, duplicate or reorder frames.
* Link changes are reported through :class:`TransportEvents`: ``peer_down``
  when an established link is lost or a dial failed (pending asks to that
  peer fail, monitors of its actors fire ``Down``), ``peer_up`` when a link
  (re)connects. Reconnection with backoff is the transport's job.
* ``frame_received`` hands over frames from an authenticated peer; the peer
  name is the transport's verified identity of the sender, never a value
  taken from the frame.
"""

from __future__ import annotations

from typing import Protocol


class TransportEvents(Protocol):
    """Callbacks from a transport into the runtime; called from the runtime's
    own scheduling context (a trio task, or the simulator's event loop)."""

    def peer_up(self, peer: str) -> None: ...

    def peer_down(self, peer: str) -> None: ...

    def frame_received(self, peer: str, frame: bytes) -> None: ...


class Transport(Protocol):
    """Frames between this node and named peer nodes."""

    @property
    def local_node(self) -> str: ...

    def bind(self, events: TransportEvents) -> None:
        """Where to report link events and received frames (called once)."""
        ...

    def send(self, peer: str, frame: bytes) -> bool:
        """Queue ``frame`` for ``peer`` without blocking; False if it cannot go."""
        ...
