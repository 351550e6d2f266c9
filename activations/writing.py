"""Writing positions: where a model's own reply is about to show a behaviour, and matched places where not.

Reading a behaviour and deciding to write it are different computations. To see the second, a
model's own replies are read back after their question (template ``assistant`` with the question
as context), and two kinds of position are marked (``activations.roles``), as the behaviour's
``decision_spans`` gives them (``activations.behaviors``):

- marked: the last character before each occurrence (an emoji, a stage direction, ...): the token
  there is the one whose next-token prediction starts it;
- control: every other sentence end (``.``, ``!``, ``?``), where the same kind of decision was
  taken and the behaviour did not follow.

Both models then read the same text, so the contrast (merged - base at marked positions) minus
(merged - base at control positions) asks whether the fine-tune changed a neuron more where the
behaviour is about to be written than at other sentence ends. Replies without both kinds of
position are left out (they cannot contribute to that contrast).
"""

from __future__ import annotations

from collections.abc import Sequence

from activations.behaviors import Behavior
from activations.prompt_sets import PromptSet


def writing_prompts(ids: Sequence[str], questions: Sequence[str], replies: Sequence[str], behavior: Behavior,
                    name: str = "writing") -> PromptSet | None:
    """The replies that have both marks and controls, as a prompt set read after their questions
    (template ``assistant``); None when no reply has both."""
    keep_ids, keep_q, keep_r, marks, controls = [], [], [], [], []
    for prompt_id, question, reply in zip(ids, questions, replies):
        found_marks, found_controls = behavior.decision_spans(reply)
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
