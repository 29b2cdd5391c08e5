// XLA FFI handlers that run 2-D convolutions (forward, input gradient, weight gradient)
// with oneDNN, the CPU convolution library PyTorch uses. Layouts are JAX's: activations
// NHWC, weights HWIO (grouped: HWIO with O = groups * O_per_group, group-major).
//
// Threads: a call splits its batch into one chunk per thread of XLA's own intra-op pool and
// runs each chunk single-threaded on those threads (the weights are converted once, split
// over the same threads; the weight gradient is the sum of the chunks'). A weight gradient
// whose weights outweigh its input splits its output channels between the threads instead.
// An OpenMP team started from inside XLA's pool shares the cores with XLA's busy or spinning
// workers: in a ResNet-50 step, oneDNN calls that take 0.02 ms alone took 3-9 ms right after
// XLA's fusions.
// Large calls (1 GFLOP and more), a batch of one or a pool of one thread use oneDNN's OpenMP
// threads instead, one call at a time.
//
// Each (kind, shapes, strides, padding, dilation, groups) gets its primitives built once and
// cached. Activations reach each primitive NHWC as they are; JAXCNN_ONEDNN_ACTIVATIONS=blocked
// reorders them into the layout oneDNN prefers (blocked channels on AVX-512) and =auto takes
// the faster of the two per primitive, timed when it is built.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include <omp.h>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum class Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

struct Geometry {
  int64_t n, h, w, c;           // input NHWC
  int64_t kh, kw, o;            // weight HWIO (C/groups inputs per group)
  int64_t o_total = 0;          // output channels of the whole tensors, when o is a slice of them
  int64_t oh, ow;               // output spatial size
  int64_t groups;
  dnnl::memory::dims strides, dilates, pad_l, pad_r;

  auto key(Kind kind) const {
    return std::make_tuple(static_cast<int64_t>(kind), n, h, w, c, kh, kw, o, o_total, oh, ow,
                           groups, strides, dilates, pad_l, pad_r);
  }
  int64_t input_row() const { return h * w * c; }
  int64_t output_row() const { return oh * ow * o; }
  double flops() const { return 2.0 * n * oh * ow * o * kh * kw * (c / groups); }
};

// Calls with at least this much work run on oneDNN's OpenMP threads, where a few milliseconds
// of thread hand-over matter less than splitting the work: on gap_vgg (convolutions of
// 1.2-2.4 GFLOP) the split was 10% slower per step, on resnet50 at batch 8 (at most
// 0.3 GFLOP per call) 5-10% faster.
constexpr double kSplitBelowFlops = 1e9;

dnnl::memory::desc ActivationDesc(int64_t n, int64_t c, int64_t h, int64_t w,
                                  dnnl::memory::format_tag tag = dnnl::memory::format_tag::nhwc) {
  return dnnl::memory::desc({n, c, h, w}, dnnl::memory::data_type::f32, tag);
}

