// XLA FFI handlers that run 2-D convolutions through oneDNN, the library PyTorch and TensorFlow use on
// CPUs: forward, gradient with respect to the input, gradient with respect to the kernel.
//
// Glue only: each handler describes the convolution to oneDNN (activations in plain NHWC, the kernel
// in the layout oneDNN chooses, reordered from or to HWIO), builds the primitive once per shape and
// caches it, and executes it on the buffers XLA hands over. Python side: jaxres/onednn.py.
#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "common.h"

namespace ffi = xla::ffi;
using jaxres_onednn::DataType;
using jaxres_onednn::Engine;
using jaxres_onednn::Lock;
using dnnl::memory;
using Tag = memory::format_tag;

namespace {

enum Pass : int64_t { kForward = 0, kInputGrad = 1, kKernelGrad = 2 };

// Everything that decides a primitive: pass, dtype, NHWC input, HWIO kernel, output, strides, padding,
// whether a bias is added (forward) or its gradient computed (kernel gradient), whether a tensor of the
// output's shape is added (forward: a residual block's shortcut), whether ReLU follows, and the OpenMP
// threads it is planned for (0: all of them; fewer where two primitives run at once, Backward).
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, bool, bool,
                       int>;

struct Plan {
  dnnl::primitive conv;
  memory::desc src, weights, dst;    // src/dst: the activations (NHWC); weights: the primitive's layout
  memory::desc bias;                 // the bias (forward) or its gradient (kernel gradient), if any
  memory::desc user_weights;         // HWIO, as JAX holds the kernel
  bool reorder = false;              // the primitive's kernel layout is not HWIO
  dnnl::reorder weights_reorder;     // HWIO -> chosen (forward, input grad) or chosen -> HWIO (kernel grad)
  memory weights_buffer;             // the kernel in the primitive's layout, allocated once
  memory scratchpad;                 // the primitive's workspace, allocated once (not per call: large
                                     // fresh allocations cost page faults every call)
};

std::map<Key, std::unique_ptr<Plan>>& Cache() {
  static std::map<Key, std::unique_ptr<Plan>> cache;
  return cache;
}

struct Geometry {
  int64_t n, h, w, c, kh, kw, o, oh, ow, sh, sw, pt, pb, pl, pr;
};

// oneDNN plans a primitive's work for the OpenMP threads available when it is created.
struct PlanThreads {
  int saved = omp_get_max_threads(), threads;
  explicit PlanThreads(int t) : threads(t) { if (threads > 0) omp_set_num_threads(threads); }
  ~PlanThreads() { if (threads > 0) omp_set_num_threads(saved); }
};

Plan* GetPlan(Pass pass, memory::data_type dt, const Geometry& g, bool bias, bool add, bool relu,
              int threads = 0) {
  Key key{pass, static_cast<int64_t>(dt), g.n, g.h, g.w, g.c, g.kh, g.kw, g.o, g.oh, g.ow,
          g.sh, g.sw, g.pt, g.pb, g.pl, g.pr, bias, add, relu, threads};
  auto& cache = Cache();
  auto it = cache.find(key);
  if (it != cache.end()) return it->second.get();
  PlanThreads planned_for(threads);

  auto& engine = Engine();
  memory::desc src({g.n, g.c, g.h, g.w}, dt, Tag::nhwc);
  memory::desc dst({g.n, g.o, g.oh, g.ow}, dt, Tag::nhwc);
  memory::desc any_weights({g.o, g.c, g.kh, g.kw}, dt, Tag::any);
  memory::desc user_weights({g.o, g.c, g.kh, g.kw}, dt, Tag::hwio);
  memory::dims strides{g.sh, g.sw}, pad_l{g.pt, g.pl}, pad_r{g.pb, g.pr};
  memory::desc bias_desc = bias ? memory::desc({g.o}, dt, Tag::a) : memory::desc();
  auto algo = dnnl::algorithm::convolution_direct;
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  dnnl::primitive_attr fwd_attr = attr;
  if (add || relu) {  // y = max(conv(x, w) + b + s, 0) in the primitive's own output loop
    dnnl::post_ops ops;
    if (add) ops.append_binary(dnnl::algorithm::binary_add, dst);
    if (relu) ops.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
    fwd_attr.set_post_ops(ops);
  }
  dnnl::convolution_forward::primitive_desc fwd(engine, dnnl::prop_kind::forward_training, algo, src,
                                                any_weights, bias_desc, dst, strides, pad_l, pad_r, fwd_attr);
  auto plan = std::make_unique<Plan>();
  plan->bias = bias_desc;
  plan->src = src;
  plan->dst = dst;
  plan->user_weights = user_weights;
  memory::desc scratch;
  if (pass == kForward) {
    plan->weights = fwd.weights_desc();
    scratch = fwd.scratchpad_desc();
    plan->conv = dnnl::convolution_forward(fwd);
  } else if (pass == kInputGrad) {
    dnnl::convolution_backward_data::primitive_desc bwd(engine, algo, src, any_weights, dst, strides, pad_l,
                                                        pad_r, fwd, attr);
    plan->weights = bwd.weights_desc();
    scratch = bwd.scratchpad_desc();
    plan->conv = dnnl::convolution_backward_data(bwd);
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(engine, algo, src, any_weights, bias_desc, dst, strides,
                                                           pad_l, pad_r, fwd, attr);
    plan->weights = bwd.diff_weights_desc();
    scratch = bwd.scratchpad_desc();
    plan->conv = dnnl::convolution_backward_weights(bwd);
  }
  plan->scratchpad = memory(scratch, engine);
  plan->reorder = plan->weights != user_weights;
  if (plan->reorder) {
    plan->weights_buffer = memory(plan->weights, engine);
    plan->weights_reorder = pass == kKernelGrad
                                ? dnnl::reorder(dnnl::reorder::primitive_desc(engine, plan->weights, engine,
                                                                              user_weights))
                                : dnnl::reorder(dnnl::reorder::primitive_desc(engine, user_weights, engine,
                                                                              plan->weights));
  }
  Plan* raw = plan.get();
  cache.emplace(key, std::move(plan));
  return raw;
}

ffi::Error CheckTypes(ffi::DataType a, ffi::DataType b, ffi::DataType out) {
  if ((a != ffi::DataType::F32 && a != ffi::DataType::BF16) || b != a || out != a) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: float32 or bfloat16 operands of one type");
  }
  return ffi::Error::Success();
}

