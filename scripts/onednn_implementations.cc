// Times every implementation oneDNN offers for one convolution, forward, input gradient and
// weight gradient, with activations NHWC (as jaxcnn passes them) or in oneDNN's preferred
// blocked layout (as torch reaches from NCHW). Caches are warm: the best of `runs` calls.
// Built and run by scripts/onednn_implementations.py.
//
//   onednn_implementations N C H O K STRIDE PAD nhwc|blocked [RUNS]
//
// prints one line per implementation but the reference one: kind, oneDNN's implementation name,
// milliseconds.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"

namespace {

using dnnl::memory;

double BestMs(dnnl::primitive& primitive, dnnl::stream& stream,
              const std::unordered_map<int, memory>& args, int runs) {
  primitive.execute(stream, args);
  stream.wait();
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    const auto start = std::chrono::steady_clock::now();
    primitive.execute(stream, args);
    stream.wait();
    best = std::min(best, std::chrono::duration<double, std::milli>(
                              std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

// Runs every implementation of primitive descriptor `pd`; `args` names its arguments.
template <typename Primitive, typename Pd, typename Args>
void TimeAll(const char* kind, Pd pd, const dnnl::engine& engine, dnnl::stream& stream,
             Args args, int runs) {
  do {
    // oneDNN's reference implementation takes seconds per call at these sizes.
    if (std::string(pd.impl_info_str()).rfind("ref:", 0) == 0) continue;
    Primitive primitive(pd);
    std::unordered_map<int, memory> buffers{
        {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), engine)}};
    for (const auto& [arg, desc] : args(pd)) buffers[arg] = memory(desc, engine);
    std::printf("%s %s %.4f\n", kind, pd.impl_info_str(), BestMs(primitive, stream, buffers, runs));
  } while (pd.next_impl());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 9) {
    std::fprintf(stderr, "usage: %s N C H O K STRIDE PAD nhwc|blocked [RUNS]\n", argv[0]);
    return 2;
  }
  const int64_t n = std::atoll(argv[1]), c = std::atoll(argv[2]), h = std::atoll(argv[3]),
                o = std::atoll(argv[4]), k = std::atoll(argv[5]), stride = std::atoll(argv[6]),
                pad = std::atoll(argv[7]);
  const bool nhwc = std::string(argv[8]) == "nhwc";
  const int runs = argc > 9 ? std::atoi(argv[9]) : 10;
  const int64_t out = (h + 2 * pad - k) / stride + 1;
  const auto act = nhwc ? memory::format_tag::nhwc : memory::format_tag::any;
  const memory::desc src({n, c, h, h}, memory::data_type::f32, act);
  const memory::desc dst({n, o, out, out}, memory::data_type::f32, act);
  const memory::desc weights({o, c, k, k}, memory::data_type::f32, memory::format_tag::any);
  const memory::dims strides{stride, stride}, padding{pad, pad};

  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      weights, dst, strides, padding, padding);
  TimeAll<dnnl::convolution_forward>("forward", forward, engine, stream, [](const auto& pd) {
    return std::unordered_map<int, memory::desc>{
        {DNNL_ARG_SRC, pd.src_desc()}, {DNNL_ARG_WEIGHTS, pd.weights_desc()},
        {DNNL_ARG_DST, pd.dst_desc()}};
  }, runs);
  TimeAll<dnnl::convolution_backward_data>(
      "input_grad",
      dnnl::convolution_backward_data::primitive_desc(engine, dnnl::algorithm::convolution_direct,
                                                      src, weights, dst, strides, padding,
                                                      padding, forward),
      engine, stream, [](const auto& pd) {
        return std::unordered_map<int, memory::desc>{
            {DNNL_ARG_DIFF_SRC, pd.diff_src_desc()}, {DNNL_ARG_WEIGHTS, pd.weights_desc()},
            {DNNL_ARG_DIFF_DST, pd.diff_dst_desc()}};
      }, runs);
  TimeAll<dnnl::convolution_backward_weights>(
      "weight_grad",
      dnnl::convolution_backward_weights::primitive_desc(
          engine, dnnl::algorithm::convolution_direct, src, weights, dst, strides, padding,
          padding, forward),
      engine, stream, [](const auto& pd) {
        return std::unordered_map<int, memory::desc>{
            {DNNL_ARG_SRC, pd.src_desc()}, {DNNL_ARG_DIFF_WEIGHTS, pd.diff_weights_desc()},
            {DNNL_ARG_DIFF_DST, pd.diff_dst_desc()}};
      }, runs);
  return 0;
}
