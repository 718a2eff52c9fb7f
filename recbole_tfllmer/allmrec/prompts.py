"""A-LLMRec stage-2 prompts (spec B.4) and the generation hit rule (spec B.5).

The strings are A-LLMRec's own, quirks included (no space after "representation.", the
trailing space after "is"), because the frozen LM only ever sees what the prompt says:
a "tidied" template would be a different method. Each title is followed by a marker token
whose input embedding `stage2.SoftPromptRecommender.assemble` replaces with the item's
projected collaborative vector. The `[UserRep]` marker is registered with the tokenizer
but never written: the user's soft token is prepended in front of the text instead.
"""

from recbole_tfllmer.errors import ConfigError

MARKERS = ("[UserRep]", "[HistoryEmb]", "[CandidateEmb]")
USER_MARKER, HISTORY_MARKER, CANDIDATE_MARKER = MARKERS

# (verb in the past, noun, verb) per `allmrec_domain`; A-LLMRec picks them by dataset name
DOMAINS = {
    "item": ("bought", "item", "buy"),
    "movie": ("watched", "movie", "watch"),
    "game": ("played", "game", "play"),
}


def domain_phrases(domain):
    """(past, noun, verb) of a domain; an unknown domain is a config error, not a bare list
    (the original code silently drops the phrases for unknown dataset names)."""
    try:
        return DOMAINS[domain]
    except (KeyError, TypeError):
        raise ConfigError(f"`allmrec_domain` must be one of {sorted(DOMAINS)}, got {domain!r}.") from None


def _marked_titles(titles, marker):
    return ",".join(f'"{title}"{marker}' for title in titles)


def build_prompt(history_titles, candidate_titles, domain="item"):
    """The stage-2 prompt: history titles (chronological) then candidate titles, each followed by
    its marker. The caller has already cut the history to `allmrec_history_len` and shuffled
    the candidates; the prompt keeps their order, so the k-th marker is the k-th vector."""
    past, noun, verb = domain_phrases(domain)
    history = _marked_titles(history_titles, HISTORY_MARKER)
    candidates = _marked_titles(candidate_titles, CANDIDATE_MARKER)
    return (
        f" is a user representation.This user has {past} {history} in the previous. "
        f"Recommend one next {noun} for this user to {verb} next from the following {noun} title set, "
        f"{candidates}. The recommendation is "
    )


def target_text(title):
    """What the LM learns to write (and what likelihood scoring scores): the title in double
    quotes, as the prompt renders titles. EOS is appended at tokenisation, not here."""
    return f'"{title}"'


def quoted_span(text):
    """The part of `text` between its first and its last double quote; the whole text when it
    has fewer than two quotes (a bare title is still an answer)."""
    first, last = text.find('"'), text.rfind('"')
    if first == last:  # none, or a single quote
        return text
    return text[first + 1 : last]


def generated_hit(generated_text, target_title):
    """A-LLMRec's Hit@1 for generated text: the lower-cased target title (its quotes stripped)
    is a substring of the lower-cased quoted span of the generation. An empty title never hits
    (the empty string is a substring of everything)."""
    title = str(target_title).strip().strip('"').lower()
    if not title:
        return False
    return title in quoted_span(str(generated_text).lower())