// The forward operands with a bias: types as CheckTypes, one bias entry per output channel of x's type.
ffi::Error CheckBias(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::AnyBuffer y) {
  if (auto e = CheckTypes(x.element_type(), w.element_type(), y.element_type()); e.failure()) return e;
  if (b.element_type() != x.element_type() || b.dimensions().size() != 1 ||
      (w.dimensions().size() == 4 && b.dimensions()[0] != w.dimensions()[3])) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: one bias per output channel, of the input's type");
  }
  return ffi::Error::Success();
}

// x: NHWC input, w: HWIO kernel, y: NHWC output. Which of them are inputs depends on the pass.
// b: the bias (forward) or its gradient (kernel gradient), or nullptr; s: forward only, a tensor of y's
// shape added before the ReLU, or nullptr. Runs the plan on its own stream.
void Exec(Plan* plan, Pass pass, void* x, void* w, void* y, void* b, void* s) {
  auto& engine = Engine();
  dnnl::stream& stream = jaxres_onednn::Stream();
  memory src(plan->src, engine, x);
  memory dst(plan->dst, engine, y);
  memory user_w(plan->user_weights, engine, w);
  memory prim_w = plan->reorder ? plan->weights_buffer : user_w;
  auto& scratch = plan->scratchpad;
  if (pass == kForward) {
    if (plan->reorder) plan->weights_reorder.execute(stream, user_w, prim_w);
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w}, {DNNL_ARG_DST, dst},
                                         {DNNL_ARG_SCRATCHPAD, scratch}};
    if (b != nullptr) args.emplace(DNNL_ARG_BIAS, memory(plan->bias, engine, b));
    if (s != nullptr) args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1, memory(plan->dst, engine, s));
    plan->conv.execute(stream, args);
  } else if (pass == kInputGrad) {  // here src is dx (the result) and dst is dy
    if (plan->reorder) plan->weights_reorder.execute(stream, user_w, prim_w);
    plan->conv.execute(stream, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, prim_w}, {DNNL_ARG_DIFF_DST, dst},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
  } else {  // here w is dw (the result)
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, prim_w},
                                         {DNNL_ARG_DIFF_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}};
    if (b != nullptr) args.emplace(DNNL_ARG_DIFF_BIAS, memory(plan->bias, engine, b));
    plan->conv.execute(stream, args);
    if (plan->reorder) plan->weights_reorder.execute(stream, prim_w, user_w);
  }
  stream.wait();
}

