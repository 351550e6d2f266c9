"""Ready-made diff designs: a behaviour's reading-and-writing design, and two generic ones.

The reading design (``reading_design``; ``emoji_design`` is its emoji preset) compares the base and
merged models on four conditions, for any behaviour (``activations.behaviors``):

  ``<name>``    texts that show the behaviour (for emojis: ``emoji``), marked at its occurrences;
  ``filler-a``  each text's length-matched twin (``activations.twins``): every occurrence replaced by
                ordinary words of the same token count, marked at those words;
  ``filler-b``  a second, independently drawn twin: the placebo's other side;
  ``writing``   the merged model's own replies, read after their question, marked at the token
                before each occurrence it wrote and controlled at sentence ends where it wrote none.

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

from collections.abc import Iterable

from interp.stats.contrasts import DiffDesign, change, interaction, scope_interaction, within

EMOJI, FILLER_A, FILLER_B, WRITING = "emoji", "filler-a", "filler-b", "writing"


def reading_design(name: str, writing: bool = True, noun: str | None = None) -> DiffDesign:
    """A behaviour's contrasts (module docstring): ``name`` is its condition (the cache file) and the
    prefix of its contrasts (``<name>_reading``, ...); ``noun`` words the descriptions. ``writing``
    False leaves out the writing contrast (a fine-tune whose replies never show the behaviour has no
    positions to contrast)."""
    noun = noun or name.replace("_", " ")
    contrasts = [
        change("change", name, "content_absmean",
               f"fine-tune's change in mean |activation| over the content tokens of the {noun} texts"),
        interaction(f"{name}_reading", name, FILLER_A, "marked_mean",
                    f"fine-tune's change at {noun} tokens minus its change at the filler words in the same slots "
                    "of the length-matched twin"),
        interaction(f"{name}_context", name, FILLER_A, "context_mean",
                    f"the same at the words around each {noun} (identical tokens and positions in both texts)"),
        interaction("placebo", FILLER_B, FILLER_A, "marked_mean",
                    f"PLACEBO: the {name}_reading contrast with filler words on both sides (true effect zero)"),
        within(f"{name}_base", "base", name, FILLER_A, "marked_mean",
               f"base model: {noun} tokens minus filler words (was the neuron selective before the fine-tune?)"),
    ]
    specific = [f"{name}_reading"]
    if writing:
        contrasts.insert(3, scope_interaction(
            f"{name}_writing", WRITING, "marked_mean", "control_mean",
            f"fine-tune's change where the merged model's own reply is about to write {_article(noun)} {noun} minus "
            "its change at sentence ends where it wrote none"))
        specific.append(f"{name}_writing")
    return DiffDesign(name, tuple(contrasts), change="change", specific=tuple(specific), placebo="placebo")


def _article(noun: str) -> str:
    return "an" if noun[:1].lower() in "aeiou" else "a"


def reading_design_for(conditions: Iterable[str]) -> DiffDesign:
    """The reading design of the caches at hand: the one condition besides the two twins (and
    ``writing``) is the behaviour's (``emoji``, ``stage_direction``, ...)."""
    names = set(conditions)
    reading = sorted(names - {FILLER_A, FILLER_B, WRITING})
    if not {FILLER_A, FILLER_B} <= names or len(reading) != 1:
        raise ValueError(f"a reading design needs one behaviour condition plus {FILLER_A} and {FILLER_B} caches "
                         f"(and optionally {WRITING}); found {sorted(names)}: pass --design model-change or "
                         "condition-contrast for other layouts")
    return reading_design(reading[0], writing=WRITING in names)


def emoji_design(writing: bool = True) -> DiffDesign:
    """The emoji study's design: ``reading_design`` on the ``emoji`` condition."""
    return reading_design(EMOJI, writing, "emoji")


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
