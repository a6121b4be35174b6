/* fpgaprint on-chip self-test (BIST): AXI-lite register map.
 * Generated from fpgaprint core/bist.py (python -m fpgaprint.compiler.bist.regmap); the
 * RTL's localparams (hw/rtl/bist/fpgaprint_bist_top.sv) come from the same definition.
 * Every register is 32 bits wide; offsets are byte offsets from the slave's base address.
 */
#ifndef FPGAPRINT_BIST_H
#define FPGAPRINT_BIST_H

#include <stdint.h>

#define FPGAPRINT_BIST_MAGIC                 0x42495354u
#define FPGAPRINT_BIST_MAP_VERSION           1u
#define FPGAPRINT_BIST_NONE                  0xFFFFFFFFu
#define FPGAPRINT_BIST_ADDR_BITS             6u

#define FPGAPRINT_BIST_REG_ID                   0x00u  /* ro: 0x42495354 ('BIST') */
#define FPGAPRINT_BIST_REG_VERSION              0x04u  /* ro: register map version (1) */
#define FPGAPRINT_BIST_REG_CONTROL              0x08u  /* wo: bit 0 START: writing 1 runs the self-test again */
#define FPGAPRINT_BIST_REG_STATUS               0x0Cu  /* ro: bit 0 DONE, 1 PASS, 2 BUSY, 3 ROM_OK, 4 SIGNATURE_MODE, 5 TIMEOUT */
#define FPGAPRINT_BIST_REG_VECTORS              0x10u  /* ro: vectors in the ROM */
#define FPGAPRINT_BIST_REG_FAIL_COUNT           0x14u  /* ro: exact mode: vectors whose output differs; signature mode: 1 when the signature differs */
#define FPGAPRINT_BIST_REG_FIRST_FAIL           0x18u  /* ro: index of the first failing vector (exact mode); 0xFFFFFFFF: none, or unknown in signature mode */
#define FPGAPRINT_BIST_REG_SIGNATURE            0x1Cu  /* ro: CRC-32 of the output stream, vectors in ROM order */
#define FPGAPRINT_BIST_REG_EXPECTED_SIGNATURE   0x20u  /* ro: CRC-32 of the golden output stream (ROM) */
#define FPGAPRINT_BIST_REG_CYCLES               0x24u  /* ro: clock cycles from start to the last output word */
#define FPGAPRINT_BIST_REG_ROM_CRC              0x28u  /* ro: CRC-32 of the ROM as it was read (inputs; XOR the expected-output ROM's in exact mode) */
#define FPGAPRINT_BIST_REG_ROM_CRC_EXPECTED     0x2Cu  /* ro: the ROM's stored CRC-32 */

#define FPGAPRINT_BIST_STATUS_DONE             (1u << 0)
#define FPGAPRINT_BIST_STATUS_PASS             (1u << 1)
#define FPGAPRINT_BIST_STATUS_BUSY             (1u << 2)
#define FPGAPRINT_BIST_STATUS_ROM_OK           (1u << 3)
#define FPGAPRINT_BIST_STATUS_SIGNATURE_MODE   (1u << 4)
#define FPGAPRINT_BIST_STATUS_TIMEOUT          (1u << 5)

static inline uint32_t fpgaprint_bist_read(uintptr_t base, uint32_t reg)
{
    return *(volatile const uint32_t *)(base + reg);
}

/* Run the self-test again; poll STATUS for DONE, then read PASS, FAIL_COUNT, FIRST_FAIL. */
static inline void fpgaprint_bist_start(uintptr_t base)
{
    *(volatile uint32_t *)(base + FPGAPRINT_BIST_REG_CONTROL) = 1u;
}

#endif /* FPGAPRINT_BIST_H */