// The convolution's geometry from its NHWC input x, HWIO kernel w and NHWC output y, or an error.
ffi::Error GetGeometry(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer y, int64_t sh, int64_t sw, int64_t pt,
                       int64_t pb, int64_t pl, int64_t pr, Geometry* g) {
  auto xd = x.dimensions(), wd = w.dimensions(), yd = y.dimensions();
  if (xd.size() != 4 || wd.size() != 4 || yd.size() != 4) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: rank-4 NHWC activations and HWIO kernel");
  }
  *g = Geometry{xd[0], xd[1], xd[2], xd[3], wd[0], wd[1], wd[3], yd[1], yd[2], sh, sw, pt, pb, pl, pr};
  if (wd[2] != g->c || yd[0] != g->n || yd[3] != g->o) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: operand shapes do not agree");
  }
  return ffi::Error::Success();
}

// One pass; x, w, y, b, s as in Exec.
ffi::Error Run(Pass pass, ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer y, void* b, void* s, bool relu,
               int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g;
  if (auto e = GetGeometry(x, w, y, sh, sw, pt, pb, pl, pr, &g); e.failure()) return e;
  try {
    std::lock_guard<std::mutex> guard(Lock());
    Plan* plan = GetPlan(pass, DataType(x.element_type()), g, b != nullptr, s != nullptr, relu);
    Exec(plan, pass, x.untyped_data(), w.untyped_data(), y.untyped_data(), b, s);
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

// Both gradients of one convolution, dx and dw (and db where db is not nullptr). With exactly two OpenMP
// threads, at the same time: two primitives planned for one thread each, in two OpenMP sections. Otherwise
// one after the other on all threads (oneDNN's OpenMP kernels give wrong results in nested teams, so
// more threads cannot be split this way).
// Whether RunBackward runs the two gradients at the same time (the calling thread's OpenMP settings).
bool GradsAtOnce() { return jaxres_onednn::OpenMPRuntime() && omp_get_max_threads() == 2 && !omp_in_parallel(); }

ffi::Error RunBackward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::AnyBuffer dx, ffi::AnyBuffer dw,
                       void* db, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  Geometry g;
  if (auto e = GetGeometry(x, w, dy, sh, sw, pt, pb, pl, pr, &g); e.failure()) return e;
  auto xd = x.dimensions(), dxd = dx.dimensions(), wd = w.dimensions(), dwd = dw.dimensions();
  if (!std::equal(xd.begin(), xd.end(), dxd.begin(), dxd.end()) ||
      !std::equal(wd.begin(), wd.end(), dwd.begin(), dwd.end())) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: gradients of the operands' shapes");
  }
  std::string errors[2];
  try {
    std::lock_guard<std::mutex> guard(Lock());
    auto dt = DataType(x.element_type());
    bool at_once = GradsAtOnce();
    Plan* data = GetPlan(kInputGrad, dt, g, false, false, false, at_once ? 1 : 0);
    Plan* weights = GetPlan(kKernelGrad, dt, g, db != nullptr, false, false, at_once ? 1 : 0);
#pragma omp parallel sections num_threads(at_once ? 2 : 1)
    {
#pragma omp section
      try {
        Exec(data, kInputGrad, dx.untyped_data(), w.untyped_data(), dy.untyped_data(), nullptr, nullptr);
      } catch (const dnnl::error& e) {
        errors[0] = e.what();
      }
#pragma omp section
      try {
        Exec(weights, kKernelGrad, x.untyped_data(), dw.untyped_data(), dy.untyped_data(), db, nullptr);
      } catch (const dnnl::error& e) {
        errors[1] = e.what();
      }
    }
  } catch (const dnnl::error& e) {
    errors[0] = e.what();
  }
  for (auto& e : errors) {
    if (!e.empty()) return ffi::Error::Internal("oneDNN: " + e);
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw,
                   int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (auto e = CheckTypes(x.element_type(), w.element_type(), y->element_type()); e.failure()) return e;
  return Run(kForward, x, w, *y, nullptr, nullptr, false, sh, sw, pt, pb, pl, pr);
}

ffi::Error BiasForward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> y,
                       int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t relu) {
  if (auto e = CheckBias(x, w, b, *y); e.failure()) return e;
  return Run(kForward, x, w, *y, b.untyped_data(), nullptr, relu != 0, sh, sw, pt, pb, pl, pr);
}

