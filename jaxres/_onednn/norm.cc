// XLA FFI handlers for batch normalization in training, through oneDNN.
//
// Batch normalization over N, H, W of NHWC activations (float32 or bfloat16; scale, shift, mean and
// variance float32), as flax's nn.BatchNorm computes it in training (batch mean, biased batch variance,
// y = (x - mean) / sqrt(var + eps) * scale + shift), optionally followed by a ReLU (oneDNN's
// fuse_norm_relu) or by the addition of a tensor of x's shape and a ReLU (a residual block's end: oneDNN's
// CPU batch norm has no fuse_norm_add_relu, so a binary addition with a ReLU post-op follows, in place). Backward: the ReLU's gradient from the output (oneDNN's eltwise relu_use_dst_for_bwd), then
// the gradients of x, scale and shift. Glue only, like conv.cc; Python side: jaxres/onednn.py.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>

#include "common.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using jaxres_onednn::DataType;
using jaxres_onednn::Engine;
using jaxres_onednn::FloatType;
using jaxres_onednn::Lock;
using Tag = memory::format_tag;
using Flags = dnnl::normalization_flags;

namespace {

// dtype, N, C, H, W, epsilon's bits, and the fused operation after the normalization (0 none, 1 ReLU,
// 2 addition then ReLU)
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, uint32_t, int64_t>;
enum Fused : int64_t { kNone = 0, kRelu = 1, kAddRelu = 2 };

struct Plan {
  dnnl::batch_normalization_forward forward;
  dnnl::binary add_relu;        // y = max(y + s, 0), in place (kAddRelu)
  dnnl::batch_normalization_backward backward;
  memory::desc data, stats;     // x, y, dy, dx (NHWC); scale, shift, mean, variance (C, float32)
  memory workspace;             // what the fused ReLU writes in training; jaxres takes the mask from y instead
  memory forward_scratch, backward_scratch;
};

struct ReluPlan {
  dnnl::eltwise_backward backward;
  memory::desc data;
  memory scratch;
};

std::map<Key, std::unique_ptr<Plan>>& Cache() {
  static std::map<Key, std::unique_ptr<Plan>> cache;
  return cache;
}

// dz = dy where y > 0, else 0, for NHWC activations of the given shape.
ReluPlan* GetReluPlan(memory::data_type dt, int64_t n, int64_t c, int64_t h, int64_t w) {
  static std::map<std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>, std::unique_ptr<ReluPlan>> cache;
  auto key = std::make_tuple(static_cast<int64_t>(dt), n, c, h, w);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  auto& engine = Engine();
  auto plan = std::make_unique<ReluPlan>();
  plan->data = memory::desc({n, c, h, w}, dt, Tag::nhwc);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::eltwise_forward::primitive_desc fwd(engine, dnnl::prop_kind::forward_training,
                                            dnnl::algorithm::eltwise_relu_use_dst_for_bwd, plan->data, plan->data,
                                            0.f, 0.f, attr);
  dnnl::eltwise_backward::primitive_desc bwd(engine, dnnl::algorithm::eltwise_relu_use_dst_for_bwd, plan->data,
                                             plan->data, plan->data, 0.f, 0.f, fwd, attr);
  plan->backward = dnnl::eltwise_backward(bwd);
  plan->scratch = memory(bwd.scratchpad_desc(), engine);
  ReluPlan* raw = plan.get();
  cache.emplace(key, std::move(plan));
  return raw;
}

void ReluGrad(ReluPlan* plan, dnnl::stream& stream, void* y, void* dy, void* dz) {
  auto& engine = Engine();
  plan->backward.execute(stream, {{DNNL_ARG_DST, memory(plan->data, engine, y)},
                                  {DNNL_ARG_DIFF_DST, memory(plan->data, engine, dy)},
                                  {DNNL_ARG_DIFF_SRC, memory(plan->data, engine, dz)},
                                  {DNNL_ARG_SCRATCHPAD, plan->scratch}});
}

Flags FlagsOf(int64_t fused) {
  Flags flags = Flags::use_scale | Flags::use_shift;
  return fused == kRelu ? flags | Flags::fuse_norm_relu : flags;
}

Plan* GetPlan(memory::data_type dt, int64_t n, int64_t c, int64_t h, int64_t w, float eps, int64_t fused) {
  uint32_t eps_bits;
  std::memcpy(&eps_bits, &eps, sizeof eps_bits);
  Key key{static_cast<int64_t>(dt), n, c, h, w, eps_bits, fused};
  auto& cache = Cache();
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();

  auto& engine = Engine();
  auto plan = std::make_unique<Plan>();
  plan->data = memory::desc({n, c, h, w}, dt, Tag::nhwc);
  plan->stats = memory::desc({c}, memory::data_type::f32, Tag::a);
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::batch_normalization_forward::primitive_desc fwd(engine, dnnl::prop_kind::forward_training, plan->data,
                                                        plan->data, eps, FlagsOf(fused), attr);
  // Backward without the fused ReLU: the handler applies the ReLU's gradient first, from y.
  dnnl::batch_normalization_forward::primitive_desc hint(engine, dnnl::prop_kind::forward_training, plan->data,
                                                         plan->data, eps, FlagsOf(kNone), attr);
  dnnl::batch_normalization_backward::primitive_desc bwd(engine, dnnl::prop_kind::backward, plan->data, plan->data,
                                                         plan->data, eps, FlagsOf(kNone), hint, attr);
  plan->forward = dnnl::batch_normalization_forward(fwd);
  plan->backward = dnnl::batch_normalization_backward(bwd);
  if (fused == kRelu) plan->workspace = memory(fwd.workspace_desc(), engine);
  if (fused == kAddRelu) {
    dnnl::post_ops relu;
    relu.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    dnnl::primitive_attr add_attr;
    add_attr.set_post_ops(relu);
    plan->add_relu = dnnl::binary(dnnl::binary::primitive_desc(engine, dnnl::algorithm::binary_add, plan->data,
                                                               plan->data, plan->data, add_attr));
  }
  plan->forward_scratch = memory(fwd.scratchpad_desc(), engine);
  plan->backward_scratch = memory(bwd.scratchpad_desc(), engine);
  Plan* raw = plan.get();
  cache.emplace(key, std::move(plan));
  return raw;
}

// The activations' N, C, H, W from an NHWC buffer, checked against the per-channel buffers.
ffi::Error Shape(ffi::AnyBuffer x, std::initializer_list<ffi::AnyBuffer> per_channel, int64_t* dims) {
  auto d = x.dimensions();
  if (d.size() != 4 || !FloatType(x.element_type())) {
    return ffi::Error::InvalidArgument("jaxres oneDNN batch norm: rank-4 NHWC float32 or bfloat16 activations");
  }
  dims[0] = d[0], dims[1] = d[3], dims[2] = d[1], dims[3] = d[2];
  for (const auto& b : per_channel) {
    if (b.element_type() != ffi::DataType::F32 || b.dimensions().size() != 1 || b.dimensions()[0] != dims[1]) {
      return ffi::Error::InvalidArgument("jaxres oneDNN batch norm: float32 scale, shift and statistics per channel");
    }
  }
  return ffi::Error::Success();
}

ffi::Error SameAs(ffi::AnyBuffer x, ffi::AnyBuffer other) {
  auto a = x.dimensions(), b = other.dimensions();
  if (other.element_type() != x.element_type() || !std::equal(a.begin(), a.end(), b.begin(), b.end())) {
    return ffi::Error::InvalidArgument("jaxres oneDNN batch norm: activations and their gradients of one shape and type");
  }
  return ffi::Error::Success();
}

// y = norm(x) [+ s], [ReLU]; the batch mean and (biased) variance.
ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift, void* s, ffi::AnyBuffer y,
                   ffi::AnyBuffer mean, ffi::AnyBuffer var, float eps, int64_t fused) {
  int64_t d[4];
  if (auto e = Shape(x, {scale, shift, mean, var}, d); e.failure()) return e;
  if (auto e = SameAs(x, y); e.failure()) return e;
  try {
    std::lock_guard<std::mutex> guard(Lock());
    auto& engine = Engine();
    Plan* plan = GetPlan(DataType(x.element_type()), d[0], d[1], d[2], d[3], eps, fused);
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, memory(plan->data, engine, x.untyped_data())},
        {DNNL_ARG_DST, memory(plan->data, engine, y.untyped_data())},
        {DNNL_ARG_SCALE, memory(plan->stats, engine, scale.untyped_data())},
        {DNNL_ARG_SHIFT, memory(plan->stats, engine, shift.untyped_data())},
        {DNNL_ARG_MEAN, memory(plan->stats, engine, mean.untyped_data())},
        {DNNL_ARG_VARIANCE, memory(plan->stats, engine, var.untyped_data())},
        {DNNL_ARG_SCRATCHPAD, plan->forward_scratch}};
    if (fused == kRelu) args.emplace(DNNL_ARG_WORKSPACE, plan->workspace);
    dnnl::stream& stream = jaxres_onednn::Stream();
    plan->forward.execute(stream, args);
    if (fused == kAddRelu) {
      memory out(plan->data, engine, y.untyped_data());
      plan->add_relu.execute(stream, {{DNNL_ARG_SRC_0, out}, {DNNL_ARG_SRC_1, memory(plan->data, engine, s)},
                                      {DNNL_ARG_DST, out}});
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error NormForward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift, ffi::Result<ffi::AnyBuffer> y,
                       ffi::Result<ffi::AnyBuffer> mean, ffi::Result<ffi::AnyBuffer> var, float eps, int64_t relu) {
  return Forward(x, scale, shift, nullptr, *y, *mean, *var, eps, relu ? kRelu : kNone);
}

