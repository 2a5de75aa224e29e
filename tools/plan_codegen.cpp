// plan_codegen: prints the schedules of the compiled Qwen2.5 graphs for nvcc.
//
//   plan_codegen <out_dir>
// writes <out_dir>/staticgrad/plans/<name>.cuh for every shape of
// models::all_shapes that the CUDA kernels support (attention: head dim 64 or
// 128), and <out_dir>/staticgrad/plans/all.cuh including them all.
//
// Why: nvcc cannot instantiate templates over the graph's class-type NTTP
// names (fixed_string). This host program evaluates graph::schedule_of<G>
// (graph/schedule.hpp: the one schedule, also run by the CPU executor) with
// g++ and PRINTS it: the schedule as a constexpr graph::schedule<N>
// initialiser, and each row-group entry once more as a row_group<...> type
// (backend/cuda/plan_desc.hpp) so that one kernel template compiles per group.
// It decides nothing: every field is the schedule's; a static_assert in the
// output checks each printed type against its printed entry (`spells`).
//
// Per shape, three graphs (models/qwen2_model.hpp): the decoder block
// (`block`), the embedding (`embedding`) and the final norm + LM head +
// cross-entropy (`head`); and cuda::plan_of<Shape>, the dispatch trait.
// Enums are printed as their numeric value (graph::arena(1)): no table of
// enum names exists here. Deterministic: the same plan gives the same bytes.
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/plan_desc.hpp"
#include "staticgrad/graph/explain.hpp"
#include "staticgrad/graph/schedule.hpp"
#include "staticgrad/models/qwen2.hpp"
#include "staticgrad/models/qwen2_model.hpp"

namespace sg = staticgrad;
namespace g = staticgrad::graph;

namespace {

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "plan_codegen: %s\n", what.c_str());
  std::exit(1);
}

template <class E>
std::string en(const char* type, E v) {
  return fmt::format("graph::{}({})", type, static_cast<int>(v));
}
std::string b(bool v) { return v ? "true" : "false"; }
std::string name(const g::name_buf& n) { return fmt::format("graph::name_buf(\"{}\")", n.view()); }

std::string ref(const g::buffer_ref& r) {
  return fmt::format("{{{}, {}, {}, {}, {}}}", en("arena", r.where), r.offset, r.width, r.ext, en("storage", r.store));
}
template <class T, std::size_t K, class F>
std::string list(const std::array<T, K>& a, int n, F&& f, const char* sep = ", ") {
  std::string s = "{{";
  for (int i = 0; i < n; ++i) s += (i ? sep : "") + f(a[static_cast<std::size_t>(i)]);
  return s + "}}";
}
template <class T, std::size_t K>
std::string ints(const std::array<T, K>& a) {
  return list(a, static_cast<int>(K), [](T v) { return fmt::format("{}", v); });
}
template <std::size_t K>
std::string bools(const std::array<bool, K>& a) {
  return list(a, static_cast<int>(K), [](bool v) { return b(v); });
}

std::string step_text(const g::row_step& s) {
  return fmt::format(".op = {}, .width = {}, .in0 = {}, .in1 = {}, .out = {}, .aux = {}, .attr = {}, .dy = {}, .dx0 = {}, "
                     ".dx1 = {}, .acc0 = {}, .acc1 = {}",
                     en("op_kind", s.op), s.width, s.in0, s.in1, s.out, s.aux, s.attr, s.dy, s.dx0, s.dx1, b(s.acc0),
                     b(s.acc1));
}

