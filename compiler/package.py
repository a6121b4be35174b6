"""Writing a deployment package: the self-test files, then finalization (C header, manifest,
signature, tar). Reading and verifying one is `fpgaprint.core.package`."""

from __future__ import annotations

import io
import os
import tarfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fpgaprint.compiler import cheader
from fpgaprint.core.atomic import atomic_file, write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import default_key_path, load_private_key
from fpgaprint.core.manifest import (
    EXTRAS,
    MANIFEST,
    SIGNATURE,
    build_manifest,
    canonical_json,
    is_extra,
    sha256_file,
    sign_manifest,
    verify_manifest,
    write_manifest,
)
from fpgaprint.core.package import (
    HEADER,
    POLICY,
    REQUIRED,
    SOURCE_OUTPUTS,
    VECTORS,
    Package,
    check_consistency,
    check_io,
    check_name,
    check_policy,
    check_source_outputs,
    check_vectors,
    load_policy,
    load_vectors,
)

VERSION_PACKAGES = ("fpgaprint", "finn-plus", "brevitas", "qonnx", "torch")


def _int_array(name: str, value: Any) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "iu":
        raise InputError(
            f"selftest {name}: dtype {a.dtype} is not an integer type "
            "(vectors and outputs must be in the accelerator's integer datatypes)"
        )
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InputError(f"selftest {name}: values exceed int64")
    return a.astype(np.int64)


def write_selftest(
    out_dir: str | Path,
    inputs: np.ndarray,
    golden_raw: np.ndarray,
    golden_labels: np.ndarray,
    expected_labels: np.ndarray,
    policy: dict[str, Any],
    source_outputs: np.ndarray | None = None,
) -> Path:
    """Write selftest/vectors.npz and selftest/policy.json (validated, atomic); returns
    the selftest directory. `policy['count']` is filled in with N. `source_outputs`: the
    pre-trained model's outputs on the fingerprint tier, for a policy with the score check."""
    vectors = {
        "inputs": _int_array("inputs", inputs),
        "golden_raw": _int_array("golden_raw", golden_raw),
        "golden_labels": _int_array("golden_labels", golden_labels),
        "expected_labels": _int_array("expected_labels", expected_labels),
    }
    if source_outputs is not None:
        vectors[SOURCE_OUTPUTS] = np.asarray(source_outputs, dtype=np.float32)
    n = check_vectors(vectors)
    policy = check_policy(policy, n)
    check_source_outputs(vectors, policy, "selftest")
    buf = io.BytesIO()
    np.savez(buf, **vectors)
    out = Path(out_dir)
    write_atomic(out / VECTORS, buf.getvalue())
    write_atomic(out / POLICY, canonical_json(policy))
    return out / "selftest"

def _versions(given: dict[str, Any] | None) -> dict[str, Any]:
    out = dict(given or {})
    for dist in VERSION_PACKAGES:
        if dist not in out:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = None
    return out


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else None."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None or epoch == "":
        return None
    try:
        value = int(epoch)
    except ValueError:
        raise InputError(f"SOURCE_DATE_EPOCH={epoch!r}: expected an integer (seconds)") from None
    if value < 0:
        raise InputError(f"SOURCE_DATE_EPOCH={epoch!r}: expected a non-negative integer")
    return value


def _created() -> str | None:
    """The build time for the manifest: only from SOURCE_DATE_EPOCH (a clock reading would
    make every build's package id differ; the build report records when it ran)."""
    epoch = source_date_epoch()
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _bitstream(out: Path, info: Any) -> dict[str, Any]:
    if info is None:
        return {"present": False, "sha256": None}
    if not isinstance(info, dict):
        raise InputError("package metadata 'bitstream': expected a dict")
    info = dict(info)
    if info.get("path") is not None:
        rel = info["path"]
        p = out / rel
        if PurePosixPath(rel).is_absolute() or ".." in PurePosixPath(rel).parts or not p.is_file():
            raise InputError(f"{out}: bitstream file {rel!r} not found in the package")
        digest = sha256_file(p)
        if info.get("sha256") not in (None, digest):
            raise InputError(f"{out}: bitstream {rel}: sha256 {digest}, metadata says "
                             f"{info['sha256']}")
        info.update(present=True, sha256=digest)
    info.setdefault("present", info.get("sha256") is not None)
    info.setdefault("sha256", None)
    if info["present"] and not info["sha256"]:
        raise InputError("package metadata 'bitstream': present but no sha256 or path")
    return info


