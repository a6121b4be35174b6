// Between the C harness (harness.cpp, compiled once and cached) and the one design it is
// linked with (design.cpp, compiled with the design's model).

#pragma once

#include <cstddef>
#include <vector>

class VerilatedContext;

namespace fp {

struct Port {
    const char* name;
    int width;
    int dir;  // 0 input, 1 output, 2 inout
    void* data;
    size_t size;  // storage bytes
};

// The design's model, created in `ctx`; its top-level ports are appended to `ports`.
void* design_new(VerilatedContext* ctx, std::vector<Port>& ports);
// The model's eval(): its first call runs the initial blocks.
void design_eval(void* top);
// The model's evaluation function without eval()'s per-call bookkeeping.
void design_eval_root(void* top);
void design_final(void* top);
void design_delete(void* top);

}  // namespace fp
