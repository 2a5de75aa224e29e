// plan_codegen: writes the CUDA description of compiled block plans.
//
//   plan_codegen <out_dir>
// writes <out_dir>/staticgrad/plans/<name>.cuh for every configured graph.
//
// Why: nvcc cannot instantiate templates over the graph's class-type NTTP
// names (fixed_string), and kernels take plain parameters only. This host
// program evaluates graph::compiled<G> (with g++) and prints every forward and
// backward row-group kernel as a staticgrad::cuda::row_group<...> type of ints
// and enums (backend/cuda/plan_desc.hpp), plus the tables that say which
// runtime buffer each buffer argument index means.
//
// It also writes, per plan, `struct schedule`: BOTH full schedules in order
// (row groups, LoRA projections, attention; backward GEMM kernels as one entry
// per member step) as plain kernel_entry values (plan_desc.hpp), the arena
// widths, and the row-group dispatch; backend/cuda/block_executor.cuh runs it.
//
// Invariants of the output:
//   * kernels are named by their schedule index, f<k> / b<k>, as explain prints;
//   * buffer arguments are numbered by first use in the kernel; values sharing
//     a slot (in-place chains) are one argument; an argument's access mode is
//     write when the kernel only writes it (tests poison those);
//   * deterministic: the same plan gives the same bytes.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/graph/explain.hpp"
#include "staticgrad/models/qwen2_block.hpp"

namespace sg = staticgrad;
namespace g = staticgrad::graph;

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "plan_codegen: %s\n", what.c_str());
  std::exit(1);
}

const char* op_code_of(g::op_kind k) {
  switch (k) {
    case g::op_kind::bias_add: return "bias_add";
    case g::op_kind::add: return "add";
    case g::op_kind::rmsnorm: return "rmsnorm";
    case g::op_kind::rope: return "rope";
    case g::op_kind::swiglu: return "swiglu";
    case g::op_kind::silu: return "silu";
    case g::op_kind::mul: return "mul";
    default: fail("a row group holds an op without a CUDA op_code");
  }
}

std::string operand(int o) {
  switch (sg::cuda::kind_of(o)) {
    case sg::cuda::operand_kind::none: return "none";
    case sg::cuda::operand_kind::buffer: return fmt::format("buf({})", sg::cuda::index_of(o));
    case sg::cuda::operand_kind::scratch: return fmt::format("scr({})", sg::cuda::index_of(o));
    case sg::cuda::operand_kind::param: return fmt::format("par({})", sg::cuda::index_of(o));
  }
  return "none";
}

struct binding {
  std::string key, name, kind, arena, ext;
  int offset = 0, width = 0;
  bool read = false, written = false;
};

// The buffer arguments and parameter vectors of one kernel, by first use.
struct kernel_bindings {
  std::vector<binding> buffers;
  std::vector<std::pair<std::string, int>> params;

  int use(binding b, bool read, bool write) {
    for (std::size_t j = 0; j < buffers.size(); ++j)
      if (buffers[j].key == b.key) {
        if (buffers[j].width != b.width) fail("one buffer argument is used with two widths: " + b.name);
        // In-place chains: one buffer, several values ('o|h').
        if (("|" + buffers[j].name + "|").find("|" + b.name + "|") == std::string::npos) buffers[j].name += "|" + b.name;
        // A later read of a buffer this kernel wrote (in place) needs no input.
        buffers[j].read = buffers[j].read || (read && !buffers[j].written);
        buffers[j].written = buffers[j].written || write;
        return sg::cuda::buf(static_cast<int>(j));
      }
    if (static_cast<int>(buffers.size()) >= sg::cuda::max_buffers) fail("a kernel needs more than max_buffers buffer arguments");
    b.read = read;
    b.written = write;
    buffers.push_back(b);
    return sg::cuda::buf(static_cast<int>(buffers.size()) - 1);
  }
  int param(const std::string& name, int width) {
    for (std::size_t p = 0; p < params.size(); ++p)
      if (params[p].first == name) return sg::cuda::par(static_cast<int>(p));
    if (static_cast<int>(params.size()) >= sg::cuda::max_params) fail("a kernel needs more than max_params parameter vectors");
    params.emplace_back(name, width);
    return sg::cuda::par(static_cast<int>(params.size()) - 1);
  }
};

std::string arena_text(g::arena a) { return std::string(g::arena_name(a)); }

