"""Key lock: derivation, verification, hostile parameters, and which decoding a request gets."""

from __future__ import annotations

import hashlib
import unicodedata

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


COMPOSED, DECOMPOSED = "caf\u00e9 cr\u00e8me", "cafe\u0301 cre\u0300me"


@pytest.mark.parametrize("same_text", [
    DECOMPOSED,  # str
    DECOMPOSED.encode(),  # bytes holding text
    "key file",  # key files as editors save them
])
def test_every_key_source_follows_one_rule(tmp_path, same_text):
    new, master = lock.new_lock(COMPOSED)
    if same_text == "key file":
        for content in (COMPOSED.encode(), DECOMPOSED.encode() + b"\n", b"\xef\xbb\xbf" + DECOMPOSED.encode() + b"\r\n"):
            (tmp_path / "key.txt").write_bytes(content)
            assert lock.unlock(lock.read_key_file(tmp_path / "key.txt"), new) == master
    else:
        assert lock.unlock(same_text, new) == master


def test_a_key_file_keeps_everything_but_one_line_ending(tmp_path):
    (tmp_path / "key.txt").write_bytes(b" two lines\n\n")
    assert lock.read_key_file(tmp_path / "key.txt") == b" two lines\n"
    (tmp_path / "key.txt").write_bytes(b"\xff\xfe binary\r")
    assert lock.read_key_file(tmp_path / "key.txt") == b"\xff\xfe binary\r"


def legacy_lock(raw_key: bytes) -> tuple[Lock, bytes]:
    """A lock derived the way psic 0.1.0 did it: the key's bytes as given (text: NFC, then UTF-8)."""
    legacy = Lock(salt=b"s" * 16, verifier=b"")
    master = hashlib.scrypt(raw_key, salt=legacy.salt, n=1 << legacy.log2_n, r=legacy.r, p=legacy.p,
                            maxmem=lock.MAX_SCRYPT_MEMORY + (1 << 20), dklen=32)
    legacy.verifier = lock.hkdf(master, lock.VERIFIER_LABEL)
    return legacy, master


def test_files_locked_before_the_one_rule_still_unlock():
    text_locked, text_master = legacy_lock(unicodedata.normalize("NFC", DECOMPOSED).encode())
    assert lock.unlock(DECOMPOSED, text_locked) == text_master  # str keys: the rule did not change
    bytes_locked, bytes_master = legacy_lock(DECOMPOSED.encode())  # bytes were used as given, unnormalised
    assert lock.unlock(DECOMPOSED.encode(), bytes_locked) == bytes_master
    with pytest.raises(PsicKeyError, match="wrong key"):
        lock.unlock(b"other", bytes_locked)
    assert lock.unlock(COMPOSED, text_locked) == text_master


def test_the_cli_key_file_opens_what_the_text_key_locked(tmp_path, capsys, photo, random_weights):
    from psic_core.cli import main

    photo.save(tmp_path / "in.png")
    assert main(["encode", str(tmp_path / "in.png"), "--model", random_weights.name, "--key", COMPOSED]) == 0
    (tmp_path / "key.txt").write_bytes(DECOMPOSED.encode() + b"\r\n")  # as a Windows editor on a Mac might
    assert main(["decode", str(tmp_path / "in.psic"), "--key-file", str(tmp_path / "key.txt"),
                 "-o", str(tmp_path / "full.png")]) == 0
    assert "full decoding" in capsys.readouterr().out
