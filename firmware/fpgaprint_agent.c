/* fpgaprint C reference agent: framing (COBS, CRC-32), HELLO, INFO, INFER, SELFTEST,
 * CHALLENGE (SHA-256), RESET, READ and ERROR of docs/protocol.md over the accelerator behind
 * hal.h. C99, no dynamic memory.
 *
 * Package constants come from two generated headers: selftest_vectors.h (the package's own
 * self-test vectors, golden raw outputs and labels) and fpgaprint_agent_package.h (identity,
 * stream layout and host-side tail; python -m fpgaprint.hw_targets.cagent). Build with
 * -ffp-contract=off so the tail's float32 steps round as the golden graph's do.
 */
#include "fpgaprint_agent.h"

#include "fpgaprint_agent_package.h"
#include "fpgaprint_bist.h"
#include "hal.h"
#include "selftest_vectors.h"

#define PROTOCOL_VERSION 1u
#define HEADER_SIZE 9u
#define CRC_SIZE 4u
#define MAX_NDIM 8u
#define WINDOW 4u
#define FLAG_RESPONSE 0x01u
#define FLAG_UNSOLICITED 0x02u

enum { T_HELLO = 0x01, T_INFO = 0x02, T_INFER = 0x03, T_SELFTEST = 0x04, T_CHALLENGE = 0x05,
       T_RESET = 0x06, T_READ = 0x07, T_BOOT = 0x10, T_ERROR = 0x7F };
enum { E_BAD_CRC = 1, E_BAD_FRAME = 2, E_UNKNOWN_COMMAND = 3, E_BAD_PAYLOAD = 4, E_BUSY = 5,
       E_INTERNAL = 6, E_BAD_VERSION = 7 };

/* compile-time bounds */
#define STATIC_ASSERT(cond, name) typedef char fpa_assert_##name[(cond) ? 1 : -1]
STATIC_ASSERT(FPA_MAX_PAYLOAD >= 256u && FPA_MAX_PAYLOAD <= (1u << 20), max_payload_in_range);
STATIC_ASSERT(FPA_INPUT_SIZE + 2u + 4u * 2u <= FPA_MAX_PAYLOAD, one_vector_fits);
STATIC_ASSERT(FPA_IN_FOLD * FPA_IN_BITS <= 8u * FPA_IN_WORD_BYTES, input_words_hold_a_fold);
STATIC_ASSERT(FPA_OUT_FOLD * FPA_OUT_BITS <= 8u * FPA_OUT_WORD_BYTES, output_words_hold_a_fold);
STATIC_ASSERT(FPA_IN_WORDS * FPA_IN_FOLD == FPA_INPUT_SIZE, input_layout);
STATIC_ASSERT(FPA_OUT_WORDS * FPA_OUT_FOLD == FPA_RAW_SIZE, output_layout);
STATIC_ASSERT(FPGAPRINT_SELFTEST_INPUT_SIZE == FPA_INPUT_SIZE, selftest_input_size);
STATIC_ASSERT(FPGAPRINT_SELFTEST_RAW_SIZE == FPA_RAW_SIZE, selftest_raw_size);
STATIC_ASSERT(FPA_OUT_BITS <= 64u && FPA_IN_BITS <= 64u, element_width);

#define MAX_CHUNK (HEADER_SIZE + FPA_MAX_PAYLOAD + CRC_SIZE \
                   + (HEADER_SIZE + FPA_MAX_PAYLOAD + CRC_SIZE) / 254u + 1u)
/* vectors in one INFER request (at least one byte per input element); the power-on self-test
 * streams its vectors in batches of this size too */
#define MAX_BATCH (FPA_MAX_PAYLOAD / FPA_INPUT_SIZE)
#define LABEL_BYTES (FPA_RAW_SIZE <= 256u ? 1u : FPA_RAW_SIZE <= 65536u ? 2u : 4u)
#define INFER_ANSWER (2u + 4u * 2u + MAX_BATCH * FPA_RAW_SIZE * sizeof(fpa_raw_t) \
                      + 2u + 4u + MAX_BATCH * LABEL_BYTES + 32u)
#define JSON_MAX 1024u
#define ANSWER_MAX (INFER_ANSWER > JSON_MAX + 8u ? INFER_ANSWER : JSON_MAX + 8u)
#define ERROR_TEXT 200u
#define BIST_POLL_US 100u
#define BIST_POLLS 100000u /* 10 s */

/* ------------------------------------------------------------------------------- state */

static uint8_t rx[MAX_CHUNK];          /* the COBS chunk being received */
static size_t rx_len;
static int rx_overflow;
static uint8_t answer[ANSWER_MAX];     /* payload of the answer being built */
static uint8_t read_cache[JSON_MAX];   /* a long answer being fetched by READ */
static size_t read_len;
static uint8_t read_type;
static uint8_t in_words[MAX_BATCH * FPA_IN_WORDS * FPA_IN_WORD_BYTES];
static uint8_t out_words[MAX_BATCH * FPA_OUT_WORDS * FPA_OUT_WORD_BYTES];
static fpa_raw_t raw[MAX_BATCH][FPA_RAW_SIZE];
static int64_t xbuf[FPA_INPUT_SIZE];   /* one input vector's elements */
static uint32_t labels[MAX_BATCH];
static uint8_t err_code;
static char err_text[ERROR_TEXT];
static size_t err_len;

