// XLA FFI handlers that run 2-D convolutions (forward, input gradient, weight gradient)
// with oneDNN, the CPU convolution library PyTorch uses. Layouts are JAX's: activations
// NHWC, weights HWIO (grouped: HWIO with O = groups * O_per_group, group-major).
//
// Each (kind, shapes, strides, padding, dilation, groups) gets its primitive built once
// and cached. Executions are serialised: oneDNN runs each call on all cores through
// OpenMP, and two concurrent calls from XLA's thread pool would oversubscribe them.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum class Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct Geometry {
  int64_t n, h, w, c;           // input NHWC
  int64_t kh, kw, o;            // weight HWIO (C/groups inputs per group)
  int64_t oh, ow;               // output spatial size
  int64_t groups;
  dnnl::memory::dims strides, dilates, pad_l, pad_r;

  auto key(Kind kind) const {
    return std::make_tuple(static_cast<int64_t>(kind), n, h, w, c, kh, kw, o, oh, ow, groups,
                           strides, dilates, pad_l, pad_r);
  }
};

dnnl::memory::desc ActivationDesc(int64_t n, int64_t c, int64_t h, int64_t w) {
  return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32,
                            dnnl::memory::format_tag::nhwc);
}

dnnl::memory::desc UserWeightDesc(const Geometry& g) {
  // HWIO in memory: offset(kh, kw, i, o) = ((kh * KW + kw) * I + i) * O + o.
  const int64_t in_per_group = g.c / g.groups;
  const int64_t o_stride = 1, i_stride = g.o, w_stride = in_per_group * g.o,
                h_stride = g.kw * in_per_group * g.o;
  if (g.groups == 1) {
    return dnnl::memory::desc({g.o, in_per_group, g.kh, g.kw}, dnnl::memory::data_type::f32,
                              dnnl::memory::dims{o_stride, i_stride, h_stride, w_stride});
  }
  const int64_t out_per_group = g.o / g.groups;
  return dnnl::memory::desc({g.groups, out_per_group, in_per_group, g.kh, g.kw},
                            dnnl::memory::data_type::f32,
                            dnnl::memory::dims{out_per_group * o_stride, o_stride, i_stride,
                                               h_stride, w_stride});
}

dnnl::memory::desc AnyWeightDesc(const Geometry& g) {
  const int64_t in_per_group = g.c / g.groups;
  dnnl::memory::dims dims = g.groups == 1
      ? dnnl::memory::dims{g.o, in_per_group, g.kh, g.kw}
      : dnnl::memory::dims{g.groups, g.o / g.groups, in_per_group, g.kh, g.kw};
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any);
}

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::mutex mutex;
};

Runtime& GetRuntime() {
  static Runtime* runtime = new Runtime();
  return *runtime;
}

// One cached primitive plus the weight reorder between HWIO and the primitive's own
// (blocked) weight layout, and a buffer in that layout.
struct Plan {
  dnnl::primitive conv;
  dnnl::memory::desc user_weights;
  dnnl::memory weights;  // in the primitive's layout
  bool reorder_weights = false;
  dnnl::reorder weight_reorder;
};

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, Runtime& rt) {
  return dnnl::convolution_forward::primitive_desc(
      rt.engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      ActivationDesc(g.n, g.c, g.h, g.w), AnyWeightDesc(g),
      ActivationDesc(g.n, g.o, g.oh, g.ow), g.strides, g.dilates, g.pad_l, g.pad_r);
}

// The input-gradient or weight-gradient primitive of the same convolution (its arguments are
// the same; `forward` is the hint oneDNN requires).
template <typename Primitive>
typename Primitive::primitive_desc BackwardDesc(
    const Geometry& g, Runtime& rt, const dnnl::convolution_forward::primitive_desc& forward) {
  return typename Primitive::primitive_desc(
      rt.engine, dnnl::algorithm::convolution_direct, ActivationDesc(g.n, g.c, g.h, g.w),
      AnyWeightDesc(g), ActivationDesc(g.n, g.o, g.oh, g.ow), g.strides, g.dilates, g.pad_l,
      g.pad_r, forward);
}

std::unique_ptr<Plan> MakePlan(Kind kind, const Geometry& g, Runtime& rt) {
  auto plan = std::make_unique<Plan>();
  plan->user_weights = UserWeightDesc(g);
  auto forward = ForwardDesc(g, rt);
  dnnl::memory::desc weights_desc;
  if (kind == Kind::kForward) {
    plan->conv = dnnl::convolution_forward(forward);
    weights_desc = forward.weights_desc();
  } else if (kind == Kind::kBackwardData) {
    auto pd = BackwardDesc<dnnl::convolution_backward_data>(g, rt, forward);
    plan->conv = dnnl::convolution_backward_data(pd);
    weights_desc = pd.weights_desc();
  } else {
    auto pd = BackwardDesc<dnnl::convolution_backward_weights>(g, rt, forward);
    plan->conv = dnnl::convolution_backward_weights(pd);
    weights_desc = pd.diff_weights_desc();
  }
  plan->reorder_weights = weights_desc != plan->user_weights;
  if (plan->reorder_weights) {
    plan->weights = dnnl::memory(weights_desc, rt.engine);
    if (kind == Kind::kBackwardWeights) {
      plan->weight_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          rt.engine, weights_desc, rt.engine, plan->user_weights));
    } else {
      plan->weight_reorder = dnnl::reorder(dnnl::reorder::primitive_desc(
          rt.engine, plan->user_weights, rt.engine, weights_desc));
    }
  }
  return plan;
}

