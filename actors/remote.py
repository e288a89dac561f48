"""Remote messaging: the layer that carries actor messages between nodes over
any :class:`~actors.seams.transport.Transport`. The production transport
(TCP, every node link a Noise XX secure channel) is
:class:`nodes.tcp_transport.TcpNoiseTransport`; the simulator's is
:class:`simulations.network.SimTransport`.

Wiring a node::

    transport = TcpNoiseTransport(
        node,
        static=custody.static,
        random=random,
        peers=peers,
        attest=attestation_service.attest,  # this node's documents
        verify_attestation=peer_verifier,  # a PeerAttestationVerifier
    )
    system = ActorSystem(node, TrioDriver(nursery), random=random)
    RemoteLayer(system, transport)
    await nursery.start(transport.run)

After that, ``system.ref(other_node, name)`` gives a reference that tells and
asks exactly like a local one.
"""

from actors._remote._layer import RemoteLayer
from actors._remote.backoff import Backoff

__all__ = ["Backoff", "RemoteLayer"]
