"""Error types that normlab raises for bad input.

Every error a user can cause is a :class:`NormlabError`; the CLI prints its message on one line
and exits with code 2. Messages name the problem and the fix.
"""


class NormlabError(Exception):
    """Base class of every error caused by bad input (settings, files, folders)."""


class ConfigError(NormlabError, ValueError):
    """A setting is invalid: an unknown name, a bad number, an impossible combination."""


class DataError(NormlabError):
    """A dataset file is missing, corrupt, malformed or fails its checksum."""


class RunFolderError(NormlabError):
    """A run folder is missing files, holds damaged files, or comes from another version."""


def brief(error: BaseException, limit: int = 200) -> str:
    """``error``'s message on one line (its whitespace and line breaks collapsed), cut at a word
    boundary to at most about ``limit`` characters, with "..." where it was cut: for quoting a
    library's exception, which can run to many lines, inside a one-line message."""
    text = " ".join(str(error).split())
    if len(text) <= limit:
        return text
    head = text[:limit + 1]   # a space just after the limit ends a whole word
    return (head.rsplit(" ", 1)[0] if " " in head else text[:limit]) + " ..."
