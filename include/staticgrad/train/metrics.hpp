#pragma once
// OUT/metrics.jsonl (one JSON object per step) and OUT/training.html (the
// loss, eval-loss and learning-rate curves as inline SVG: no script, no
// network, nothing but the file).
//
// metrics.jsonl line: {"step", "epoch", "loss", "lr", "grad_norm", "tokens",
// "tokens_total", "tok_s", "memory_bytes", "wall_s"[, "eval_loss"]}; numbers
// with 17 significant digits so that the page's points equal them exactly.
// On resume the file is cut back to the resumed step (a killed run may have
// written steps past its last checkpoint, or half a line).
//
// The page: one <svg> per chart; each curve is a <polyline> with
// data-series="loss" | "eval_loss" | "lr", its exact values in
// data-steps / data-values (space-separated, in metrics.jsonl's order), and
// the pixel points of the linear map written on the <svg> as
// data-x0 data-x1 (steps) and data-y0 data-y1 (values) onto the plot box.
// tests/train/test_training_html.cpp checks all of it.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "staticgrad/io/atomic_file.hpp"
#include "staticgrad/train/train_options.hpp"

namespace staticgrad::train {

inline std::string exact_number(double x) {
  char b[40];
  std::snprintf(b, sizeof b, "%.17g", x);
  return b;
}

inline std::string metrics_line(const step_record& r) {
  std::string s = "{\"step\":" + std::to_string(r.step) + ",\"epoch\":" + std::to_string(r.epoch) +
                  ",\"loss\":" + exact_number(r.loss) + ",\"lr\":" + exact_number(r.lr) +
                  ",\"grad_norm\":" + exact_number(r.grad_norm) + ",\"tokens\":" + std::to_string(r.tokens) +
                  ",\"tokens_total\":" + std::to_string(r.tokens_total) + ",\"tok_s\":" + exact_number(r.tokens_per_s) +
                  ",\"memory_bytes\":" + std::to_string(r.memory_bytes) + ",\"wall_s\":" + exact_number(r.elapsed_s);
  if (!std::isnan(r.eval_loss)) s += ",\"eval_loss\":" + exact_number(r.eval_loss);
  return s + "}";
}

// The records of `file` up to and including `max_step`; malformed lines (a
// torn last line) are dropped.
inline std::vector<step_record> read_metrics(const std::filesystem::path& file, std::int64_t max_step) {
  std::vector<step_record> v;
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("step") || !j.contains("wall_s")) continue;
    step_record r;
    try {
      r.step = j.at("step").get<std::int64_t>();
      if (r.step > max_step) continue;
      r.epoch = j.at("epoch").get<std::int64_t>();
      r.loss = j.at("loss").get<double>();
      r.lr = j.at("lr").get<double>();
      r.grad_norm = j.at("grad_norm").get<double>();
      r.tokens = j.at("tokens").get<std::int64_t>();
      r.tokens_total = j.at("tokens_total").get<std::int64_t>();
      r.tokens_per_s = j.at("tok_s").get<double>();
      r.memory_bytes = j.at("memory_bytes").get<std::uint64_t>();
      r.elapsed_s = j.at("wall_s").get<double>();
      if (j.contains("eval_loss")) r.eval_loss = j.at("eval_loss").get<double>();
    } catch (const nlohmann::json::exception&) {
      continue;
    }
    v.push_back(r);
  }
  return v;
}

inline void write_metrics(const std::filesystem::path& file, const std::vector<step_record>& rows) {
  std::string s;
  for (const auto& r : rows) s += metrics_line(r) + "\n";
  io::write_text_atomic(file, s);
}

// Appends one line (O_APPEND: a kill leaves at most a torn last line, which read_metrics drops).
inline void append_metrics(const std::filesystem::path& file, const step_record& r) {
  const std::string s = metrics_line(r) + "\n";
  const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  require(fd >= 0, "cannot open for appending", {file.string(), "", {}});
  const bool ok = io::detail::write_all(fd, reinterpret_cast<const std::byte*>(s.data()), s.size());
  ::close(fd);
  require(ok, "cannot append", {file.string(), "", {}});
}

