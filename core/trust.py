"""The root of trust: the signing keys this host accepts, provisioned here, never read from a
package (as MCUboot and TUF do: the image carries a signature, the device holds the key).

A package's signer is *pinned* when its key is one of the trust anchors:
- `--trusted-key PUB` on the command line (then only these keys count for that command);
- otherwise every key of the trust store, a folder of public key files under the config
  folder (`fpgaprint keys trust PUB` adds one; `$FPGAPRINT_TRUST_STORE` moves the folder),
  every key the config file `~/.config/fpgaprint/trust.toml` lists
  (`trusted_keys = ["release.pub", "<64 hex>"]`; `$FPGAPRINT_TRUST_CONFIG` moves it), and every
  key in `$FPGAPRINT_TRUSTED_KEYS` (absolute key file paths or 64 hex digits, separated
  by `:`).

Nothing here is found relative to the current folder, which may be a package's own: the
environment names absolute paths only, and trust.toml's key files are relative to its folder.

A signed package whose signer is not pinned is refused unless the caller allows it
(`--allow-unpinned`); an unsigned package only with `--allow-unsigned`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpgaprint.core.atomic import read_bounded, write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import (
    default_key_dir,
    is_public_key_hex,
    load_public_key,
    public_key_hex,
    public_pem,
)

TRUST_STORE_ENV = "FPGAPRINT_TRUST_STORE"
TRUST_CONFIG_ENV = "FPGAPRINT_TRUST_CONFIG"
TRUSTED_KEYS_ENV = "FPGAPRINT_TRUSTED_KEYS"
MAX_CONFIG = 64 * 1024
STORE_SUFFIX = ".pub"
MAX_STORE_KEYS = 256


@dataclass(frozen=True)
class Anchor:
    """One trusted public key and where it was provisioned."""

    key: Ed25519PublicKey
    hex: str
    source: str


@dataclass(frozen=True)
class Trust:
    """The trust anchors of one command and what it accepts beyond them."""

    anchors: tuple[Anchor, ...] = ()
    explicit: bool = False  # the anchors came from --trusted-key
    allow_unpinned: bool = False
    allow_unsigned: bool = False

    def find(self, hex_key: str) -> Anchor | None:
        return next((a for a in self.anchors if a.hex == hex_key), None)

    def describe(self) -> str:
        if not self.anchors:
            return "no trusted key is provisioned"
        keys = ", ".join(f"{a.hex[:16]}… ({a.source})" for a in self.anchors[:3])
        more = f" and {len(self.anchors) - 3} more" if len(self.anchors) > 3 else ""
        return f"trusted keys: {keys}{more}"


def _absolute(value: str, env: str) -> Path:
    """A path given in the environment, refused unless absolute (after `~` expansion): a
    relative one would be found in the current folder, which may be a package's own."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise InputError(f"${env}: {value!r} is a relative path; it must be absolute")
    return path


def trust_store_dir() -> Path:
    """The trust store folder: `$FPGAPRINT_TRUST_STORE`, else `~/.config/fpgaprint/trusted`."""
    env = os.environ.get(TRUST_STORE_ENV)
    return _absolute(env, TRUST_STORE_ENV) if env else default_key_dir() / "trusted"


def _store_anchors(store: Path) -> dict[Path, Anchor]:
    """The trust store's keys by their files, in file name order."""
    if not store.exists():
        return {}
    if not store.is_dir():
        raise InputError(f"{store}: trust store is not a folder ({TRUST_STORE_ENV})")
    files = sorted(p for p in store.iterdir() if p.suffix == STORE_SUFFIX)
    if len(files) > MAX_STORE_KEYS:
        raise InputError(f"{store}: trust store holds {len(files)} keys, at most "
                         f"{MAX_STORE_KEYS} are read")
    out = {}
    for p in files:
        key = load_public_key(p)
        out[p] = Anchor(key, public_key_hex(key), f"trust store {p}")
    return out


def _anchor(item: str, source: str, base: Path | None) -> Anchor:
    """A key given as 64 hex digits or as a key file: an absolute path, or one relative to the
    folder `base`. `base` None: the key comes from the environment variable `source`, where a
    relative path is refused."""
    item = item.strip()
    if is_public_key_hex(item):
        try:
            key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(item))
        except ValueError as e:
            raise InputError(f"{source}: {item[:16]}… is not an Ed25519 key ({e})") from None
    else:
        path = Path(item).expanduser()
        if not path.is_absolute():
            if base is None:
                raise InputError(f"${source}: key file {item!r} is a relative path; it must "
                                 "be absolute (or give the key as 64 hex digits)")
            path = base / path
        try:
            key = load_public_key(path)
        except InputError as e:
            raise InputError(f"{source}: {e}") from None
    return Anchor(key, public_key_hex(key), source)


