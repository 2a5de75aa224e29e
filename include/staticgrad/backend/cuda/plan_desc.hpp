#pragma once
// The vocabulary of generated CUDA plans: row-group types over plain ints and
// enums, beside the printed schedule.
//
// Why this exists: nvcc's front end cannot instantiate templates whose
// arguments are C++20 class-type NTTPs (the graph's fixed_string names), and
// kernels should receive plain structs and plain template parameters anyway:
// a kernel templated on its operand list compiles to straight-line code with
// no runtime dispatch. So tools/plan_codegen.cpp (host C++) prints
// graph::schedule_of<G> (graph/schedule.hpp, the schedule the CPU executor
// runs) as C++ initialisers, and spells each row-group entry once more as a
// type, row_group<WidthMax, NScratch, step<...>...>; `spells` checks, at
// compile time, that every such type says exactly what its schedule entry says.
//
// Invariants:
//   * operands are the schedule's (graph::buf / scr / par, one int each);
//   * every operand of a step has the step's width, so the row of token t of
//     a buffer argument starts at element t * width;
//   * buffer arguments are bf16 [T, width] planes, except stat buffers
//     (rmsnorm's 1/rms), which are f32 [T, 1]; parameter vectors are bf16.
// This header is plain C++ (no CUDA): host-side references use it too.
#include "staticgrad/graph/schedule.hpp"

namespace staticgrad::cuda {

using graph::buf;
using graph::index_of;
using graph::kind_of;
using graph::max_buffers;
using graph::max_params;
using graph::max_scratch;
using graph::operand_kind;
using graph::par;
using graph::scr;
inline constexpr int none = graph::no_operand;

// A forward step. Operands as encoded above.
template <graph::op_kind Op, int Width, int In0, int In1, int Out, int Aux, int Attr>
struct step {
  static constexpr graph::op_kind op = Op;
  static constexpr int width = Width, in0 = In0, in1 = In1, out = Out, aux = Aux, attr = Attr;
  static constexpr int dy = none, dx0 = none, dx1 = none;
  static constexpr bool acc0 = false, acc1 = false;
  static constexpr graph::row_step desc{.op = Op, .width = Width, .in0 = In0, .in1 = In1, .out = Out, .aux = Aux, .attr = Attr};
  static_assert(Width > 0 && Width % 2 == 0, "step: row kernels move element pairs (bf16x2), widths must be even");
  static_assert(Op != graph::op_kind::rope || (Attr > 0 && Attr % 4 == 0 && Width % (Attr > 0 ? Attr : 1) == 0),
                "step<rope>: the head dimension must divide the width and be a multiple of 4 (two pairs per thread)");
  static_assert(kind_of(Out) == operand_kind::buffer || kind_of(Out) == operand_kind::scratch,
                "step: the output goes to a buffer argument or a scratch slot");
};

// A backward step: the backward rule of one forward op.
template <graph::op_kind Op, int Width, int Dy, int In0, int In1, int Aux, int Dx0, bool Acc0, int Dx1, bool Acc1, int Attr>
struct bwd_step {
  static constexpr graph::op_kind op = Op;
  static constexpr int width = Width, dy = Dy, in0 = In0, in1 = In1, out = none, aux = Aux, dx0 = Dx0, dx1 = Dx1, attr = Attr;
  static constexpr bool acc0 = Acc0, acc1 = Acc1;
  static constexpr graph::row_step desc{.op = Op, .width = Width, .in0 = In0, .in1 = In1, .aux = Aux, .attr = Attr,
                                        .dy = Dy, .dx0 = Dx0, .dx1 = Dx1, .acc0 = Acc0, .acc1 = Acc1};
  static_assert(Width > 0 && Width % 2 == 0, "bwd_step: row kernels move element pairs (bf16x2), widths must be even");
  static_assert(kind_of(Dy) == operand_kind::buffer, "bwd_step: gradients live in buffers (backward groups have no scratch)");
};

// A fused row group: one kernel that runs Steps in order on every token row.
// WidthMax sizes the shared-memory scratch rows (f32), NScratch their count.
template <int WidthMax, int NScratch, class... Steps>
struct row_group {
  static constexpr bool backward = false;
  static constexpr int width_max = WidthMax, n_scratch = NScratch, n_steps = sizeof...(Steps);
  static constexpr graph::row_step steps[sizeof...(Steps)] = {Steps::desc...};
  static_assert(NScratch <= max_scratch, "row_group: too many scratch rows (raise graph::max_scratch)");
};

template <int WidthMax, class... Steps>
struct row_group_bwd {
  static constexpr bool backward = true;
  static constexpr int width_max = WidthMax, n_scratch = 0, n_steps = sizeof...(Steps);
  static constexpr graph::row_step steps[sizeof...(Steps)] = {Steps::desc...};
};

constexpr bool same_step(const graph::row_step& a, const graph::row_step& b) {
  return a.op == b.op && a.width == b.width && a.in0 == b.in0 && a.in1 == b.in1 && a.out == b.out && a.aux == b.aux &&
         a.attr == b.attr && a.dy == b.dy && a.dx0 == b.dx0 && a.dx1 == b.dx1 && a.acc0 == b.acc0 && a.acc1 == b.acc1;
}

// Does row-group type Group spell entry e of schedule s (same steps, widths, scratch)?
template <class Group, int N>
constexpr bool spells(const graph::schedule<N>& s, const graph::entry& e) {
  if (Group::n_steps != e.n_steps || Group::width_max != e.width_max || Group::n_scratch != e.n_scratch) return false;
  if (Group::backward != (e.kind == graph::kernel_kind::row_group_bwd)) return false;
  for (int i = 0; i < e.n_steps; ++i)
    if (!same_step(Group::steps[i], s.steps[e.step0 + i])) return false;
  return true;
}

}  // namespace staticgrad::cuda