ffi::Error Run(Kind kind, const Geometry& g, float* input, float* weights, float* output) {
  Runtime& rt = GetRuntime();
  std::lock_guard<std::mutex> lock(rt.mutex);
  static auto* plans = new std::map<decltype(g.key(kind)), std::unique_ptr<Plan>>();
  try {
    auto& plan = (*plans)[g.key(kind)];
    if (!plan) plan = MakePlan(kind, g, rt);
    dnnl::memory src(ActivationDesc(g.n, g.c, g.h, g.w), rt.engine, input);
    dnnl::memory dst(ActivationDesc(g.n, g.o, g.oh, g.ow), rt.engine, output);
    dnnl::memory user_w(plan->user_weights, rt.engine, weights);
    dnnl::memory w = plan->reorder_weights ? plan->weights : user_w;
    if (kind != Kind::kBackwardWeights && plan->reorder_weights) {
      plan->weight_reorder.execute(rt.stream, user_w, w);
    }
    if (kind == Kind::kForward) {
      plan->conv.execute(rt.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w},
                                     {DNNL_ARG_DST, dst}});
    } else if (kind == Kind::kBackwardData) {
      plan->conv.execute(rt.stream, {{DNNL_ARG_DIFF_SRC, src}, {DNNL_ARG_WEIGHTS, w},
                                     {DNNL_ARG_DIFF_DST, dst}});
    } else {
      plan->conv.execute(rt.stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_WEIGHTS, w},
                                     {DNNL_ARG_DIFF_DST, dst}});
      if (plan->reorder_weights) plan->weight_reorder.execute(rt.stream, w, user_w);
    }
    rt.stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return ffi::Error::Success();
}

Geometry MakeGeometry(ffi::Span<const int64_t> input_shape, ffi::Span<const int64_t> weight_shape,
                      ffi::Span<const int64_t> output_shape, ffi::Span<const int64_t> strides,
                      ffi::Span<const int64_t> padding, ffi::Span<const int64_t> dilation,
                      int64_t groups) {
  Geometry g;
  g.n = input_shape[0]; g.h = input_shape[1]; g.w = input_shape[2]; g.c = input_shape[3];
  g.kh = weight_shape[0]; g.kw = weight_shape[1]; g.o = weight_shape[3];
  g.oh = output_shape[1]; g.ow = output_shape[2];
  g.groups = groups;
  g.strides = {strides[0], strides[1]};
  // oneDNN counts dilation from 0 (no dilation), XLA and torch from 1.
  g.dilates = {dilation[0] - 1, dilation[1] - 1};
  g.pad_l = {padding[0], padding[2]};
  g.pad_r = {padding[1], padding[3]};
  return g;
}

ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> input, ffi::Buffer<ffi::F32> weight,
                       ffi::ResultBuffer<ffi::F32> output, ffi::Span<const int64_t> strides,
                       ffi::Span<const int64_t> padding, ffi::Span<const int64_t> dilation,
                       int64_t groups) {
  auto in = input.dimensions();
  auto w = weight.dimensions();
  auto out = output->dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kForward, g, input.typed_data(), weight.typed_data(), output->typed_data());
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> output_grad, ffi::Buffer<ffi::F32> weight,
                            ffi::ResultBuffer<ffi::F32> input_grad,
                            ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                            ffi::Span<const int64_t> dilation, int64_t groups) {
  auto in = input_grad->dimensions();
  auto w = weight.dimensions();
  auto out = output_grad.dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kBackwardData, g, input_grad->typed_data(), weight.typed_data(),
             output_grad.typed_data());
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> input, ffi::Buffer<ffi::F32> output_grad,
                               ffi::ResultBuffer<ffi::F32> weight_grad,
                               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                               ffi::Span<const int64_t> dilation, int64_t groups) {
  auto in = input.dimensions();
  auto w = weight_grad->dimensions();
  auto out = output_grad.dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kBackwardWeights, g, input.typed_data(), weight_grad->typed_data(),
             output_grad.typed_data());
}

}  // namespace

#define JAXCNN_CONV_ATTRS                             \
  .Attr<ffi::Span<const int64_t>>("strides")          \
      .Attr<ffi::Span<const int64_t>>("padding")      \
      .Attr<ffi::Span<const int64_t>>("dilation")     \
      .Attr<int64_t>("groups")

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvForward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() JAXCNN_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardData, BackwardDataImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() JAXCNN_CONV_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnConvBackwardWeights, BackwardWeightsImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() JAXCNN_CONV_ATTRS);
