"""The offline answering-machine classifier: the phrases machines say, and nothing else."""

from __future__ import annotations

import pytest

from runtime.voicemail import classify


@pytest.mark.parametrize(
    ("heard", "label"),
    [
        ("Hi, you've reached Sam. Please leave a message after the tone.", "machine-vm"),
        ("The person you called is not available. Record your message.", "machine-vm"),
        ("The mailbox is full. Please leave a message later.", "machine-unavailable"),
        ("This voice mailbox has not been set up. Goodbye.", "machine-unavailable"),
        ("Thanks for calling. For sales, press 1.", "machine-ivr"),
        ("Hello?", "uncertain"),
        ("Yes, this is Sam speaking.", "uncertain"),
    ],
)
def test_machine_phrases(heard: str, label: str) -> None:
    assert classify(heard) == label
