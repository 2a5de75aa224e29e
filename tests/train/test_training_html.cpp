// OUT/training.html and OUT/metrics.jsonl of a finetune run with evaluation
// (the built tool, the tiny fixture):
//  - each chart's <svg> parses as XML (xmllint, libxml2);
//  - the loss, eval-loss and lr curves hold exactly the values of
//    metrics.jsonl, step for step, and their pixel points are the chart's
//    linear map of those values (to the 0.01 px the page prints);
//  - the page needs nothing else: no script, no external reference;
//  - where Debian's chromium is installed, it renders the page headless to a
//    PNG screenshot (skipped cleanly otherwise).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "fixtures/hf/hf_fixture.hpp"
#include "staticgrad/train/metrics.hpp"
#include "support/run_tool.hpp"

namespace fs = std::filesystem;
using namespace staticgrad;

namespace {

const std::string& tool = staticgrad::test::tool_path();
using staticgrad::test::slurp;

std::string attr(const std::string& tag, const std::string& name) {
  std::smatch m;
  if (!std::regex_search(tag, m, std::regex(" " + name + "=\"([^\"]*)\""))) return "";
  return m[1].str();
}

std::vector<double> numbers(const std::string& s) {
  std::vector<double> v;
  std::istringstream in(s);
  for (std::string w; in >> w;) v.push_back(std::strtod(w.c_str(), nullptr));
  return v;
}

bool have(const char* program) {
  return std::system((std::string("command -v ") + program + " > /dev/null 2>&1").c_str()) == 0;
}

}  // namespace

TEST_CASE("training.html: SVG curves equal metrics.jsonl, no network, parses as XML") {
  if (!fs::exists(tool)) {
    MESSAGE("staticgrad tool not built: skipped");
    return;
  }
  const auto d = sg_fixtures::hf_fixture_dir("tied_v97_l1_r4_all7").string();
  const auto out = fs::path(STATICGRAD_BINARY_DIR) / "html_out";
  fs::remove_all(out);
  const auto r = test::run_command("'" + tool + "' finetune --model " + d + " --data " + d + "/data.jsonl --eval-data " +
                                   d + "/data.jsonl --eval-every 3 --out " + out.string() +
                                   " --steps 8 --lr 1e-2 --batch-tokens 128 --max-len 64 --lora-r 4 --warmup-steps 2 2>&1");
  INFO(r.out);
  REQUIRE(r.rc == 0);
  const auto rows = train::read_metrics(out / "metrics.jsonl", 1 << 30);
  REQUIRE(rows.size() == 8);
  std::vector<double> steps, loss, lr, eval_steps, eval;
  for (const auto& x : rows) {
    steps.push_back(double(x.step)), loss.push_back(x.loss), lr.push_back(x.lr);
    if (!std::isnan(x.eval_loss)) eval_steps.push_back(double(x.step)), eval.push_back(x.eval_loss);
  }
  CHECK(eval_steps == std::vector<double>{3, 6, 8});  // every 3 steps and at the end
  const std::string page = slurp(out / "training.html");
  CHECK(page.find("<script") == std::string::npos);
  CHECK(page.find("http://") == page.find("http://www.w3.org/2000/svg"));  // only the SVG namespace name
  CHECK(page.find("https://") == std::string::npos);
  // Each chart: parse, then check its curves.
  std::size_t at = 0;
  int charts = 0, curves = 0;
  while ((at = page.find("<svg", at)) != std::string::npos) {
    const auto end = page.find("</svg>", at);
    REQUIRE(end != std::string::npos);
    const std::string svg = page.substr(at, end + 6 - at);
    at = end;
    ++charts;
    if (have("xmllint")) {
      const auto file = out / ("chart" + std::to_string(charts) + ".svg");
      std::ofstream(file) << svg;
      CHECK(std::system(("xmllint --noout '" + file.string() + "'").c_str()) == 0);
    } else {
      FAIL("xmllint (libxml2-utils, scripts/setup.sh) is not installed");
    }
    const std::string head = svg.substr(0, svg.find('>'));
    const double x0 = std::stod(attr(head, "data-x0")), x1 = std::stod(attr(head, "data-x1"));
    const double y0 = std::stod(attr(head, "data-y0")), y1 = std::stod(attr(head, "data-y1"));
    const auto box = numbers(attr(head, "data-box"));  // left top right bottom
    REQUIRE(box.size() == 4);
    std::smatch m;
    std::string rest = svg;
    while (std::regex_search(rest, m, std::regex("<polyline[^>]*>"))) {
      const std::string tag = m[0].str();
      rest = m.suffix();
      ++curves;
      const std::string series = attr(tag, "data-series");
      INFO(series);
      const auto xs = numbers(attr(tag, "data-steps")), vs = numbers(attr(tag, "data-values"));
      if (series == "loss") CHECK((xs == steps && vs == loss));
      else if (series == "lr") CHECK((xs == steps && vs == lr));
      else if (series == "eval_loss") CHECK((xs == eval_steps && vs == eval));
      else FAIL("unknown series " << series);
      std::string pts = attr(tag, "points");
      std::replace(pts.begin(), pts.end(), ',', ' ');
      const auto p = numbers(pts);
      REQUIRE(p.size() == 2 * xs.size());
      for (std::size_t i = 0; i < xs.size(); ++i) {
        CHECK(std::abs(p[2 * i] - (box[0] + (xs[i] - x0) / (x1 - x0) * (box[2] - box[0]))) < 0.01);
        CHECK(std::abs(p[2 * i + 1] - (box[3] - (vs[i] - y0) / (y1 - y0) * (box[3] - box[1]))) < 0.01);
      }
    }
  }
  CHECK(charts == 2);
  CHECK(curves == 3);
  // A screenshot where chromium is installed (Debian: chromium; not a dependency).
  const char* browser = have("chromium") ? "chromium" : have("chromium-browser") ? "chromium-browser" : nullptr;
  if (!browser) {
    MESSAGE("chromium not installed: screenshot skipped");
    return;
  }
  const auto png = out / "training.png";
  const std::string cmd = std::string(browser) + " --headless --no-sandbox --disable-gpu --window-size=820,700 --screenshot='" +
                          png.string() + "' 'file://" + (out / "training.html").string() + "' > /dev/null 2>&1";
  CHECK(std::system(cmd.c_str()) == 0);
  CHECK(fs::exists(png));
  CHECK(fs::file_size(png) > 1000);
}