ffi::Error NormAddForward(ffi::AnyBuffer x, ffi::AnyBuffer scale, ffi::AnyBuffer shift, ffi::AnyBuffer s,
                          ffi::Result<ffi::AnyBuffer> y, ffi::Result<ffi::AnyBuffer> mean,
                          ffi::Result<ffi::AnyBuffer> var, float eps) {
  if (auto e = SameAs(x, s); e.failure()) return e;
  return Forward(x, scale, shift, s.untyped_data(), *y, *mean, *var, eps, kAddRelu);
}

// dx, dscale, dshift of the normalization, given dy; with y (a ReLU followed, or an addition and a ReLU)
// first dz = dy where y > 0, else 0, written to dz: also the gradient of the tensor added before the ReLU.
ffi::Error Backward(ffi::AnyBuffer x, ffi::AnyBuffer* y, ffi::AnyBuffer dy, ffi::AnyBuffer scale, ffi::AnyBuffer mean,
                    ffi::AnyBuffer var, ffi::AnyBuffer dx, ffi::AnyBuffer dscale, ffi::AnyBuffer dshift,
                    ffi::AnyBuffer* dz, float eps) {
  int64_t d[4];
  if (auto e = Shape(x, {scale, mean, var, dscale, dshift}, d); e.failure()) return e;
  for (ffi::AnyBuffer* other : {&dy, &dx, y, dz}) {
    if (other == nullptr) continue;
    if (auto e = SameAs(x, *other); e.failure()) return e;
  }
  try {
    std::lock_guard<std::mutex> guard(Lock());
    auto& engine = Engine();
    Plan* plan = GetPlan(DataType(x.element_type()), d[0], d[1], d[2], d[3], eps, kNone);
    dnnl::stream& stream = jaxres_onednn::Stream();
    void* grad = dy.untyped_data();
    if (y != nullptr) {
      ReluGrad(GetReluPlan(DataType(x.element_type()), d[0], d[1], d[2], d[3]), stream, y->untyped_data(), grad,
               dz->untyped_data());
      grad = dz->untyped_data();
    }
    plan->backward.execute(stream, {{DNNL_ARG_SRC, memory(plan->data, engine, x.untyped_data())},
                                    {DNNL_ARG_DIFF_DST, memory(plan->data, engine, grad)},
                                    {DNNL_ARG_SCALE, memory(plan->stats, engine, scale.untyped_data())},
                                    {DNNL_ARG_MEAN, memory(plan->stats, engine, mean.untyped_data())},
                                    {DNNL_ARG_VARIANCE, memory(plan->stats, engine, var.untyped_data())},
                                    {DNNL_ARG_DIFF_SRC, memory(plan->data, engine, dx.untyped_data())},
                                    {DNNL_ARG_DIFF_SCALE, memory(plan->stats, engine, dscale.untyped_data())},
                                    {DNNL_ARG_DIFF_SHIFT, memory(plan->stats, engine, dshift.untyped_data())},
                                    {DNNL_ARG_SCRATCHPAD, plan->backward_scratch}});
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error NormBackward(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::AnyBuffer scale, ffi::AnyBuffer mean,
                        ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> dx, ffi::Result<ffi::AnyBuffer> dscale,
                        ffi::Result<ffi::AnyBuffer> dshift, float eps) {
  return Backward(x, nullptr, dy, scale, mean, var, *dx, *dscale, *dshift, nullptr, eps);
}

ffi::Error NormReluBackward(ffi::AnyBuffer x, ffi::AnyBuffer y, ffi::AnyBuffer dy, ffi::AnyBuffer scale,
                            ffi::AnyBuffer mean, ffi::AnyBuffer var, ffi::Result<ffi::AnyBuffer> dx,
                            ffi::Result<ffi::AnyBuffer> dscale, ffi::Result<ffi::AnyBuffer> dshift,
                            ffi::Result<ffi::AnyBuffer> dz, float eps) {
  ffi::AnyBuffer dz_buffer = *dz;
  return Backward(x, &y, dy, scale, mean, var, *dx, *dscale, *dshift, &dz_buffer, eps);
}

}  // namespace

#pragma GCC visibility push(default)
// x, scale, shift -> y, mean, variance
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_norm_forward, NormForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps")
                                  .Attr<int64_t>("relu"));
// x, scale, shift, s -> max(norm(x) + s, 0), mean, variance
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_norm_add_forward, NormAddForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
// x, dy, scale, mean, variance -> dx, dscale, dshift
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_norm_backward, NormBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
// x, y, dy, scale, mean, variance -> dx, dscale, dshift, dz (the ReLU's gradient first, from y)
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_norm_relu_backward, NormReluBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<float>("eps"));
#pragma GCC visibility pop
