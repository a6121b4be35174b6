// C harness around one Verilated design, driven from Python through ctypes.
//
// Ports are addressed by index (names from fp_port_name); values travel as little-endian
// byte buffers of any width. Streams are AXI-Stream (tdata/tvalid/tready) queues that the
// run loop feeds and drains in C++, many cycles per call, with a cycle budget and an
// output liveness watchdog.
//
// Cycle protocol (mirrors FINN's SimEngine, so cycle counts are comparable): every cycle, the
// stream tasks sample the design's outputs, the rising edge is applied, then the tasks'
// updates are written to the inputs, then the falling edge. A handshake therefore
// completes on the rising edge at which tvalid and tready were both high.
//
// This file knows no design: compiler/rtlsim/verilator.py compiles it once per Verilator,
// compiler and flags, caches the object with Verilator's runtime objects and links it with
// each design's model and design.cpp (the model's side of harness.h). VL_PRINTF is routed to
// fp_printf (declared in the generated, force-included "fp_config.h") so the text of
// $fatal/$error reaches the error message; what the design prints ($display, $warning) goes
// to stderr, never to stdout.

#include <verilated.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "harness.h"

#define FP_API extern "C" __attribute__((visibility("default")))

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "port buffers are little-endian");

namespace {

// Verilator's runtime reports $fatal, $stop and internal errors (e.g. a combinational
// loop that does not converge) through vl_fatal/vl_stop, which would end the process.
// Here they throw, the API call that evaluated the model catches, and the simulation
// is marked failed; the hosting Python process survives.
struct Fatal {
    std::string msg;
};
thread_local std::string g_out;  // tail of what the design printed

// The last "%Error"/"%Fatal" line the design printed, if any.
std::string last_error_line() {
    size_t end = g_out.size();
    while (end > 0) {
        size_t start = g_out.rfind('\n', end - 1);
        start = start == std::string::npos ? 0 : start + 1;
        std::string line = g_out.substr(start, end - start);
        while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
        if (line.find("%Fatal") != std::string::npos || line.find("%Error") != std::string::npos)
            return line;
        if (start == 0) break;
        end = start - 1;
    }
    return "";
}

using fp::Port;

struct InStream {
    int data, valid, ready;
    size_t nbytes;
    std::vector<uint8_t> values, zero;
    uint64_t count, next;  // number of values, index of the next one to present
    bool vld;              // what we drive on tvalid
    bool active;
    uint64_t txns;
};

struct OutStream {
    int data, valid, ready;
    size_t nbytes;
    std::vector<uint8_t> values;
    uint64_t count, got;
    bool rdy;  // what we drive on tready
    bool active;
    uint64_t idle;
};

struct Update {
    int port;
    const uint8_t* bytes;  // nullptr: write the scalar `bit`
    size_t nbytes;
    uint8_t bit;
};

struct Sim {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<void, void (*)(void*)> top{nullptr, fp::design_delete};  // after ctx
    std::vector<Port> ports;
    int clk = -1, clk2x = -1;
    uint64_t cycles = 0;
    std::vector<InStream> ins;
    std::vector<OutStream> outs;
    int timed_out = -1;  // stream index of the last timeout (outputs first, then inputs)
    // Random stalls (fp_set_stalls): the chance in 1/65536 that an input stream holds back
    // its next value / an output stream drops tready in a cycle; xorshift64 state.
    uint32_t stall_in = 0, stall_out = 0;
    uint64_t rng = 0;
    std::string error;
    bool initialized = false;  // eval() has run the initial blocks
    std::vector<std::pair<int, std::vector<uint8_t>>> pending;  // written after next rising edge
};

void port_write(Port& p, const uint8_t* buf, size_t n) {
    size_t used = (static_cast<size_t>(p.width) + 7) / 8;
    std::memset(p.data, 0, p.size);
    std::memcpy(p.data, buf, n < used ? n : used);
    if (p.width % 8) {
        auto* top = reinterpret_cast<uint8_t*>(p.data) + used - 1;
        *top &= static_cast<uint8_t>((1u << (p.width % 8)) - 1);
    }
}

void port_read(const Port& p, uint8_t* buf, size_t n) {
    size_t used = (static_cast<size_t>(p.width) + 7) / 8;
    std::memset(buf, 0, n);
    std::memcpy(buf, p.data, n < used ? n : used);
}

void port_bit(Port& p, uint8_t v) {
    if (p.size != 1) std::memset(p.data, 0, p.size);
    reinterpret_cast<uint8_t*>(p.data)[0] = v & 1;
}

bool port_high(const Port& p) { return reinterpret_cast<const uint8_t*>(p.data)[0] & 1; }

// Runtime callbacks (vl_fatal, ...) act on this model's context: every API call that
// evaluates the model selects it first (a thread-local, so once per call, not per eval).
void use_context(Sim* s) { Verilated::threadContextp(s->ctx.get()); }

// Evaluates the model. The first call is the model's eval(), which runs the initial blocks;
// later calls run its evaluation function without eval()'s per-call bookkeeping
// (fp::design_eval_root).
bool settle(Sim* s) {
    if (!s->error.empty()) return false;
    try {
        if (s->initialized)
            fp::design_eval_root(s->top.get());
        else
            fp::design_eval(s->top.get());
        s->initialized = true;
    } catch (const Fatal& f) {
        s->error = f.msg;
    }
    return s->error.empty();
}

// One full clock cycle; `ups` are written right after the rising edge.
bool cycle(Sim* s, const std::vector<Update>& ups) {
    Port& clk = s->ports[s->clk];
    Port* clk2x = s->clk2x >= 0 ? &s->ports[s->clk2x] : nullptr;
    port_bit(clk, 1);
    if (clk2x) port_bit(*clk2x, 1);
    if (!settle(s)) return false;
    // Inputs change after the rising edge; they may settle together with the next edge,
    // which sees them either way.
    for (const auto& p : s->pending)
        port_write(s->ports[p.first], p.second.data(), p.second.size());
    s->pending.clear();
    for (const Update& u : ups) {
        if (u.bytes)
            port_write(s->ports[u.port], u.bytes, u.nbytes);
        else
            port_bit(s->ports[u.port], u.bit);
    }
    if (clk2x) {
        port_bit(*clk2x, 0);
        if (!settle(s)) return false;
        port_bit(clk, 0);
        port_bit(*clk2x, 1);
        if (!settle(s)) return false;
        port_bit(*clk2x, 0);
    } else {
        port_bit(clk, 0);
    }
    if (!settle(s)) return false;
    s->ctx->timeInc(1);
    s->cycles++;
    return true;
}

// True with probability p/65536 (xorshift64; p == 0 draws nothing).
bool stall(Sim* s, uint32_t p) {
    if (!p) return false;
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return (s->rng >> 16 & 0xffff) < p;
}

}  // namespace

