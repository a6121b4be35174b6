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

The trust store holds copies (`keys trust` writes one), read without following symbolic links:
a link's target could be swapped after it was trusted. An entry that is a link, unreadable or
not a public key is skipped with a warning naming it (the other keys still count), as is any
file that is not a `.pub`; a broken entry never widens trust.

A signed package whose signer is not pinned is refused unless the caller allows it
(`--allow-unpinned`); an unsigned package only with `--allow-unsigned`.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpgaprint.core.atomic import read_bounded, write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import (
    MAX_KEY_FILE,
    default_key_dir,
    is_public_key_hex,
    load_public_key,
    parse_public_key,
    public_key_hex,
    public_pem,
)

TRUST_STORE_ENV = "FPGAPRINT_TRUST_STORE"
TRUST_CONFIG_ENV = "FPGAPRINT_TRUST_CONFIG"
TRUSTED_KEYS_ENV = "FPGAPRINT_TRUSTED_KEYS"
MAX_CONFIG = 64 * 1024
STORE_SUFFIX = ".pub"
MAX_STORE_KEYS = 256
MAX_NAMED = 8  # ignored store entries named one by one


@dataclass(frozen=True)
class Anchor:
    """One trusted public key and where it was provisioned."""

    key: Ed25519PublicKey
    hex: str
    source: str
    entry: str = ""  # how a trust config or the environment names it


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


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A warning line, once per process (trust is resolved more than once per command)."""
    if message not in _warned:
        _warned.add(message)
        from fpgaprint.core.cliopts import warn

        warn(message)


def _read_entry(p: Path) -> bytes:
    """The bytes of trust store entry `p`: a regular file, never read through a symbolic link."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{p}: is a symbolic link (store a copy: fpgaprint keys trust "
                             "FILE)") from None
        raise InputError(f"{p}: cannot read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise InputError(f"{p}: not a regular file")
        data = f.read(MAX_KEY_FILE + 1)
    if len(data) > MAX_KEY_FILE:
        raise InputError(f"{p}: not a public key (larger than {MAX_KEY_FILE} B)")
    return data


def _store_anchors(store: Path) -> dict[Path, Anchor]:
    """The trust store's keys by their files, in file name order; broken entries and files
    that are not `.pub` are skipped with a warning naming them."""
    if not store.exists():
        return {}
    if not store.is_dir():
        raise InputError(f"{store}: trust store is not a folder ({TRUST_STORE_ENV})")
    entries = sorted(store.iterdir())
    others = [p for p in entries if p.suffix != STORE_SUFFIX and not p.name.startswith(".")]
    for p in others[:MAX_NAMED]:
        _warn_once(f"trust store entry {p} ignored: not a {STORE_SUFFIX} file (fpgaprint "
                   "keys trust FILE adds a key)")
    if len(others) > MAX_NAMED:
        _warn_once(f"{store}: {len(others) - MAX_NAMED} more entries ignored: not "
                   f"{STORE_SUFFIX} files")
    files = [p for p in entries if p.suffix == STORE_SUFFIX]
    if len(files) > MAX_STORE_KEYS:
        raise InputError(f"{store}: trust store holds {len(files)} keys, at most "
                         f"{MAX_STORE_KEYS} are read")
    out = {}
    for p in files:
        try:
            key = parse_public_key(p, _read_entry(p), private_ok=False)
        except InputError as e:
            _warn_once(f"trust store entry skipped: {e}")
            continue
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
    return Anchor(key, public_key_hex(key), source, item)


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
    """Provision a public key in the trust store (a copy); returns (its file, its hex). A
    private key file is refused."""
    key = load_public_key(pub, private_ok=False)
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


def untrust_key(hex_prefix: str, store: str | Path | None = None) -> tuple[list[Path], str]:
    """Remove the trust store's keys whose hex starts with `hex_prefix` (8+ hex digits).

    Returns (the files removed, "" or why a matching key is still trusted: trust.toml and the
    environment are the user's to edit, so the reason names the entry and where it is). No
    matching key anywhere is an InputError."""
    text = hex_prefix.strip().lower()
    if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
        raise InputError(f"KEY {hex_prefix!r}: give at least 8 hex digits of the public key")
    folder = Path(store) if store is not None else trust_store_dir()
    gone = [p for p, a in _store_anchors(folder).items() if a.hex.startswith(text)]
    kept = [a for a in (*_config_anchors(), *_env_anchors()) if a.hex.startswith(text)]
    if not gone and not kept:
        raise InputError(f"{folder}: no trusted key starts with {text}")
    for p in gone:
        p.unlink()
    return gone, "; ".join(_still_trusted(a) for a in kept)


def _still_trusted(a: Anchor) -> str:
    if a.source == TRUSTED_KEYS_ENV:
        return (f"{a.hex[:16]}… is still trusted: ${TRUSTED_KEYS_ENV} lists it as "
                f"{a.entry!r}; remove it from that variable")
    path = a.source.removeprefix("trust config ")
    return (f"{a.hex[:16]}… is still trusted: {path} lists it as {a.entry!r}; remove that "
            "entry from trusted_keys")


def list_trusted() -> list[Anchor]:
    """Every provisioned trust anchor (trust store, config file, environment)."""
    return list(resolve_trust().anchors)