std::string entry_text(const g::entry& e) {
  auto refs = [](const auto& a, int n) { return list(a, n, [](const g::buffer_ref& r) { return ref(r); }); };
  return fmt::format(
      "{{.kind = {}, .kernel = {}, .node = {}, .group = {}, .step0 = {}, .n_steps = {}, .n_scratch = {}, .width_max = {},\n"
      "       .buf = {}, .buf_read = {}, .buf_written = {}, .n_buf = {}, .par = {}, .n_par = {},\n"
      "       .in = {}, .out = {}, .aux = {}, .dy = {}, .dx = {}, .acc = {},\n"
      "       .weight = {}, .adapter = {}, .ids = {}, .dim_in = {}, .dim_out = {}, .heads = {}, .kv_heads = {}, .head_dim = {},\n"
      "       .tmp_rank = {}, .tmp_act = {}, .tmp_stat = {}, .recompute = {}}}",
      en("kernel_kind", e.kind), e.kernel, e.node, e.group, e.step0, e.n_steps, e.n_scratch, e.width_max,
      refs(e.buf, e.n_buf), bools(e.buf_read), bools(e.buf_written), e.n_buf, ints(e.par), e.n_par, refs(e.in, 3),
      ref(e.out), ref(e.aux), ref(e.dy), refs(e.dx, 3), bools(e.acc), e.weight, e.adapter, e.ids, e.dim_in, e.dim_out,
      e.heads, e.kv_heads, e.head_dim, e.tmp_rank, e.tmp_act, e.tmp_stat, e.recompute);
}

// The row-group type of entry e (operands as the schedule's ints).
template <int N>
std::string group_type(const g::schedule<N>& s, const g::entry& e) {
  std::string o = e.kind == g::kernel_kind::row_group ? fmt::format("row_group<{}, {},\n", e.width_max, e.n_scratch)
                                                      : fmt::format("row_group_bwd<{},\n", e.width_max);
  for (int i = 0; i < e.n_steps; ++i) {
    const auto& st = s.steps[static_cast<std::size_t>(e.step0 + i)];
    if (e.kind == g::kernel_kind::row_group)
      o += fmt::format("    step<{}, {}, {}, {}, {}, {}, {}>", en("op_kind", st.op), st.width, st.in0, st.in1, st.out, st.aux,
                       st.attr);
    else
      o += fmt::format("    bwd_step<{}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}>", en("op_kind", st.op), st.width, st.dy,
                       st.in0, st.in1, st.aux, st.dx0, b(st.acc0), st.dx1, b(st.acc1), st.attr);
    o += i + 1 < e.n_steps ? ",\n" : ">";
  }
  return o;
}