def write_tar(pkg_dir: str | Path, extras: tuple[str, ...] = EXTRAS) -> Path:
    """Write `DIR.tar.gz` beside the package (one top-level folder named like DIR, extras
    left out), atomically; with SOURCE_DATE_EPOCH, byte-identical for identical packages."""
    import gzip

    src = Path(pkg_dir)
    dest = src.parent / f"{src.name}.tar.gz"
    epoch = source_date_epoch()

    def keep(ti: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = PurePosixPath(ti.name).relative_to(src.name).as_posix()
        if rel != "." and (is_extra(rel, extras) or is_extra(rel + "/", extras)):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ""
        ti.mode = 0o755 if ti.isdir() else 0o644
        if epoch is not None:
            ti.mtime = min(int(ti.mtime), epoch)
        return ti

    with atomic_file(dest) as f, gzip.GzipFile(filename="", mode="wb", fileobj=f,
                                               compresslevel=6, mtime=epoch) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=src.name, filter=keep)
    return dest


def finalize_package(
    out_dir: str | Path,
    meta: dict[str, Any],
    key_path: str | Path | None = None,
    allow_unsigned: bool = False,
    tar: bool = False,
) -> Package:
    """Write the C header, manifest.json and (with a key) manifest.sig; optionally DIR.tar.gz.

    The package directory must already hold model/golden.onnx and the self-test files.
    Key: `key_path`; else, unless `allow_unsigned`, the development key at
    `~/.config/fpgaprint/signing.key`. `meta` needs name, board, part, platform, clock_ns and
    io; versions are completed from the installed distributions. Returns the verified package.
    """
    out = Path(out_dir)
    if not out.is_dir():
        raise InputError(f"{out}: package directory not found")
    if not isinstance(meta, dict):
        raise InputError("package metadata: expected a dict")
    for req in REQUIRED:
        if not (out / req).is_file():
            raise InputError(f"{out}: missing file {req} (needed before finalizing)")
    for computed in ("files", "schema", "selftest", "extras"):
        if computed in meta:
            raise InputError(f"package metadata must not set '{computed}' (it is computed)")
    name = check_name(meta.get("name"), "package metadata")
    for key in ("board", "part", "platform"):
        if not isinstance(meta.get(key), str):
            raise InputError(f"package metadata '{key}': expected a string")
    clock = meta.get("clock_ns")
    if isinstance(clock, bool) or not isinstance(clock, (int, float)) or not clock > 0:
        raise InputError(f"package metadata 'clock_ns': expected a positive number, got {clock!r}")
    io_ = check_io(meta.get("io"))

    if key_path is None and not allow_unsigned:
        key_path = default_key_path()
        if not key_path.exists():
            raise InputError(f"{key_path}: no signing key (run `fpgaprint keys generate`, "
                             "give a key, or allow an unsigned package)")
    signing_key = load_private_key(key_path) if key_path is not None else None

    vectors = load_vectors(out)
    check_vectors(vectors)
    check_consistency(vectors, io_, str(out))
    policy = check_policy(load_policy(out), int(vectors["inputs"].shape[0]), f"{out}: {POLICY}")
    check_source_outputs(vectors, policy, str(out))
    bitstream = _bitstream(out, meta.get("bitstream"))
    crcs = cheader.write_header(out / HEADER, name, vectors, io_["input"]["datatype"],
                                io_["raw_output"]["datatype"])
    for stale in (SIGNATURE, MANIFEST):
        (out / stale).unlink(missing_ok=True)
    full = {
        **meta,
        "versions": _versions(meta.get("versions")),
        "bitstream": bitstream,
        "selftest": {"count": policy["count"], "checks": policy["checks"], "header": HEADER,
                     "crc32": crcs},
        "extras": list(EXTRAS),
    }
    created = meta.get("created") or _created()
    if created:
        full["created"] = created
    write_manifest(out, build_manifest(out, full))
    trusted = None
    if signing_key is not None:
        sign_manifest(out, key_path)
        trusted = signing_key.public_key()
    verification = verify_manifest(out, trusted, allow_unsigned=signing_key is None)
    if tar:
        write_tar(out)
    return Package(out, verification)


def diff_manifests(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two packages' identities, one line each (empty: identical)."""
    lines = []
    fa, fb = a.get("files", {}), b.get("files", {})
    for rel in sorted(set(fa) | set(fb)):
        if rel not in fb:
            lines.append(f"only in A: {rel}")
        elif rel not in fa:
            lines.append(f"only in B: {rel}")
        elif fa[rel] != fb[rel]:
            lines.append(f"differs:   {rel}")
    for key in sorted((set(a) | set(b)) - {"files"}):
        if a.get(key) != b.get(key):
            if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
                subs = sorted(k for k in set(a[key]) | set(b[key])
                              if a[key].get(k) != b[key].get(k))
                lines.append(f"manifest:  {key}: {', '.join(subs)}")
            else:
                lines.append(f"manifest:  {key}: {a.get(key)!r} / {b.get(key)!r}")
    return lines
