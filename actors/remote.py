"""Remote messaging: the layer that carries actor messages between nodes over
any :class:`~actors.seams.transport.Transport`, and the production transport
(TCP, every node link a Noise XX secure channel).

Wiring a node::

    transport = TcpNoiseTransport(node, static=key, random=random, peers=peers)
    system = ActorSystem(node, TrioDriver(nursery), random=random)
    RemoteLayer(system, transport)
    await nursery.start(transport.run)

After that, ``system.ref(other_node, name)`` gives a reference that tells and
asks exactly like a local one.
"""

from actors._remote._layer import RemoteLayer
from actors._remote.backoff import Backoff
from actors._remote.tcp import AttestationVerifier, PeerAddress, PeerNotAllowed, TcpNoiseTransport

__all__ = [
    "AttestationVerifier",
    "Backoff",
    "PeerAddress",
    "PeerNotAllowed",
    "RemoteLayer",
    "TcpNoiseTransport",
]