static uint32_t boots;
static uint64_t booted_us;
static uint64_t vector_us;            /* compute time per vector (self-test, slower requests) */
static uint64_t n_requests, n_errors;

static struct {
    int bist_ok;                      /* registers read */
    uint32_t bist[11];
    uint32_t count, exact_mismatches, label_matches;
    int passed, vectors_ok;
    uint64_t micros;
} st;

/* the read-only BIST registers, in the sorted order INFO lists them */
static const struct { const char *name; uint32_t reg; } bist_regs[11] = {
    {"cycles", FPGAPRINT_BIST_REG_CYCLES},
    {"expected_signature", FPGAPRINT_BIST_REG_EXPECTED_SIGNATURE},
    {"fail_count", FPGAPRINT_BIST_REG_FAIL_COUNT},
    {"first_fail", FPGAPRINT_BIST_REG_FIRST_FAIL},
    {"id", FPGAPRINT_BIST_REG_ID},
    {"rom_crc", FPGAPRINT_BIST_REG_ROM_CRC},
    {"rom_crc_expected", FPGAPRINT_BIST_REG_ROM_CRC_EXPECTED},
    {"signature", FPGAPRINT_BIST_REG_SIGNATURE},
    {"status", FPGAPRINT_BIST_REG_STATUS},
    {"vectors", FPGAPRINT_BIST_REG_VECTORS},
    {"version", FPGAPRINT_BIST_REG_VERSION},
};

/* ------------------------------------------------------------------------------ CRC-32 */

/* zlib's CRC-32 (IEEE 802.3, reflected 0xEDB88320), bitwise: no table in RAM or flash */
static uint32_t crc32_update(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        unsigned k;
        crc ^= *p++;
        for (k = 0; k < 8u; ++k)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

/* ----------------------------------------------------------------------------- SHA-256 */

/* FIPS 180-4, for the CHALLENGE digest */
typedef struct {
    uint32_t h[8];
    uint8_t block[64];
    uint64_t bytes;
    size_t n;
} sha256_t;

static const uint32_t sha_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u,
    0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu,
    0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu,
    0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau, 0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u,
    0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu,
    0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u, 0x19a4c116u,
    0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u,
    0xc67178f2u};

#define ROTR(x, n) (((x) >> (n)) | ((x) << (32u - (n))))

