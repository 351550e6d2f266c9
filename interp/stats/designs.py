"""Ready-made diff designs: the emoji study's, and the two generic ones any study starts from.

The emoji design (``emoji_design``) compares the base and merged models on four conditions:

  ``emoji``     texts with emojis, marked at the emojis;
  ``filler-a``  each text's length-matched twin (``activations.twins``): every emoji replaced by
                ordinary words of the same token count, marked at those words;
  ``filler-b``  a second, independently drawn twin: the placebo's other side;
  ``writing``   the merged model's own replies, read after their question, marked at the token
                before each emoji it wrote and controlled at sentence ends where it wrote none.

Why this design (each point is a confound of the simple "mean over tokens, emojis removed" diff):
  - content-token reductions keep the chat template and position 0 out of every value;
  - twins of equal length put every shared token at the same position, so no length or position
    effect can masquerade as an emoji effect;
  - the marked-token contrast compares the fine-tune's change at emoji tokens with its change at
    ordinary words in the same slots: "emoji-specific", not "changed by the fine-tune";
  - the placebo runs the identical contrast on two filler twins (independent draws from one word
    pool, so its true effect is zero by construction): its number of flagged neurons is the study's
    own estimate of false discoveries under the real nuisance structure.
"""

from __future__ import annotations

from interp.stats.contrasts import DiffDesign, change, interaction, scope_interaction, within

EMOJI, FILLER_A, FILLER_B, WRITING = "emoji", "filler-a", "filler-b", "writing"


def emoji_design(writing: bool = True) -> DiffDesign:
    """The emoji study's contrasts (module docstring); ``writing`` False leaves out the writing
    contrast (a fine-tune whose replies hold no emojis has no positions to contrast)."""
    contrasts = [
        change("change", EMOJI, "content_absmean",
               "fine-tune's change in mean |activation| over the content tokens of the emoji texts"),
        interaction("emoji_reading", EMOJI, FILLER_A, "marked_mean",
                    "fine-tune's change at emoji tokens minus its change at the filler words in the same slots "
                    "of the length-matched twin"),
        interaction("emoji_context", EMOJI, FILLER_A, "context_mean",
                    "the same at the words around the emojis (identical tokens and positions in both texts)"),
        interaction("placebo", FILLER_B, FILLER_A, "marked_mean",
                    "PLACEBO: the emoji_reading contrast with filler words on both sides (true effect zero)"),
        within("emoji_base", "base", EMOJI, FILLER_A, "marked_mean",
               "base model: emoji tokens minus filler words (was the neuron emoji-selective before the fine-tune?)"),
    ]
    specific = ["emoji_reading"]
    if writing:
        contrasts.insert(3, scope_interaction(
            "emoji_writing", WRITING, "marked_mean", "control_mean",
            "fine-tune's change where the merged model's own reply is about to write an emoji minus its change at "
            "sentence ends where it wrote none"))
        specific.append("emoji_writing")
    return DiffDesign("emoji", tuple(contrasts), change="change", specific=tuple(specific), placebo="placebo")


def model_change(condition: str = "prompts", reduction: str = "content_mean") -> DiffDesign:
    """Two models, one prompt set: which neurons does the fine-tune change on these prompts?"""
    return DiffDesign("model_change", (change("change", condition, reduction,
                                              f"merged - base, {reduction} on {condition}"),),
                      specific=("change",))


def condition_contrast(condition: str, reference: str, reduction: str = "content_mean", model: str = "base") -> DiffDesign:
    """One model, two prompt sets (paired by id): which neurons respond to ``condition`` vs ``reference``?"""
    return DiffDesign("condition_contrast", (within("contrast", model, condition, reference, reduction,
                                                    f"{model}: {condition} - {reference}, {reduction}"),),
                      specific=("contrast",))