dnnl::memory::desc UserWeightDesc(const Geometry& g) {
  // HWIO in memory: offset(kh, kw, i, o) = ((kh * KW + kw) * I + i) * O + o.
  const int64_t in_per_group = g.c / g.groups;
  const int64_t o_stride = 1, i_stride = g.o_total, w_stride = in_per_group * g.o_total,
                h_stride = g.kw * in_per_group * g.o_total;
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

// The output (or output gradient) as XLA holds it: NHWC, the channels possibly a slice of
// o_total.
dnnl::memory::desc UserOutputDesc(const Geometry& g) {
  if (g.o_total == g.o) return ActivationDesc(g.n, g.o, g.oh, g.ow);
  return dnnl::memory::desc({g.n, g.o, g.oh, g.ow}, dnnl::memory::data_type::f32,
                            dnnl::memory::dims{g.oh * g.ow * g.o_total, 1, g.ow * g.o_total, g.o_total});
}

dnnl::memory::desc AnyWeightDesc(const Geometry& g) {
  const int64_t in_per_group = g.c / g.groups;
  dnnl::memory::dims dims = g.groups == 1
      ? dnnl::memory::dims{g.o, in_per_group, g.kh, g.kw}
      : dnnl::memory::dims{g.groups, g.o / g.groups, in_per_group, g.kh, g.kw};
  return dnnl::memory::desc(dims, dnnl::memory::data_type::f32, dnnl::memory::format_tag::any);
}

// Grow-only, 64-byte aligned buffers, one set per thread: slots 0-2 for the operands in the
// primitive's own layout, 3 for the primitives' scratchpad, 4 and up for a call's weights.
class Scratch {
 public:
  void* Get(size_t slot, size_t bytes) {
    if (slot >= buffers_.size()) buffers_.resize(slot + 1);
    Buffer& buffer = buffers_[slot];
    if (buffer.size < bytes) {
      buffer.data.reset(static_cast<char*>(std::aligned_alloc(64, (bytes + 63) / 64 * 64)));
      buffer.size = bytes;
    }
    return buffer.data.get();
  }

 private:
  struct Free {
    void operator()(char* p) const { std::free(p); }
  };
  struct Buffer {
    std::unique_ptr<char, Free> data;
    size_t size = 0;
  };
  std::vector<Buffer> buffers_;
};

struct Runtime {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;      // guards the plan cache
  std::mutex omp_mutex;  // one call at a time on the OpenMP threads
  // Activation layout: "nhwc" (as XLA holds them; the default), "blocked" (oneDNN's choice,
  // reordered in and out of each call, as torch does for its NCHW tensors) or "auto" (the
  // faster of the two per primitive, timed when it is built: the choice, and with it the
  // rounding, can differ from one process to the next).
  std::string policy = [] {
    const char* v = std::getenv("JAXCNN_ONEDNN_ACTIVATIONS");
    const std::string value = v ? v : "";
    return value == "auto" || value == "blocked" ? value : std::string("nhwc");
  }();
};

Runtime& GetRuntime() {
  static Runtime* runtime = new Runtime();
  return *runtime;
}

// What one thread needs to run primitives: its own stream and buffers.
struct ThreadState {
  dnnl::stream stream{GetRuntime().engine};
  Scratch scratch;
};

ThreadState& GetThreadState() {
  thread_local ThreadState* state = new ThreadState();
  return *state;
}

// This thread's scratchpad buffer (scratch slot 3) as a oneDNN memory of `bytes` (> 0).
dnnl::memory Scratchpad(ThreadState& ts, size_t bytes) {
  return dnnl::memory(dnnl::memory::desc({static_cast<int64_t>(bytes)}, dnnl::memory::data_type::u8,
                                         dnnl::memory::format_tag::a),
                      GetRuntime().engine, ts.scratch.Get(3, bytes));
}

dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// One buffer of a call as XLA holds it (`user`: NHWC or HWIO) and as the primitive wants it.
// The conversion of a weight operand split into pieces along the output channels.
struct Pieces {
  std::vector<std::pair<dnnl::memory::desc, dnnl::memory::desc>> descs;  // from, to
  std::vector<dnnl::reorder> reorders;
  std::vector<size_t> scratchpad_bytes;
};

struct Operand {
  int arg = 0;  // DNNL_ARG_*
  dnnl::memory::desc user, own;
  bool reorder = false;
  size_t scratchpad_bytes = 0;
  dnnl::reorder convert;  // user -> own for inputs, own -> user for the result
  mutable std::map<int, std::unique_ptr<Pieces>> pieces;  // by count; guarded by Runtime::mutex
};

// One cached primitive: two inputs and a result, in the FFI call's order.
struct Plan {
  dnnl::primitive conv;
  Operand operands[3];
  size_t scratchpad_bytes = 0;  // the largest of the primitives' scratchpads
};

Operand MakeOperand(int arg, const dnnl::memory::desc& user, const dnnl::memory::desc& own,
                    bool is_result, const dnnl::engine& engine) {
  Operand op;
  op.arg = arg;
  op.user = user;
  op.own = own;
  op.reorder = own != user;
  if (op.reorder) {
    auto pd = is_result
        ? dnnl::reorder::primitive_desc(engine, own, engine, user, UserScratchpad())
        : dnnl::reorder::primitive_desc(engine, user, engine, own, UserScratchpad());
    op.scratchpad_bytes = pd.scratchpad_desc().get_size();
    op.convert = dnnl::reorder(pd);
  }
  return op;
}

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, Runtime& rt,
                                                      dnnl::memory::format_tag act) {
  return dnnl::convolution_forward::primitive_desc(
      rt.engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      ActivationDesc(g.n, g.c, g.h, g.w, act), AnyWeightDesc(g),
      ActivationDesc(g.n, g.o, g.oh, g.ow, act), g.strides, g.dilates, g.pad_l, g.pad_r,
      UserScratchpad());
}

