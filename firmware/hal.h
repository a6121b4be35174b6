/* fpgaprint C reference agent: the hardware abstraction layer a board provides.
 *
 * The agent (fpgaprint_agent.c) is C99 without an operating system, dynamic memory or I/O of
 * its own; everything it touches goes through these functions. A board port implements them
 * once: the line (a UART), a microsecond clock, and the accelerator's two AXI streams and the
 * on-chip self-test's AXI-lite registers (offsets in fpgaprint_bist.h). docs/firmware.md
 * describes a bare-metal port and the Verilator port the tests use.
 */
#ifndef FPGAPRINT_HAL_H
#define FPGAPRINT_HAL_H

#include <stddef.h>
#include <stdint.h>

/* Send bytes on the line; returns once they are queued or sent. */
void fpa_hal_write(const uint8_t *data, size_t n);

/* Microseconds since an arbitrary start (wrapping is fine over a request). */
uint64_t fpa_hal_micros(void);

/* Wait about `us` microseconds (polling the self-test). */
void fpa_hal_delay_us(uint32_t us);

/* Reset the accelerator (and its on-chip self-test, which then runs again). 0 on success. */
int fpa_hal_reset(void);

/* Stream `in_words` input words of `in_bytes` bytes each (little-endian, the package's packed
 * word size) into the accelerator and collect `out_words` output words of `out_bytes` bytes.
 * 0 on success, nonzero when the accelerator did not deliver (the agent answers INTERNAL and
 * resets it). */
int fpa_hal_stream(const uint8_t *in, uint32_t in_words, uint32_t in_bytes, uint8_t *out,
                   uint32_t out_words, uint32_t out_bytes);

/* One 32-bit AXI-lite register of the on-chip self-test at byte offset `reg`. 0 on success.
 * On a board the slave's base is FPA_BIST_BASE (fpgaprint_agent_package.h, from the signed
 * manifest); a package that records none defines none. */
int fpa_hal_bist_read(uint32_t reg, uint32_t *value);
int fpa_hal_bist_write(uint32_t reg, uint32_t value);

/* Where the registers come from, as INFO reports it: "mmio" on a board, "rtl" in simulation. */
const char *fpa_hal_bist_source(void);

/* The board's serial number (printable ASCII, at most 64 characters). */
const char *fpa_hal_serial(void);

#endif /* FPGAPRINT_HAL_H */
