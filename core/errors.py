"""Errors that map onto the CLI's exit codes (contract: 0 pass, 1 FAIL, 2 input, 3 link)."""


class FpgaprintError(Exception):
    """Base error; `exit_code` is what the CLI exits with."""

    exit_code = 2


class InputError(FpgaprintError):
    """Bad usage or input: missing file, malformed model, unknown board, bad config."""

    exit_code = 2


class UnsupportedModelError(InputError):
    """The model contains something the compiler cannot map (names op and node)."""


class EquivalenceError(FpgaprintError):
    """Two stages of the build computed different outputs (names the first that differs):
    the compiled model does not match its source, a FAIL of the build's own check."""

    exit_code = 1


class LinkError(FpgaprintError):
    """No verdict could be reached: the link or the board failed."""

    exit_code = 3


class PortUnavailable(LinkError):
    """The board's port could not be opened: no board was reached at all."""


class VerdictFail(FpgaprintError):
    """A verdict was reached and it is FAIL."""

    exit_code = 1


class NoVerdict(FpgaprintError):
    """No confident verdict: e.g. a pass whose confidence interval straddles the threshold."""

    exit_code = 3