ffi::Error BiasAddForward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer b, ffi::AnyBuffer s,
                          ffi::Result<ffi::AnyBuffer> y, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                          int64_t pr, int64_t relu) {
  if (auto e = CheckBias(x, w, b, *y); e.failure()) return e;
  auto sd = s.dimensions(), yd = y->dimensions();
  if (s.element_type() != x.element_type() || sd.size() != yd.size() ||
      !std::equal(sd.begin(), sd.end(), yd.begin())) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: the added tensor has the output's shape and type");
  }
  return Run(kForward, x, w, *y, b.untyped_data(), s.untyped_data(), relu != 0, sh, sw, pt, pb, pl, pr);
}

ffi::Error InputGrad(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, int64_t sh, int64_t sw,
                     int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (auto e = CheckTypes(dy.element_type(), w.element_type(), dx->element_type()); e.failure()) return e;
  return Run(kInputGrad, *dx, w, dy, nullptr, nullptr, false, sh, sw, pt, pb, pl, pr);
}

ffi::Error KernelGrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw, int64_t sh, int64_t sw,
                      int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (auto e = CheckTypes(x.element_type(), dy.element_type(), dw->element_type()); e.failure()) return e;
  return Run(kKernelGrad, x, *dw, dy, nullptr, nullptr, false, sh, sw, pt, pb, pl, pr);
}

ffi::Error KernelBiasGrad(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                          ffi::Result<ffi::AnyBuffer> db, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                          int64_t pr) {
  if (auto e = CheckTypes(x.element_type(), dy.element_type(), dw->element_type()); e.failure()) return e;
  if (db->element_type() != x.element_type() || db->dimensions().size() != 1 ||
      (dy.dimensions().size() == 4 && db->dimensions()[0] != dy.dimensions()[3])) {
    return ffi::Error::InvalidArgument("jaxres oneDNN convolution: one bias per output channel, of the input's type");
  }
  return Run(kKernelGrad, x, *dw, dy, db->untyped_data(), nullptr, false, sh, sw, pt, pb, pl, pr);
}

ffi::Error Backward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
                    ffi::Result<ffi::AnyBuffer> dw, int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl,
                    int64_t pr) {
  if (auto e = CheckTypes(x.element_type(), w.element_type(), dy.element_type()); e.failure()) return e;
  if (auto e = CheckTypes(x.element_type(), dx->element_type(), dw->element_type()); e.failure()) return e;
  return RunBackward(x, w, dy, *dx, *dw, nullptr, sh, sw, pt, pb, pl, pr);
}

ffi::Error BiasBackward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dx,
                        ffi::Result<ffi::AnyBuffer> dw, ffi::Result<ffi::AnyBuffer> db, int64_t sh, int64_t sw,
                        int64_t pt, int64_t pb, int64_t pl, int64_t pr) {
  if (auto e = CheckTypes(x.element_type(), dy.element_type(), dx->element_type()); e.failure()) return e;
  if (auto e = CheckBias(x, *dw, *db, w); e.failure()) return e;
  return RunBackward(x, w, dy, *dx, *dw, db->untyped_data(), sh, sw, pt, pb, pl, pr);
}

}  // namespace

