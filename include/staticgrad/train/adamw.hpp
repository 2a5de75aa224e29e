#pragma once
// AdamW on the LoRA parameters, with torch.optim.AdamW's semantics (default
// flags: amsgrad=False, maximize=False), step by step:
//   t += 1
//   p  *= 1 - lr * weight_decay                      (decoupled decay, before the moments)
//   m   = beta1 * m + (1 - beta1) * g
//   v   = beta2 * v + (1 - beta2) * g^2
//   p  -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// and optional global gradient-norm clipping before the step, as
// torch.nn.utils.clip_grad_norm_: norm = ||all grads||_2,
// g *= min(1, max_norm / (norm + 1e-6)).
//
// Invariants:
//  - parameters, gradients and state (m, v) are f32 and share one layout: the
//    io::lora_adapter of the targeted modules (A [r, in], B [out, r] per layer);
//  - the bias corrections are computed in double (torch computes them as
//    Python floats); the elementwise update is f32 like torch's CPU kernel;
//  - step() does not zero the gradients (the trainer does; accumulation sums).
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "staticgrad/core/error.hpp"
#include "staticgrad/io/peft_adapter.hpp"

namespace staticgrad::train {

struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // torch.optim.AdamW's default
  double max_grad_norm = 0;    // > 0: clip the global gradient norm to this
};

// Every (parameter, gradient) f32 span pair of an adapter and its gradients,
// in a fixed order (layer, target, A then B).
inline void for_each_lora_tensor(io::lora_adapter& params, io::lora_adapter& grads,
                                 const std::function<void(std::span<float>, std::span<float>)>& f) {
  require(params.num_layers == grads.num_layers, "the gradients and the parameters have different layer counts");
  for (std::int64_t l = 0; l < params.num_layers; ++l)
    for (auto t : params.config.target_modules) {
      auto& p = params.at(l, t);
      auto& g = grads.at(l, t);
      require(p.a.size() == g.a.size() && p.b.size() == g.b.size(),
              "gradient shapes differ from the parameters", {"", io::lora_key(l, t, 'A'), {}});
      f(p.a, g.a);
      f(p.b, g.b);
    }
}

// Global L2 norm of all gradients (accumulated in double).
inline double grad_norm(io::lora_adapter& params, io::lora_adapter& grads) {
  double s = 0;
  for_each_lora_tensor(params, grads, [&](std::span<float>, std::span<float> g) {
    for (float x : g) s += double(x) * double(x);
  });
  return std::sqrt(s);
}

// Scales the gradients so their global norm is at most max_norm (torch's
// clip_grad_norm_ formula, including its 1e-6). Returns the norm before.
inline double clip_grad_norm(io::lora_adapter& params, io::lora_adapter& grads, double max_norm) {
  const double norm = grad_norm(params, grads);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for_each_lora_tensor(params, grads, [&](std::span<float>, std::span<float> g) {
      for (float& x : g) x *= c;
    });
  }
  return norm;
}

// The optimizer of one flat list of f32 tensors. Works on raw spans so that
// the test can drive it with any tensors; adamw_lora below binds an adapter.
class adamw {
 public:
  explicit adamw(adamw_options o) : o_(o) {
    require(o.lr >= 0 && std::isfinite(o.lr), "lr must be a non-negative number", {"", "lr", {}});
    require(o.beta1 >= 0 && o.beta1 < 1, "beta1 must be in [0, 1)", {"", "beta1", {}});
    require(o.beta2 >= 0 && o.beta2 < 1, "beta2 must be in [0, 1)", {"", "beta2", {}});
    require(o.eps >= 0, "eps must be non-negative", {"", "eps", {}});
    require(o.weight_decay >= 0, "weight_decay must be non-negative", {"", "weight_decay", {}});
  }

  const adamw_options& options() const { return o_; }
  std::int64_t steps() const { return t_; }
  // The state, for checkpoints: t and the moments of tensor i (empty before the first step).
  const std::vector<std::vector<float>>& exp_avg() const { return m_; }
  const std::vector<std::vector<float>>& exp_avg_sq() const { return v_; }
  // Restores a saved state (resume): the next step() continues from update t + 1.
  void restore(std::int64_t t, std::vector<std::vector<float>> m, std::vector<std::vector<float>> v) {
    require(t >= 0 && m.size() == v.size(), "adamw: inconsistent saved state");
    t_ = t, m_ = std::move(m), v_ = std::move(v);
  }

  // One update of tensors[i] with grads[i] at learning rate `lr` (the
  // schedule's value for this step). Tensor i keeps its state slot i.
  void step(std::span<const std::span<float>> params, std::span<const std::span<float>> grads, double lr) {
    require(params.size() == grads.size(), "adamw: parameter and gradient lists differ in length");
    if (m_.empty()) {
      m_.resize(params.size());
      v_.resize(params.size());
      for (std::size_t i = 0; i < params.size(); ++i) {
        m_[i].assign(params[i].size(), 0.f);
        v_[i].assign(params[i].size(), 0.f);
      }
    }
    require(m_.size() == params.size(), "adamw: the parameter list changed between steps");
    ++t_;
    const double bc1 = 1.0 - std::pow(o_.beta1, double(t_));
    const double bc2_sqrt = std::sqrt(1.0 - std::pow(o_.beta2, double(t_)));
    const float decay = static_cast<float>(1.0 - lr * o_.weight_decay);
    const float step_size = static_cast<float>(lr / bc1);
    const float b1 = float(o_.beta1), b2 = float(o_.beta2), eps = float(o_.eps), bc2s = float(bc2_sqrt);
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto p = params[i];
      auto g = grads[i];
      require(p.size() == g.size() && p.size() == m_[i].size(), "adamw: a tensor changed size between steps");
      float* m = m_[i].data();
      float* v = v_[i].data();
      for (std::size_t k = 0; k < p.size(); ++k) {
        p[k] *= decay;
        m[k] = b1 * m[k] + (1.f - b1) * g[k];
        v[k] = b2 * v[k] + (1.f - b2) * g[k] * g[k];
        p[k] -= step_size * m[k] / (std::sqrt(v[k]) / bc2s + eps);
      }
    }
  }

 private:
  adamw_options o_;
  std::int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

// AdamW over an adapter's LoRA matrices; clips first if max_grad_norm > 0.
// Returns the global gradient norm before clipping (always computed: it is
// cheap and worth logging).
class adamw_lora {
 public:
  explicit adamw_lora(adamw_options o) : opt_(o) {}
  double step(io::lora_adapter& params, io::lora_adapter& grads, double lr) {
    const double norm = opt_.options().max_grad_norm > 0 ? clip_grad_norm(params, grads, opt_.options().max_grad_norm)
                                                         : grad_norm(params, grads);
    std::vector<std::span<float>> ps, gs;
    for_each_lora_tensor(params, grads, [&](std::span<float> p, std::span<float> g) {
      ps.push_back(p);
      gs.push_back(g);
    });
    opt_.step(ps, gs, lr);
    return norm;
  }
  const adamw& optimizer() const { return opt_; }
  adamw& optimizer() { return opt_; }

 private:
  adamw opt_;
};

}  // namespace staticgrad::train