namespace html_detail {

struct series {
  const char* name;   // data-series
  const char* label;  // legend
  const char* color;
  std::vector<double> steps, values;
};

inline std::string num(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2f", x);
  return b;
}
inline std::string tick(double x) {
  char b[32];
  std::snprintf(b, sizeof b, "%.4g", x);
  return b;
}

// One chart: the curves share the axes; the x axis spans [x0, x1] steps, the y axis [y0, y1].
inline std::string chart(const std::string& title, const std::vector<series>& ss, double x0, double x1) {
  constexpr double W = 760, H = 260, L = 70, R = 20, T = 30, B = 40;
  double y0 = std::numeric_limits<double>::infinity(), y1 = -y0;
  for (const auto& s : ss)
    for (double v : s.values)
      if (std::isfinite(v)) y0 = std::min(y0, v), y1 = std::max(y1, v);
  if (!std::isfinite(y0)) y0 = 0, y1 = 1;
  if (y1 <= y0) y1 = y0 + (y0 == 0 ? 1 : std::abs(y0) * 0.1), y0 -= (y1 - y0) * 0.0;
  if (x1 <= x0) x1 = x0 + 1;
  auto px = [&](double x) { return L + (x - x0) / (x1 - x0) * (W - L - R); };
  auto py = [&](double y) { return H - B - (y - y0) / (y1 - y0) * (H - T - B); };
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(W) + "\" height=\"" + num(H) +
                  "\" viewBox=\"0 0 " + num(W) + " " + num(H) + "\" data-x0=\"" + exact_number(x0) + "\" data-x1=\"" +
                  exact_number(x1) + "\" data-y0=\"" + exact_number(y0) + "\" data-y1=\"" + exact_number(y1) +
                  "\" data-box=\"" + num(L) + " " + num(T) + " " + num(W - R) + " " + num(H - B) + "\">\n";
  s += "<title>" + title + "</title>\n";
  s += "<rect x=\"" + num(L) + "\" y=\"" + num(T) + "\" width=\"" + num(W - L - R) + "\" height=\"" + num(H - T - B) +
       "\" fill=\"none\" stroke=\"#888\"/>\n";
  s += "<text x=\"" + num(L) + "\" y=\"18\" font-size=\"14\" font-family=\"sans-serif\">" + title + "</text>\n";
  for (int i = 0; i <= 4; ++i) {  // y ticks
    const double v = y0 + (y1 - y0) * i / 4.0;
    s += "<text x=\"" + num(L - 6) + "\" y=\"" + num(py(v) + 4) +
         "\" font-size=\"11\" font-family=\"sans-serif\" text-anchor=\"end\">" + tick(v) + "</text>\n";
  }
  for (double v : {x0, x1})  // x ticks: first and last step
    s += "<text x=\"" + num(px(v)) + "\" y=\"" + num(H - B + 16) +
         "\" font-size=\"11\" font-family=\"sans-serif\" text-anchor=\"middle\">" + tick(v) + "</text>\n";
  s += "<text x=\"" + num((L + W - R) / 2) + "\" y=\"" + num(H - 6) +
       "\" font-size=\"12\" font-family=\"sans-serif\" text-anchor=\"middle\">step</text>\n";
  double lx = W - R - 150;
  for (const auto& c : ss) {
    std::string pts, st, vs;
    for (std::size_t i = 0; i < c.values.size(); ++i) {
      pts += (i ? " " : "") + num(px(c.steps[i])) + "," + num(py(c.values[i]));
      st += (i ? " " : "") + exact_number(c.steps[i]);
      vs += (i ? " " : "") + exact_number(c.values[i]);
    }
    s += "<polyline data-series=\"" + std::string(c.name) + "\" data-steps=\"" + st + "\" data-values=\"" + vs +
         "\" points=\"" + pts + "\" fill=\"none\" stroke=\"" + c.color + "\" stroke-width=\"1.5\"/>\n";
    if (c.values.size() == 1)  // a single point is invisible as a line
      s += "<circle cx=\"" + num(px(c.steps[0])) + "\" cy=\"" + num(py(c.values[0])) + "\" r=\"3\" fill=\"" + c.color +
           "\"/>\n";
    s += "<text x=\"" + num(lx) + "\" y=\"" + num(T + 14) + "\" font-size=\"12\" font-family=\"sans-serif\" fill=\"" +
         c.color + "\">" + c.label + "</text>\n";
    lx += 75;
  }
  return s + "</svg>\n";
}

}  // namespace html_detail

// The whole page for the records so far (every step of the run, resumed parts included).
inline std::string training_html(const std::vector<step_record>& rows, const std::string& title) {
  using html_detail::series;
  series loss{"loss", "loss", "#1f77b4", {}, {}}, eval{"eval_loss", "eval loss", "#d62728", {}, {}},
      lr{"lr", "learning rate", "#2ca02c", {}, {}};
  for (const auto& r : rows) {
    loss.steps.push_back(double(r.step)), loss.values.push_back(r.loss);
    lr.steps.push_back(double(r.step)), lr.values.push_back(r.lr);
    if (!std::isnan(r.eval_loss)) eval.steps.push_back(double(r.step)), eval.values.push_back(r.eval_loss);
  }
  const double x0 = rows.empty() ? 0 : double(rows.front().step), x1 = rows.empty() ? 1 : double(rows.back().step);
  auto escape = [](const std::string& t) {
    std::string o;
    for (char c : t) o += c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '&' ? "&amp;" : std::string(1, c);
    return o;
  };
  std::string s = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"/><title>" + escape(title) +
                  "</title></head>\n<body style=\"font-family:sans-serif\">\n<h1>" + escape(title) + "</h1>\n";
  if (!rows.empty()) {
    const auto& b = rows.back();
    s += "<p>step " + std::to_string(b.step) + ", epoch " + std::to_string(b.epoch) + ", loss " +
         html_detail::tick(b.loss) + ", " + std::to_string(b.tokens_total) + " tokens, " + html_detail::num(b.elapsed_s) +
         " s</p>\n";
  }
  std::vector<series> top{loss};
  if (!eval.values.empty()) top.push_back(eval);
  s += html_detail::chart("loss", top, x0, x1);
  s += html_detail::chart("learning rate", {lr}, x0, x1);
  return s + "</body></html>\n";
}

}  // namespace staticgrad::train
