"""Run swtpm (a TPM 2.0 emulator built on libtpms) for tests.

swtpm listens on two loopback TCP ports: the TPM command channel, which the
tpm2-tss ``swtpm`` TCTI speaks to, and a control channel. ``--flags
not-need-init,startup-clear`` makes swtpm power the TPM on and send
``TPM2_Startup(CLEAR)`` itself, so the first ESAPI command just works. A fresh
state directory gives a freshly manufactured TPM with SHA-1, SHA-256, SHA-384
and SHA-512 PCR banks allocated; the same directory again gives the same TPM
(seeds, NV indices, counters) after a restart.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actors.seams.tpm import TPM
from simulations.nitrotpm import NodeImage, boot_chain_events, running_image

if TYPE_CHECKING:
    from tpm2_pytss import ESAPI

SWTPM = shutil.which("swtpm")
INSTALL_HINT = "Debian: apt-get install swtpm swtpm-tools libtss2-dev; pip install tpm2-pytss"


def require_swtpm() -> None:
    """Skip the calling test when swtpm or tpm2-pytss is truly not installed."""
    if SWTPM is None:
        pytest.skip(f"swtpm is not installed ({INSTALL_HINT})")
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        pytest.skip(f"tpm2-pytss is not installed ({INSTALL_HINT})")


def _free_port_pair() -> int:
    """A loopback port ``p`` such that ``p`` and ``p + 1`` are both free.

    The tpm2-tss swtpm TCTI finds the control channel at ``port + 1``.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port


class Swtpm:
    """One swtpm process over a state directory; start/stop as often as needed."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> None:
        assert SWTPM is not None
        assert self._process is None
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(5):  # a port picked as free can be taken before swtpm binds it
            self.port = _free_port_pair()
            ctrl_port = self.port + 1
            process = subprocess.Popen(
                [
                    SWTPM,
                    "socket",
                    "--tpm2",
                    "--tpmstate",
                    f"dir={self.state_dir}",
                    "--server",
                    f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                    "--ctrl",
                    f"type=tcp,port={ctrl_port},bindaddr=127.0.0.1",
                    "--flags",
                    "not-need-init,startup-clear",
                ],
                # Never a pipe: nobody reads it, and a full pipe would stall swtpm.
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if self._wait_listening(process):
                self._process = process
                return
            process.kill()
            process.wait()
        raise RuntimeError("swtpm did not start")

    def _wait_listening(self, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    # swtpm serves one client at a time; this probe connection
                    # closes at once, leaving the port to the TCTI.
                    return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()  # swtpm saves its state on SIGTERM
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --------------------------------------------------------------------------- the owner's powers


def owner_undefine(tcti: str, nv_index: int) -> None:
    """What the TPM owner can do to any index the owner hierarchy defined:
    undefine it (``TPM2_NV_UndefineSpace`` with owner authorisation, which is
    empty on a fresh swtpm as on an EC2 instance nobody took ownership of)."""
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR

    with ESAPI(tcti) as esapi:
        esapi.nv_undefine_space(esapi.tr_from_tpmpublic(nv_index), ESYS_TR.OWNER)


def owner_define_counter(
    tcti: str, nv_index: int, *, copy_of: bytes | None = None, initialise: bool = True
) -> None:
    """Define a counter at ``nv_index`` as the owner would, and initialise it
    (unless ``initialise`` is false: then it stays unwritten).

    Without ``copy_of``: an ordinary counter (empty authPolicy, what
    ``tpm2_nvdefine -a "nt=counter|authread|authwrite|no_da"`` makes). With
    ``copy_of`` (a marshalled ``TPMS_NV_PUBLIC`` the owner read before deleting
    the index): the same public area byte for byte, so the same NV name.
    """
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import TPM2_ALG, TPM2_NT, TPMA_NV
    from tpm2_pytss.types import TPM2B_NV_PUBLIC, TPMS_NV_PUBLIC

    if copy_of is not None:
        public, _ = TPMS_NV_PUBLIC.unmarshal(copy_of)
        public.attributes = TPMA_NV(int(public.attributes) & ~int(TPMA_NV.WRITTEN))
    else:
        public = TPMS_NV_PUBLIC(
            nvIndex=nv_index,
            nameAlg=TPM2_ALG.SHA256,
            attributes=(TPM2_NT.COUNTER << TPMA_NV.TPM2_NT_SHIFT)
            | TPMA_NV.AUTHREAD
            | TPMA_NV.AUTHWRITE
            | TPMA_NV.NO_DA,
            dataSize=8,
        )
    with ESAPI(tcti) as esapi:
        nv = esapi.nv_define_space(None, TPM2B_NV_PUBLIC(public))
        if initialise:
            esapi.nv_increment(nv)


def read_nv_public(tcti: str, nv_index: int) -> bytes:
    """The marshalled public area of ``nv_index`` (``TPM2_NV_ReadPublic`` needs no auth)."""
    from tpm2_pytss import ESAPI

    with ESAPI(tcti) as esapi:
        public, _ = esapi.nv_read_public(esapi.tr_from_tpmpublic(nv_index))
        return bytes(public.nvPublic.marshal())


def _pcr_policy_for(esapi: ESAPI, pcr_values: Mapping[int, bytes]) -> bytes:
    """The PolicyPCR digest for ``pcr_values`` (which the TPM need not hold),
    computed in a trial session: a trial PolicyPCR takes the expected values'
    digest from the caller instead of reading the PCRs."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPMT_SYM_DEF

    from nodes.tpm._device import _sha384_selection

    indices = sorted(pcr_values)
    trial = esapi.start_auth_session(
        tpm_key=ESYS_TR.NONE,
        bind=ESYS_TR.NONE,
        session_type=TPM2_SE.TRIAL,
        symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
        auth_hash=TPM2_ALG.SHA256,
    )
    try:
        expected = hashlib.sha256(b"".join(pcr_values[i] for i in indices)).digest()
        esapi.policy_pcr(trial, expected, _sha384_selection(indices))
        return bytes(esapi.policy_get_digest(trial))
    finally:
        esapi.flush_context(trial)


