"""pytest plugin (entry point `fpgaprint_board`): a `board` fixture for hardware-in-the-loop tests.

Options: `--board-port URL` (pyserial URL of the board), `--board-package DIR` (its deployment
package), `--board-trusted-key PUB` (else the host's trust store), `--board-allow-unsigned`,
`--board-allow-unpinned`, `--board-timeout S`. Tests that use
`board` are skipped with a reason when the port or package is not given. Heavy imports happen
only when the fixture is used, so normal pytest runs are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import pytest

if TYPE_CHECKING:
    from fpgaprint.core.package import Package
    from fpgaprint.harness.client import BoardClient


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fpgaprint", "fpgaprint board under test")
    group.addoption("--board-port", default=None, help="pyserial URL of the board under test")
    group.addoption("--board-package", default=None, help="deployment package of the board")
    group.addoption("--board-trusted-key", default=None, help="Ed25519 public key (PEM)")
    group.addoption(
        "--board-allow-unsigned", action="store_true", default=False,
        help="accept an unsigned package",
    )
    group.addoption(
        "--board-allow-unpinned", action="store_true", default=False,
        help="accept a package whose signer is not a trusted key",
    )
    group.addoption("--board-timeout", type=float, default=2.0, help="link timeout in seconds")


@dataclass
class Board:
    """A connected board and the verified package it should run."""

    client: "BoardClient"
    package: "Package"
    port: str

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("client", "package", "port"):
            raise AttributeError(name)
        return getattr(self.client, name)


@pytest.fixture
def board(request: pytest.FixtureRequest) -> Iterator[Board]:
    """A connected `BoardClient` with the verified `Package`; skipped when options are absent."""
    cfg = request.config
    port = cfg.getoption("--board-port")
    pkg_dir = cfg.getoption("--board-package")
    if not port or not pkg_dir:
        pytest.skip("no board under test: pass --board-port URL and --board-package DIR")

    from fpgaprint.core.package import verify_package
    from fpgaprint.harness.client import BoardClient

    package = verify_package(
        pkg_dir,
        trusted_key=cfg.getoption("--board-trusted-key"),
        allow_unsigned=cfg.getoption("--board-allow-unsigned"),
        allow_unpinned=cfg.getoption("--board-allow-unpinned"),
    )
    with BoardClient(port, timeout=cfg.getoption("--board-timeout")) as client:
        yield Board(client=client, package=package, port=port)
