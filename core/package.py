"""The package reader: a verified, read-only view of a deployment package (directory or
.tar.gz) and the validation of its self-test files. Writing a package is the compiler's job
(`fpgaprint.compiler.package`)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from fpgaprint.core import carrays
from fpgaprint.core.errors import FpgaprintError, InputError
from fpgaprint.core.manifest import (
    MANIFEST,
    MAX_MANIFEST,
    MAX_SIGNATURE,
    SIGNATURE,
    Verification,
    check_extras,
    check_listing,
    copy_checked,
    verify_head,
    verify_manifest,
    write_head,
)
from fpgaprint.core.selftest import Policy
from fpgaprint.core.trust import Trust, resolve_trust

GOLDEN = "model/golden.onnx"
VECTORS = "selftest/vectors.npz"
POLICY = "selftest/policy.json"
HEADER = "firmware/selftest_vectors.h"
REQUIRED = (GOLDEN, VECTORS, POLICY)
VECTOR_KEYS = ("inputs", "golden_raw", "golden_labels", "expected_labels")
SOURCE_OUTPUTS = "source_outputs"  # float (N_fp, C): the score check's reference, optional


# the BIST slave's window in the bitstream's address map (manifest bitstream.bist): at least
# the register map; at most 64 KiB, the largest range Vivado's address editor gives an AXI-lite
# slave by default (FINN+'s MakeZYNQProject gives max(4 KiB, 2**ADDR_WIDTH), 4 KiB here). A
# wider window is not this slave's, and a board would map that much of its bus for it.
BIST_WINDOW_MAX = 64 << 10
_HEX = re.compile(r"0x[0-9A-Fa-f]{1,16}")

# ---------------------------------------------------------------- self-test files


def check_policy(policy: Any, count: int, where: str = "policy") -> dict[str, Any]:
    """Validate a self-test policy (`Policy.from_dict`, its tiers against the vector count);
    returns a copy with `count` filled in."""
    Policy.from_dict(policy, where).tiers(count, where)
    if "count" in policy and policy["count"] != count:
        raise InputError(f"{where}: 'count' is {policy['count']!r} but there are {count} vectors")
    out = {**policy, "count": count}
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"{where}: not JSON-serialisable ({e})") from None
    return out


def check_vectors(vectors: dict[str, np.ndarray]) -> int:
    """Validate the shapes of the four self-test arrays; returns the vector count N."""
    for key in VECTOR_KEYS:
        if vectors[key].dtype.kind not in "iu":
            raise InputError(f"selftest {key}: dtype {vectors[key].dtype} is not an integer type")
    inputs, raw = vectors["inputs"], vectors["golden_raw"]
    if inputs.ndim < 2 or inputs.shape[0] == 0:
        raise InputError(f"selftest inputs: expected shape (N, ...) with N >= 1, "
                         f"got {inputs.shape}")
    n = inputs.shape[0]
    if raw.ndim != 2 or raw.shape[0] != n or raw.shape[1] == 0:
        raise InputError(f"selftest golden_raw: expected shape ({n}, raw), got {raw.shape}")
    for key in ("golden_labels", "expected_labels"):
        a = vectors[key]
        if a.shape != (n,):
            raise InputError(f"selftest {key}: expected shape ({n},), got {a.shape}")
        if a.size and int(a.min()) < 0:
            raise InputError(f"selftest {key}: negative label {int(a.min())}")
    return n

def check_source_outputs(vectors: dict[str, np.ndarray], policy: dict[str, Any],
                         where: str) -> None:
    """The score check's arrays: `source_outputs` (finite floats, one row per fingerprint
    vector, one column per raw output value) present exactly when the policy lists the
    score check."""
    from fpgaprint.core.fpset import check_score_arrays

    pol = Policy.from_dict(policy, where)
    outputs = vectors.get(SOURCE_OUTPUTS)
    if "score" not in pol.checks:
        if outputs is not None:
            raise InputError(f"{where}: {VECTORS}: {SOURCE_OUTPUTS} present but the policy "
                             "has no score check")
        return
    if outputs is None:
        raise InputError(f"{where}: the policy has the score check but {VECTORS} has no "
                         f"{SOURCE_OUTPUTS}")
    n = int(vectors["inputs"].shape[0]) - pol.boundary_count
    check_score_arrays(outputs, pol.score_threshold, n, f"{where}: {VECTORS}")
    raw = int(vectors["golden_raw"].shape[1])
    if outputs.shape[1] != raw:
        raise InputError(f"{where}: {VECTORS}: {SOURCE_OUTPUTS} has {outputs.shape[1]} "
                         f"classes, the raw output {raw} values")


def load_vectors(pkg_dir: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a package's selftest/vectors.npz."""
    p = Path(pkg_dir, VECTORS)
    try:
        with np.load(p, allow_pickle=False) as npz:
            out = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(f"{pkg_dir}: missing file {VECTORS}") from None
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise InputError(f"{pkg_dir}: {VECTORS}: unreadable ({e})") from None
    missing = [k for k in VECTOR_KEYS if k not in out]
    if missing:
        raise InputError(f"{pkg_dir}: {VECTORS}: missing array {missing[0]!r}")
    return out


