"""Writing positions: where a model's own reply is about to write an emoji, and matched places where not.

Reading an emoji and deciding to write one are different computations. To see the second, a
model's own replies are read back after their question (template ``assistant`` with the question
as context), and two kinds of position are marked (``activations.roles``):

- marked: the last character before each emoji (and the space before it): the token there is the
  one whose next-token prediction is the emoji;
- control: every other sentence end (``.``, ``!``, ``?``), where the same kind of decision was
  taken and no emoji followed.

Both models then read the same text, so the contrast (merged - base at marked positions) minus
(merged - base at control positions) asks whether the fine-tune changed a neuron more where an
emoji is about to be written than at other sentence ends. Replies without both kinds of position
are left out (they cannot contribute to that contrast).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from activations.prompt_sets import PromptSet, Spans, emoji_spans

_SENTENCE_END = re.compile(r"[.!?]+")


def writing_spans(text: str) -> tuple[Spans, Spans]:
    """``(marks, controls)`` of one reply (module docstring)."""
    emojis = emoji_spans(text)
    marks = []
    for start, _ in emojis:
        before = len(text[:start].rstrip())
        if before > 0 and not any(s <= before - 1 < e for s, e in emojis):  # not right after another emoji
            marks.append((before - 1, before))
    emoji_starts = {s for s, _ in emojis}
    controls = []
    for match in _SENTENCE_END.finditer(text):
        end = match.end()
        rest = text[end:]
        follower = end + (len(rest) - len(rest.lstrip()))
        if follower in emoji_starts or any(s <= end - 1 < e for s, e in marks):
            continue
        controls.append((end - 1, end))
    return tuple(marks), tuple(controls)


def writing_prompts(ids: Sequence[str], questions: Sequence[str], replies: Sequence[str],
                    name: str = "writing") -> PromptSet | None:
    """The replies that have both marks and controls, as a prompt set read after their questions
    (template ``assistant``); None when no reply has both."""
    keep_ids, keep_q, keep_r, marks, controls = [], [], [], [], []
    for prompt_id, question, reply in zip(ids, questions, replies):
        found_marks, found_controls = writing_spans(reply)
        if found_marks and found_controls:
            keep_ids.append(prompt_id)
            keep_q.append(question)
            keep_r.append(reply)
            marks.append(found_marks)
            controls.append(found_controls)
    if not keep_ids:
        return None
    return PromptSet(name, tuple(keep_ids), tuple(keep_r), ("",) * len(keep_ids), tuple(marks), tuple(controls),
                     tuple(keep_q))
