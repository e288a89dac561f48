"""The admin room: what an operator can do, which is only this.

Duties:

* typed admin commands (drain, resume, deploy release, rotate keys, set
  quota, status), each signed by an authorised operator key and verified
  before it is parsed further;
* a hash-chained, append-only audit log of every command and its outcome;
* replies that carry state, never customer data (invariant I6: there is no
  shell, eval, debugger, pickle or generic file or database endpoint).

Commands are registered messages; nothing lives here yet.
"""
