import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LABKIT_PROFILE", "smoke")


@pytest.fixture
def tiny_config():
    """A 2-layer Llama small enough to train in a blink (hidden 64, vocab 256)."""
    from labkit import models

    return models.config("lab-tiny", vocab_size=256, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