// The input-gradient or weight-gradient primitive of the same convolution (its arguments are
// the same; `forward` is the hint oneDNN requires).
template <typename Primitive>
typename Primitive::primitive_desc BackwardDesc(
    const Geometry& g, Runtime& rt, dnnl::memory::format_tag act,
    const dnnl::convolution_forward::primitive_desc& forward) {
  return typename Primitive::primitive_desc(
      rt.engine, dnnl::algorithm::convolution_direct, ActivationDesc(g.n, g.c, g.h, g.w, act),
      AnyWeightDesc(g), ActivationDesc(g.n, g.o, g.oh, g.ow, act), g.strides, g.dilates,
      g.pad_l, g.pad_r, forward, UserScratchpad());
}

std::unique_ptr<Plan> MakePlan(Kind kind, const Geometry& g, Runtime& rt, bool blocked) {
  const auto act = blocked ? dnnl::memory::format_tag::any : dnnl::memory::format_tag::nhwc;
  const auto in = ActivationDesc(g.n, g.c, g.h, g.w), out = UserOutputDesc(g),
             weights = UserWeightDesc(g);
  auto plan = std::make_unique<Plan>();
  auto forward = ForwardDesc(g, rt, act);
  auto& e = rt.engine;
  if (kind == Kind::kForward) {
    plan->conv = dnnl::convolution_forward(forward);
    plan->scratchpad_bytes = forward.scratchpad_desc().get_size();
    plan->operands[0] = MakeOperand(DNNL_ARG_SRC, in, forward.src_desc(), false, e);
    plan->operands[1] = MakeOperand(DNNL_ARG_WEIGHTS, weights, forward.weights_desc(), false, e);
    plan->operands[2] = MakeOperand(DNNL_ARG_DST, out, forward.dst_desc(), true, e);
  } else if (kind == Kind::kBackwardData) {
    auto pd = BackwardDesc<dnnl::convolution_backward_data>(g, rt, act, forward);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->scratchpad_bytes = pd.scratchpad_desc().get_size();
    plan->operands[0] = MakeOperand(DNNL_ARG_DIFF_DST, out, pd.diff_dst_desc(), false, e);
    plan->operands[1] = MakeOperand(DNNL_ARG_WEIGHTS, weights, pd.weights_desc(), false, e);
    plan->operands[2] = MakeOperand(DNNL_ARG_DIFF_SRC, in, pd.diff_src_desc(), true, e);
  } else {
    auto pd = BackwardDesc<dnnl::convolution_backward_weights>(g, rt, act, forward);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->scratchpad_bytes = pd.scratchpad_desc().get_size();
    plan->operands[0] = MakeOperand(DNNL_ARG_SRC, in, pd.src_desc(), false, e);
    plan->operands[1] = MakeOperand(DNNL_ARG_DIFF_DST, out, pd.diff_dst_desc(), false, e);
    plan->operands[2] = MakeOperand(DNNL_ARG_DIFF_WEIGHTS, weights, pd.diff_weights_desc(), true, e);
  }
  for (const Operand& op : plan->operands) {
    plan->scratchpad_bytes = std::max(plan->scratchpad_bytes, op.scratchpad_bytes);
  }
  return plan;
}

// Runs a plan on this thread. `buffers` are the call's two inputs and its result as XLA holds
// them, except operand `own_layout` (if >= 0), which is already in the primitive's layout.
void Execute(const Plan& plan, void* const buffers[3], int own_layout = -1) {
  const dnnl::engine& engine = GetRuntime().engine;
  ThreadState& ts = GetThreadState();
  const size_t scratchpad_bytes = std::max<size_t>(plan.scratchpad_bytes, 1);
  dnnl::memory scratchpad = Scratchpad(ts, scratchpad_bytes);
  std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SCRATCHPAD, scratchpad}};
  dnnl::memory user[3], own[3];
  bool convert[3];
  for (int i = 0; i < 3; ++i) {
    const Operand& op = plan.operands[i];
    convert[i] = op.reorder && i != own_layout;
    if (!op.reorder || i == own_layout) {
      own[i] = dnnl::memory(op.reorder ? op.own : op.user, engine, buffers[i]);
    } else {
      user[i] = dnnl::memory(op.user, engine, buffers[i]);
      own[i] = dnnl::memory(op.own, engine, ts.scratch.Get(i, op.own.get_size()));
    }
    if (i < 2 && convert[i]) {
      op.convert.execute(ts.stream, {{DNNL_ARG_FROM, user[i]}, {DNNL_ARG_TO, own[i]},
                                     {DNNL_ARG_SCRATCHPAD, scratchpad}});
    }
    args[op.arg] = own[i];
  }
  plan.conv.execute(ts.stream, args);
  if (convert[2]) {
    plan.operands[2].convert.execute(ts.stream, {{DNNL_ARG_FROM, own[2]}, {DNNL_ARG_TO, user[2]},
                                                 {DNNL_ARG_SCRATCHPAD, scratchpad}});
  }
  ts.stream.wait();
}

