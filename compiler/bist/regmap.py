"""The BIST register map as firmware and people read it, generated from `core.bist.REGISTERS`
(the RTL's localparams come from the same definition, `generate._top`):

* `c_header()`: `firmware/fpgaprint_bist.h`;
* `docs_table()`: the table in docs/bist.md between the `regmap` markers.

`python -m fpgaprint.compiler.bist.regmap` rewrites both in a source tree (tests check they are
current).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fpgaprint.core import bist as B

HEADER = Path("firmware/fpgaprint_bist.h")
DOCS = Path("docs/bist.md")
BEGIN, END = "<!-- regmap:begin (generated) -->", "<!-- regmap:end -->"


def c_header() -> str:
    regs = "\n".join(f"#define FPGAPRINT_BIST_REG_{r.name:<20} 0x{r.offset:02X}u  /* {r.access}: "
                     f"{r.doc.replace('*/', '')} */" for r in B.REGISTERS)
    bits = "\n".join(f"#define FPGAPRINT_BIST_STATUS_{n:<16} (1u << {b})"
                     for n, b in B.STATUS_BITS.items())
    return f"""/* fpgaprint on-chip self-test (BIST): AXI-lite register map.
 * Generated from fpgaprint core/bist.py (python -m fpgaprint.compiler.bist.regmap); the
 * RTL's localparams (hw/rtl/bist/fpgaprint_bist_top.sv) come from the same definition.
 * Every register is 32 bits wide; offsets are byte offsets from the slave's base address.
 */
#ifndef FPGAPRINT_BIST_H
#define FPGAPRINT_BIST_H

#include <stdint.h>

#define FPGAPRINT_BIST_MAGIC                 0x{B.MAGIC:08X}u
#define FPGAPRINT_BIST_MAP_VERSION           {B.MAP_VERSION}u
#define FPGAPRINT_BIST_NONE                  0x{B.NONE:08X}u
#define FPGAPRINT_BIST_ADDR_BITS             {B.ADDR_BITS}u

{regs}

{bits}

static inline uint32_t fpgaprint_bist_read(uintptr_t base, uint32_t reg)
{{
    return *(volatile const uint32_t *)(base + reg);
}}

/* Run the self-test again; poll STATUS for DONE, then read PASS, FAIL_COUNT, FIRST_FAIL. */
static inline void fpgaprint_bist_start(uintptr_t base)
{{
    *(volatile uint32_t *)(base + FPGAPRINT_BIST_REG_CONTROL) = 1u;
}}

#endif /* FPGAPRINT_BIST_H */
"""


def docs_table() -> str:
    rows = "\n".join(f"| 0x{r.offset:02X} | `{r.name}` | {r.access} | {r.doc} |"
                     for r in B.REGISTERS)
    bits = ", ".join(f"{b} `{n}`" for n, b in B.STATUS_BITS.items())
    return (f"{BEGIN}\n| offset | register | access | meaning |\n|---|---|---|---|\n{rows}\n\n"
            f"`STATUS` bits: {bits}. `ID` reads 0x{B.MAGIC:08X}, `VERSION` {B.MAP_VERSION}.\n"
            f"{END}")


def with_table(text: str) -> str:
    """`text` (docs/bist.md) with its generated table replaced."""
    a, b = text.index(BEGIN), text.index(END) + len(END)
    return text[:a] + docs_table() + text[b:]


def write(root: str | Path) -> None:
    root = Path(root)
    (root / HEADER).parent.mkdir(exist_ok=True)
    (root / HEADER).write_text(c_header())
    (root / DOCS).write_text(with_table((root / DOCS).read_text()))


if __name__ == "__main__":
    write(sys.argv[1] if len(sys.argv) > 1 else ".")
