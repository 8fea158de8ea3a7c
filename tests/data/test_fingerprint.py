"""Fingerprints that key cached teacher outputs (kdistill/data/fingerprint.py)."""

import hashlib

import torch

from kdistill.data.fingerprint import file_sum, fingerprint, fingerprint_text


def test_a_tensor_fingerprint_follows_content_dtype_and_shape():
    x = torch.arange(6.0)
    assert fingerprint([x]) == fingerprint([x.clone()])
    assert fingerprint([x]) != fingerprint([x + 1])
    assert fingerprint([x]) != fingerprint([x.double()])
    assert fingerprint([x]) != fingerprint([x.reshape(2, 3)])


def test_a_text_fingerprint_separates_its_parts():
    assert fingerprint_text("ab", "c") != fingerprint_text("a", "bc")
    assert fingerprint_text("a", 1) == fingerprint_text("a", 1)


def test_file_sum_changes_with_any_byte_and_reads_large_files_in_pieces(tmp_path):
    data = bytes(range(256)) * 9000  # over two MiB: read in pieces
    (tmp_path / "a").write_bytes(data)
    (tmp_path / "b").write_bytes(data[:-1] + b"\x00")
    assert file_sum(tmp_path / "a") == file_sum(tmp_path / "a") != file_sum(tmp_path / "b")
    assert file_sum(tmp_path / "a") == hashlib.blake2b(data, digest_size=16).hexdigest()
