"""Fingerprints that key cached teacher outputs (kdistill/data/fingerprint.py)."""

import torch

from kdistill.data.fingerprint import fingerprint, fingerprint_text


def test_a_tensor_fingerprint_follows_content_dtype_and_shape():
    x = torch.arange(6.0)
    assert fingerprint([x]) == fingerprint([x.clone()])
    assert fingerprint([x]) != fingerprint([x + 1])
    assert fingerprint([x]) != fingerprint([x.double()])
    assert fingerprint([x]) != fingerprint([x.reshape(2, 3)])


def test_a_text_fingerprint_separates_its_parts():
    assert fingerprint_text("ab", "c") != fingerprint_text("a", "bc")
    assert fingerprint_text("a", 1) == fingerprint_text("a", 1)
