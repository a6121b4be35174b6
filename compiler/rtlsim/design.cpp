// The design's side of harness.h, compiled in one translation unit after the model's
// classes, with -DFP_TOP=<Verilator prefix> and "fp_ports.inc" generated from the model
// header (one FP_PORT(name, width, dir) per port).

#include "harness.h"

#define FP_STR2(x) #x
#define FP_STR(x) FP_STR2(x)
#include FP_STR(FP_TOP.h)

#define FP_CAT2(a, b) a##b
#define FP_CAT(a, b) FP_CAT2(a, b)
#define FP_ROOT_EVAL FP_CAT(FP_TOP, ___024root___eval)

namespace fp {

void* design_new(VerilatedContext* ctx, std::vector<Port>& ports) {
    auto* t = new FP_TOP{ctx, "TOP"};
#define FP_PORT(nm, w, d) ports.push_back(Port{#nm, w, d, &t->nm, sizeof(t->nm)});
#include "fp_ports.inc"
#undef FP_PORT
    return t;
}

void design_eval(void* top) { static_cast<FP_TOP*>(top)->eval(); }

// The evaluation function is declared in the model's C++ file, which precedes this one in
// the translation unit. Skipped from eval(): a deleter of SystemVerilog class objects (FINN+'s
// RTL has none) and a queue of messages from worker threads (the model is built without
// --threads); that bookkeeping was 3 % of the instructions of a stitched design's cycle.
void design_eval_root(void* top) { FP_ROOT_EVAL(static_cast<FP_TOP*>(top)->rootp); }

void design_final(void* top) { static_cast<FP_TOP*>(top)->final(); }

void design_delete(void* top) { delete static_cast<FP_TOP*>(top); }

}  // namespace fp