// One graph's schedule as `struct <id>` (data + row-group types + dispatch).
template <class G>
std::string print_graph(const std::string& id, const std::string& title) {
  using C = g::compiled<G>;
  constexpr int N = C::capacity;
  const auto& s = g::schedule_of<G>;
  const auto& t = C::table;
  std::string o;
  o += fmt::format("// ---- {}: {}\n", id, title);
  o += fmt::format("namespace {}_groups {{\n", id);
  std::vector<std::pair<int, std::string>> groups;  // group index -> type name
  auto add_group = [&](const g::entry& e, char fb, int k) {
    const std::string tn = fmt::format("{}{}", fb, k);
    std::string ops;
    for (int i = 0; i < e.n_steps; ++i) {
      const auto& st = s.steps[static_cast<std::size_t>(e.step0 + i)];
      ops += (i ? " + " : "") + std::string(g::traits_of(st.op).name);
    }
    o += fmt::format("// {}: {}\nusing {} = {};\n", tn, ops, tn, group_type(s, e));
    groups.emplace_back(e.group, tn);
  };
  for (int i = 0; i < s.n_fwd; ++i)
    if (s.fwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group) add_group(s.fwd[static_cast<std::size_t>(i)], 'f', s.fwd[static_cast<std::size_t>(i)].kernel);
  for (int i = 0; i < s.n_bwd; ++i)
    if (s.bwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group_bwd) add_group(s.bwd[static_cast<std::size_t>(i)], 'b', s.bwd[static_cast<std::size_t>(i)].kernel);
  // Recompute entries (forward row groups in the backward list): r<tier>.
  for (int i = 0; i < s.n_bwd; ++i)
    if (s.bwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group) add_group(s.bwd[static_cast<std::size_t>(i)], 'r', s.bwd[static_cast<std::size_t>(i)].recompute);
  o += fmt::format("}}  // namespace {}_groups\n\n", id);

  o += fmt::format("struct {} {{\n", id);
  o += fmt::format("  static constexpr const char* name = \"{}\";\n", title);
  o += fmt::format("  static constexpr int capacity = {};\n", N);
  o += fmt::format("  static constexpr graph::schedule<{}> data = {{\n", N);
  o += "      .fwd = " + list(s.fwd, s.n_fwd, entry_text, ",\n      ") + ",\n";
  o += fmt::format("      .n_fwd = {},\n", s.n_fwd);
  o += "      .bwd = " + list(s.bwd, s.n_bwd, entry_text, ",\n      ") + ",\n";
  o += fmt::format("      .n_bwd = {},\n", s.n_bwd);
  o += "      .steps = " + list(s.steps, s.n_steps, [](const g::row_step& st) { return "{" + step_text(st) + "}"; }, ",\n      ") + ",\n";
  o += fmt::format("      .n_steps = {},\n", s.n_steps);
  o += "      .params = " + list(s.params, s.n_params, [](const g::param_slot& p) {
         return fmt::format("{{{}, {}, {}, {}}}", name(p.name), en("op_kind", p.kind), p.rows, p.cols);
       }, ",\n      ") + ",\n";
  o += fmt::format("      .n_params = {},\n", s.n_params);
  o += "      .externals = " + list(s.externals, s.n_externals, [](const g::external_slot& x) {
         return fmt::format("{{{}, {}, {}, {}, {}}}", name(x.name), name(x.alias), en("external_kind", x.kind), x.width,
                            en("storage", x.store));
       }, ",\n      ") + ",\n";
  o += fmt::format("      .n_externals = {}, .n_groups = {},\n", s.n_externals, s.n_groups);
  o += fmt::format("      .workspace_width = {}, .saved_act_width = {}, .saved_stat_width = {}, .saved_rank_width = {},\n",
                   s.workspace_width, s.saved_act_width, s.saved_stat_width, s.saved_rank_width);
  o += fmt::format("      .tmp_rank_width = {}, .tmp_act_width = {}, .tmp_stat_width = {},\n", s.tmp_rank_width,
                   s.tmp_act_width, s.tmp_stat_width);
  o += fmt::format("      .n_recompute = {}, .keep_act_width = {},\n      .recompute_names = {},\n", s.n_recompute,
                   ints(s.keep_act_width), list(s.recompute_names, g::max_recompute, name));
  o += fmt::format("      .param_of = {},\n      .external_of = {},\n      .grad_external_of = {}}};\n", ints(s.param_of),
                   ints(s.external_of), ints(s.grad_external_of));
  int input_width = 0;
  for (int v = 0; v < t.count; ++v)
    if (t.nodes[v].kind == g::op_kind::input) input_width = t.nodes[v].width;
  o += fmt::format("  static constexpr int input_width = {};\n", input_width);
  o += "  // f(static_cast<Group*>(nullptr)) for row group `g` (entry::group).\n";
  o += "  template <class F>\n  static void row_group(int g, F&& f) {\n    switch (g) {\n";
  for (const auto& [gi, tn] : groups) o += fmt::format("      case {}: f(static_cast<{}_groups::{}*>(nullptr)); return;\n", gi, id, tn);
  o += "      default: return;\n    }\n  }\n};\n";
  // The printed types must say what the printed entries say.
  for (int i = 0; i < s.n_fwd; ++i)
    if (s.fwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group)
      o += fmt::format("static_assert(spells<{0}_groups::f{1}>({0}::data, {0}::data.fwd[{2}]), \"{0} f{1}: the row-group type differs from its schedule entry\");\n",
                       id, s.fwd[static_cast<std::size_t>(i)].kernel, i);
  for (int i = 0; i < s.n_bwd; ++i)
    if (s.bwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group_bwd)
      o += fmt::format("static_assert(spells<{0}_groups::b{1}>({0}::data, {0}::data.bwd[{2}]), \"{0} b{1}: the row-group type differs from its schedule entry\");\n",
                       id, s.bwd[static_cast<std::size_t>(i)].kernel, i);
  for (int i = 0; i < s.n_bwd; ++i)
    if (s.bwd[static_cast<std::size_t>(i)].kind == g::kernel_kind::row_group)
      o += fmt::format("static_assert(spells<{0}_groups::r{1}>({0}::data, {0}::data.bwd[{2}]), \"{0} r{1}: the row-group type differs from its schedule entry\");\n",
                       id, s.bwd[static_cast<std::size_t>(i)].recompute, i);
  return o + "\n";
}