def load_policy(pkg_dir: str | Path) -> dict[str, Any]:
    """A package's parsed selftest/policy.json."""
    p = Path(pkg_dir, POLICY)
    try:
        return json.loads(p.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{pkg_dir}: missing file {POLICY}") from None
    except ValueError as e:
        raise InputError(f"{pkg_dir}: {POLICY}: not valid JSON ({e})") from None

# ---------------------------------------------------------------- read-only view


class Package:
    """A read-only view of a verified package (use verify_package to obtain one).

    Its manifest and id are the ones `verification` established, never read again. `dir` is
    the package as the user named it (folder or .tar.gz), what messages name; `root` is where
    its files are read: from verify_package, a private copy of exactly the bytes that were
    verified, which lives as long as this object (or `close()`).
    """

    def __init__(
        self,
        pkg_dir: str | Path,
        verification: Verification,
        _tmp: tempfile.TemporaryDirectory | None = None,
        root: str | Path | None = None,
    ) -> None:
        self.dir = Path(pkg_dir)
        self.root = self.dir if root is None else Path(root)
        self.verification = verification
        self._tmp = _tmp
        self.manifest: dict[str, Any] = verification.manifest

    def close(self) -> None:
        """Delete the private copy (no-op for a view without one)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Package:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._shown(exc)
        self.close()

    def _shown(self, e: BaseException) -> None:
        """An fpgaprint error's message (changed in place) naming `dir`, not the private copy."""
        if (self.root != self.dir and isinstance(e, FpgaprintError) and len(e.args) == 1
                and isinstance(e.args[0], str)):
            e.args = (e.args[0].replace(str(self.root), str(self.dir)),)

    def _read(self, load, *args: Any, **kw: Any) -> Any:
        """`load(*args, **kw)` of a file in `root`; its error names `dir` (`_shown`)."""
        try:
            return load(*args, **kw)
        except FpgaprintError as e:
            self._shown(e)
            raise

    def __repr__(self) -> str:
        return f"Package({str(self.dir)!r}, id={self.package_id[:12]})"

    def path(self, rel: str) -> Path:
        """Path of a package file (in `root`) given its manifest path."""
        return self.root / rel

    def _field(self, key: str) -> Any:
        try:
            return self.manifest[key]
        except KeyError:
            raise InputError(f"{self.dir}: {MANIFEST} has no '{key}'") from None

    @property
    def package_id(self) -> str:
        """SHA-256 hex of the exact bytes of manifest.json."""
        return self.verification.package_id

    @property
    def name(self) -> str:
        return self._field("name")

    @property
    def board(self) -> str:
        return self._field("board")

    @property
    def io(self) -> dict[str, Any]:
        return self._field("io")

    @property
    def golden_path(self) -> Path:
        return self.root / GOLDEN

    def golden(self):
        """The package's golden model (`core.golden.GoldenModel`), its raw output as the io
        names it."""
        from fpgaprint.core.golden import GoldenModel

        return self._read(GoldenModel, self.golden_path,
                          raw_output=self.io["raw_output"]["name"])

    @property
    def header_path(self) -> Path:
        return self.root / HEADER

    @property
    def bitstream_sha256(self) -> str | None:
        return (self.manifest.get("bitstream") or {}).get("sha256")

    @property
    def selftest_crc32(self) -> dict[str, str]:
        """CRC-32 of each self-test array as recorded in the manifest ("0x%08x")."""
        return dict((self.manifest.get("selftest") or {}).get("crc32") or {})

    def vectors(self) -> dict[str, np.ndarray]:
        """The arrays of selftest/vectors.npz (int64)."""
        return self._read(load_vectors, self.root)

    def policy(self) -> dict[str, Any]:
        """The parsed selftest/policy.json."""
        return self._read(load_policy, self.root)

    def bist_window(self) -> tuple[int, int] | None:
        """(base, size) of the BIST slave's AXI-lite window in the package's bitstream, from
        the signed manifest's `bitstream.bist`; None when it records none. InputError naming
        the field when it is malformed."""
        from fpgaprint.core.bist import REGISTERS

        bit = self.manifest.get("bitstream") or {}
        info = bit.get("bist") if isinstance(bit, dict) else None
        if info is None:
            return None
        where = f"{self.dir}: {MANIFEST} bitstream.bist"
        if not isinstance(info, dict):
            raise InputError(f"{where}: expected an object with base and high")
        if not bit.get("present"):
            raise InputError(f"{where}: recorded for a package without a bitstream")
        addr = {}
        for k in ("base", "high"):
            v = info.get(k)
            if not isinstance(v, str) or not _HEX.fullmatch(v):
                raise InputError(f"{where}.{k}: expected a hex address like 0x43C00000, got "
                                 f"{v!r:.40}")
            addr[k] = int(v, 16)
        base, high = addr["base"], addr["high"]
        need = max(r.offset for r in REGISTERS) + 4
        if high < base:
            raise InputError(f"{where}: high {info['high']} is below base {info['base']}")
        size = high - base + 1
        if base % 4:
            raise InputError(f"{where}.base: {info['base']} is not 32-bit aligned")
        if not need <= size <= BIST_WINDOW_MAX:
            raise InputError(f"{where}: a window of {size} bytes; the register map needs "
                             f"{need} to {BIST_WINDOW_MAX} bytes")
        return base, size

    def bist(self):
        """The package's on-chip self-test (`core.bist.BistSpec` of hw/rtl/bist/bist.json), or
        None when it has none."""
        from fpgaprint.core.bist import BIST_JSON, load_spec

        if BIST_JSON not in (self.manifest.get("files") or {}):
            return None
        return self._read(load_spec, self.root / BIST_JSON)

def check_io(io_: Any) -> dict[str, Any]:
    if not isinstance(io_, dict):
        raise InputError("package metadata 'io': expected a dict")
    for port in ("input", "raw_output", "output"):
        spec = io_.get(port)
        if not isinstance(spec, dict):
            raise InputError(f"package metadata io.{port}: missing")
        shape = spec.get("shape")
        if (not isinstance(shape, (list, tuple)) or not shape
                or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape)):
            raise InputError(f"package metadata io.{port}.shape: expected positive integers, "
                             f"got {shape!r}")
        if not isinstance(spec.get("name"), str):
            raise InputError(f"package metadata io.{port}.name: missing")
    for port in ("input", "raw_output"):
        dt = io_[port].get("datatype")
        if not isinstance(dt, str):
            raise InputError(f"package metadata io.{port}.datatype: missing")
        carrays.datatype_range(dt)
    if "host_ops" in io_:
        from fpgaprint.core.golden import check_host_ops

        check_host_ops(io_["host_ops"])
    return io_


