"""normlab.errors: quoting a library's exception inside a one-line message."""

from __future__ import annotations

from normlab.errors import brief


def test_brief_puts_a_many_line_message_on_one_line() -> None:
    """A multi-line message (as torch's load_state_dict raises) becomes one line with single
    spaces, nothing of it lost while it fits."""
    error = RuntimeError("Error(s) in loading state_dict for Net:\n\tsize mismatch for w: "
                         "copying a param\n\n  with shape [8]")
    assert brief(error) == ("Error(s) in loading state_dict for Net: size mismatch for w: "
                            "copying a param with shape [8]")


def test_brief_cuts_a_long_message_at_a_word_and_says_so() -> None:
    """A message longer than the limit is cut at the last whole word before it and ends in
    "...", so a reader knows that more was said."""
    error = ValueError(" ".join(f"word{i}" for i in range(100)))
    text = brief(error, limit=50)
    assert text.endswith(" ...") and len(text) <= 54
    assert str(error).startswith(text[:-4]) and text[:-4].split()[-1] in str(error).split()
    assert brief(ValueError("short"), limit=50) == "short"


def test_brief_keeps_a_word_that_ends_at_the_limit_and_cuts_a_spaceless_message() -> None:
    """A cut that falls just after a whole word keeps that word; a message without spaces is cut
    at the limit itself."""
    assert brief(ValueError("aaaa bbbb cccc"), limit=9) == "aaaa bbbb ..."
    assert brief(ValueError("x" * 30), limit=10) == "x" * 10 + " ..."
