#pragma once
// train::training_loop: the run, its steps, data and evaluation (declared in
// loop.hpp; checkpoints, resume and the best adapter: loop_checkpoint_impl.hpp).
// Inline in header-only use; compiled once in src/train/loop.cpp under
// STATICGRAD_PRECOMPILED_TRAINING_LOOP (loop.hpp says why).
#include "staticgrad/train/loop.hpp"

namespace staticgrad::train {

// --out must be a directory this process can write: created if missing, then
// probed with a temporary file (a read-only parent, a regular file, /proc all fail here).
STATICGRAD_LOOP_INLINE void check_out_dir(const std::filesystem::path& out) {
  namespace fs = std::filesystem;
  std::error_code ec;
  require(!fs::exists(out, ec) || fs::is_directory(out, ec), "exists and is not a directory", {out.string(), "--out", {}});
  fs::create_directories(out, ec);
  require(!ec, "cannot create the output directory: " + ec.message(), {out.string(), "--out", {}});
  std::string probe = (out / ".staticgrad-write-test-XXXXXX").string();
  const int fd = ::mkstemp(probe.data());
  require(fd >= 0, std::string("the output directory is not writable: ") + std::strerror(errno), {out.string(), "--out", {}});
  ::close(fd);
  ::unlink(probe.c_str());
}

namespace loop_detail {
STATICGRAD_LOOP_INLINE std::atomic<int>& stop_signal() {
  static std::atomic<int> s{0};
  return s;
}
extern "C" STATICGRAD_LOOP_INLINE void on_stop_signal(int sig) { stop_signal().store(sig); }

// SIGINT and SIGTERM set a flag the loop checks between steps (scoped to run()).
class signal_scope {
 public:
  signal_scope() {
    stop_signal().store(0);
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~signal_scope() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }
  signal_scope(const signal_scope&) = delete;
  signal_scope& operator=(const signal_scope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

STATICGRAD_LOOP_INLINE std::string bytes_text(std::uint64_t b) {
  return b >= (1ull << 30) ? fmt::format("{:.2f} GiB", double(b) / double(1ull << 30))
                           : fmt::format("{:.0f} MiB", double(b) / double(1ull << 20));
}
STATICGRAD_LOOP_INLINE std::string duration_text(double s) {
  const auto t = static_cast<long long>(s + 0.5);
  return t >= 3600 ? fmt::format("{}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60) : fmt::format("{}:{:02}", t / 60, t % 60);
}
}  // namespace loop_detail

// The plain progress line (without a terminal, or with --log-every).
STATICGRAD_LOOP_INLINE std::string format_step(const step_record& r, std::int64_t total) {
  const int w = static_cast<int>(std::to_string(total).size());
  return fmt::format("step {:>{}}/{}  loss {:.4f}  tokens {}  lr {:.3e}  grad_norm {:.3f}  tok/s {:.0f}  elapsed {:.1f}s"
                     "  epoch {}  mem {}",
                     r.step, w, total, r.loss, r.tokens, r.lr, r.grad_norm, r.tokens_per_s, r.elapsed_s, r.epoch,
                     loop_detail::bytes_text(r.memory_bytes));
}

STATICGRAD_LOOP_INLINE training_loop::training_loop(backend& b, const io::tokenizer& tok, std::vector<std::string> files,
                                                    train_options o, communicator* comm)
    : b_(b), tok_(tok), files_(std::move(files)), o_(std::move(o)), comm_(comm) {
  require(!files_.empty(), "no training data files", {"", "--data", {}});
  if (rank() != 0) o_.log = nullptr;  // rank 0 reports for the group
  check_options(o_, &b_.config());
  require(o_.lora.lora_dropout == 0 || b_.features().lora_dropout,
          std::string("--lora-dropout > 0 is not implemented on ") + b_.features().device +
              " (use --device cpu, or --lora-dropout 0)",
          {"", "--lora-dropout", {}});
  require(b_.max_batch_tokens() == 0 || rows() * o_.max_len <= b_.max_batch_tokens(),
          "the device was built for fewer tokens per batch than rows x --max-len", {"", "--batch-tokens", {}});
}
STATICGRAD_LOOP_INLINE train_result training_loop::run() {
  loop_detail::signal_scope signals;
  train_result res;
  const bool writes = !o_.out.empty() && rank() == 0;
  if (writes) {
    check_out_dir(o_.out);
    sweep_stale_temporaries(o_.out);
  }
  load_eval_data();
  total_ = o_.epochs > 0 ? steps_for_epochs() : o_.steps;
  const std::int64_t warmup =
      o_.warmup_steps > 0 ? o_.warmup_steps : std::int64_t(std::ceil(o_.warmup_ratio * double(total_)));
  sched_ = {o_.schedule, o_.optim.lr, warmup, total_, o_.min_lr_ratio * o_.optim.lr};
  state_.total_steps = total_;
  state_.options = fingerprint(warmup);
  adapter_ = io::make_lora_adapter(o_.lora, b_.config());
  init_lora(adapter_, b_.config(), o_.seed);
  b_.set_adapter(adapter_);
  if (!o_.resume.empty()) resume();
  const std::int64_t taken = state_.epoch_batches;
  open_loader(state_.epoch);
  for (io::batch skip; state_.epoch_batches < taken; ++state_.epoch_batches)  // replay the data position
    require(loader_->next(skip), "the training data changed: the checkpoint's position is past its end",
            {files_.front(), "--resume", {}});
  if (writes) write_metrics(o_.out / "metrics.jsonl", history_);
  live_ = o_.log == &std::cout && o_.log_every == 0 && ::isatty(STDOUT_FILENO);
  t_start_ = t_run_ = std::chrono::steady_clock::now();
  first_step_ = state_.step;
  bool evaluated_last = false;
  while (state_.step < total_) {
    if (const int sig = stop_requested()) {
      res.stopped_by_signal = sig;
      break;
    }
    auto rec = step();
    crash_point("step", rec.step);
    evaluated_last = false;
    if (o_.eval_every > 0 && rec.step % o_.eval_every == 0) {
      rec.eval_loss = evaluate(rec.step);
      evaluated_last = true;
      res.early_stopped = note_eval(rec.eval_loss, rec.step);
    }
    history_.push_back(rec);
    res.steps.push_back(rec);
    if (writes) append_metrics(o_.out / "metrics.jsonl", rec), crash_point("metrics", rec.step);
    report(rec);
    if (writes && o_.save_every > 0 && rec.step % o_.save_every == 0 && rec.step < total_) save_checkpoint();
    if (res.early_stopped) {
      log_line(fmt::format("early stopping: no new best eval loss in {} evaluations (best {:.4f})",
                           state_.evals_without_improvement, state_.best_eval));
      break;
    }
  }
  if (live_ && !res.steps.empty()) *o_.log << std::endl;
  res.epochs = state_.epoch + 1;
  res.data = loader_->stats();
  if (res.stopped_by_signal) {
    if (writes && state_.step > 0) {
      const auto dir = save_checkpoint();
      log_line(fmt::format("stopped by signal {} after step {}: saved {} (continue with --resume {})",
                           res.stopped_by_signal, state_.step, dir.string(), o_.out.string()));
    }
    return res;
  }
  if (!eval_.empty() && !evaluated_last && state_.step > first_step_) {
    res.final_eval_loss = evaluate(state_.step);
    note_eval(res.final_eval_loss, state_.step);
    history_.back().eval_loss = res.final_eval_loss;
    res.steps.back().eval_loss = res.final_eval_loss;
    if (writes) write_metrics(o_.out / "metrics.jsonl", history_);
  } else if (!history_.empty()) {
    res.final_eval_loss = history_.back().eval_loss;
  }
  adapter_ = b_.adapter();
  if (o_.early_stopping_patience > 0 && state_.best_step > 0 && state_.best_step != state_.step) {
    // As transformers' EarlyStoppingCallback with load_best_model_at_end: the adapter of the best eval.
    adapter_ = best_adapter();
    log_line(fmt::format("the adapter written is the best eval's: step {}, eval loss {:.4f} (the last step's "
                         "was {})", state_.best_step, state_.best_eval, state_.step));
  }
  if (writes) {
    write_final_adapter();
    write_page();
  }
  return res;
}
STATICGRAD_LOOP_INLINE void training_loop::log_line(const std::string& s) {
  if (o_.log) *o_.log << (live_ ? "\r\033[K" : "") << s << std::endl;
}
STATICGRAD_LOOP_INLINE void training_loop::report(const step_record& r) {
  if (!o_.log) return;
  if (!live_) {
    const std::int64_t every = o_.log_every > 0 ? o_.log_every : 1;
    if (r.step % every == 0 || r.step == total_) *o_.log << format_step(r, total_) << std::endl;
    return;
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run_).count();
  const double eta = secs / double(r.step - first_step_) * double(total_ - r.step);
  const auto ev = std::isnan(last_eval_) ? std::string("-") : fmt::format("{:.4f}", last_eval_);
  *o_.log << fmt::format("\r\033[Kstep {}/{}  epoch {}  loss {:.4f}  eval {}  {:.0f} tok/s  ETA {}  mem {}", r.step,
                         total_, r.epoch, r.loss, ev, r.tokens_per_s, loop_detail::duration_text(eta),
                         loop_detail::bytes_text(r.memory_bytes))
          << std::flush;
}
STATICGRAD_LOOP_INLINE int training_loop::stop_requested() {
  double sig = loop_detail::stop_signal().load();
  if (comm_) comm_->all_reduce_host({&sig, 1}, reduce_op::max, "the stop flag");
  return static_cast<int>(sig);
}
STATICGRAD_LOOP_INLINE step_record training_loop::step() {
  const auto t0 = std::chrono::steady_clock::now();
  const std::int64_t s = state_.step + 1;
  std::vector<token_batch> micro;
  std::vector<std::uint64_t> seeds;
  std::int64_t counted = 0, tokens = 0;
  for (std::int64_t m = 0; m < global_micro_batches(); ++m) {
    auto b = next_batch();
    counted += b.counted;
    tokens += b.tokens();
    if (!runs_micro_batch(m, rank(), world())) continue;
    micro.push_back(std::move(b));
    seeds.push_back(mix_seed(mix_seed(o_.seed, std::uint64_t(s)), std::uint64_t(m)));
  }
  step_record rec;
  rec.step = s;
  rec.epoch = state_.epoch + 1;
  rec.lr = sched_.at(std::min(s, total_));
  auto out = b_.train_step({micro, seeds, 1.0 / double(counted), rec.lr, comm_});
  if (comm_) comm_->all_reduce_host({&out.loss_sum, 1}, reduce_op::sum, "the step's loss sum");
  rec.loss = out.loss_sum / double(counted);
  rec.grad_norm = out.grad_norm;
  if (!std::isfinite(rec.loss) || !std::isfinite(rec.grad_norm)) {
    const std::string where = b_.first_non_finite();
    throw error(fmt::format("step {}: the loss is {} and the gradient norm {}; {}. Nothing of this step was saved; "
                            "a lower --lr, a --max-grad-norm, or the data of this step (epoch {}) may be at fault",
                            s, rec.loss, rec.grad_norm,
                            where.empty() ? "every LoRA gradient and value is finite (the forward pass overflowed)"
                                          : "the first non-finite tensor (in backward order) is " + where,
                            rec.epoch),
                {"", "step " + std::to_string(s), {}});
  }
  state_.step = s;
  rec.tokens = tokens;
  rec.counted = counted;
  state_.tokens_total += tokens;
  rec.tokens_total = state_.tokens_total;
  const auto t1 = std::chrono::steady_clock::now();
  rec.tokens_per_s = double(tokens) / std::max(1e-9, std::chrono::duration<double>(t1 - t0).count());
  rec.elapsed_s = state_.elapsed_s + std::chrono::duration<double>(t1 - t_start_).count();
  rec.memory_bytes = b_.memory_bytes();
  return rec;
}
STATICGRAD_LOOP_INLINE io::data_options training_loop::loader_options(std::uint64_t seed, bool shuffle) const {
  io::data_options d;
  d.max_len = std::size_t(o_.max_len);
  d.rows = std::size_t(rows());
  d.layout = io::row_layout::pack;
  d.seed = seed;
  d.shuffle_buffer = shuffle ? o_.shuffle_buffer : 0;
  d.skip_bad_lines = o_.skip_bad_lines;
  d.overflow = o_.drop_long ? io::overflow_policy::drop : io::overflow_policy::truncate;
  d.split_long_text = !o_.truncate_text;
  return d;
}
STATICGRAD_LOOP_INLINE void training_loop::open_loader(std::int64_t epoch) {
  loader_ = std::make_unique<io::data_loader>(files_, tok_, loader_options(mix_seed(o_.seed, std::uint64_t(epoch)), true));
  state_.epoch = epoch;
  state_.epoch_batches = 0;
}
STATICGRAD_LOOP_INLINE token_batch training_loop::next_batch() {
  io::batch b;
  bool fresh = false;
  for (;;) {
    if (loader_->next(b)) {
      ++state_.epoch_batches;
      auto p = pack_loader_batch(b, b_.config().vocab_size, files_.front());
      if (p.counted > 0) return p;
      continue;  // cannot happen with the loader's filtering; kept as a guard
    }
    require(!fresh, "the training data has no example with a token to train on", {files_.front(), "", {}});
    open_loader(state_.epoch + 1);
    fresh = true;
  }
}
STATICGRAD_LOOP_INLINE std::int64_t training_loop::steps_for_epochs() {
  io::data_loader l(files_, tok_, loader_options(mix_seed(o_.seed, 0), true));
  io::batch b;
  std::int64_t n = 0;
  while (l.next(b)) n += pack_loader_batch(b, b_.config().vocab_size, files_.front()).counted > 0;
  require(n > 0, "the training data has no example with a token to train on", {files_.front(), "", {}});
  return std::max<std::int64_t>(1, std::int64_t(std::ceil(o_.epochs * double(n) / double(global_micro_batches()))));
}
STATICGRAD_LOOP_INLINE void training_loop::load_eval_data() {
  if (o_.eval_files.empty()) return;
  io::data_loader l(o_.eval_files, tok_, loader_options(0, false));
  io::batch b;
  std::int64_t counted = 0;
  while (l.next(b)) {
    auto p = pack_loader_batch(b, b_.config().vocab_size, o_.eval_files.front());
    counted += p.counted;
    if (p.counted > 0) eval_.push_back(std::move(p));
  }
  require(counted > 0, "the evaluation data has no token to evaluate", {o_.eval_files.front(), "--eval-data", {}});
}
STATICGRAD_LOOP_INLINE double training_loop::evaluate(std::int64_t step) {
  double sum = 0;
  std::int64_t counted = 0;
  for (std::size_t i = 0; i < eval_.size(); ++i) {
    if (runs_micro_batch(std::int64_t(i), rank(), world())) sum += b_.eval_loss_sum(eval_[i]);
    counted += eval_[i].counted;
  }
  if (comm_) comm_->all_reduce_host({&sum, 1}, reduce_op::sum, "the eval loss sum");
  last_eval_ = sum / double(counted);
  require(std::isfinite(last_eval_), "the eval loss is not finite at step " + std::to_string(step),
          {o_.eval_files.front(), "--eval-data", {}});
  if (o_.log && !live_)
    *o_.log << fmt::format("eval step {}/{}  eval_loss {:.4f}  tokens {}", step, total_, last_eval_, counted) << std::endl;
  return last_eval_;
}
}  // namespace staticgrad::train
