/* The accelerator half of hal.h over a Verilated design: the stitched accelerator inside its
 * on-chip self-test top (hw/rtl/bist/fpgaprint_bist_top.sv), built by fpgaprint's Verilator
 * flow (compiler/rtlsim/verilator.py) into a shared library whose C API
 * (compiler/rtlsim/harness.cpp: fp_create, fp_step, fp_add_input, fp_run, ...) this file
 * calls after dlopen. The same clock, reset and AXI-lite sequences as compiler/bist/sim.py.
 *
 * Environment: FPGAPRINT_SIM_LIBRARY (the built library), FPGAPRINT_SIM_RUN_DIR (where the
 * design's $readmemh finds mem/ and bist/: a package's hw/rtl/, or a copy with other images),
 * FPGAPRINT_SIM_CLOCK_MHZ (simulated clock for fpa_hal_delay_us; default 100).
 */
#define _POSIX_C_SOURCE 200809L

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../hal.h"

#define RESET_CYCLES 16u
#define CHUNK_CYCLES (1u << 20)
#define LIVENESS 200000u
#define MAX_CHUNKS 2000u
#define SCRATCH (1u << 22)

typedef void *(*create_t)(void);
typedef const char *(*error_t_)(void *);
typedef int (*num_ports_t)(void *);
typedef const char *(*port_name_t)(void *, int);
typedef int (*port_width_t)(void *, int);
typedef void (*set_t)(void *, int, const uint8_t *, size_t);
typedef void (*get_t)(void *, int, uint8_t *, size_t);
typedef int (*eval_t)(void *);
typedef int (*step_t)(void *, uint64_t);
typedef int (*add_input_t)(void *, int, int, int, const uint8_t *, uint64_t, size_t);
typedef int (*add_output_t)(void *, int, int, int, uint64_t, size_t);
typedef uint64_t (*count_t)(void *, int);
typedef void (*read_output_t)(void *, int, uint8_t *);
typedef void (*clear_t)(void *);
typedef int (*run_t)(void *, uint64_t, uint64_t);

static struct {
    void *h;
    error_t_ error;
    num_ports_t num_ports;
    port_name_t port_name;
    port_width_t port_width;
    set_t set, schedule;
    get_t get;
    eval_t eval;
    step_t step;
    add_input_t add_input;
    add_output_t add_output;
    count_t output_count;
    read_output_t read_output;
    clear_t clear;
    run_t run;
} v;

enum { RST, IN_D, IN_V, IN_R, OUT_D, OUT_V, OUT_R, AR_ADDR, AR_VALID, R_READY, R_VALID, R_DATA,
       AW_ADDR, AW_VALID, AW_READY, W_DATA, W_STRB, W_VALID, B_READY, N_PORTS };
static const char *const names[N_PORTS] = {
    "ap_rst_n", "s_axis_0_tdata", "s_axis_0_tvalid", "s_axis_0_tready", "m_axis_0_tdata",
    "m_axis_0_tvalid", "m_axis_0_tready", "s_axi_bist_araddr", "s_axi_bist_arvalid",
    "s_axi_bist_rready", "s_axi_bist_rvalid", "s_axi_bist_rdata", "s_axi_bist_awaddr",
    "s_axi_bist_awvalid", "s_axi_bist_awready", "s_axi_bist_wdata", "s_axi_bist_wstrb",
    "s_axi_bist_wvalid", "s_axi_bist_bready"};
static int port[N_PORTS], width[N_PORTS];
static int has_bist;
static uint64_t cycles_per_us = 100;
static uint8_t scratch_in[SCRATCH], scratch_out[SCRATCH];

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "error: Verilator HAL: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    exit(3);
}

static void *sym(void *lib, const char *name)
{
    void *p = dlsym(lib, name);
    if (!p)
        die("symbol missing in the simulation library", name);
    return p;
}

static void check(const char *when)
{
    const char *e = v.error(v.h);
    if (e && *e)
        die(when, e);
}

static size_t nbytes(int p) { return (size_t)(width[p] + 7) / 8u; }

static void set(int p, uint64_t value)
{
    uint8_t b[8];
    size_t i;
    for (i = 0; i < 8u; ++i)
        b[i] = (uint8_t)(value >> (8u * i));
    v.set(v.h, port[p], b, nbytes(p) < 8u ? nbytes(p) : 8u);
}

static uint64_t get(int p)
{
    uint8_t b[8] = {0};
    uint64_t value = 0;
    size_t i;
    v.get(v.h, port[p], b, nbytes(p) < 8u ? nbytes(p) : 8u);
    for (i = 0; i < 8u; ++i)
        value |= (uint64_t)b[i] << (8u * i);
    return value;
}

static void step(uint64_t n)
{
    if (v.step(v.h, n) != 0)
        check("simulation");
}

/* a function from the library (POSIX: dlsym's object pointer holds a function's address) */
#define LOAD(field, name)                   \
    do {                                    \
        void *p_ = sym(lib, name);          \
        memcpy(&(field), &p_, sizeof p_);   \
    } while (0)