template <class S>
std::string plan_id() {
  std::string n = std::string("qwen2_") + sg::models::shape_name<S>::value;
  for (char& c : n)
    if (c == '.') c = '_';
  return n;  // qwen2_0_5b, qwen2_7b, ...
}

template <class S>
std::string generate() {
  namespace m = sg::models;
  const std::string id = plan_id<S>();
  std::string o;
  o += "#pragma once\n";
  o += fmt::format("// GENERATED by tools/plan_codegen.cpp from the {} graphs - do not edit.\n", m::shape_text<S>());
  o += "// The schedules of graph/schedule.hpp, printed (block, embedding, head), and every\n";
  o += "// row-group entry as a plain type (backend/cuda/plan_desc.hpp).\n";
  o += "#include \"staticgrad/backend/cuda/plan_desc.hpp\"\n#include \"staticgrad/models/qwen2_shapes.hpp\"\n\n";
  o += fmt::format("namespace staticgrad::cuda::plans::{} {{\n\n", id);
  o += print_graph<m::qwen2_block<S>>("block", "Qwen2.5 " + std::string(m::shape_name<S>::value) + " decoder block, LoRA on all seven projections");
  o += print_graph<m::qwen2_embedding_graph<S::hidden>>("embedding", "token embedding");
  o += print_graph<m::qwen2_head_graph<S::hidden>>("head", "final RMSNorm + LM head + cross-entropy");
  o += fmt::format("// The three plans of the model, and its shape.\nstruct model {{\n  using shape = models::{};\n  using block = {}::block;\n  using embedding = {}::embedding;\n  using head = {}::head;\n  static constexpr const char* name = \"{}\";\n}};\n\n",
                   fmt::format("block_shape<{}, {}, {}, {}, {}>", S::hidden, S::intermediate, S::heads, S::kv_heads, S::head_dim),
                   id, id, id, id);
  o += "}  // namespace staticgrad::cuda::plans::" + id + "\n\n";
  o += "namespace staticgrad::cuda {\ntemplate <class Shape> struct plan_of;\n";
  o += fmt::format("template <> struct plan_of<models::block_shape<{}, {}, {}, {}, {}>> {{ using type = plans::{}::model; }};\n}}  // namespace staticgrad::cuda\n",
                   S::hidden, S::intermediate, S::heads, S::kv_heads, S::head_dim, id);
  return o;
}

void write_file(const std::filesystem::path& p, const std::string& text) {
  // Always written: the build system compares timestamps with the generator.
  std::filesystem::create_directories(p.parent_path());
  std::ofstream out(p);
  out << text;
  if (!out) fail("cannot write " + p.string());
}

template <class... Shapes>
void generate_all(const std::filesystem::path& dir, sg::models::shape_list<Shapes...>) {
  std::string all = "#pragma once\n// GENERATED by tools/plan_codegen.cpp - do not edit. Every CUDA plan (models::gpu_shapes).\n";
  ((write_file(dir / (plan_id<Shapes>() + ".cuh"), generate<Shapes>()), all += "#include \"staticgrad/plans/" + plan_id<Shapes>() + ".cuh\"\n"), ...);
  write_file(dir / "all.cuh", all);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) fail("usage: plan_codegen <out_dir>");
  generate_all(std::filesystem::path(argv[1]) / "staticgrad" / "plans", sg::models::gpu_shapes{});
  return 0;
}
