/* fpgaprint C reference agent: the wire protocol of docs/protocol.md (version 1) for boards
 * without an operating system. C99, no dynamic memory: every buffer is static and sized at
 * compile time from FPA_MAX_PAYLOAD and the package header (fpgaprint_agent_package.h).
 *
 * A board port calls fpa_agent_start() once at power-on, then fpa_agent_feed() with every
 * byte it receives; answers leave through fpa_hal_write() (hal.h). docs/firmware.md.
 */
#ifndef FPGAPRINT_AGENT_H
#define FPGAPRINT_AGENT_H

#include <stddef.h>
#include <stdint.h>

/* Largest request and answer payload the agent accepts and sends (stated in HELLO). */
#ifndef FPA_MAX_PAYLOAD
#define FPA_MAX_PAYLOAD 4096u
#endif

/* Power-on: reset the accelerator, run the self-test, send BOOT. */
void fpa_agent_start(void);

/* Bytes from the line; answers every complete request frame among them. A RESET request is
 * answered, the rest of `data` dropped and the power-on sequence run again. */
void fpa_agent_feed(const uint8_t *data, size_t n);

#endif /* FPGAPRINT_AGENT_H */
