"""The on-chip self-test (BIST): generator of `hw/rtl/bist/`, its Verilator simulation, the
build stage that checks it, and the firmware header of its register map."""