static void sha_compress(sha256_t *s)
{
    uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
    unsigned i;
    for (i = 0; i < 16u; ++i)
        w[i] = (uint32_t)s->block[4 * i] << 24 | (uint32_t)s->block[4 * i + 1] << 16 |
               (uint32_t)s->block[4 * i + 2] << 8 | s->block[4 * i + 3];
    for (; i < 64u; ++i)
        w[i] = w[i - 16] + (ROTR(w[i - 15], 7u) ^ ROTR(w[i - 15], 18u) ^ (w[i - 15] >> 3)) +
               w[i - 7] + (ROTR(w[i - 2], 17u) ^ ROTR(w[i - 2], 19u) ^ (w[i - 2] >> 10));
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (i = 0; i < 64u; ++i) {
        t1 = h + (ROTR(e, 6u) ^ ROTR(e, 11u) ^ ROTR(e, 25u)) + ((e & f) ^ (~e & g)) + sha_k[i] +
             w[i];
        t2 = (ROTR(a, 2u) ^ ROTR(a, 13u) ^ ROTR(a, 22u)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void sha_init(sha256_t *s)
{
    static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                   0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    unsigned i;
    for (i = 0; i < 8u; ++i)
        s->h[i] = iv[i];
    s->bytes = 0;
    s->n = 0;
}

static void sha_update(sha256_t *s, const uint8_t *p, size_t n)
{
    s->bytes += n;
    while (n--) {
        s->block[s->n++] = *p++;
        if (s->n == 64u) {
            sha_compress(s);
            s->n = 0;
        }
    }
}

static void sha_final(sha256_t *s, uint8_t digest[32])
{
    uint64_t bits = s->bytes * 8u;
    uint8_t pad = 0x80u, zero = 0, len[8];
    unsigned i;
    sha_update(s, &pad, 1);
    while (s->n != 56u)
        sha_update(s, &zero, 1);
    for (i = 0; i < 8u; ++i)
        len[i] = (uint8_t)(bits >> (56u - 8u * i));
    sha_update(s, len, 8);
    for (i = 0; i < 32u; ++i)
        digest[i] = (uint8_t)(s->h[i / 4u] >> (24u - 8u * (i % 4u)));
}

static void put_u16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static void put_u32(uint8_t *p, uint32_t v)
{
    put_u16(p, v & 0xFFFFu);
    put_u16(p + 2, v >> 16);
}

static uint32_t get_u16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t get_u32(const uint8_t *p) { return get_u16(p) | get_u16(p + 2) << 16; }

/* ------------------------------------------------------------------------- text builder */

typedef struct {
    char *buf;
    size_t cap, len;
    int over;
} sb_t;

static void sb_ch(sb_t *b, char c)
{
    if (b->len < b->cap)
        b->buf[b->len++] = c;
    else
        b->over = 1;
}

static void sb_str(sb_t *b, const char *s)
{
    while (*s)
        sb_ch(b, *s++);
}

static void sb_u64(sb_t *b, uint64_t v)
{
    char d[20];
    int i = 0;
    do {
        d[i++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (i)
        sb_ch(b, d[--i]);
}

static void sb_i64(sb_t *b, int64_t v)
{
    if (v < 0) {
        sb_ch(b, '-');
        sb_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        sb_u64(b, (uint64_t)v);
    }
}

/* microseconds as seconds with `digits` decimals (truncated) */
static void sb_seconds(sb_t *b, uint64_t us, unsigned digits)
{
    uint64_t frac = us % 1000000u, scale = 1000000u;
    unsigned i;
    sb_u64(b, us / 1000000u);
    sb_ch(b, '.');
    for (i = 0; i < digits; ++i) {
        scale /= 10u;
        sb_ch(b, (char)('0' + (frac / scale) % 10u));
    }
}

/* JSON: a key (with its comma), a string value (printable ASCII escaped) */
static void js_key(sb_t *b, int *first, const char *key)
{
    if (!*first)
        sb_ch(b, ',');
    *first = 0;
    sb_ch(b, '"');
    sb_str(b, key);
    sb_str(b, "\":");
}

static void js_string(sb_t *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    sb_ch(b, '"');
    for (; *s; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            sb_ch(b, '\\');
            sb_ch(b, (char)c);
        } else if (c < 0x20u || c >= 0x7Fu) {
            sb_str(b, "\\u00");
            sb_ch(b, hex[c >> 4]);
            sb_ch(b, hex[c & 15u]);
        } else {
            sb_ch(b, (char)c);
        }
    }
    sb_ch(b, '"');
}

/* ------------------------------------------------------------------------------ errors */

static int fail_begin(uint8_t code, sb_t *b)
{
    err_code = code;
    b->buf = err_text;
    b->cap = sizeof err_text;
    b->len = 0;
    b->over = 0;
    return -1;
}

static int fail(uint8_t code, const char *msg)
{
    sb_t b;
    fail_begin(code, &b);
    sb_str(&b, msg);
    err_len = b.len;
    return -1;
}

/* ------------------------------------------------------------------------------ output */

/* streaming COBS encoder: a block of at most 254 nonzero bytes, then its code */
static uint8_t cobs_block[255];
static size_t cobs_n;
static int cobs_final_zero;

static void cobs_flush(void)
{
    cobs_block[0] = (uint8_t)(cobs_n + 1u);
    fpa_hal_write(cobs_block, cobs_n + 1u);
    cobs_n = 0;
}

static void cobs_put(const uint8_t *p, size_t n)
{
    while (n--) {
        uint8_t c = *p++;
        if (c == 0) {
            cobs_flush();
            cobs_final_zero = 1;
        } else {
            cobs_block[1 + cobs_n++] = c;
            cobs_final_zero = 0;
            if (cobs_n == 254u)
                cobs_flush();
        }
    }
}

static void send_frame(uint8_t type, uint8_t flags, uint32_t seq, const uint8_t *payload,
                       size_t len)
{
    static const uint8_t delimiter = 0;
    uint8_t head[HEADER_SIZE], tail[CRC_SIZE];
    uint32_t crc;
    head[0] = PROTOCOL_VERSION;
    head[1] = type;
    head[2] = flags;
    put_u16(head + 3, seq);
    put_u32(head + 5, (uint32_t)len);
    crc = crc32_update(0, head, HEADER_SIZE);
    crc = crc32_update(crc, payload, len);
    put_u32(tail, crc);
    cobs_n = 0;
    cobs_final_zero = 1;
    cobs_put(head, HEADER_SIZE);
    cobs_put(payload, len);
    cobs_put(tail, CRC_SIZE);
    if (cobs_n || cobs_final_zero)
        cobs_flush();
    fpa_hal_write(&delimiter, 1);
}

static uint32_t n_dropped; /* damaged frames left unanswered (INFO `dropped`) */
static uint32_t refused;   /* damaged frames answered in this delivery */

static void send_error(uint32_t seq)
{
    uint8_t buf[1 + ERROR_TEXT];
    buf[0] = err_code;
    if (err_len > 240u)
        err_len = 240u;
    {
        size_t i;
        for (i = 0; i < err_len; ++i)
            buf[1 + i] = (uint8_t)err_text[i];
    }
    ++n_errors;
    send_frame(T_ERROR, FLAG_RESPONSE, seq, buf, 1 + err_len);
}

/* -------------------------------------------------------------------- the accelerator */

static uint64_t get_bits(const uint8_t *w, unsigned at, unsigned bits)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < bits; ++i, ++at)
        v |= (uint64_t)((w[at >> 3] >> (at & 7u)) & 1u) << i;
    return v;
}

static void set_bits(uint8_t *w, unsigned at, unsigned bits, uint64_t v)
{
    unsigned i;
    for (i = 0; i < bits; ++i, ++at)
        if ((v >> i) & 1u)
            w[at >> 3] = (uint8_t)(w[at >> 3] | (1u << (at & 7u)));
}

/* One vector's elements into its stream words (FINN packing: element i at bits i*b). */
static void pack_vector(uint8_t *words, const int64_t *x)
{
    unsigned w, k;
    for (k = 0; k < FPA_IN_WORDS * FPA_IN_WORD_BYTES; ++k)
        words[k] = 0;
    for (w = 0; w < FPA_IN_WORDS; ++w)
        for (k = 0; k < FPA_IN_FOLD; ++k)
            set_bits(words + w * FPA_IN_WORD_BYTES, k * FPA_IN_BITS, FPA_IN_BITS,
                     (uint64_t)x[w * FPA_IN_FOLD + k]);
}

static void unpack_vector(fpa_raw_t *r, const uint8_t *words)
{
    unsigned w, k;
    for (w = 0; w < FPA_OUT_WORDS; ++w)
        for (k = 0; k < FPA_OUT_FOLD; ++k) {
            uint64_t v = get_bits(words + w * FPA_OUT_WORD_BYTES, k * FPA_OUT_BITS,
                                  FPA_OUT_BITS);
#if FPA_OUT_SIGNED
            if (FPA_OUT_BITS < 64u && ((v >> (FPA_OUT_BITS - 1u)) & 1u))
                v |= ~(uint64_t)0 << (FPA_OUT_BITS - 1u);
            r[w * FPA_OUT_FOLD + k] = (fpa_raw_t)(int64_t)v;
#else
            r[w * FPA_OUT_FOLD + k] = (fpa_raw_t)v;
#endif
        }
}

/* argmax of the host-side tail over one raw output (float32 steps, first maximum) */
static uint32_t label_of(const fpa_raw_t *r)
{
    uint32_t i, best = 0;
    float best_v = 0.0f;
    for (i = 0; i < FPA_RAW_SIZE; ++i) {
        float v = (float)r[i];
#if FPA_TAIL_STEPS > 0
        unsigned s;
        for (s = 0; s < FPA_TAIL_STEPS; ++s) {
            float c = fpa_tail_const[s][i];
            switch (fpa_tail_op[s]) {
            case FPA_TAIL_MUL: v = v * c; break;
            case FPA_TAIL_ADD: v = v + c; break;
            case FPA_TAIL_SUB: v = v - c; break;
            case FPA_TAIL_RSUB: v = c - v; break;
            case FPA_TAIL_DIV: v = v / c; break;
            default: v = c / v; break;
            }
        }
#endif
        /* numpy's argmax: the first NaN, else the first maximum */
        if (i == 0 || (best_v == best_v && (v != v || v > best_v))) {
            best = i;
            best_v = v;
        }
    }
    return best;
}

/* Run `n` vectors (packed in in_words) through the accelerator into raw[] and labels[]. */
static int run_batch(uint32_t n)
{
    uint64_t t0 = fpa_hal_micros(), dt;
    uint32_t b;
    if (fpa_hal_stream(in_words, n * FPA_IN_WORDS, FPA_IN_WORD_BYTES, out_words,
                       n * FPA_OUT_WORDS, FPA_OUT_WORD_BYTES) != 0) {
        fpa_hal_reset();
        return fail(E_INTERNAL, "the accelerator did not deliver its output stream");
    }
    for (b = 0; b < n; ++b) {
        unpack_vector(raw[b], out_words + (size_t)b * FPA_OUT_WORDS * FPA_OUT_WORD_BYTES);
        labels[b] = label_of(raw[b]);
    }
    dt = (fpa_hal_micros() - t0) / n;
    if (dt > vector_us)
        vector_us = dt;
    return 0;
}

/* ---------------------------------------------------------------------------- self-test */

static void read_bist(void)
{
#if FPA_HAS_BIST
    uint32_t i, status = 0;
    st.bist_ok = 0;
    for (i = 0; i < BIST_POLLS; ++i) {
        if (fpa_hal_bist_read(FPGAPRINT_BIST_REG_STATUS, &status) != 0)
            return;
        if (status & FPGAPRINT_BIST_STATUS_DONE)
            break;
        fpa_hal_delay_us(BIST_POLL_US);
    }
    for (i = 0; i < 11u; ++i)
        if (fpa_hal_bist_read(bist_regs[i].reg, &st.bist[i]) != 0)
            return;
    st.bist_ok = 1;
#endif
}

/* The package's self-test vectors through the accelerator, and the BIST's registers. */
static void selftest(int rerun_bist)
{
    uint32_t done = 0, i, k;
    uint64_t t0 = fpa_hal_micros();
    (void)rerun_bist;
#if FPA_HAS_BIST
    if (rerun_bist) {
        fpa_hal_bist_write(FPGAPRINT_BIST_REG_CONTROL, 1u);
        fpa_hal_delay_us(1u);
    }
#endif
    read_bist();
    /* the embedded arrays are intact (flash) before they are trusted */
    st.vectors_ok =
        crc32_update(0, (const uint8_t *)fpgaprint_selftest_inputs,
                     sizeof fpgaprint_selftest_inputs) == FPGAPRINT_SELFTEST_INPUTS_CRC32 &&
        crc32_update(0, (const uint8_t *)fpgaprint_selftest_golden_raw,
                     sizeof fpgaprint_selftest_golden_raw) == FPGAPRINT_SELFTEST_GOLDEN_RAW_CRC32 &&
        crc32_update(0, (const uint8_t *)fpgaprint_selftest_expected_labels,
                     sizeof fpgaprint_selftest_expected_labels)
            == FPGAPRINT_SELFTEST_EXPECTED_LABELS_CRC32 &&
        crc32_update(0, (const uint8_t *)fpgaprint_selftest_golden_labels,
                     sizeof fpgaprint_selftest_golden_labels)
            == FPGAPRINT_SELFTEST_GOLDEN_LABELS_CRC32;
    st.count = FPGAPRINT_SELFTEST_COUNT;
    st.exact_mismatches = 0;
    st.label_matches = 0;
    st.passed = 0;
    while (done < FPGAPRINT_SELFTEST_COUNT) {
        uint32_t n = FPGAPRINT_SELFTEST_COUNT - done;
        if (n > MAX_BATCH)
            n = MAX_BATCH;
        for (i = 0; i < n; ++i) {
            for (k = 0; k < FPA_INPUT_SIZE; ++k)
                xbuf[k] = fpgaprint_selftest_inputs[done + i][k];
            pack_vector(in_words + (size_t)i * FPA_IN_WORDS * FPA_IN_WORD_BYTES, xbuf);
        }
        if (run_batch(n) != 0) {
            st.exact_mismatches = FPGAPRINT_SELFTEST_COUNT;
            break;
        }
        for (i = 0; i < n; ++i) {
            /* exact: the golden raw output and, a function of it, the golden label */
            int same = labels[i] == fpgaprint_selftest_golden_labels[done + i];
            for (k = 0; k < FPA_RAW_SIZE; ++k)
                same &= (int64_t)raw[i][k] == (int64_t)fpgaprint_selftest_golden_raw[done + i][k];
            st.exact_mismatches += same ? 0u : 1u;
            st.label_matches += labels[i] == fpgaprint_selftest_expected_labels[done + i];
        }
        done += n;
    }
    st.micros = fpa_hal_micros() - t0;
    vector_us = st.micros / FPGAPRINT_SELFTEST_COUNT;
    /* the board's own claim (the host decides from the answers and the registers) */
    st.passed = st.vectors_ok && st.exact_mismatches == 0;
#if FPA_HAS_BIST
    st.passed = st.passed && st.bist_ok &&
                (st.bist[8] & (FPGAPRINT_BIST_STATUS_DONE | FPGAPRINT_BIST_STATUS_PASS)) ==
                    (FPGAPRINT_BIST_STATUS_DONE | FPGAPRINT_BIST_STATUS_PASS);
#endif
}

/* ----------------------------------------------------------------------------- answers */

static void identity(sb_t *b, int *first)
{
    js_key(b, first, "backend");
    js_string(b, "firmware");
    js_key(b, first, "bitstream_sha256");
    sb_str(b, FPA_BITSTREAM_JSON);
    js_key(b, first, "board");
    js_string(b, FPA_BOARD);
    js_key(b, first, "boot");
    sb_u64(b, boots);
}

/* "name", "package_id", "protocol": consecutive in the sorted keys of HELLO and INFO */
static void package_fields(sb_t *b, int *first)
{
    js_key(b, first, "name");
    js_string(b, FPA_PACKAGE_NAME);
    js_key(b, first, "package_id");
    js_string(b, FPA_PACKAGE_ID);
    js_key(b, first, "protocol");
    sb_u64(b, PROTOCOL_VERSION);
}

static void limits(sb_t *b, int *first)
{
    js_key(b, first, "infer_s_per_vector");
    sb_seconds(b, vector_us, 6);
    js_key(b, first, "max_payload");
    sb_u64(b, FPA_MAX_PAYLOAD);
}

static void selftest_json(sb_t *b)
{
    int first = 1;
    uint32_t i;
    sb_ch(b, '{');
#if FPA_HAS_BIST
    js_key(b, &first, "bist");
    if (st.bist_ok) {
        int f2 = 1;
        sb_ch(b, '{');
        for (i = 0; i < 11u; ++i) {
            js_key(b, &f2, bist_regs[i].name);
            sb_u64(b, st.bist[i]);
        }
        sb_ch(b, '}');
    } else {
        sb_str(b, "null");
    }
    js_key(b, &first, "bist_source");
    js_string(b, fpa_hal_bist_source());
#endif
    (void)i;
    js_key(b, &first, "checks");
    sb_str(b, FPA_CHECKS_JSON);
    js_key(b, &first, "count");
    sb_u64(b, st.count);
    js_key(b, &first, "exact_mismatches");
    sb_u64(b, st.exact_mismatches);
    js_key(b, &first, "label_matches");
    sb_u64(b, st.label_matches);
    js_key(b, &first, "passed");
    sb_str(b, st.passed ? "true" : "false");
    js_key(b, &first, "seconds");
    sb_seconds(b, st.micros, 6);
    js_key(b, &first, "vectors_crc_ok");
    sb_str(b, st.vectors_ok ? "true" : "false");
    sb_ch(b, '}');
}

static int json_done(sb_t *b, size_t *len)
{
    if (b->over)
        return fail(E_INTERNAL, "answer longer than the agent's JSON buffer");
    *len = b->len;
    return 0;
}

static int do_hello(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    sb_t b = {(char *)out, cap, 0, 0};
    int first = 1;
    if (n != 2u)
        return fail(E_BAD_PAYLOAD, "HELLO carries 2 B (min, max version)");
    if (p[0] > PROTOCOL_VERSION || p[1] < PROTOCOL_VERSION)
        return fail(E_BAD_VERSION, "no common protocol version: board speaks [1]");
    sb_ch(&b, '{');
    identity(&b, &first);
    limits(&b, &first);
    package_fields(&b, &first);
    js_key(&b, &first, "serial");
    js_string(&b, fpa_hal_serial());
    js_key(&b, &first, "window");
    sb_u64(&b, WINDOW);
    sb_ch(&b, '}');
    return json_done(&b, len);
}

static int do_info(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    sb_t b = {(char *)out, cap, 0, 0};
    int first = 1;
    (void)p;
    (void)n;
    sb_ch(&b, '{');
    identity(&b, &first);
    js_key(&b, &first, "dropped");
    sb_u64(&b, n_dropped);
    js_key(&b, &first, "errors");
    sb_u64(&b, n_errors);
    limits(&b, &first);
    package_fields(&b, &first);
    js_key(&b, &first, "requests");
    sb_u64(&b, n_requests);
    js_key(&b, &first, "selftest");
    selftest_json(&b);
    js_key(&b, &first, "serial");
    js_string(&b, fpa_hal_serial());
    js_key(&b, &first, "uptime_s");
    sb_seconds(&b, fpa_hal_micros() - booted_us, 3);
    js_key(&b, &first, "window");
    sb_u64(&b, WINDOW);
    sb_ch(&b, '}');
    return json_done(&b, len);
}

static int do_selftest(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    sb_t b = {(char *)out, cap, 0, 0};
    (void)p;
    (void)n;
    selftest(1);
    selftest_json(&b);
    return json_done(&b, len);
}

/* wire array element types: code -> (bytes, signed) */
static int wire_type(uint8_t code, unsigned *size, int *is_signed)
{
    switch (code) {
    case 0x01: *size = 1; *is_signed = 1; return 0;
    case 0x02: *size = 2; *is_signed = 1; return 0;
    case 0x03: *size = 4; *is_signed = 1; return 0;
    case 0x04: *size = 8; *is_signed = 1; return 0;
    case 0x11: *size = 1; *is_signed = 0; return 0;
    case 0x12: *size = 2; *is_signed = 0; return 0;
    case 0x13: *size = 4; *is_signed = 0; return 0;
    default: return -1;
    }
}

static int64_t get_elem(const uint8_t *p, unsigned size, int is_signed)
{
    uint64_t v = 0;
    unsigned i;
    for (i = 0; i < size; ++i)
        v |= (uint64_t)p[i] << (8u * i);
    if (is_signed && size < 8u && ((v >> (8u * size - 1u)) & 1u))
        v |= ~(uint64_t)0 << (8u * size);
    return (int64_t)v;
}

/* the narrowest wire type holding [lo, hi], unsigned first at each width */
static uint8_t narrowest(int64_t lo, int64_t hi, unsigned *size)
{
    if (lo >= 0 && hi <= 0xFF) { *size = 1; return 0x11; }
    if (lo >= -128 && hi <= 127) { *size = 1; return 0x01; }
    if (lo >= 0 && hi <= 0xFFFF) { *size = 2; return 0x12; }
    if (lo >= -32768 && hi <= 32767) { *size = 2; return 0x02; }
    if (lo >= 0 && hi <= (int64_t)0xFFFFFFFF) { *size = 4; return 0x13; }
    if (lo >= -(int64_t)0x80000000 && hi <= 0x7FFFFFFF) { *size = 4; return 0x03; }
    *size = 8;
    return 0x04;
}

static size_t put_array_head(uint8_t *o, uint8_t code, uint32_t rows, uint32_t cols)
{
    o[0] = code;
    o[1] = (uint8_t)(cols ? 2u : 1u);
    put_u32(o + 2, rows);
    if (!cols)
        return 6;
    put_u32(o + 6, cols);
    return 10;
}

static size_t put_elem(uint8_t *o, int64_t v, unsigned size)
{
    unsigned i;
    for (i = 0; i < size; ++i)
        o[i] = (uint8_t)((uint64_t)v >> (8u * i));
    return size;
}

/* INFER (sha == NULL) and CHALLENGE: the answer arrays; with `sha`, the canonical encoding of
 * the inputs and the answer are hashed into it (docs/protocol.md, challenge binding). */
static int infer(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len,
                 sha256_t *sha)
{
    unsigned size, rsize, lsize, d;
    int is_signed;
    uint32_t ndim, dims[MAX_NDIM], batch, b, k;
    uint64_t count = 1, per;
    int64_t lo = 0, hi = 0;
    const uint8_t *data;
    size_t o;
    uint8_t rcode, lcode;
    sb_t m;
    if (n < 2u)
        return fail(E_BAD_PAYLOAD, "truncated array header");
    if (wire_type(p[0], &size, &is_signed) != 0)
        return fail(E_BAD_PAYLOAD, "unknown array dtype code");
    ndim = p[1];
    if (ndim > MAX_NDIM)
        return fail(E_BAD_PAYLOAD, "array claims more than 8 dimensions");
    if (n - 2u < 4u * ndim)
        return fail(E_BAD_PAYLOAD, "truncated array shape");
    for (d = 0; d < ndim; ++d) {
        dims[d] = get_u32(p + 2 + 4 * d);
        if (dims[d] == 0)
            return fail(E_BAD_PAYLOAD, "array has a zero dimension (every dimension must "
                                       "be >= 1)");
        count *= dims[d];
        if (count > n)
            return fail(E_BAD_PAYLOAD, "array needs more bytes than the frame holds");
    }
    data = p + 2 + 4 * ndim;
    if (count * size != n - 2u - 4u * ndim)
        return fail(E_BAD_PAYLOAD, count * size > n - 2u - 4u * ndim
                                       ? "truncated array data"
                                       : "trailing data after the inputs");
    if (ndim < 2u)
        return fail(E_BAD_PAYLOAD, "INFER needs a batch (B, *input_shape) with B >= 1");
    batch = dims[0];
    per = count / batch;
    if (per != FPA_INPUT_SIZE) {
        fail_begin(E_BAD_PAYLOAD, &m);
        sb_str(&m, "inputs: ");
        sb_u64(&m, per);
        sb_str(&m, " values per vector do not fit the accelerator input of ");
        sb_u64(&m, FPA_INPUT_SIZE);
        err_len = m.len;
        return -1;
    }
    if (batch > MAX_BATCH)
        return fail(E_BAD_PAYLOAD, "batch larger than the agent's buffers");
    for (b = 0; b < batch; ++b) {
        for (k = 0; k < FPA_INPUT_SIZE; ++k) {
            int64_t v = get_elem(data + ((size_t)b * FPA_INPUT_SIZE + k) * size, size,
                                 is_signed);
            if (v < FPA_INPUT_MIN || v > FPA_INPUT_MAX) {
                fail_begin(E_BAD_PAYLOAD, &m);
                sb_str(&m, "inputs: value ");
                sb_i64(&m, v);
                sb_str(&m, " outside " FPGAPRINT_SELFTEST_INPUT_DATATYPE " (");
                sb_i64(&m, FPA_INPUT_MIN);
                sb_str(&m, "..");
                sb_i64(&m, FPA_INPUT_MAX);
                sb_ch(&m, ')');
                err_len = m.len;
                return -1;
            }
            xbuf[k] = v;
        }
        pack_vector(in_words + (size_t)b * FPA_IN_WORDS * FPA_IN_WORD_BYTES, xbuf);
    }
    if (sha) { /* the inputs as the host encodes them: narrowest type, same shape */
        uint64_t i;
        uint8_t head[2 + 4 * MAX_NDIM], e[8];
        unsigned xsize;
        for (i = 0; i < count; ++i) {
            int64_t v = get_elem(data + i * size, size, is_signed);
            if (i == 0 || v < lo)
                lo = v;
            if (i == 0 || v > hi)
                hi = v;
        }
        head[0] = narrowest(lo, hi, &xsize);
        head[1] = (uint8_t)ndim;
        for (d = 0; d < ndim; ++d)
            put_u32(head + 2 + 4 * d, dims[d]);
        sha_update(sha, head, 2u + 4u * ndim);
        for (i = 0; i < count; ++i)
            sha_update(sha, e, put_elem(e, get_elem(data + i * size, size, is_signed), xsize));
    }
    if (run_batch(batch) != 0)
        return -1;
    for (b = 0; b < batch; ++b)
        for (k = 0; k < FPA_RAW_SIZE; ++k) {
            int64_t v = (int64_t)raw[b][k];
            if ((b == 0 && k == 0) || v < lo)
                lo = v;
            if ((b == 0 && k == 0) || v > hi)
                hi = v;
        }
    rcode = narrowest(lo, hi, &rsize);
    lcode = narrowest(0, FPA_RAW_SIZE - 1, &lsize);
    if (20u + 32u + (size_t)batch * (FPA_RAW_SIZE * rsize + lsize) > cap)
        return fail(E_INTERNAL, "answer longer than the agent's buffer");
    o = put_array_head(out, rcode, batch, FPA_RAW_SIZE);
    for (b = 0; b < batch; ++b)
        for (k = 0; k < FPA_RAW_SIZE; ++k)
            o += put_elem(out + o, (int64_t)raw[b][k], rsize);
    o += put_array_head(out + o, lcode, batch, 0);
    for (b = 0; b < batch; ++b)
        o += put_elem(out + o, (int64_t)labels[b], lsize);
    if (sha) {
        sha_update(sha, out, o);
        sha_final(sha, out + o);
        o += 32u;
    }
    *len = o;
    return 0;
}

static int do_infer(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    return infer(p, n, out, cap, len, 0);
}

/* CHALLENGE: n:u8, nonce (8..64 B), inputs; the answer bound to both by its digest */
static int do_challenge(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    static const char domain[] = "fpgaprint-challenge/1"; /* and its terminating zero */
    sha256_t sha;
    if (n < 1u || p[0] < 8u || p[0] > 64u || n < 1u + p[0])
        return fail(E_BAD_PAYLOAD, "nonce must be 8..64 B");
    sha_init(&sha);
    sha_update(&sha, (const uint8_t *)domain, sizeof domain);
    sha_update(&sha, p + 1, p[0]);
    return infer(p + 1 + p[0], n - 1u - p[0], out, cap, len, &sha);
}

typedef int (*handler_t)(const uint8_t *, size_t, uint8_t *, size_t, size_t *);

static handler_t readable(uint8_t type)
{
    switch (type) {
    case T_HELLO: return do_hello;
    case T_INFO: return do_info;
    case T_SELFTEST: return do_selftest;
    default: return 0;
    }
}

/* READ: a slice of a long answer; at offset 0 the carried request is served and kept */
static int do_read(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    uint32_t offset, length, i;
    handler_t h;
    if (n < 7u)
        return fail(E_BAD_PAYLOAD, "READ request shorter than 7 B");
    h = readable(p[0]);
    if (!h)
        return fail(E_BAD_PAYLOAD, "READ: only HELLO, INFO, SELFTEST answers are readable");
    offset = get_u32(p + 1);
    length = get_u16(p + 5);
    if (offset == 0) {
        read_type = 0;
        if (h(p + 7, n - 7u, read_cache, sizeof read_cache, &read_len) != 0)
            return -1;
        read_type = p[0];
    } else if (read_type != p[0]) {
        return fail(E_BAD_PAYLOAD, "no answer of that type to read: start at offset 0");
    }
    put_u32(out, (uint32_t)read_len);
    put_u32(out + 4, crc32_update(0, read_cache, read_len));
    if (offset > read_len)
        offset = (uint32_t)read_len;
    if (length > read_len - offset)
        length = (uint32_t)(read_len - offset);
    if (8u + length > cap)
        length = (uint32_t)(cap - 8u);
    for (i = 0; i < length; ++i)
        out[8 + i] = read_cache[offset + i];
    *len = 8u + length;
    return 0;
}

static int do_reset(const uint8_t *p, size_t n, uint8_t *out, size_t cap, size_t *len)
{
    (void)p;
    (void)n;
    (void)out;
    (void)cap;
    *len = 0;
    return 0;
}

static handler_t handler_of(uint8_t type)
{
    switch (type) {
    case T_INFER: return do_infer;
    case T_CHALLENGE: return do_challenge;
    case T_RESET: return do_reset;
    case T_READ: return do_read;
    default: return readable(type);
    }
}

/* ------------------------------------------------------------------------------- input */

static void send_boot(void)
{
    sb_t b = {(char *)answer, sizeof answer, 0, 0};
    int first = 1;
    sb_ch(&b, '{');
    js_key(&b, &first, "board");
    js_string(&b, FPA_BOARD);
    js_key(&b, &first, "boot");
    sb_u64(&b, boots);
    js_key(&b, &first, "protocol");
    sb_str(&b, "[1]");
    js_key(&b, &first, "serial");
    js_string(&b, fpa_hal_serial());
    sb_ch(&b, '}');
    send_frame(T_BOOT, FLAG_RESPONSE | FLAG_UNSOLICITED, 0, answer, b.len);
}

void fpa_agent_start(void)
{
    rx_len = 0;
    rx_overflow = 0;
    read_type = 0;
    ++boots;
    booted_us = fpa_hal_micros();
    fpa_hal_reset();
    selftest(0);
    send_boot();
}

/* COBS-decode rx in place (as the `cobs` package does); the decoded length, or -1 */
static long cobs_decode(void)
{
    size_t in = 0, out = 0;
    while (in < rx_len) {
        uint8_t code = rx[in++];
        size_t i;
        if (code == 0 || in + code - 1u > rx_len)
            return -1;
        for (i = 1; i < code; ++i) {
            if (rx[in] == 0)
                return -1;
            rx[out++] = rx[in++];
        }
        if (in < rx_len && code < 0xFFu)
            rx[out++] = 0;
    }
    return (long)out;
}

/* A damaged frame (sequence 0): answered while this delivery has had fewer than WINDOW, else
   dropped, so that a flood of garbage never earns more answers than requests would. */
static void refuse_damaged(void)
{
    if (refused < WINDOW) {
        ++refused;
        send_error(0);
    } else {
        ++n_errors;
        ++n_dropped;
    }
}

/* One complete chunk; returns 1 when it was a RESET (the rest of the input is dropped). */
static int chunk(void)
{
    long n = cobs_decode();
    uint32_t length, seq;
    uint8_t type, version, flags;
    size_t len = 0;
    handler_t h;
    if (n < 0) {
        fail(E_BAD_FRAME, "bad COBS encoding");
        refuse_damaged();
        return 0;
    }
    if ((size_t)n < HEADER_SIZE + CRC_SIZE) {
        fail(E_BAD_FRAME, "frame shorter than header and CRC (13 B)");
        refuse_damaged();
        return 0;
    }
    if (crc32_update(0, rx, (size_t)n - CRC_SIZE) != get_u32(rx + n - CRC_SIZE)) {
        fail(E_BAD_CRC, "CRC-32 mismatch");
        refuse_damaged();
        return 0;
    }
    version = rx[0];
    type = rx[1];
    flags = rx[2];
    seq = get_u16(rx + 3);
    length = get_u32(rx + 5);
    if (length != (size_t)n - HEADER_SIZE - CRC_SIZE) {
        fail(E_BAD_FRAME, "header length differs from the payload the frame holds");
        refuse_damaged();
        return 0;
    }
    if (flags & FLAG_RESPONSE)
        return 0; /* never answer an answer (a looped line) */
    ++n_requests;
    if (version != PROTOCOL_VERSION && type != T_HELLO) {
        fail(E_BAD_VERSION, "protocol version not supported; board speaks [1]");
        send_error(seq);
        return 0;
    }
    h = handler_of(type);
    if (!h) {
        fail(E_UNKNOWN_COMMAND, "unknown command");
        send_error(seq);
        return 0;
    }
    if (h(rx + HEADER_SIZE, length, answer, sizeof answer, &len) != 0) {
        send_error(seq);
        return 0;
    }
    send_frame(type, FLAG_RESPONSE, seq, answer, len);
    return type == T_RESET;
}

void fpa_agent_feed(const uint8_t *data, size_t n)
{
    size_t i;
    refused = 0;
    for (i = 0; i < n; ++i) {
        uint8_t c = data[i];
        if (c != 0) {
            if (rx_len < sizeof rx)
                rx[rx_len++] = c;
            else
                rx_overflow = 1;
            continue;
        }
        if (rx_overflow) {
            fail(E_BAD_FRAME, "frame longer than the board's largest frame");
            refuse_damaged();
        } else if (rx_len && chunk()) {
            fpa_agent_start(); /* RESET: reboot, drop the rest of this delivery */
            return;
        }
        rx_len = 0;
        rx_overflow = 0;
    }
}