// Verilator runtime hooks (compiled with -DVL_USER_FATAL -DVL_USER_STOP -DVL_USER_FINISH).
int fp_printf(const char* fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    std::fputs(buf, stderr);  // the design's messages are a log: stdout carries results only
    g_out += buf;
    if (g_out.size() > 16384) g_out.erase(0, g_out.size() - 8192);
    return n;
}

void vl_fatal(const char* filename, int linenum, const char* hier, const char* msg) VL_MT_UNSAFE {
    std::fflush(stdout);
    std::string said = last_error_line();
    char buf[1024];
    if (!said.empty() && msg && !std::strcmp(msg, "$stop"))
        std::snprintf(buf, sizeof buf, "%s", said.c_str());
    else
        std::snprintf(buf, sizeof buf, "%s:%d: %s%s%s", filename ? filename : "?", linenum,
                      hier && *hier ? hier : "", hier && *hier ? ": " : "", msg ? msg : "");
    Verilated::threadContextp()->gotError(true);
    throw Fatal{buf};
}

void vl_stop(const char* filename, int linenum, const char* hier) VL_MT_UNSAFE {
    vl_fatal(filename, linenum, hier, "$stop");
}

void vl_finish(const char* filename, int linenum, const char* hier) VL_MT_UNSAFE {
    (void)filename;
    (void)linenum;
    (void)hier;
    Verilated::threadContextp()->gotFinish(true);
}

