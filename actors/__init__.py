"""The actor runtime: actors, references, supervision, and the seams they use.

An actor is a mailbox plus a handler (:class:`Actor`); it is addressed by an
:class:`ActorRef` that works the same on this node and across nodes.
:class:`Supervisor` restarts children with Erlang/OTP semantics. Actor code
reaches time, randomness and the network only through the seams in
:mod:`actors.seams`, so the deterministic simulator runs the same code.

Layout
------

Public, for code that writes actors or wires a node:

* :mod:`actors` (this module): actors, contexts, refs, exit reasons,
  supervision, the errors below, :class:`ActorSystem` and its production
  driver :class:`TrioDriver`, :func:`open_actor_system`.
* :mod:`actors.remote`: :class:`~actors.remote.RemoteLayer`, which attaches
  a system to other nodes over a transport.
* :mod:`actors.seams` (clock, random, store, TPM, transport, engine),
  :mod:`actors.channel` (Noise secure channels), :mod:`actors.key_custody`,
  :mod:`actors.log`.

Low level, for code that implements what actors run on (a Driver such as the
simulator kernel's, a Transport such as the TCP one or the simulated
network): :mod:`actors.lowlevel`.

Private: ``actors._core`` (the runtime itself) and ``actors._remote`` (the
remote layer and its wire messages). Nothing outside this package imports
them; the core does not import the remote layer either, which attaches
through a private hooks object instead (``actors._core._remote_hooks``).

Errors
------

Every exception the package defines, under its base (a module in
parentheses is where a class is imported from, when not here)::

    Exception
    ├── ActorError                       the runtime refused or failed a request
    │   ├── MailboxFull
    │   ├── NoSuchActor
    │   ├── NameTaken
    │   ├── AskTimeout                   (also a TimeoutError)
    │   ├── ActorCrashed                 .report: CrashReport
    │   ├── ActorStopped
    │   ├── PeerUnavailable
    │   └── NotSendable
    ├── SupervisorStartError
    ├── KeyCustodyError                  (protocol.key_custody, re-exported by actors.key_custody)
    │   ├── KeyringError                 (protocol.key_custody)
    │   │   ├── KeyringRefused           (protocol.key_custody; .check: KeyringCheck)
    │   │   ├── UnmeasuredKekSelection   (actors.key_custody) a KEK sealed to too few PCRs
    │   │   └── CommitInterrupted        (actors.key_custody) a commit stopped: reopen first
    │   ├── KeyReleaseDenied             (actors.key_custody; .denial: Denial)
    │   ├── EnvelopeError                (protocol.key_custody; .denial: Denial)
    │   ├── KeyChannelError              (actors.key_custody; .check: KeyChannelCheck)
    │   └── KeyExchangeRefused           (actors.key_custody; .check: KeyExchangeCheck,
    │                                     .denial: Denial | None)
    ├── CounterRefused                   (protocol.counter_binding, re-exported by
    │                                     actors.counter_guard; .check: CounterCheck)
    ├── AdmissionError                   (actors.scheduler; .check: AdmissionCheck)
    │   ├── UnknownModel                 no such model in the cluster
    │   ├── Overloaded                   its queue is full (.retry_after)
    │   ├── NoCapacity                   no node serves it now
    │   └── Replayed                     a sealed request id admitted before
    ├── AttestationUnavailable           (actors.attestation; .check: UnavailableCheck)
    ├── ReattestationFailed              (actors.attestation; .check: ReattestCheck)
    ├── AdmissionError                   (actors.scheduler; .check: AdmissionCheck)
    │   ├── UnknownModel                 no such model in the cluster (HTTP 404)
    │   ├── Overloaded                   the queue is full; .retry_after (HTTP 429)
    │   ├── NoCapacity                   no node serves the model now (HTTP 503)
    │   └── Replayed                     a sealed request id admitted before (HTTP 409)
    ├── TenantStoreError                 (actors.ingress; .check: TenantCheck, .entry)
    ├── StoreError                       (actors.seams)
    ├── TPMError                         (actors.seams)
    │   ├── CounterMissing               the NV counter is not defined
    │   └── CounterMismatch              the NV index is not the counter asked for
    └── SessionError                     (protocol.framing; .check: SessionCheck,
        │                                 its subclasses are drawn there)
        ├── HandshakeTimeout             (actors.channel)
        ├── HandshakeEvicted             (actors.channel)
        ├── ChannelLimitReached          (actors.channel)
        ├── LocalAttestationFailed       (actors.channel)
        └── TransportBroken              (actors.channel)

No error carries a message's contents or the text of a handler's exception.
"""

from actors._core._driver import TrioDriver
from actors._core._errors import (
    ActorCrashed,
    ActorError,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    NameTaken,
    NoSuchActor,
    NotSendable,
    PeerUnavailable,
)
from actors._core._supervisor import (
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorStartError,
    WhichChildren,
)
from actors._core._system import Actor, ActorSystem, Context, SystemStats
from actors._core._trio import open_actor_system
from actors._core._types import (
    KILLED,
    NOCONNECTION,
    NOPROC,
    NORMAL,
    SHUTDOWN,
    ActorRef,
    CrashReport,
    Down,
    Exit,
    ExitKind,
    ExitReason,
)

__all__ = [
    "KILLED",
    "NOCONNECTION",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorStopped",
    "ActorSystem",
    "AskTimeout",
    "ChildSpec",
    "Context",
    "CrashReport",
    "Down",
    "Exit",
    "ExitKind",
    "ExitReason",
    "MailboxFull",
    "NameTaken",
    "NoSuchActor",
    "NotSendable",
    "PeerUnavailable",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorStartError",
    "SystemStats",
    "TrioDriver",
    "WhichChildren",
    "open_actor_system",
]
