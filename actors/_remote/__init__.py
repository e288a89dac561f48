"""Private implementation of remote messaging. Import nothing from here
outside the ``actors`` package.

* ``_layer``: :class:`~actors._remote._layer.RemoteLayer`, public through
  :mod:`actors.remote`. It attaches to a system through the core's private
  hooks (``actors._core._remote_hooks``); the core does not import it.
* ``messages``: the ``actor.*`` wire messages. :class:`NodeHello`, the node
  link's handshake payload, is public through :mod:`actors.lowlevel`; the
  rest are private to the layer.
* ``backoff``: the reconnect schedule transports share, public through
  :mod:`actors.lowlevel`.

The transports themselves live outside the package:
``nodes.tcp_transport.TcpNoiseTransport`` (TCP, every link a Noise XX
channel) and ``simulations.network.SimTransport``.
"""