template <class C>
binding value_binding(int v) {
  const auto& t = C::table;
  const auto& s = C::buffers.value[v];
  binding b;
  const int owner = s.owner >= 0 ? s.owner : v;
  b.key = s.where == g::arena::external ? fmt::format("external:{}", owner) : fmt::format("{}:{}", arena_text(s.where), s.offset);
  // Name the buffer after the chain's last value (what explain calls it), e.g. 'h' for o/h.
  b.name = std::string(t.nodes[v].name.view());
  b.kind = "value";
  b.arena = arena_text(s.where);
  b.offset = s.offset;
  b.width = t.nodes[v].width;
  if (s.where == g::arena::scratch) fail("value '" + b.name + "' is read from memory but has no slot");
  if (s.where == g::arena::external) {
    // The caller's buffer of the chain: its first graph input or output (as cpu::program::external_ptr).
    for (int u = 0; u < t.count && b.ext.empty(); ++u) {
      const int ou = C::buffers.value[u].owner >= 0 ? C::buffers.value[u].owner : u;
      if (ou == owner && (t.nodes[u].kind == g::op_kind::input || t.nodes[u].output)) b.ext = std::string(t.nodes[u].name.view());
    }
    if (b.ext.empty()) fail("external value '" + b.name + "' has no graph input or output in its chain");
  }
  return b;
}

template <class C>
binding aux_binding(int v) {
  const auto& s = C::buffers.aux[v];
  binding b;
  b.key = fmt::format("{}:{}", arena_text(s.where), s.offset);
  b.name = std::string(C::table.nodes[v].name.view()) + ".aux";
  b.kind = "stat";
  b.arena = arena_text(s.where);
  if (s.where == g::arena::external) fail("an auxiliary output lives in an external buffer");
  b.offset = s.offset;
  b.width = C::table.nodes[v].aux_width;
  return b;
}

template <class C>
binding grad_binding(int gr) {
  const auto& s = C::buffers.grad[gr];
  binding b;
  b.key = s.where == g::arena::external ? fmt::format("external_grad:{}", gr) : fmt::format("{}:{}", arena_text(s.where), s.offset);
  b.name = g::detail::grad_name(C::table, C::backward, gr);
  b.kind = "grad";
  b.arena = arena_text(s.where);
  if (s.where == g::arena::external) {
    // Named after the graph input whose gradient it is (the residual d(x) = d(y)), else the output.
    const auto& t = C::table;
    for (int u = 0; u < t.count && b.ext.empty(); ++u)
      if (C::backward.grad_of[u] == gr && t.nodes[u].kind == g::op_kind::input) b.ext = std::string(t.nodes[u].name.view());
    for (int u = 0; u < t.count && b.ext.empty(); ++u)
      if (C::backward.grad_of[u] == gr && t.nodes[u].output) b.ext = std::string(t.nodes[u].name.view());
    if (b.ext.empty()) fail("external gradient '" + b.name + "' belongs to no graph input or output");
    b.ext = "d(" + b.ext + ")";
  }
  b.offset = s.offset;
  b.width = s.width;
  return b;
}

// A buffer_ref initializer (plan_desc.hpp) for binding b (arena names as graph::arena_name prints them).
std::string ref_text(const binding& b) {
  std::string c;
  if (b.arena == "workspace") c = "workspace";
  else if (b.arena == "saved") c = "saved_act";
  else if (b.arena == "saved/f32") c = "saved_stat";
  else if (b.arena == "saved/rank") c = "saved_rank";
  else if (b.arena == "external") c = "external";
  else if (b.arena == "scratch") c = "none";
  else fail("unknown arena '" + b.arena + "'");
  return fmt::format("buffer_ref{{arena_code::{}, {}, {}, \"{}\", \"{}\"}}", c, c == "none" ? 0 : b.offset, b.width, b.ext,
                     b.name);
}
const std::string no_ref = "buffer_ref{}";