def check_consistency(vectors: dict[str, np.ndarray], io_: dict[str, Any], where: str) -> None:
    """The self-test arrays match the package's I/O shapes."""
    in_shape = tuple(io_["input"]["shape"][1:])
    if tuple(vectors["inputs"].shape[1:]) != in_shape:
        raise InputError(f"{where}: {VECTORS}: inputs have shape {vectors['inputs'].shape}, "
                         f"io.input.shape says (N, {', '.join(map(str, in_shape))})")
    raw = math.prod(io_["raw_output"]["shape"][1:])
    if vectors["golden_raw"].shape[1] != raw:
        raise InputError(f"{where}: {VECTORS}: golden_raw has {vectors['golden_raw'].shape[1]} "
                         f"values per vector, io.raw_output.shape says {raw}")


def check_summary(summary: Any, policy: dict[str, Any], where: str) -> None:
    """The manifest's self-test summary (what `describe` shows) says what the package's files
    do: its `count` the vectors', its `checks` and any other policy field it repeats the
    policy's (`policy` as `check_policy` returns it). InputError naming the field otherwise."""
    if not isinstance(summary, dict):
        raise InputError(f"{where}: 'selftest' must be an object (count, checks, header, crc32)")
    stated = {**policy, **Policy.from_dict(policy).to_dict()}
    for key in ("count", "checks", *sorted(set(summary) & set(stated) - {"count", "checks",
                                                                         "header", "crc32"})):
        got, want = summary.get(key), stated[key]
        if json.dumps(got, sort_keys=True) != json.dumps(want, sort_keys=True):
            says = (f"{VECTORS} holds {want} vectors" if key == "count"
                    else f"{POLICY} says {want!r}")
            raise InputError(f"{where}: selftest.{key} is {got!r} but {says}")


