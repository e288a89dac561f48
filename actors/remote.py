"""Remote messaging: attaching an :class:`~actors.ActorSystem` to other nodes.

:class:`RemoteLayer` carries actor messages between nodes over any
:class:`~actors.seams.transport.Transport`. The production transport (TCP,
every node link a Noise XX secure channel) is
:class:`nodes.tcp_transport.TcpNoiseTransport`; the simulator's is
:class:`simulations.network.SimTransport`. (Writing a transport? Its building
blocks, such as the shared reconnect :class:`~actors.lowlevel.Backoff`, are
in :mod:`actors.lowlevel`.)

Wiring a node::

    transport = TcpNoiseTransport(
        node,
        static=custody.static,
        random=random,
        peers=peers,
        attest=attestation_service.attest,  # this node's documents
        verify_attestation=peer_verifier,  # a PeerAttestationVerifier
    )
    system = ActorSystem(node, TrioDriver(nursery, TrioClock()), random=random)
    RemoteLayer(system, transport)
    await nursery.start(transport.run)

After that, ``system.ref(other_node, name)`` gives a reference that tells and
asks exactly like a local one. Without a remote layer such a reference is
unreachable (:class:`~actors.PeerUnavailable`).
"""

from actors._remote._layer import RemoteLayer

__all__ = ["RemoteLayer"]