std::string tables(const std::string& id, const std::string& ops, bool backward, const kernel_bindings& kb) {
  std::string o;
  o += fmt::format("inline constexpr buffer_binding {}_buffers[] = {{\n", id);
  for (const auto& b : kb.buffers) {
    const char* mode = b.read && b.written ? "read_write" : b.written ? "write" : "read";
    o += fmt::format("    {{\"{}\", binding_kind::{}, \"{}\", {}, {}, access::{}}},\n", b.name, b.kind, b.arena, b.offset,
                     b.width, mode);
  }
  o += "};\n";
  o += fmt::format("inline constexpr buffer_ref {}_refs[] = {{\n", id);
  for (const auto& b : kb.buffers) o += "    " + ref_text(b) + ",\n";
  o += "};\n";
  if (!kb.params.empty()) {
    o += fmt::format("inline constexpr param_binding {}_params[] = {{\n", id);
    for (const auto& [n, w] : kb.params) o += fmt::format("    {{\"{}\", {}}},\n", n, w);
    o += "};\n";
  }
  o += fmt::format("inline constexpr kernel_info {}_info{{\"{}\", \"{}\", {}, {}_buffers, {}, {}, {}}};\n\n", id, id, ops,
                   backward ? "true" : "false", id, kb.buffers.size(), kb.params.empty() ? "nullptr" : id + "_params",
                   kb.params.size());
  return o;
}