#define JAXRES_CONV_ATTRS(binding) \
  binding.Attr<int64_t>("stride_h")  \
      .Attr<int64_t>("stride_w")     \
      .Attr<int64_t>("pad_top")      \
      .Attr<int64_t>("pad_bottom")   \
      .Attr<int64_t>("pad_left")     \
      .Attr<int64_t>("pad_right")

// The handler symbols must stay visible whatever the compiler's default visibility.
#pragma GCC visibility push(default)
// 1 where oneDNN has all three bfloat16 convolution passes on this CPU, else 0 (then jaxres keeps
// bfloat16 convolutions on XLA): a small primitive of each kind is created and thrown away.
extern "C" int jaxres_onednn_bf16_supported() {
  try {
    Geometry g{2, 8, 8, 16, 3, 3, 16, 8, 8, 1, 1, 1, 1, 1, 1};
    std::lock_guard<std::mutex> guard(Lock());
    for (Pass pass : {kForward, kInputGrad, kKernelGrad}) GetPlan(pass, memory::data_type::bf16, g, false, false, false);
    return 1;
  } catch (const dnnl::error&) {
    return 0;
  }
}

// nullptr where oneDNN's CPU engine and a stream can be made here, else why not (the SYCL build needs a SYCL
// CPU device); called once by the loader before any handler is registered.
extern "C" const char* jaxres_onednn_probe() {
  static std::string failure;
  try {
    jaxres_onednn::Stream();
    return nullptr;
  } catch (const dnnl::error& e) {
    failure = e.what();
    return failure.c_str();
  }
}

// 1 where the joint backward handlers below run the two gradients at the same time, else 0.
extern "C" int jaxres_onednn_grads_at_once() { return GradsAtOnce() ? 1 : 0; }

#define JAXRES_TWO_IN_ONE_OUT ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()
#define JAXRES_THREE_IN ffi::Ffi::Bind().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>().Arg<ffi::AnyBuffer>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_forward, Forward, JAXRES_CONV_ATTRS(JAXRES_TWO_IN_ONE_OUT));
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_input_grad, InputGrad, JAXRES_CONV_ATTRS(JAXRES_TWO_IN_ONE_OUT));
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_kernel_grad, KernelGrad, JAXRES_CONV_ATTRS(JAXRES_TWO_IN_ONE_OUT));
// x, w, b -> max(conv(x, w) + b, 0) (relu=1) or conv(x, w) + b (relu=0)
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_bias_forward, BiasForward,
                              JAXRES_CONV_ATTRS(JAXRES_THREE_IN.Ret<ffi::AnyBuffer>()).Attr<int64_t>("relu"));
// x, w, b, s -> max(conv(x, w) + b + s, 0) (relu=1) or conv(x, w) + b + s (relu=0): a residual block's end
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_bias_add_forward, BiasAddForward,
                              JAXRES_CONV_ATTRS(ffi::Ffi::Bind()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Ret<ffi::AnyBuffer>())
                                  .Attr<int64_t>("relu"));
// x, dy -> dw, db
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_kernel_bias_grad, KernelBiasGrad,
                              JAXRES_CONV_ATTRS(ffi::Ffi::Bind()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Arg<ffi::AnyBuffer>()
                                                    .Ret<ffi::AnyBuffer>()
                                                    .Ret<ffi::AnyBuffer>()));
// x, w, dy -> dx, dw (at the same time on one thread each where OpenMP has two, RunBackward)
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_backward, Backward,
                              JAXRES_CONV_ATTRS(JAXRES_THREE_IN.Ret<ffi::AnyBuffer>().Ret<ffi::AnyBuffer>()));
// x, w, dy -> dx, dw, db
XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxres_onednn_conv_bias_backward, BiasBackward,
                              JAXRES_CONV_ATTRS(JAXRES_THREE_IN.Ret<ffi::AnyBuffer>()
                                                    .Ret<ffi::AnyBuffer>()
                                                    .Ret<ffi::AnyBuffer>()));
#pragma GCC visibility pop
