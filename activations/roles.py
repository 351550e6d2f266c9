"""Token roles: which tokens of a templated prompt are template, content, marked or control.

A per-prompt mean over every token mixes the chat template (about 30 tokens of SmolLM2's template,
the same for every prompt) with the text, in a ratio that depends on the text's length; any neuron
that fires on the template then looks "selective" for whatever makes texts longer. Capture therefore
records each token's role and reduces over roles (``activations.capture``):

  ``TEMPLATE`` (0)  chat-template tokens, special tokens, and always position 0 (where
                    massive-activation / attention-sink neurons fire), even for raw text;
  ``CONTENT``  (1)  tokens of the prompt's own text that are neither marked nor control;
  ``MARKED``   (2)  tokens overlapping a marked span (by default the text's emojis);
  ``CONTROL``  (3)  tokens overlapping a control span (matched positions to compare marks with).

1. Render the text into the template (with its user-turn context, if any) and find where the text
   sits in the rendered string (its last occurrence: the text follows any system prompt or context).
2. Tokenise the rendered string with character offsets (a fast tokenizer is needed).
3. A token is content if its characters overlap the text, marked if they overlap a marked span,
   control if they overlap a control span (marked wins where both do); everything else is template.
   Byte-level BPE may fold the space before an emoji into the emoji's first token: that token
   overlaps the emoji, so it is marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from transformers import PreTrainedTokenizerBase

from activations.prompt_sets import PromptSet, Spans, apply_template, template_adds_special_tokens


class TokenRole(IntEnum):
    TEMPLATE = 0
    CONTENT = 1
    MARKED = 2
    CONTROL = 3


@dataclass(frozen=True)
class EncodedPrompt:
    """One prompt as the model reads it."""

    ids: tuple[int, ...]
    roles: tuple[int, ...]
    """A ``TokenRole`` per token."""
    offsets: tuple[tuple[int, int], ...] = ()
    """Each token's character range in the prompt's *text* (negative or beyond it for template tokens)."""

    def __len__(self) -> int:
        return len(self.ids)

    def count(self, role: TokenRole) -> int:
        return sum(r == role for r in self.roles)

    def tokens_in(self, span: tuple[int, int]) -> int:
        """How many tokens overlap the character span ``span`` of the text."""
        return sum(_overlaps(start, end, (span,)) for start, end in self.offsets)


def _overlaps(start: int, end: int, spans: Spans) -> bool:
    # A zero-width token (offset (k, k)) overlaps nothing: special tokens get (0, 0).
    return end > start and any(start < span_end and span_start < end for span_start, span_end in spans)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    template: str,
    marks: Spans = (),
    controls: Spans = (),
    context: str | None = None,
) -> EncodedPrompt:
    """Token ids and roles of ``text`` in ``template`` (steps 1-3 of the module docstring)."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"token roles need character offsets, which {type(tokenizer).__name__} (a slow tokenizer) "
                         "cannot give; load the model's fast tokenizer (AutoTokenizer with use_fast=True)")
    rendered = apply_template(tokenizer, text, template, context)
    offset = rendered.rfind(text)
    if offset < 0:
        raise ValueError(f"the {template!r} chat template changes the prompt text (it no longer appears verbatim in "
                         f"the rendered prompt), so its tokens cannot be told from the template's: {text[:60]!r}; "
                         "use template 'raw' or strip the text as the template does")
    encoded = tokenizer(rendered, add_special_tokens=template_adds_special_tokens(template),
                        return_offsets_mapping=True)
    special = set(tokenizer.all_special_ids)
    text_span = ((offset, offset + len(text)),)
    shifted_marks = tuple((offset + s, offset + e) for s, e in marks)
    shifted_controls = tuple((offset + s, offset + e) for s, e in controls)
    roles = []
    for position, (token, (start, end)) in enumerate(zip(encoded["input_ids"], encoded["offset_mapping"])):
        if position == 0 or token in special or not _overlaps(start, end, text_span):
            roles.append(TokenRole.TEMPLATE)
        elif _overlaps(start, end, shifted_marks):
            roles.append(TokenRole.MARKED)
        elif _overlaps(start, end, shifted_controls):
            roles.append(TokenRole.CONTROL)
        else:
            roles.append(TokenRole.CONTENT)
    offsets = tuple((start - offset, end - offset) for start, end in encoded["offset_mapping"])
    return EncodedPrompt(tuple(encoded["input_ids"]), tuple(int(r) for r in roles), offsets)


def encode_prompt_set(tokenizer: PreTrainedTokenizerBase, prompts: PromptSet, template: str) -> list[EncodedPrompt]:
    """Every prompt of ``prompts`` encoded with its marks, controls and context."""
    return [encode_prompt(tokenizer, text, template, prompts.marks_of(i), prompts.controls_of(i), prompts.context_of(i))
            for i, text in enumerate(prompts.texts)]
