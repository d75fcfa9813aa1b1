"""Key lock: derivation, verification, hostile parameters, and which decoding a request gets."""

from __future__ import annotations

import pytest

from psic_core import lock
from psic_core.container import Header, Lock, PsicFile
from psic_core.errors import PsicFormatError, PsicKeyError


def psic_file(with_key=None) -> PsicFile:
    header = Header(64, 64, "RGB", 64, 64, "m", "00" * 32, {"protect": 0.0, "full": 1.0})
    f = PsicFile(header)
    if with_key is not None:
        f.lock, _ = lock.new_lock(with_key)
    return f


def test_lock_stores_no_key_material():
    new, master = lock.new_lock("correct horse")
    assert b"correct horse" not in new.salt + new.verifier
    assert new.verifier != master and len(new.salt) == lock.SALT_BYTES
    assert lock.unlock("correct horse", new) == master


@pytest.mark.parametrize("wrong", ["correct hors", "Correct horse", b"correct horse\n", "x"])
def test_wrong_keys_raise(wrong):
    new, _ = lock.new_lock("correct horse")
    with pytest.raises(PsicKeyError, match="wrong key"):
        lock.unlock(wrong, new)


def test_text_and_bytes_keys_agree_and_text_is_nfc_normalised():
    new, _ = lock.new_lock("caf\u00e9")
    lock.unlock("cafe\u0301", new)  # decomposed form of the same text
    lock.unlock("caf\u00e9".encode(), new)


@pytest.mark.parametrize("bad", ["", b""])
def test_empty_key_is_refused(bad):
    with pytest.raises(PsicKeyError, match="empty"):
        lock.key_bytes(bad)


def test_non_unicode_text_key_is_a_key_error_and_binary_keys_work():
    with pytest.raises(PsicKeyError, match="Unicode"):
        lock.key_bytes("\udcff")
    new, _ = lock.new_lock(b"\xff\xfe\x00binary")
    lock.unlock(b"\xff\xfe\x00binary", new)
    with pytest.raises(TypeError):
        lock.key_bytes(1234)


@pytest.mark.parametrize("log2_n,r,p", [(24, 8, 1), (20, 8, 1), (14, 64, 1), (14, 8, 9), (0, 8, 1)])
def test_hostile_scrypt_parameters_are_refused_before_any_work(log2_n, r, p):
    hostile = Lock(b"s" * 16, b"v" * 32, log2_n=log2_n, r=r, p=p)
    with pytest.raises(PsicFormatError, match="scrypt"):
        lock.unlock("key", hostile)


def test_hkdf_labels_give_independent_subkeys():
    master = bytes(32)
    assert lock.hkdf(master, b"a") != lock.hkdf(master, b"b")
    assert len(lock.hkdf(master, b"a", 80)) == 80


def test_condition_table_for_a_locked_file():
    f = psic_file(with_key="k")
    assert lock.condition_for(f, None, None) == "protect"
    assert lock.condition_for(f, "k", None) == "full"
    assert lock.condition_for(f, "k", False) == "protect"
    with pytest.raises(PsicKeyError, match="locked"):
        lock.condition_for(f, None, True)
    with pytest.raises(PsicKeyError, match="wrong key"):
        lock.condition_for(f, "other", None)
    with pytest.raises(PsicKeyError, match="wrong key"):
        lock.condition_for(f, "other", False)


def test_condition_table_for_an_open_file():
    f = psic_file()
    assert lock.condition_for(f, None, None) == "protect"
    assert lock.condition_for(f, None, True) == "full"
    assert lock.condition_for(f, "anything", None) == "full"