# ---------------------------------------------------------------- verify


MAX_NAME = 256  # characters of a package's name (results databases keep it)


def check_name(name: Any, where: str) -> str:
    """A package's name: printable text of 1 to MAX_NAME characters."""
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or not name.isprintable():
        raise InputError(f"{where}: 'name' must be printable text of 1 to {MAX_NAME} "
                         f"characters, got {str(name)[:40]!r}")
    return name


def _check_contents(pkg: Package) -> None:
    check_name(pkg.manifest.get("name"), f"{pkg.dir}: {MANIFEST}")
    files = pkg.manifest.get("files", {})
    for req in (*REQUIRED, HEADER):
        if req not in files:
            raise InputError(f"{pkg.dir}: {MANIFEST} does not list required file {req}")
    io_ = check_io(pkg.manifest.get("io"))
    vectors = pkg.vectors()
    check_vectors(vectors)
    check_consistency(vectors, io_, str(pkg.dir))
    policy = check_policy(pkg.policy(), int(vectors["inputs"].shape[0]), f"{pkg.dir}: {POLICY}")
    check_source_outputs(vectors, policy, str(pkg.dir))
    check_summary(pkg.manifest.get("selftest"), policy, f"{pkg.dir}: {MANIFEST}")
    pkg.bist_window()
    want = pkg.selftest_crc32
    got = carrays.crc32s(vectors, io_["input"]["datatype"], io_["raw_output"]["datatype"])
    for key, crc in got.items():
        if want.get(key) != crc:
            raise InputError(f"{pkg.dir}: {VECTORS}: CRC-32 of {key} is {crc}, manifest "
                             f"records {want.get(key)}")


MAX_PACKAGE_BYTES = 4 << 30  # overall cap on what an archive may declare and extract
MAX_MEMBERS = 10_000


def _member_rel(archive: Path, m: tarfile.TarInfo) -> str:
    """The member's path, refused when absolute, with '..' or not a file or folder."""
    p = PurePosixPath(m.name)
    if p.is_absolute() or ".." in p.parts or m.name.startswith("\\"):
        raise InputError(f"{archive}: unsafe member path {m.name!r} "
                         "(absolute or containing '..')")
    if not (m.isfile() or m.isdir()):
        raise InputError(f"{archive}: member {m.name!r} is not a regular file "
                         "or directory (links and devices are refused)")
    return p.as_posix()


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int, what: str,
                 archive: Path) -> bytes:
    if m.size > limit:
        raise InputError(f"{archive}: {m.name} ({m.size} B) is larger than a {what} may be "
                         f"({limit} B)")
    f = tar.extractfile(m)
    return b"" if f is None else f.read(limit)