template <class G>
std::string generate(const std::string& name, const std::string& title) {
  using C = g::compiled<G>;
  const auto& t = C::table;
  const auto& f = C::fusion;
  const auto& b = C::backward;
  std::string o;
  o += "#pragma once\n";
  o += fmt::format("// GENERATED by tools/plan_codegen.cpp from {} - do not edit.\n", title);
  o += "// Every row-group kernel of the compiled plan, as plain types (backend/cuda/plan_desc.hpp);\n";
  o += "// operands: buf(j) = buffer argument j (tables below), scr(s) = shared-memory scratch row s,\n";
  o += "// par(p) = parameter vector p. Kernel names are the schedule entries of explain().\n";
  o += "#include \"staticgrad/backend/cuda/plan_desc.hpp\"\n\n";
  o += fmt::format("namespace staticgrad::cuda::plans::{} {{\n\n", name);
  std::vector<std::string> fwd_ids, bwd_ids;
  std::map<std::string, std::pair<std::size_t, std::size_t>> counts;  // row group id -> (buffers, params)

  for (int k = 0; k < f.n_fwd; ++k) {
    const auto& kd = f.fwd[k];
    if (kd.kind != g::kernel_kind::row_group) continue;
    const std::string id = fmt::format("f{}", k);
    kernel_bindings kb;
    std::vector<int> scratch_of(static_cast<std::size_t>(t.count), -1);
    int n_scratch = 0, width_max = 0;
    std::string ops, steps;
    for (int m = 0; m < kd.n; ++m) {
      const int v = kd.members[m];
      const auto& n = t.nodes[v];
      ops += (m ? " + " : "") + std::string(g::node_label(t, v).view());
      width_max = std::max(width_max, n.width);
      int in[2] = {sg::cuda::none, sg::cuda::none};
      for (int q = 0; q < n.n_in && q < 2; ++q) {
        const int x = n.in[q];
        const auto& xn = t.nodes[x];
        if (xn.kind == g::op_kind::frozen_vector) in[q] = kb.param(std::string(xn.param.view()), xn.width);
        else if (scratch_of[x] >= 0) in[q] = sg::cuda::scr(scratch_of[x]);
        else in[q] = kb.use(value_binding<C>(x), true, false);
        if (xn.width != n.width) fail("an operand width differs from its op's width in " + id);
      }
      if (n.n_in > 2) fail("a row op with more than two inputs");
      int out;
      if (f.materialized[v]) out = kb.use(value_binding<C>(v), false, true);
      else {
        scratch_of[v] = n_scratch++;
        out = sg::cuda::scr(scratch_of[v]);
      }
      int aux = sg::cuda::none;
      if (n.aux_width) {
        if (n.aux_width != 1 || n.kind != g::op_kind::rmsnorm) fail("only rmsnorm has a per-token statistic in a row group");
        if (b.saved_aux[v]) aux = kb.use(aux_binding<C>(v), false, true);
      }
      const int attr = n.kind == g::op_kind::rope ? n.attr[0] : 0;
      steps += fmt::format("    step<op_code::{}, {}, {}, {}, {}, {}, {}>", op_code_of(n.kind), n.width, operand(in[0]),
                           operand(in[1]), operand(out), operand(aux), attr);
      steps += m + 1 < kd.n ? ",\n" : ">;\n";
    }
    o += fmt::format("// {}: row_group  {}\n", id, ops);
    o += fmt::format("using {} = row_group<{}, {},\n{}", id, width_max, n_scratch, steps);
    o += tables(id, ops, false, kb);
    fwd_ids.push_back(id);
    counts[id] = {kb.buffers.size(), kb.params.size()};
  }

  for (int k = 0; k < f.n_bwd; ++k) {
    const auto& kd = f.bwd[k];
    if (kd.kind != g::kernel_kind::row_group_bwd) continue;
    const std::string id = fmt::format("b{}", k);
    kernel_bindings kb;
    int width_max = 0;
    std::string ops, steps;
    for (int m = 0; m < kd.n; ++m) {
      const auto& st = b.steps[kd.members[m]];
      const int v = st.fwd;
      const auto& n = t.nodes[v];
      ops += (m ? " + " : "") + std::string(g::node_label(t, v).view()) + " (bwd)";
      width_max = std::max(width_max, n.width);
      if (g::traits_of(n.kind).saves.out) fail("a backward row op reads its saved output; plan_desc has no operand for it yet");
      const int dy = kb.use(grad_binding<C>(st.dy), true, false);
      int in[2] = {sg::cuda::none, sg::cuda::none};
      int dx[2] = {sg::cuda::none, sg::cuda::none};
      bool acc[2] = {false, false};
      for (int q = 0; q < n.n_in && q < 2; ++q) {
        const int x = n.in[q];
        const auto& xn = t.nodes[x];
        if (xn.kind == g::op_kind::frozen_vector) in[q] = kb.param(std::string(xn.param.view()), xn.width);
        else if (xn.kind == g::op_kind::input || b.saved[x]) in[q] = kb.use(value_binding<C>(x), true, false);
        if (st.dx[q] >= 0) {
          acc[q] = st.acc[q];
          dx[q] = kb.use(grad_binding<C>(st.dx[q]), acc[q], true);
        }
      }
      const int aux = b.saved_aux[v] ? kb.use(aux_binding<C>(v), true, false) : sg::cuda::none;
      const int attr = n.kind == g::op_kind::rope ? n.attr[0] : 0;
      steps += fmt::format("    bwd_step<op_code::{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}>", op_code_of(n.kind), n.width,
                           operand(dy), operand(in[0]), operand(in[1]), operand(aux), operand(dx[0]), acc[0],
                           operand(dx[1]), acc[1], attr);
      steps += m + 1 < kd.n ? ",\n" : ">;\n";
    }
    o += fmt::format("// {}: row_group_bwd  {}\n", id, ops);
    o += fmt::format("using {} = row_group_bwd<{},\n{}", id, width_max, steps);
    o += tables(id, ops, true, kb);
    bwd_ids.push_back(id);
    counts[id] = {kb.buffers.size(), kb.params.size()};
  }

  // ---- the full schedules: every kernel as a plain kernel_entry ----------------
  auto val_ref = [&](int v) { return ref_text(value_binding<C>(v)); };
  auto aux_ref = [&](int v) {
    return C::buffers.aux[v].where == g::arena::scratch ? no_ref : ref_text(aux_binding<C>(v));
  };
  auto grad_ref = [&](int gr) { return gr >= 0 ? ref_text(grad_binding<C>(gr)) : no_ref; };
  auto param_of = [&](int v, int k) { return std::string(t.nodes[t.nodes[v].in[k]].param.view()); };
  auto row_entry = [&](const std::string& kind, const std::string& id, int group) {
    const auto [nb, np] = counts.at(id);
    return fmt::format("    {{.kind = entry_kind::{}, .id = \"{}\", .group = {}, .refs = {}_refs, .n_refs = {}, .params = {}, "
                       ".n_params = {}}},\n",
                       kind, id, group, id, nb, np ? id + "_params" : std::string("nullptr"), np);
  };
  std::string fwd_entries, bwd_entries;
  int group = 0, n_fwd_entries = 0, n_bwd_entries = 0;
  for (int k = 0; k < f.n_fwd; ++k) {
    const auto& kd = f.fwd[k];
    const std::string id = fmt::format("f{}", k);
    ++n_fwd_entries;
    switch (kd.kind) {
      case g::kernel_kind::row_group: fwd_entries += row_entry("row_group", id, group++); break;
      case g::kernel_kind::lora_linear:
      case g::kernel_kind::linear:
      case g::kernel_kind::lora: {
        const bool both = kd.kind == g::kernel_kind::lora_linear;
        const int lin = kd.kind == g::kernel_kind::lora ? -1 : kd.members[0];
        const int lo = both ? kd.members[1] : kd.kind == g::kernel_kind::lora ? kd.members[0] : -1;
        const int out = both ? kd.members[2] : kd.members[0];
        const int xnode = lin >= 0 ? lin : lo;
        fwd_entries += fmt::format(
            "    {{.kind = entry_kind::lora_linear, .id = \"{}\", .in = {{{}, {}, {}}}, .out = {}, .aux = {}, .weight = \"{}\", "
            ".adapter = \"{}\", .dim_in = {}, .dim_out = {}}},\n",
            id, val_ref(t.nodes[xnode].in[0]), no_ref, no_ref, val_ref(out), lo >= 0 ? aux_ref(lo) : no_ref,
            lin >= 0 ? param_of(lin, 1) : "", lo >= 0 ? param_of(lo, 1) : "", t.nodes[t.nodes[xnode].in[0]].width,
            t.nodes[out].width);
        break;
      }
      case g::kernel_kind::attention: {
        const int v = kd.members[0];
        const auto& n = t.nodes[v];
        fwd_entries += fmt::format(
            "    {{.kind = entry_kind::attention, .id = \"{}\", .in = {{{}, {}, {}}}, .out = {}, .aux = {}, .heads = {}, "
            ".kv_heads = {}, .head_dim = {}}},\n",
            id, val_ref(n.in[0]), val_ref(n.in[1]), val_ref(n.in[2]), val_ref(v), aux_ref(v), n.attr[0], n.attr[1], n.attr[2]);
        break;
      }
      default: fail("forward kernel " + id + " has a kind the CUDA schedule does not run (embedding, lm_head_ce)");
    }
  }
  for (int k = 0; k < f.n_bwd; ++k) {
    const auto& kd = f.bwd[k];
    const std::string id = fmt::format("b{}", k);
    switch (kd.kind) {
      case g::kernel_kind::row_group_bwd:
        fwd_entries += "";
        bwd_entries += row_entry("row_group_bwd", id, group++);
        ++n_bwd_entries;
        break;
      case g::kernel_kind::lora_linear_bwd:
      case g::kernel_kind::linear_bwd:
      case g::kernel_kind::lora_bwd:
        // One entry per member step, in the plan's order.
        for (int m = 0; m < kd.n; ++m) {
          const auto& st = b.steps[kd.members[m]];
          const int v = st.fwd;
          const auto& n = t.nodes[v];
          const bool lin = n.kind == g::op_kind::linear;
          if (!lin && n.kind != g::op_kind::lora) fail("a GEMM backward kernel holds a step that is neither linear nor lora");
          bwd_entries += fmt::format(
              "    {{.kind = entry_kind::{}, .id = \"{}\", .in = {{{}, {}, {}}}, .aux = {}, .dy = {}, .dx = {{{}, {}, {}}}, "
              ".acc = {{{}, false, false}}, .weight = \"{}\", .adapter = \"{}\", .dim_in = {}, .dim_out = {}}},\n",
              lin ? "linear_bwd" : "lora_bwd", id, lin ? no_ref : val_ref(n.in[0]), no_ref, no_ref,
              lin ? no_ref : aux_ref(v), grad_ref(st.dy), grad_ref(st.dx[0]), no_ref, no_ref, st.acc[0] ? "true" : "false",
              lin ? param_of(v, 1) : "", lin ? "" : param_of(v, 1), t.nodes[n.in[0]].width, n.width);
          ++n_bwd_entries;
        }
        break;
      case g::kernel_kind::attention_bwd: {
        const auto& st = b.steps[kd.members[0]];
        const int v = st.fwd;
        const auto& n = t.nodes[v];
        bwd_entries += fmt::format(
            "    {{.kind = entry_kind::attention_bwd, .id = \"{}\", .in = {{{}, {}, {}}}, .out = {}, .aux = {}, .dy = {}, "
            ".dx = {{{}, {}, {}}}, .acc = {{{}, {}, {}}}, .heads = {}, .kv_heads = {}, .head_dim = {}}},\n",
            id, val_ref(n.in[0]), val_ref(n.in[1]), val_ref(n.in[2]), val_ref(v), aux_ref(v), grad_ref(st.dy),
            grad_ref(st.dx[0]), grad_ref(st.dx[1]), grad_ref(st.dx[2]), st.acc[0], st.acc[1], st.acc[2], n.attr[0],
            n.attr[1], n.attr[2]);
        ++n_bwd_entries;
        break;
      }
      default: fail("backward kernel " + id + " has a kind the CUDA schedule does not run (lm_head_ce_bwd)");
    }
  }
  int input_width = 0;
  for (int v = 0; v < t.count; ++v)
    if (t.nodes[v].kind == g::op_kind::input) input_width = t.nodes[v].width;
  o += "// The whole plan: both schedules in order, the arena widths (elements per token;\n";
  o += "// saved_rank in units of r) and the row-group dispatch (group index -> type).\n";
  o += "struct schedule {\n";
  o += fmt::format("  static constexpr const char* name = \"{}\";\n", name);
  o += fmt::format("  static constexpr int input_width = {};\n", input_width);
  o += fmt::format("  static constexpr int workspace_width = {}, saved_act_width = {}, saved_stat_width = {}, saved_rank_width = {};\n",
                   C::buffers.workspace_width, C::buffers.saved_act_width, C::buffers.saved_stat_width,
                   C::buffers.saved_rank_width);
  o += fmt::format("  static constexpr int n_forward = {}, n_backward = {};\n", n_fwd_entries, n_bwd_entries);
  o += "  static constexpr kernel_entry forward[] = {\n" + fwd_entries + "  };\n";
  o += "  static constexpr kernel_entry backward[] = {\n" + bwd_entries + "  };\n";
  o += "  // f(static_cast<Group*>(nullptr)) for row group `g` (kernel_entry::group).\n";
  o += "  template <class F>\n  static void row_group(int g, F&& f) {\n    switch (g) {\n";
  {
    int gi = 0;
    for (const auto& id : fwd_ids) o += fmt::format("      case {}: f(static_cast<{}*>(nullptr)); return;\n", gi++, id);
    for (const auto& id : bwd_ids) o += fmt::format("      case {}: f(static_cast<{}*>(nullptr)); return;\n", gi++, id);
  }
  o += "      default: return;\n    }\n  }\n};\n\n";
  auto list = [](const std::vector<std::string>& ids, const char* suffix) {
    std::string s;
    for (std::size_t i = 0; i < ids.size(); ++i) s += (i ? ", &" : "&") + ids[i] + suffix;
    return s;
  };
  o += "// Every row-group kernel of the plan, forward then backward.\n";
  o += fmt::format("inline constexpr const kernel_info* row_group_infos[] = {{{}}};\n", list(fwd_ids, "_info") + ", " + list(bwd_ids, "_info"));
  o += fmt::format("#define STATICGRAD_PLAN_{}_ROW_GROUPS(X) {}\n\n", name,
                   [&] {
                     std::string s;
                     for (const auto& id : fwd_ids) s += "X(" + id + ") ";
                     for (const auto& id : bwd_ids) s += "X(" + id + ") ";
                     return s;
                   }());
  o += "}  // namespace staticgrad::cuda::plans::" + name + "\n";
  return o;
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  // Always written: the build system compares timestamps with the generator.
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p);
  out << text;
  if (!out) fail("cannot write " + p.string());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: plan_codegen <out_dir>");
  const std::filesystem::path dir = std::filesystem::path(argv[1]) / "staticgrad" / "plans";
  namespace m = staticgrad::models;
  // The shapes CUDA code is generated for (LoRA on all seven projections).
  write_file(dir / "qwen2_tiny.cuh",
                   generate<m::qwen2_block<m::block_shape<128, 384, 4, 2, 32>>>(
                       "qwen2_tiny", "models::qwen2_block<block_shape<128, 384, 4, 2, 32>> (test shape)"));
  write_file(dir / "qwen2_0_5b.cuh",
                   generate<m::qwen2_block<m::block_shape<896, 4864, 14, 2, 64>>>(
                       "qwen2_0_5b", "models::qwen2_block<block_shape<896, 4864, 14, 2, 64>> (Qwen2.5-0.5B)"));
  write_file(dir / "qwen2_1_5b.cuh",
                   generate<m::qwen2_block<m::block_shape<1536, 8960, 12, 2, 128>>>(
                       "qwen2_1_5b", "models::qwen2_block<block_shape<1536, 8960, 12, 2, 128>> (Qwen2.5-1.5B)"));
  return 0;
}