static void init(void)
{
    create_t create;
    const char *library = getenv("FPGAPRINT_SIM_LIBRARY");
    const char *run_dir = getenv("FPGAPRINT_SIM_RUN_DIR");
    const char *mhz = getenv("FPGAPRINT_SIM_CLOCK_MHZ");
    char cwd[4096];
    void *lib;
    int i, k, n;
    if (v.h)
        return;
    if (!library || !run_dir)
        die("set FPGAPRINT_SIM_LIBRARY and FPGAPRINT_SIM_RUN_DIR", NULL);
    if (mhz)
        cycles_per_us = (uint64_t)strtoul(mhz, NULL, 10);
    lib = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        die("cannot load the simulation library", dlerror());
    LOAD(v.error, "fp_error");
    LOAD(v.num_ports, "fp_num_ports");
    LOAD(v.port_name, "fp_port_name");
    LOAD(v.port_width, "fp_port_width");
    LOAD(v.set, "fp_set");
    LOAD(v.schedule, "fp_schedule");
    LOAD(v.get, "fp_get");
    LOAD(v.eval, "fp_eval");
    LOAD(v.step, "fp_step");
    LOAD(v.add_input, "fp_add_input");
    LOAD(v.add_output, "fp_add_output");
    LOAD(v.output_count, "fp_output_count");
    LOAD(v.read_output, "fp_read_output");
    LOAD(v.clear, "fp_clear_streams");
    LOAD(v.run, "fp_run");
    if (!getcwd(cwd, sizeof cwd) || chdir(run_dir) != 0)
        die("cannot enter the run directory", run_dir);
    LOAD(create, "fp_create");
    v.h = create(); /* $readmemh reads mem/ from here */
    if (chdir(cwd) != 0)
        die("cannot return to the working directory", cwd);
    if (!v.h)
        die("could not create the simulation model", NULL);
    check("start-up");
    n = v.num_ports(v.h);
    for (k = 0; k < N_PORTS; ++k) {
        port[k] = -1;
        for (i = 0; i < n; ++i)
            if (!strcmp(v.port_name(v.h, i), names[k])) {
                port[k] = i;
                width[k] = v.port_width(v.h, i);
            }
    }
    for (k = 0; k <= OUT_R; ++k)
        if (port[k] < 0)
            die("the design has no port", names[k]);
    has_bist = 1;
    for (k = AR_ADDR; k < N_PORTS; ++k)
        has_bist &= port[k] >= 0;
}

int fpa_hal_reset(void)
{
    uint8_t zero = 0, one = 1;
    init();
    v.schedule(v.h, port[RST], &zero, 1);
    step(RESET_CYCLES);
    v.schedule(v.h, port[RST], &one, 1);
    step(2);
    return 0;
}

void fpa_hal_delay_us(uint32_t us)
{
    init();
    step((uint64_t)us * cycles_per_us);
}

/* Words of `bytes` bytes <-> the port's bytes (zero-padded or cut). */
static int repack(uint8_t *dst, size_t dst_bytes, const uint8_t *src, size_t src_bytes,
                  uint64_t count)
{
    uint64_t w;
    size_t i;
    if (count * dst_bytes > SCRATCH)
        return -1;
    for (w = 0; w < count; ++w)
        for (i = 0; i < dst_bytes; ++i)
            dst[w * dst_bytes + i] = i < src_bytes ? src[w * src_bytes + i] : 0;
    return 0;
}

int fpa_hal_stream(const uint8_t *in, uint32_t in_words, uint32_t in_bytes, uint8_t *out,
                   uint32_t out_words, uint32_t out_bytes)
{
    size_t in_nb = nbytes(IN_D), out_nb = nbytes(OUT_D);
    unsigned chunk;
    int rc = 1;
    init();
    if (repack(scratch_in, in_nb, in, in_bytes, in_words) != 0 ||
        (uint64_t)out_words * out_nb > SCRATCH)
        return -1;
    v.clear(v.h);
    v.add_input(v.h, port[IN_D], port[IN_V], port[IN_R], scratch_in, in_words, in_nb);
    v.add_output(v.h, port[OUT_D], port[OUT_V], port[OUT_R], out_words, out_nb);
    for (chunk = 0; chunk < MAX_CHUNKS && rc == 1; ++chunk)
        rc = v.run(v.h, CHUNK_CYCLES, LIVENESS);
    if (rc == 0 && v.output_count(v.h, 0) == out_words) {
        v.read_output(v.h, 0, scratch_out);
        v.clear(v.h);
        return repack(out, out_bytes, scratch_out, out_nb, out_words);
    }
    v.clear(v.h);
    set(IN_V, 0);
    set(OUT_R, 0);
    fprintf(stderr, "Verilator HAL: the output stream stalled (code %d)\n", rc);
    return -1;
}

int fpa_hal_bist_read(uint32_t reg, uint32_t *value)
{
    int i;
    init();
    if (!has_bist)
        return -1;
    set(R_READY, 1);
    set(AR_ADDR, reg);
    set(AR_VALID, 1);
    v.eval(v.h);
    for (i = 0; i < 16; ++i) {
        step(1);
        if (get(R_VALID)) {
            *value = (uint32_t)get(R_DATA);
            set(AR_VALID, 0);
            step(1);
            return 0;
        }
    }
    set(AR_VALID, 0);
    return -1;
}

int fpa_hal_bist_write(uint32_t reg, uint32_t value)
{
    int i;
    init();
    if (!has_bist)
        return -1;
    set(AW_ADDR, reg);
    set(W_DATA, value);
    set(W_STRB, 0xF);
    set(AW_VALID, 1);
    set(W_VALID, 1);
    set(B_READY, 1);
    v.eval(v.h);
    for (i = 0; i < 16; ++i) {
        uint64_t accepted = get(AW_READY);
        step(1);
        if (accepted) {
            set(AW_VALID, 0);
            set(W_VALID, 0);
            step(1);
            return 0;
        }
    }
    return -1;
}

const char *fpa_hal_bist_source(void) { return "rtl"; }
