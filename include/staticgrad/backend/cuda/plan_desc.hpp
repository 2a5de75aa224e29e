#pragma once
// The vocabulary of generated CUDA plans: plain types only.
//
// Why this exists: nvcc's front end cannot instantiate templates whose
// arguments are C++20 class-type NTTPs (the graph's fixed_string names), and
// kernels should receive plain structs and plain template parameters anyway
// (DESIGN.md). So tools/plan_codegen.cpp (host C++) evaluates
// graph::compiled<G> and writes one header per graph that spells every row
// group kernel with the types below: ints, enums and bools only.
//
// Invariants:
//   * an operand is one int: -1 none, [0, 64) buffer argument j, [64, 128)
//     group scratch slot s, [128, 192) parameter vector p (see buf/scr/par);
//   * every operand of a step has the step's width (row ops of the Qwen
//     block preserve width; the code generator refuses anything else), so the
//     row of token t of a buffer argument starts at element t * width;
//   * buffer arguments are bf16 [T, width] planes, except `stat` bindings
//     (rmsnorm's 1/rms), which are f32 [T, 1];
//   * parameter vectors are bf16 [width] (frozen norm weights and biases).
// The full schedules (kernel_entry, bottom of this file) describe the GEMM and
// attention kernels the same way: buffer_refs (arena, offset, width) and
// parameter names, no graph types.
// This header is plain C++ (no CUDA): the host-side reference and tables of
// the tests and benchmarks use it as well as the kernels.
#include <cstdint>