def _scan(archive: Path, tar: tarfile.TarFile, trust: Trust, max_bytes: int):
    """Pass 1, nothing written: member headers checked, manifest.json and manifest.sig read
    and verified as soon as both have come, every file header checked against the manifest
    (those before it once it is verified)."""
    members: list[tuple[str, tarfile.TarInfo]] = []
    head: dict[str, bytes] = {}
    prefix: str | None = None
    checked: dict[str, Any] | None = None
    total = 0
    while (m := tar.next()) is not None:
        rel = _member_rel(archive, m)
        if len(members) >= MAX_MEMBERS:
            raise InputError(f"{archive}: more than {MAX_MEMBERS} members")
        total += m.size
        if total > max_bytes:
            raise InputError(f"{archive}: members declare more than {max_bytes} B "
                             "(refused before extraction)")
        members.append((rel, m))
        name = PurePosixPath(rel).name
        if m.isfile() and name in (MANIFEST, SIGNATURE) and rel.count("/") <= 1:
            where = rel[: len(rel) - len(name)]
            if prefix is not None and where != prefix:
                raise InputError(f"{archive}: {MANIFEST} and {SIGNATURE} in different folders")
            if name in head:
                raise InputError(f"{archive}: {rel} appears twice in the archive")
            prefix = where
            limit, what = ((MAX_MANIFEST, "manifest") if name == MANIFEST
                           else (MAX_SIGNATURE, "signature"))
            head[name] = _read_member(tar, m, limit, what, archive)
            if len(head) == 2:
                checked = _check_head(archive, head[MANIFEST], head[SIGNATURE], trust)
                for r, earlier in members:
                    if earlier.isfile():
                        _check_member(archive, r, earlier, prefix, checked)
        elif checked is not None and m.isfile():
            _check_member(archive, rel, m, prefix, checked)
    if MANIFEST not in head:
        raise InputError(f"{archive}: no {MANIFEST} at the top of the archive")
    if checked is None:  # no signature in the archive
        checked = _check_head(archive, head[MANIFEST], None, trust)
        for r, m in members:
            if m.isfile():
                _check_member(archive, r, m, prefix, checked)
    return members, prefix, head[MANIFEST], head.get(SIGNATURE), checked


def _check_head(archive: Path, manifest: bytes, sig: bytes | None, trust: Trust):
    """The signature and manifest verified (`verify_head`) and its listing checked: what every
    member is then checked against."""
    verification = verify_head(str(archive), manifest, sig, trust)
    m = verification.manifest
    sizes = check_listing(archive, m.get("files"), m.get("sizes"),
                          check_extras(archive, m.get("extras")))
    return {"files": m["files"], "sizes": sizes, "names": set(),
            "verification": verification}


def _check_member(archive: Path, rel: str, m: tarfile.TarInfo, prefix: str,
                  checked: dict[str, Any]) -> None:
    """A file member must be the manifest, its signature, or listed once with its size."""
    if rel in (prefix + MANIFEST, prefix + SIGNATURE):
        return
    inner = rel[len(prefix):] if rel.startswith(prefix) else None
    if inner not in checked["files"]:
        raise InputError(f"{archive}: unexpected file not listed in {MANIFEST}: {rel} "
                         "(refused before extraction)")
    if inner in checked["names"]:
        raise InputError(f"{archive}: {inner} appears twice in the archive")
    sizes = checked["sizes"]
    if sizes is not None and m.size != sizes[inner]:
        raise InputError(f"{archive}: {inner} is {m.size} B in the archive, the manifest says "
                         f"{sizes[inner]} B (refused before extraction)")
    checked["names"].add(inner)


def _extract(archive: Path, tar: tarfile.TarFile, members, prefix: str, dest: Path,
             checked: dict[str, Any], max_bytes: int) -> None:
    """Pass 2: only listed files, each streamed with its size and hash checked as it goes."""
    files, sizes = checked["files"], checked["sizes"]
    written = 0
    for rel, m in members:
        if not m.isfile() or rel in (prefix + MANIFEST, prefix + SIGNATURE):
            continue
        inner = rel[len(prefix):]
        limit = sizes[inner] if sizes is not None else max_bytes - written
        out = dest / inner
        out.parent.mkdir(parents=True, exist_ok=True)
        written += copy_checked(tar.extractfile(m), out, files[inner], limit, archive, inner)
    missing = sorted(set(files) - checked["names"])
    if missing:
        raise InputError(f"{archive}: missing file {missing[0]} (listed in {MANIFEST})")