def owner_seal_to(tcti: str, pcr_values: Mapping[int, bytes], secret: bytes) -> bytes:
    """What the TPM owner can do from any PCR state: create a sealed object
    holding ``secret`` under PolicyPCR for ``pcr_values`` (``TPM2_Create``
    checks no PCR state), packaged as the device backend's sealed blob, so
    :meth:`~nodes.tpm.TpmDeviceBackend.unseal` opens it in that state."""
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPMA_OBJECT
    from tpm2_pytss.types import (
        TPM2B_PUBLIC,
        TPM2B_SENSITIVE_CREATE,
        TPM2B_SENSITIVE_DATA,
        TPMS_SENSITIVE_CREATE,
        TPMT_PUBLIC,
    )

    from nodes.tpm._device import _SEAL_MAGIC, _srk_template

    indices = sorted(pcr_values)
    with ESAPI(tcti) as esapi:
        srk, _, _, _, _ = esapi.create_primary(
            TPM2B_SENSITIVE_CREATE(), _srk_template(), ESYS_TR.OWNER
        )
        public = TPM2B_PUBLIC(
            TPMT_PUBLIC(
                type=TPM2_ALG.KEYEDHASH,
                nameAlg=TPM2_ALG.SHA256,
                objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
                authPolicy=_pcr_policy_for(esapi, pcr_values),
            )
        )
        public.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(secret)))
        private, public_out, _, _, _ = esapi.create(srk, sensitive, public)
        esapi.flush_context(srk)
    return (
        _SEAL_MAGIC
        + bytes([len(indices)])
        + bytes(indices)
        + bytes(public_out.marshal())
        + bytes(private.marshal())
    )


def owner_measured_hmac(tcti: str, pcr_values: Mapping[int, bytes], message: bytes) -> bytes:
    """The TPM owner's try at a measured HMAC for ``pcr_values`` from whatever
    state the TPM is in: derive the very primary key the device backend uses
    for that state (creating it checks no PCR), then ask the TPM to HMAC with
    it. The TPM refuses (``TPM_RC_POLICY_FAIL``, a ``TSS2_Exception``) unless
    the PCRs hold ``pcr_values`` now."""
    from tpm2_pytss import ESAPI
    from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE, TPMT_SYM_DEF

    from nodes.tpm._device import _measured_hmac_template, _sha384_selection

    with ESAPI(tcti) as esapi:
        template = _measured_hmac_template(_pcr_policy_for(esapi, pcr_values))
        key, _, _, _, _ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
        session = esapi.start_auth_session(
            tpm_key=ESYS_TR.NONE,
            bind=ESYS_TR.NONE,
            session_type=TPM2_SE.POLICY,
            symmetric=TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
            auth_hash=TPM2_ALG.SHA256,
        )
        try:
            esapi.policy_pcr(session, b"", _sha384_selection(sorted(pcr_values)))
            return bytes(esapi.hmac(key, message, TPM2_ALG.SHA256, session1=session))
        finally:
            esapi.flush_context(session)
            esapi.flush_context(key)


def power_on_image(tpm: TPM, image: NodeImage | None = None) -> None:
    """Play the simulated firmware's boot chain for ``image`` (default: the
    running tree's development image) into a freshly started TPM, as a machine's
    firmware measures the image it boots before any node code runs. swtpm has no
    firmware of its own, so its platform registers would otherwise stay at reset
    and match no release's image."""
    for index, digest in boot_chain_events(image if image is not None else running_image()):
        tpm.pcr_extend(index, digest)