FP_API void* fp_create() {
    g_out.clear();
    auto* s = new Sim;
    s->ctx.reset(new VerilatedContext);
    s->ctx->fatalOnError(false);
    s->ctx->fatalOnVpiError(false);
    s->top.reset(fp::design_new(s->ctx.get(), s->ports));
    use_context(s);
    for (size_t i = 0; i < s->ports.size(); ++i) {
        Port& p = s->ports[i];
        if (p.dir == 0) std::memset(p.data, 0, p.size);
        if (!std::strcmp(p.name, "ap_clk")) s->clk = static_cast<int>(i);
        if (!std::strcmp(p.name, "ap_clk2x")) s->clk2x = static_cast<int>(i);
    }
    settle(s);  // runs initial blocks ($readmemh resolves paths against the working dir)
    return s;
}

FP_API void fp_destroy(void* h) {
    auto* s = static_cast<Sim*>(h);
    if (!s) return;
    if (s->error.empty()) {
        Verilated::threadContextp(s->ctx.get());
        try {
            fp::design_final(s->top.get());
        } catch (const Fatal&) {
        }
    }
    delete s;
}

FP_API const char* fp_error(void* h) { return static_cast<Sim*>(h)->error.c_str(); }
FP_API int fp_finished(void* h) { return static_cast<Sim*>(h)->ctx->gotFinish() ? 1 : 0; }
FP_API int fp_num_ports(void* h) { return static_cast<int>(static_cast<Sim*>(h)->ports.size()); }
FP_API const char* fp_port_name(void* h, int i) { return static_cast<Sim*>(h)->ports[i].name; }
FP_API int fp_port_width(void* h, int i) { return static_cast<Sim*>(h)->ports[i].width; }
FP_API int fp_port_dir(void* h, int i) { return static_cast<Sim*>(h)->ports[i].dir; }
FP_API uint64_t fp_cycles(void* h) { return static_cast<Sim*>(h)->cycles; }

FP_API void fp_set(void* h, int port, const uint8_t* buf, size_t n) {
    port_write(static_cast<Sim*>(h)->ports[port], buf, n);
}

FP_API void fp_get(void* h, int port, uint8_t* buf, size_t n) {
    port_read(static_cast<Sim*>(h)->ports[port], buf, n);
}

// Write `buf` to `port` right after the next rising edge (how FINN's testbench drives inputs).
FP_API void fp_schedule(void* h, int port, const uint8_t* buf, size_t n) {
    static_cast<Sim*>(h)->pending.emplace_back(port, std::vector<uint8_t>(buf, buf + n));
}

FP_API int fp_eval(void* h) {
    auto* s = static_cast<Sim*>(h);
    use_context(s);
    return settle(s) ? 0 : -1;
}

// n clock cycles with the inputs as they are; -1 on a runtime error.
FP_API int fp_step(void* h, uint64_t n) {
    auto* s = static_cast<Sim*>(h);
    static const std::vector<Update> none;
    if (s->clk < 0) return -2;
    use_context(s);
    for (uint64_t i = 0; i < n; ++i)
        if (!cycle(s, none)) return -1;
    return 0;
}

// Queue `count` values of `nbytes` each for an input stream; returns the stream index.
FP_API int fp_add_input(void* h, int data, int valid, int ready, const uint8_t* values,
                        uint64_t count, size_t nbytes) {
    auto* s = static_cast<Sim*>(h);
    InStream st{data, valid, ready, nbytes, std::vector<uint8_t>(values, values + count * nbytes),
                std::vector<uint8_t>(nbytes), count, 0, port_high(s->ports[valid]), true, 0};
    s->ins.push_back(std::move(st));
    return static_cast<int>(s->ins.size()) - 1;
}

// Expect `count` values of `nbytes` each on an output stream; returns the stream index.
FP_API int fp_add_output(void* h, int data, int valid, int ready, uint64_t count, size_t nbytes) {
    auto* s = static_cast<Sim*>(h);
    OutStream st{data, valid, ready, nbytes, std::vector<uint8_t>(count * nbytes), count, 0,
                 port_high(s->ports[ready]), true, 0};
    s->outs.push_back(std::move(st));
    return static_cast<int>(s->outs.size()) - 1;
}

FP_API uint64_t fp_output_count(void* h, int i) { return static_cast<Sim*>(h)->outs[i].got; }
FP_API uint64_t fp_input_count(void* h, int i) { return static_cast<Sim*>(h)->ins[i].txns; }

FP_API void fp_read_output(void* h, int i, uint8_t* buf) {
    OutStream& o = static_cast<Sim*>(h)->outs[i];
    std::memcpy(buf, o.values.data(), o.got * o.nbytes);
}