def _safe_extract(archive: Path, root: Path, trust: Trust, max_bytes: int = MAX_PACKAGE_BYTES
                  ) -> Verification:
    """Extract a package archive into the empty folder `root`: manifest and signature read and
    verified first, then only the listed files, each checked against its listed size and hash
    while it streams (so the extracted copy needs no second pass); returns what the
    verification established."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members, prefix, manifest, sig, checked = _scan(archive, tar, trust, max_bytes)
            _extract(archive, tar, members, prefix, root, checked, max_bytes)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise InputError(f"{archive}: not a readable package archive ({e})") from None
    write_head(root, manifest, sig)
    return checked["verification"]


def verify_package(
    dir_or_tar: str | Path,
    trusted_key: str | Path | list | None = None,
    allow_unsigned: bool = False,
    allow_unpinned: bool = False,
    trust: Trust | None = None,
    max_bytes: int = MAX_PACKAGE_BYTES,
) -> Package:
    """Verify a package directory or .tar.gz and return a view of it.

    Checks the signature under the host's trust anchors (`trusted_key`, else the trust store;
    see `fpgaprint.core.trust`), every file size and hash, no unlisted files, the required
    files, the self-test arrays against io and their CRC-32s, and the manifest's self-test
    summary against them. Each listed file is copied into a private temporary folder (mode
    0700) as it is hashed, an archive's only after its manifest and signature verify; the
    Package reads only that copy, so a package changed on disk afterwards changes nothing.
    Raises InputError naming what failed and where.
    """
    if trust is None:
        trust = resolve_trust(trusted_key, allow_unpinned, allow_unsigned)
    src = Path(dir_or_tar)
    is_dir = src.is_dir()
    if is_dir:
        _check_is_package(src)
    elif not src.is_file():
        raise InputError(f"{src}: package not found (expected a directory or a .tar.gz)")
    tmp = private_copy_dir()
    try:
        root = Path(tmp.name) / "package"
        root.mkdir()
        if is_dir:
            try:
                verification = verify_manifest(src, trust=trust, copy_to=root)
            except OSError as e:
                raise InputError(f"{src}: cannot copy the package into a private folder under "
                                 f"{tempfile.gettempdir()} ({e.strerror or e})") from None
        else:
            verification = _safe_extract(src, root, trust, max_bytes)
        pkg = Package(src, verification, tmp, root)
        _check_contents(pkg)
    except BaseException:
        tmp.cleanup()
        raise
    return pkg


COPY_PREFIX = "fpgaprint-pkg-"  # + the owning process id + "-"


def private_copy_dir() -> tempfile.TemporaryDirectory:
    """A new private folder (0700) for a package's verified copy, named after this process;
    first, the copies of this user's processes that have ended (killed before they could
    delete theirs) are removed."""
    for d in Path(tempfile.gettempdir()).glob(f"{COPY_PREFIX}*-*"):
        pid = d.name[len(COPY_PREFIX):].split("-", 1)[0]
        try:
            st = d.lstat()
            if not pid.isdigit() or st.st_uid != os.getuid() or not stat.S_ISDIR(st.st_mode):
                continue
            os.kill(int(pid), 0)  # raises when no such process is left
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except OSError:  # gone meanwhile, or a process of another user holds the id
            continue
    return tempfile.TemporaryDirectory(prefix=f"{COPY_PREFIX}{os.getpid()}-")


BUILD_MARKERS = ("reports/build.json", "reports/build.failed.json", "model/golden.onnx")


def _check_is_package(d: Path) -> None:
    """A build directory that never became a package (no manifest, signature or self-test
    files) is named as such; a damaged package is left to the manifest checks."""
    if any((d / m).exists() for m in (MANIFEST, SIGNATURE, "selftest")):
        return
    if any((d / m).is_file() for m in BUILD_MARKERS):
        raise InputError(f"{d}: no package here: a build without a package (build with "
                         "--fingerprint FPSET to write one)")


def describe(pkg: Package) -> list[str]:
    """Human-readable summary lines of a verified package."""
    m = pkg.manifest
    v = pkg.verification
    st = m.get("selftest", {})
    lines = [
        f"package    {pkg.dir}",
        f"id         {pkg.package_id}",
        f"name       {m.get('name')}  board {m.get('board')} ({m.get('part')})",
        f"files      {len(m.get('files', {}))} verified by sha256",
        f"selftest   {st.get('count')} vectors, checks {', '.join(st.get('checks', []))}",
        f"bitstream  {pkg.bitstream_sha256 or 'none'}",
    ]
    window = pkg.bist_window()
    if window is not None:
        base, size = window
        lines.append(f"bist       AXI-lite slave at 0x{base:08X}, {size} bytes (on-chip self-test "
                     "in the bitstream)")
    lines.append(f"signature  {v.signer_note}")
    return lines
