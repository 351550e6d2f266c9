"""Report rendering: emojis split over several tokens stay whole, prose cells read left to right."""

from __future__ import annotations

import numpy as np

from activations.embedded import embedded_tokenizer
from interp.report.blocks import Highlighted, Table, to_html
from interp.report.examples import readable_pieces


def test_emoji_split_over_tokens_is_shown_whole_with_its_strongest_value() -> None:
    tokenizer = embedded_tokenizer()
    text = "Party time 🎉🥳 with friends"
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert any("\ufffd" in tokenizer.decode([t]) for t in ids)  # the tokenizer really splits the emojis
    values = np.linspace(-1.0, 0.5, len(ids)).astype(np.float32)
    pieces, merged = readable_pieces(tokenizer, ids, values)
    assert "".join(pieces) == text
    assert not any("\ufffd" in piece for piece in pieces)
    assert len(pieces) == len(merged) < len(ids)
    assert merged[0] == values[0]  # a one-token piece keeps its own value
    assert set(merged.tolist()) <= set(values.tolist())  # a joined piece keeps one of its tokens' values


def test_html_keeps_numbers_right_and_prose_left() -> None:
    page = to_html("t", [Table(["q", "reply", "rate"], [["q1", "I love crowds and parties, they are fun", 0.5]]),
                         Highlighted("L1.N2", ("a", "🎉"), (0.2, 1.0))])
    assert "<td class='txt'>I love crowds" in page and "<td>0.500</td>" in page
    assert "🎉" in page and "Noto Color Emoji" in page
