"""Private implementation of the actor runtime. Import nothing from here
outside the ``actors`` package.

* ``_system``: cells, mailboxes, asks, links, monitors, the name registry;
  :func:`~actors._core._system.attach_remote` and the
  :class:`~actors._core._system.RemoteInbox` it returns (private).
* ``_remote_hooks``: the :class:`~actors._core._remote_hooks.RemoteHooks`
  protocol the remote layer implements (private). The core never imports
  ``actors._remote``.
* ``_supervisor``, ``_types``, ``_errors``, ``_trio``: supervision, values,
  errors, the trio composition; public through :mod:`actors`.
* ``_driver``: the Driver protocol and its parts, public through
  :mod:`actors.lowlevel`; :class:`TrioDriver`, public through :mod:`actors`.
"""