namespace staticgrad::cuda {

// Ops a row group may contain (the row/pointwise ops of ops/).
enum class op_code : int { bias_add, add, rmsnorm, rope, swiglu, silu, mul };

constexpr const char* op_code_name(op_code o) {
  switch (o) {
    case op_code::bias_add: return "bias_add";
    case op_code::add: return "add";
    case op_code::rmsnorm: return "rmsnorm";
    case op_code::rope: return "rope";
    case op_code::swiglu: return "swiglu";
    case op_code::silu: return "silu";
    case op_code::mul: return "mul";
  }
  return "?";
}

// ---- operands ---------------------------------------------------------------
inline constexpr int none = -1;
inline constexpr int max_buffers = 8;   // buffer arguments per kernel (the Qwen block needs <= 5)
inline constexpr int max_params = 4;    // parameter vectors per kernel
inline constexpr int max_scratch = 4;   // group-internal values per kernel

enum class operand_kind : int { none, buffer, scratch, param };

constexpr int buf(int j) { return j; }
constexpr int scr(int s) { return 64 + s; }
constexpr int par(int p) { return 128 + p; }
constexpr operand_kind kind_of(int o) {
  return o < 0 ? operand_kind::none : o < 64 ? operand_kind::buffer : o < 128 ? operand_kind::scratch : operand_kind::param;
}
constexpr int index_of(int o) { return o < 0 ? -1 : o % 64; }

// ---- steps --------------------------------------------------------------------
// One op of a forward group or one backward rule of a backward group, as a
// runtime-readable value (the host reference walks these).
struct step_desc {
  op_code op = op_code::add;
  int width = 0;      // elements per token of the op's output (= of every operand)
  int in0 = none;     // forward input 0 (backward: the saved forward input 0)
  int in1 = none;     // forward input 1 (or the parameter vector)
  int out = none;     // forward output (backward: unused)
  int aux = none;     // rmsnorm 1/rms: written forward, read backward (f32 buffer)
  int attr = 0;       // rope: head dimension
  int dy = none;      // backward: output gradient read
  int dx0 = none;     // backward: gradient of input 0 (written, or added to when acc0)
  int dx1 = none;     // backward: gradient of input 1
  bool acc0 = false, acc1 = false;
};

// A forward step. Operands as encoded above.
template <op_code Op, int Width, int In0, int In1, int Out, int Aux, int Attr>
struct step {
  static constexpr op_code op = Op;
  static constexpr int width = Width, in0 = In0, in1 = In1, out = Out, aux = Aux, attr = Attr;
  static constexpr step_desc desc{Op, Width, In0, In1, Out, Aux, Attr};
  static_assert(Width > 0 && Width % 2 == 0, "step: row kernels move element pairs (bf16x2), widths must be even");
  static_assert(Op != op_code::rope || (Attr > 0 && Attr % 4 == 0 && Width % (Attr > 0 ? Attr : 1) == 0),
                "step<rope>: the head dimension must divide the width and be a multiple of 4 (two pairs per thread)");
  static_assert(kind_of(Out) == operand_kind::buffer || kind_of(Out) == operand_kind::scratch,
                "step: the output goes to a buffer argument or a scratch slot");
};

// A backward step: the backward rule of one forward op.
template <op_code Op, int Width, int Dy, int In0, int In1, int Aux, int Dx0, bool Acc0, int Dx1, bool Acc1, int Attr>
struct bwd_step {
  static constexpr op_code op = Op;
  static constexpr int width = Width, dy = Dy, in0 = In0, in1 = In1, aux = Aux, dx0 = Dx0, dx1 = Dx1, attr = Attr;
  static constexpr bool acc0 = Acc0, acc1 = Acc1;
  static constexpr step_desc desc{Op, Width, In0, In1, none, Aux, Attr, Dy, Dx0, Dx1, Acc0, Acc1};
  static_assert(Width > 0 && Width % 2 == 0, "bwd_step: row kernels move element pairs (bf16x2), widths must be even");
  static_assert(kind_of(Dy) == operand_kind::buffer, "bwd_step: gradients live in buffers (backward groups have no scratch)");
};

// A fused row group: one kernel that runs Steps in order on every token row.
// WidthMax sizes the shared-memory scratch rows (f32), NScratch their count.
template <int WidthMax, int NScratch, class... Steps>
struct row_group {
  static constexpr bool backward = false;
  static constexpr int width_max = WidthMax, n_scratch = NScratch, n_steps = sizeof...(Steps);
  static constexpr step_desc steps[sizeof...(Steps)] = {Steps::desc...};
  static_assert(NScratch <= max_scratch, "row_group: too many scratch rows (raise max_scratch)");
};

template <int WidthMax, class... Steps>
struct row_group_bwd {
  static constexpr bool backward = true;
  static constexpr int width_max = WidthMax, n_scratch = 0, n_steps = sizeof...(Steps);
  static constexpr step_desc steps[sizeof...(Steps)] = {Steps::desc...};
};

// ---- bindings: what each buffer argument means ------------------------------
enum class binding_kind : int { value, grad, stat };
enum class access : int { read, write, read_write };

struct buffer_binding {
  const char* name;      // value name (forward value or 'd(...)' gradient), as explain prints it
  binding_kind kind;     // value / grad: bf16 [T, width]; stat: f32 [T, width]
  const char* arena;     // where the buffer plan puts it (workspace, saved, saved/f32, external)
  int offset;            // buffer plan offset (elements per token) in that arena
  int width;             // elements per token
  access mode;           // read, written (poisoned by tests), or read and written (in place / accumulate)
};

struct param_binding {
  const char* name;      // frozen vector parameter name of the block (e.g. "self_attn.q_proj.bias")
  int width;
};

struct kernel_info {
  const char* id;        // "f2", "b10": the schedule entry (explain)
  const char* ops;       // the ops, as explain prints them
  bool backward;
  const buffer_binding* buffers;
  int n_buffers;
  const param_binding* params;
  int n_params;
};

// ---- the full schedules (plan_codegen's `schedule` tables) -------------------
// Where a buffer lives. Arena buffers: the plan's offset in elements per token
// (saved_rank: in units of r); the executor decides the token stride (>= T).
// external: a caller's buffer, named by `ext` (values: the graph input or
// output name, e.g. "x", "y"; gradients: "d(<input>)", e.g. "d(x)" for the
// residual gradient d(x) = d(y), which backward updates in place).
// none: not in memory (an unsaved auxiliary output: the executor uses a temporary).
enum class arena_code : int { workspace, saved_act, saved_stat, saved_rank, external, none };

struct buffer_ref {
  arena_code arena = arena_code::none;
  int offset = 0;        // elements per token (saved_rank: units of r)
  int width = 0;         // elements per token (saved_rank: units of r)
  const char* ext = "";  // external: the caller's name for the buffer
  const char* name = ""; // the value or gradient, as explain prints it
};

enum class entry_kind : int {
  row_group,        // forward row group: refs[]/params[] are its buffer/parameter arguments (tables above)
  lora_linear,      // Y = X W^T (weight != "") + s (X A^T) B^T (adapter != ""), Z = X A^T saved in `aux`
  attention,        // out = attention(q, k, v), lse in `aux`
  row_group_bwd,    // backward row group
  linear_bwd,       // one backward step of a projection: dX (+)= dY W
  lora_bwd,         // one backward step: dB += s dY^T Z; dZ = s dY B; dA += dZ^T X; dX (+)= dZ A
  attention_bwd     // dq, dk, dv (written, or added to where acc)
};

constexpr const char* entry_kind_name(entry_kind k) {
  switch (k) {
    case entry_kind::row_group: return "row_group";
    case entry_kind::lora_linear: return "lora_linear";
    case entry_kind::attention: return "attention";
    case entry_kind::row_group_bwd: return "row_group_bwd";
    case entry_kind::linear_bwd: return "linear_bwd";
    case entry_kind::lora_bwd: return "lora_bwd";
    case entry_kind::attention_bwd: return "attention_bwd";
  }
  return "?";
}

// One entry of the forward or backward schedule, in order. A fused GEMM
// backward kernel (lora_linear_bwd) is one entry per member step, in the
// plan's order (the LoRA step first: it writes or adds to dX, the linear step adds).
struct kernel_entry {
  entry_kind kind = entry_kind::row_group;
  const char* id = "";                  // "f3", "b5": the schedule entry of explain()
  int group = -1;                       // row groups: index into the plan's row-group dispatch
  const buffer_ref* refs = nullptr;     // row groups: buffer argument j (same order as <id>_buffers)
  int n_refs = 0;
  const param_binding* params = nullptr;  // row groups: parameter vector p
  int n_params = 0;
  buffer_ref in[3] = {};                // lora_linear / *_bwd: in[0] = X; attention: q, k, v
  buffer_ref out = {};                  // Y / attention output (backward: the saved forward output)
  buffer_ref aux = {};                  // Z [T, r] (bf16) / lse [T, heads] (f32)
  buffer_ref dy = {};                   // backward: the output gradient read
  buffer_ref dx[3] = {};                // backward: input gradients (arena none: not wanted)
  bool acc[3] = {};                     // backward: add to dx[k] instead of overwriting
  const char* weight = "";              // frozen matrix [dim_out, dim_in] ("" if none)
  const char* adapter = "";             // LoRA adapter name: A [r, dim_in], B [dim_out, r] ("" if none)
  int dim_in = 0, dim_out = 0;
  int heads = 0, kv_heads = 0, head_dim = 0;
};

}  // namespace staticgrad::cuda