def _env_anchors() -> list[Anchor]:
    """The keys of `$FPGAPRINT_TRUSTED_KEYS`: 64 hex digits or absolute key file paths."""
    return [_anchor(item, TRUSTED_KEYS_ENV, None)
            for item in os.environ.get(TRUSTED_KEYS_ENV, "").split(os.pathsep) if item.strip()]


def trust_config_path() -> Path:
    """The trust config file: `$FPGAPRINT_TRUST_CONFIG`, else `~/.config/fpgaprint/trust.toml`."""
    env = os.environ.get(TRUST_CONFIG_ENV)
    return _absolute(env, TRUST_CONFIG_ENV) if env else default_key_dir() / "trust.toml"


def _config_anchors() -> list[Anchor]:
    import tomllib

    path = trust_config_path()
    if not path.exists():
        return []
    try:
        text = read_bounded(path, MAX_CONFIG)
        if text is None:
            raise InputError(f"{path}: trust config larger than {MAX_CONFIG} B")
        doc = tomllib.loads(text.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InputError(f"{path}: not a readable trust config ({e})") from None
    unknown = sorted(set(doc) - {"trusted_keys"})
    keys = doc.get("trusted_keys", [])
    if unknown or not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise InputError(f"{path}: expected only trusted_keys = [\"key file or 64 hex\", …]"
                         + (f", not {unknown[0]!r}" if unknown else ""))
    return [_anchor(k, f"trust config {path}", path.parent) for k in keys]


def resolve_trust(
    trusted_key: str | Path | Ed25519PublicKey | list | tuple | None = None,
    allow_unpinned: bool = False,
    allow_unsigned: bool = False,
) -> Trust:
    """The trust of one command: `trusted_key` (one or several) if given, else the trust
    store, the trust config file and `$FPGAPRINT_TRUSTED_KEYS`."""
    if trusted_key is not None and not isinstance(trusted_key, (list, tuple)):
        trusted_key = [trusted_key]
    if trusted_key:
        anchors = []
        for k in trusted_key:
            try:
                key = k if isinstance(k, Ed25519PublicKey) else load_public_key(k)
            except InputError as e:
                raise InputError(f"--trusted-key {e}") from None
            src = "the signing key" if isinstance(k, Ed25519PublicKey) else f"--trusted-key {k}"
            anchors.append(Anchor(key, public_key_hex(key), src))
        return Trust(tuple(anchors), True, allow_unpinned, allow_unsigned)
    anchors = [*_store_anchors(trust_store_dir()).values(), *_config_anchors(),
               *_env_anchors()]
    seen: dict[str, Anchor] = {}
    for a in anchors:
        seen.setdefault(a.hex, a)  # first source wins, in the order of first appearance
    return Trust(tuple(seen.values()), False, allow_unpinned, allow_unsigned)


def trust_key(pub: str | Path, store: str | Path | None = None) -> tuple[Path, str]:
    """Provision a public key in the trust store; returns (its file, its hex)."""
    key = load_public_key(pub)
    hex_key = public_key_hex(key)
    folder = Path(store) if store is not None else trust_store_dir()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: trust store is not a folder")
    dest = folder / f"{hex_key[:16]}{STORE_SUFFIX}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(dest, public_pem(key), 0o644, sync=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot write to the trust store: {e.strerror}") from None
    return dest, hex_key


def untrust_key(hex_prefix: str, store: str | Path | None = None) -> list[Path]:
    """Remove the trust store's keys whose hex starts with `hex_prefix` (8+ hex digits)."""
    text = hex_prefix.strip().lower()
    if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"KEY {hex_prefix!r}: give at least 8 hex digits of the public key")
    folder = Path(store) if store is not None else trust_store_dir()
    gone = [p for p, a in _store_anchors(folder).items() if a.hex.startswith(text)]
    if not gone:
        raise InputError(f"{folder}: no trusted key starts with {text}")
    for p in gone:
        p.unlink()
    return gone


def list_trusted() -> list[Anchor]:
    """Every provisioned trust anchor (trust store, config file, environment)."""
    return list(resolve_trust().anchors)
