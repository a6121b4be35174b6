"""Ed25519 signing keys for deployment packages (PEM files, private key mode 0600)."""

from __future__ import annotations

import string
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fpgaprint.core.atomic import read_bounded, write_atomic
from fpgaprint.core.errors import InputError

PRIVATE_NAME = "signing.key"
PUBLIC_NAME = "signing.pub"
MAX_KEY_FILE = 16 * 1024


def default_key_dir() -> Path:
    """Where development keys live: `~/.config/fpgaprint/`."""
    return Path("~/.config/fpgaprint").expanduser()


def default_key_path() -> Path:
    """The development private key: `~/.config/fpgaprint/signing.key`."""
    return default_key_dir() / PRIVATE_NAME


def generate_keypair(
    dir: str | Path | None = None, overwrite: bool = False
) -> tuple[Path, Path]:
    """Create `signing.key` (PKCS#8 PEM, 0600) and `signing.pub` (PEM) in `dir`.

    `dir` defaults to `default_key_dir()`. Refuses to replace an existing key unless
    `overwrite`. Returns (private key path, public key path).
    """
    out = Path(dir).expanduser() if dir is not None else default_key_dir()
    priv_path, pub_path = out / PRIVATE_NAME, out / PUBLIC_NAME
    if not overwrite:
        for p in (priv_path, pub_path):
            if p.exists():
                raise InputError(f"{p}: key file already exists (refusing to overwrite)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{out}: cannot create key directory: {e.strerror}") from e
    key = Ed25519PrivateKey.generate()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(priv_path, priv_pem, 0o600, sync=True)
    write_atomic(pub_path, public_pem(key), 0o644, sync=True)
    return priv_path, pub_path


def _read(path: str | Path, what: str) -> tuple[Path, bytes]:
    p = Path(path).expanduser()
    try:
        data = read_bounded(p, MAX_KEY_FILE)
    except FileNotFoundError:
        raise InputError(f"{p}: {what} not found") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read {what}: {e.strerror}") from e
    if data is None:
        raise InputError(f"{p}: not a {what} (larger than {MAX_KEY_FILE} B)")
    return p, data


def _load_pem(p: Path, load, what: str, cls):
    """`load()` a PEM key of class `cls`; InputError naming the file otherwise."""
    try:
        key = load()
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise InputError(f"{p}: not {what} ({e})") from None
    if not isinstance(key, cls):
        raise InputError(f"{p}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """Load an unencrypted PEM Ed25519 private key; InputError naming the file otherwise."""
    p, data = _read(path, "private key")
    if b"PUBLIC KEY" in data or is_public_key_hex(data.decode("ascii", "replace").strip()):
        raise InputError(f"{p}: is a public key; sign with its private key (e.g. "
                         f"{p.with_suffix('.key').name})")
    return _load_pem(p, lambda: serialization.load_pem_private_key(data, password=None),
                     "an unencrypted PEM private key", Ed25519PrivateKey)


def load_public_key(path: str | Path, private_ok: bool = True) -> Ed25519PublicKey:
    """Load an Ed25519 public key from a PEM public key, 64 hex digits or (`private_ok`) a PEM
    private key."""
    p, data = _read(path, "public key")
    return parse_public_key(p, data, private_ok)


def parse_public_key(p: Path, data: bytes, private_ok: bool = True) -> Ed25519PublicKey:
    """The public key in `data`, the bytes of file `p` (see `load_public_key`)."""
    text = data.decode("ascii", errors="replace").strip()
    if is_public_key_hex(text):
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
    if b"PRIVATE KEY" in data:
        if not private_ok:
            raise InputError(f"{p}: is a private key; trust its public key (e.g. "
                             f"{p.with_suffix('.pub').name}) instead")
        return _load_pem(p, lambda: serialization.load_pem_private_key(data, password=None),
                         "an unencrypted PEM private key", Ed25519PrivateKey).public_key()
    return _load_pem(p, lambda: serialization.load_pem_public_key(data), "a PEM public key",
                     Ed25519PublicKey)


def is_public_key_hex(text: str) -> bool:
    """Whether `text` is a raw Ed25519 public key written as 64 hex digits (either case)."""
    return len(text) == 64 and all(c in string.hexdigits for c in text)


def public_pem(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The public key as a PEM SubjectPublicKeyInfo."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_hex(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The raw 32-byte public key as 64 lowercase hex digits."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