double BestOf(const Plan& plan, void* const buffers[3], int runs) {
  Execute(plan, buffers);
  double best = 1e30;
  for (int i = 0; i < runs; ++i) {
    auto start = std::chrono::steady_clock::now();
    Execute(plan, buffers);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  return best;
}

bool ReordersActivations(const Plan& plan) {
  for (const Operand& op : plan.operands) {
    if (op.reorder && op.arg != DNNL_ARG_WEIGHTS && op.arg != DNNL_ARG_DIFF_WEIGHTS) return true;
  }
  return false;
}

// The cached plan for `kind` at `g`, built (and, with policy "auto", its activation layout
// chosen by timing both on these buffers) on first use. A primitive divides its work among
// the OpenMP threads this thread had when it was built, so plans are kept per thread count:
// a chunk of a split call must not run a plan built for all of oneDNN's threads.
const Plan& GetPlan(Kind kind, const Geometry& g, void* const buffers[3]) {
  Runtime& rt = GetRuntime();
  const auto key = std::make_tuple(g.key(kind), omp_get_max_threads());
  std::lock_guard<std::mutex> lock(rt.mutex);
  static auto* plans = new std::map<std::remove_const_t<decltype(key)>, std::unique_ptr<Plan>>();
  auto& plan = (*plans)[key];
  if (!plan) {
    if (rt.policy == "nhwc") {
      plan = MakePlan(kind, g, rt, false);
    } else {
      auto blocked = MakePlan(kind, g, rt, true);
      if (rt.policy == "auto" && ReordersActivations(*blocked)) {
        auto nhwc = MakePlan(kind, g, rt, false);
        if (BestOf(*nhwc, buffers, 3) <= BestOf(*blocked, buffers, 3)) blocked = std::move(nhwc);
      }
      plan = std::move(blocked);
    }
  }
  return *plan;
}

// Work shared between the calling thread and tasks on XLA's pool: whoever is free takes the
// next item, so the call never waits for an item that no thread has started.
struct Items {
  std::atomic<int> next{0};
  int count = 1;
  std::mutex mutex;
  std::condition_variable all_done;
  int done = 0;
  std::string error;

  void Work(const std::function<void(int)>& run) {
    for (int i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
      std::string message;
      try {
        run(i);
      } catch (const dnnl::error& e) {
        message = e.what();
      }
      std::lock_guard<std::mutex> lock(mutex);
      if (!message.empty()) error = message;
      if (++done == count) all_done.notify_all();
    }
  }
};

// Runs run(0) ... run(count - 1) on this thread and `count - 1` tasks on XLA's pool, single-
// threaded each; throws a dnnl::error's message as std::runtime_error if one failed.
void ParallelFor(ffi::ThreadPool& pool, int count, const std::function<void(int)>& body) {
  auto items = std::make_shared<Items>();
  items->count = count;
  // `run` refers to the caller's frame, which outlives every item because this waits for all
  // of them; a task that starts later finds no item left and never calls it.
  auto run = std::make_shared<std::function<void(int)>>([&body](int i) {
    omp_set_num_threads(1);
    body(i);
  });
  for (int t = 1; t < count; ++t) pool.Schedule([items, run] { items->Work(*run); });
  items->Work(*run);
  std::unique_lock<std::mutex> lock(items->mutex);
  items->all_done.wait(lock, [&] { return items->done == items->count; });
  if (!items->error.empty()) throw std::runtime_error(items->error);
}

// The conversion of weight operand `op` split along the output channels into `count` pieces
// where the own layout's blocking allows it, else one piece; built once per count.
const Pieces& WeightPieces(const Operand& op, int count) {
  Runtime& rt = GetRuntime();
  std::lock_guard<std::mutex> lock(rt.mutex);
  auto& pieces = op.pieces[count];
  if (pieces) return *pieces;
  pieces = std::make_unique<Pieces>();
  const bool to_own = op.arg == DNNL_ARG_WEIGHTS;
  const dnnl::memory::desc& source = to_own ? op.user : op.own;
  const dnnl::memory::desc& target = to_own ? op.own : op.user;
  const dnnl::memory::dims dims = source.get_dims();
  auto add = [&](const dnnl::memory::desc& from, const dnnl::memory::desc& to) {
    dnnl::reorder::primitive_desc pd(rt.engine, from, rt.engine, to, UserScratchpad());
    pieces->descs.emplace_back(from, to);
    pieces->scratchpad_bytes.push_back(std::max<size_t>(pd.scratchpad_desc().get_size(), 1));
    pieces->reorders.emplace_back(pd);
  };
  if (count > 1 && dims.size() == 4 && dims[0] % count == 0) {
    try {
      dnnl::memory::dims piece = dims;
      piece[0] = dims[0] / count;
      for (int i = 0; i < count; ++i) {
        const dnnl::memory::dims offsets = {piece[0] * i, 0, 0, 0};
        add(source.submemory_desc(piece, offsets), target.submemory_desc(piece, offsets));
      }
    } catch (const dnnl::error&) {  // the blocking does not split there
      *pieces = Pieces();
    }
  }
  if (pieces->reorders.empty()) add(source, target);
  return *pieces;
}

// Converts weight operand `op` between XLA's layout and its own (the direction its role
// implies), the pieces in parallel on XLA's pool.
void ConvertWeights(const Operand& op, ffi::ThreadPool& pool, int count, void* from, void* to) {
  const dnnl::engine& engine = GetRuntime().engine;
  const Pieces& pieces = WeightPieces(op, count);
  ParallelFor(pool, static_cast<int>(pieces.reorders.size()), [&](int i) {
    ThreadState& ts = GetThreadState();
    dnnl::memory scratchpad = Scratchpad(ts, pieces.scratchpad_bytes[i]);
    pieces.reorders[i].execute(
        ts.stream, {{DNNL_ARG_FROM, dnnl::memory(pieces.descs[i].first, engine, from)},
                    {DNNL_ARG_TO, dnnl::memory(pieces.descs[i].second, engine, to)},
                    {DNNL_ARG_SCRATCHPAD, scratchpad}});
    ts.stream.wait();
  });
}

// Whether a split weight gradient divides the output channels between the threads rather than
// the batch: where the weights are at least as large as the input. Split along the batch, every
// thread computes a whole weight gradient and the threads' gradients are then summed; split
// along the channels, every thread reads the whole input instead. resnet50 at batch 8
// (train img/s alone, best of 2 rounds): batch 41.8, channels everywhere 43.5, this rule 45.1.
bool SplitsChannels(const Geometry& g, int count) {
  return g.groups == 1 && g.o % (16 * count) == 0 && g.kh * g.kw * g.o >= g.n * g.h * g.w;
}

// Whether `g` is a 1x1 convolution with stride or padding: one whose oneDNN weight gradient
// (jit_1x1) first copies the input pixels it reads into a per-thread workspace ("rtus"). With
// NHWC input of fewer channels than the kernel's block (8 on AVX2) oneDNN 3.2 writes past its
// thread's part of that workspace (uxlfoundation/oneDNN#6035): with two or more OpenMP
// threads the weight gradient then depends on the threads' timing and is wrong in some runs
// (with one thread it was right here).
bool IsStrided1x1(const Geometry& g) {
  return g.kh == 1 && g.kw == 1 &&
         (g.strides[0] != 1 || g.strides[1] != 1 || g.pad_l[0] != 0 || g.pad_l[1] != 0 ||
          g.pad_r[0] != 0 || g.pad_r[1] != 0);
}

ffi::Error Run(Kind kind, const Geometry& g, void* a, void* b, void* result, ffi::ThreadPool pool);

// The weight gradient of a strided or padded 1x1 convolution (IsStrided1x1) as the weight
// gradient of the unstrided, unpadded 1x1 convolution of the pixels it reads: those are
// gathered first (NHWC, N x OH x OW x C; zero where they fall in the padding), so oneDNN never
// takes its strided path.
ffi::Error RunStrided1x1WeightGradient(const Geometry& g, const float* input, void* output_grad,
                                       void* result, ffi::ThreadPool pool) {
  Geometry dense = g;
  dense.h = g.oh;
  dense.w = g.ow;
  dense.strides = {1, 1};
  dense.dilates = {0, 0};
  dense.pad_l = {0, 0};
  dense.pad_r = {0, 0};
  std::vector<float> pixels(static_cast<size_t>(g.n * dense.input_row()));
  const int count = static_cast<int>(std::max<int64_t>(1, std::min(pool.num_threads(), g.n)));
  try {
    ParallelFor(pool, count, [&](int i) {
      for (int64_t n = g.n * i / count; n < g.n * (i + 1) / count; ++n) {
        for (int64_t y = 0; y < g.oh; ++y) {
          const int64_t iy = y * g.strides[0] - g.pad_l[0];
          for (int64_t x = 0; x < g.ow; ++x) {
            const int64_t ix = x * g.strides[1] - g.pad_l[1];
            float* to = pixels.data() + n * dense.input_row() + (y * g.ow + x) * g.c;
            if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) {
              std::fill(to, to + g.c, 0.0f);
            } else {
              const float* from = input + n * g.input_row() + (iy * g.w + ix) * g.c;
              std::copy(from, from + g.c, to);
            }
          }
        }
      }
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("oneDNN convolution failed: ") + e.what());
  }
  return Run(Kind::kBackwardWeights, dense, pixels.data(), output_grad, result, pool);
}

// Runs `kind` on XLA's buffers (`a`, `b`: the call's inputs, `result`: its output), split
// along the batch into one single-threaded chunk per thread of XLA's pool (a weight gradient
// where SplitsChannels: along its output channels). The weights are converted to the
// primitives' layout once per call, not once per chunk.
ffi::Error Run(Kind kind, const Geometry& g, void* a, void* b, void* result,
               ffi::ThreadPool pool) {
  static const int default_threads = omp_get_max_threads();
  if (kind == Kind::kBackwardWeights && IsStrided1x1(g)) {
    return RunStrided1x1WeightGradient(g, static_cast<const float*>(a), b, result, pool);
  }
  const int count = static_cast<int>(std::max<int64_t>(1, std::min(pool.num_threads(), g.n)));
  const int weight_operand = kind == Kind::kBackwardWeights ? 2 : 1;
  float* fa = static_cast<float*>(a);
  float* fb = static_cast<float*>(b);
  float* fr = static_cast<float*>(result);
  auto chunk_buffers = [&](int i, void* buffers[3]) {
    const int64_t lo = g.n * i / count;
    if (kind == Kind::kForward) {  // input, weight -> output
      buffers[0] = fa + lo * g.input_row(); buffers[1] = fb; buffers[2] = fr + lo * g.output_row();
    } else if (kind == Kind::kBackwardData) {  // output grad, weight -> input grad
      buffers[0] = fa + lo * g.output_row(); buffers[1] = fb; buffers[2] = fr + lo * g.input_row();
    } else {  // input, output grad -> weight grad
      buffers[0] = fa + lo * g.input_row(); buffers[1] = fb + lo * g.output_row(); buffers[2] = fr;
    }
  };
  try {
    if (count == 1 || g.flops() >= kSplitBelowFlops) {
      // One call at a time on oneDNN's OpenMP threads: two teams would oversubscribe the cores.
      std::lock_guard<std::mutex> lock(GetRuntime().omp_mutex);
      omp_set_num_threads(default_threads);
      void* buffers[3];
      chunk_buffers(0, buffers);
      Execute(GetPlan(kind, g, buffers), buffers);
      return ffi::Error::Success();
    }
    omp_set_num_threads(1);
    if (kind == Kind::kBackwardWeights && SplitsChannels(g, count)) {
      // Each thread computes the weight gradient of its own output channels over the whole
      // batch, straight into its columns of the HWIO result: nothing to sum.
      Geometry slice = g;
      slice.o = g.o / count;
      auto slice_buffers = [&](int i, void* buffers[3]) {  // input, output grad -> weight grad
        buffers[0] = fa; buffers[1] = fb + slice.o * i; buffers[2] = fr + slice.o * i;
      };
      void* buffers[3];
      slice_buffers(0, buffers);
      const Plan& plan = GetPlan(kind, slice, buffers);
      ParallelFor(pool, count, [&](int i) {
        void* slice_i[3];
        slice_buffers(i, slice_i);
        Execute(plan, slice_i);
      });
      return ffi::Error::Success();
    }
    std::vector<const Plan*> plans(count);
    bool shared_weights = true;
    for (int i = 0; i < count; ++i) {
      Geometry chunk = g;
      chunk.n = g.n * (i + 1) / count - g.n * i / count;
      void* buffers[3];
      chunk_buffers(i, buffers);
      plans[i] = &GetPlan(kind, chunk, buffers);
      const Operand& w = plans[i]->operands[weight_operand];
      shared_weights = shared_weights && w.own == plans[0]->operands[weight_operand].own;
    }
    const Operand& weights = plans[0]->operands[weight_operand];
    const bool convert_once = shared_weights && weights.reorder;
    const size_t weight_bytes = (convert_once ? weights.own : weights.user).get_size();
    // The weights in the primitives' layout (forward, input gradient), or the first chunk's
    // weight gradient, into which the other chunks' gradients are summed.
    void* own_weights = nullptr;
    if (convert_once) {
      own_weights = GetThreadState().scratch.Get(4, weight_bytes);
      if (kind != Kind::kBackwardWeights) ConvertWeights(weights, pool, count, b, own_weights);
    }
    std::vector<float*> partials;
    if (kind == Kind::kBackwardWeights) {
      for (int i = 1; i < count; ++i) {
        partials.push_back(static_cast<float*>(GetThreadState().scratch.Get(4 + i, weight_bytes)));
      }
    }
    ParallelFor(pool, count, [&](int i) {
      void* buffers[3];
      chunk_buffers(i, buffers);
      if (kind == Kind::kBackwardWeights) {
        buffers[2] = i > 0 ? partials[i - 1] : (convert_once ? own_weights : result);
      } else if (convert_once) {
        buffers[1] = own_weights;
      }
      Execute(*plans[i], buffers, convert_once ? weight_operand : -1);
    });
    if (kind == Kind::kBackwardWeights) {
      float* sum = static_cast<float*>(convert_once ? own_weights : result);
      const int64_t n = static_cast<int64_t>(weight_bytes / sizeof(float));
      ParallelFor(pool, count, [&](int i) {
        for (const float* partial : partials) {
          for (int64_t j = n * i / count; j < n * (i + 1) / count; ++j) sum[j] += partial[j];
        }
      });
      if (convert_once) ConvertWeights(weights, pool, count, own_weights, result);
    }
  } catch (const std::exception& e) {
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
  g.kh = weight_shape[0]; g.kw = weight_shape[1]; g.o = g.o_total = weight_shape[3];
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
                       int64_t groups, ffi::ThreadPool pool) {
  auto in = input.dimensions();
  auto w = weight.dimensions();
  auto out = output->dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kForward, g, input.typed_data(), weight.typed_data(), output->typed_data(), pool);
}

ffi::Error BackwardDataImpl(ffi::Buffer<ffi::F32> output_grad, ffi::Buffer<ffi::F32> weight,
                            ffi::ResultBuffer<ffi::F32> input_grad,
                            ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                            ffi::Span<const int64_t> dilation, int64_t groups,
                            ffi::ThreadPool pool) {
  auto in = input_grad->dimensions();
  auto w = weight.dimensions();
  auto out = output_grad.dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kBackwardData, g, output_grad.typed_data(), weight.typed_data(),
             input_grad->typed_data(), pool);
}

ffi::Error BackwardWeightsImpl(ffi::Buffer<ffi::F32> input, ffi::Buffer<ffi::F32> output_grad,
                               ffi::ResultBuffer<ffi::F32> weight_grad,
                               ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding,
                               ffi::Span<const int64_t> dilation, int64_t groups, ffi::ThreadPool pool) {
  auto in = input.dimensions();
  auto w = weight_grad->dimensions();
  auto out = output_grad.dimensions();
  Geometry g = MakeGeometry(in, w, out, strides, padding, dilation, groups);
  return Run(Kind::kBackwardWeights, g, input.typed_data(), output_grad.typed_data(),
             weight_grad->typed_data(), pool);
}

}  // namespace

#define JAXCNN_CONV_ATTRS                             \
  .Attr<ffi::Span<const int64_t>>("strides")          \
      .Attr<ffi::Span<const int64_t>>("padding")      \
      .Attr<ffi::Span<const int64_t>>("dilation")     \
      .Attr<int64_t>("groups")                      \
      .Ctx<ffi::ThreadPool>()

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