FP_API void fp_clear_streams(void* h) {
    auto* s = static_cast<Sim*>(h);
    s->ins.clear();
    s->outs.clear();
    s->timed_out = -1;
}

// Random stalls for the following fp_run calls: an input stream withholds its next value
// (tvalid low, never mid-handshake) with chance in_p/65536 per cycle, an output stream
// drops tready with chance out_p/65536; `seed` fixes the pattern. 0, 0 turns them off.
FP_API void fp_set_stalls(void* h, uint64_t seed, uint32_t in_p, uint32_t out_p) {
    auto* s = static_cast<Sim*>(h);
    s->stall_in = in_p > 65536 ? 65536 : in_p;
    s->stall_out = out_p > 65536 ? 65536 : out_p;
    s->rng = seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull;
    if (!s->rng) s->rng = 1;
}

// Stream index that timed out: outputs are 0..n_out-1, inputs n_out.. (for naming it).
FP_API int fp_timed_out(void* h) { return static_cast<Sim*>(h)->timed_out; }

// Run the stream tasks for at most `budget` cycles.
// Returns 0 when every stream is done, 1 when the budget ran out first, 2 when an output
// stream (or, with no output pending, every stream) saw no transaction for `liveness`
// cycles, -1 on a runtime error ($fatal, $stop), 3 when the design called $finish.
FP_API int fp_run(void* h, uint64_t budget, uint64_t liveness) {
    auto* s = static_cast<Sim*>(h);
    if (s->clk < 0) return -2;
    use_context(s);
    std::vector<Update> ups;
    ups.reserve(2 * (s->ins.size() + s->outs.size()));
    uint64_t quiet = 0;  // cycles without any transaction
    for (uint64_t c = 0; c < budget; ++c) {
        bool any_active = false, any_txn = false;
        ups.clear();
        for (InStream& in : s->ins) {
            if (!in.active) continue;
            if (in.vld && !port_high(s->ports[in.ready])) {
                any_active = true;
                continue;
            }
            if (in.vld) {
                in.txns++;
                any_txn = true;
            }
            if (in.next < in.count && stall(s, s->stall_in)) {  // hold the next value back
                if (in.vld) {
                    ups.push_back(Update{in.valid, nullptr, 0, 0});
                    in.vld = false;
                }
                any_active = true;
            } else if (in.next < in.count) {
                ups.push_back(Update{in.data, &in.values[in.next * in.nbytes], in.nbytes, 0});
                if (!in.vld) ups.push_back(Update{in.valid, nullptr, 0, 1});
                in.vld = true;
                in.next++;
                any_active = true;
            } else if (in.vld) {
                ups.push_back(Update{in.valid, nullptr, 0, 0});
                ups.push_back(Update{in.data, in.zero.data(), in.nbytes, 0});
                in.vld = false;
                any_active = true;
            } else {
                in.active = false;
            }
        }
        for (OutStream& o : s->outs) {
            if (!o.active) continue;
            if (o.rdy && port_high(s->ports[o.valid])) {
                port_read(s->ports[o.data], &o.values[o.got * o.nbytes], o.nbytes);
                o.got++;
                o.idle = 0;
                any_txn = true;
            }
            bool want = o.got < o.count && !stall(s, s->stall_out);
            if (want != o.rdy) {
                ups.push_back(Update{o.ready, nullptr, 0, static_cast<uint8_t>(want)});
                o.rdy = want;
                any_active = true;
            } else if (o.rdy || o.got < o.count) {
                any_active = true;
            } else {
                o.active = false;
            }
        }
        if (!cycle(s, ups)) return -1;
        if (s->ctx->gotFinish()) return 3;
        if (!any_active) return 0;
        quiet = any_txn ? 0 : quiet + 1;
        bool out_pending = false;
        for (size_t i = 0; i < s->outs.size(); ++i) {
            OutStream& o = s->outs[i];
            if (!o.active || o.got >= o.count) continue;
            out_pending = true;
            if (++o.idle >= liveness) {
                s->timed_out = static_cast<int>(i);
                return 2;
            }
        }
        if (!out_pending && quiet >= liveness) {
            for (size_t i = 0; i < s->ins.size(); ++i)
                if (s->ins[i].active) s->timed_out = static_cast<int>(s->outs.size() + i);
            return 2;
        }
    }
    return 1;
}
