"""The host side of the fpgaprint wire protocol on any pyserial URL, in three layers:

- `harness.port`: the port (any pyserial URL, timeouts as its backend accepts them, frames in
  and out);
- `harness.pipeline`: requests in flight (pipelining, retries and timeouts that adapt to the
  line, the overall deadline);
- `harness.commands`: `BoardClient`, the commands and the checks of everything a board says.

This module is the stable import path of the client.
"""

from fpgaprint.harness.commands import (  # noqa: F401
    DEFAULT_MAX_REQUEST,
    READ_SLICE,
    BindingError,
    BoardClient,
)
