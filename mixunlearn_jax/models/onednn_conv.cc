// oneDNN's direct convolutions as XLA FFI custom calls (CPU): NHWC activations,
// HWIO kernels, float32. Three targets: forward, input gradient, kernel gradient.
//
// XLA:CPU runs convolutions as GEMMs over image patches packed by Eigen; these
// need no patches (docs/performance.md, item 14). The activations are used in
// place (oneDNN's kernels take NHWC); the kernel is reordered to and from the
// blocked layout oneDNN picks, since with HWIO kept it falls back to its own
// GEMM path. models/onednn.py compiles this file and registers the targets.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Dims = ffi::Span<const int64_t>;

namespace {

enum class Kind { kForward, kInputGrad, kKernelGrad };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's shapes in oneDNN's logical order (NCHW / OIHW); the
// buffers themselves are laid out NHWC / HWIO.
struct Geometry {
  memory::dims x, w, y, strides, pad_lo, pad_hi;

  std::string Key(Kind kind) const {
    std::string key = std::to_string(static_cast<int>(kind));
    for (const memory::dims* d : {&x, &w, &y, &strides, &pad_lo, &pad_hi})
      for (auto v : *d) key += "," + std::to_string(v);
    return key;
  }
  memory::desc XDesc() const { return {x, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc YDesc() const { return {y, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc WDesc(memory::format_tag tag = memory::format_tag::hwio) const {
    return {w, memory::data_type::f32, tag};
  }
};

// The compiled primitive, and the kernel layout it chose (`any` lets oneDNN
// pick its blocked layout; we reorder HWIO to and from it).
struct Primitive {
  dnnl::primitive primitive;
  memory::desc kernel, scratchpad;
};

// A scratchpad per call (not the library's, shared per primitive) keeps
// concurrent calls of one cached primitive safe.
dnnl::primitive_attr UserScratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

std::unique_ptr<Primitive> Create(Kind kind, const Geometry& g) {
  auto any = g.WDesc(memory::format_tag::any);
  auto attr = UserScratchpad();
  dnnl::convolution_forward::primitive_desc forward(
      Engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct,
      g.XDesc(), any, g.YDesc(), g.strides, g.pad_lo, g.pad_hi, attr);
  switch (kind) {
    case Kind::kForward:
      return std::make_unique<Primitive>(Primitive{dnnl::convolution_forward(forward),
                                                   forward.weights_desc(),
                                                   forward.scratchpad_desc()});
    case Kind::kInputGrad: {
      dnnl::convolution_backward_data::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.XDesc(), any, g.YDesc(), g.strides,
          g.pad_lo, g.pad_hi, forward, attr);
      return std::make_unique<Primitive>(
          Primitive{dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.scratchpad_desc()});
    }
    case Kind::kKernelGrad: {
      dnnl::convolution_backward_weights::primitive_desc pd(
          Engine(), dnnl::algorithm::convolution_direct, g.XDesc(), any, g.YDesc(), g.strides,
          g.pad_lo, g.pad_hi, forward, attr);
      return std::make_unique<Primitive>(Primitive{dnnl::convolution_backward_weights(pd),
                                                   pd.diff_weights_desc(),
                                                   pd.scratchpad_desc()});
    }
  }
  return nullptr;
}

// Primitives are JIT-compiled: build each geometry once per process.
const Primitive& Cached(Kind kind, const Geometry& g) {
  static std::mutex mutex;
  static auto* cache = new std::unordered_map<std::string, std::unique_ptr<Primitive>>();
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = (*cache)[g.Key(kind)];
  if (!slot) slot = Create(kind, g);
  return *slot;
}

void Reorder(dnnl::stream& stream, memory& from, memory& to) {
  dnnl::reorder(from, to).execute(stream, from, to);
}

// Elements of one convolution's operand: a buffer's last four dimensions.
int64_t Elements(Dims d) {
  int64_t n = 1;
  for (int64_t v : d.last(4)) n *= v;
  return n;
}

// x, w, y: the buffers' NHWC / HWIO / NHWC dims; the two operands of `kind`
// are read from `a` and `b`, its result written to `out`. Under jax.vmap
// (vmap_method 'broadcast_all') every buffer carries the same leading batch
// dimensions: one convolution per batch element, all on one cached primitive.
ffi::Error Convolve(Kind kind, float* a, float* b, float* out, Dims x_all, Dims w_all,
                    Dims y_all, int64_t sh, int64_t sw, int64_t ph_lo, int64_t ph_hi,
                    int64_t pw_lo, int64_t pw_hi) {
  Dims x = x_all.last(4), w = w_all.last(4), y = y_all.last(4);
  Geometry g{{x[0], x[3], x[1], x[2]}, {w[3], w[2], w[0], w[1]}, {y[0], y[3], y[1], y[2]},
             {sh, sw}, {ph_lo, pw_lo}, {ph_hi, pw_hi}};
  int64_t batches = 1;
  for (size_t i = 0; i + 4 < x_all.size(); ++i) batches *= x_all[i];
  const int64_t nx = Elements(x_all), nw = Elements(w_all), ny = Elements(y_all);
  // Each kind's (a, b, out) in elements per batch element.
  const int64_t na = kind == Kind::kInputGrad ? ny : nx;
  const int64_t nb = kind == Kind::kForward || kind == Kind::kInputGrad ? nw : ny;
  const int64_t nout = kind == Kind::kForward ? ny : kind == Kind::kInputGrad ? nx : nw;
  try {
    const Primitive& p = Cached(kind, g);
    dnnl::stream stream(Engine());
    memory scratchpad(p.scratchpad, Engine());
    memory kernel(p.kernel, Engine());
    for (int64_t i = 0; i < batches; ++i, a += na, b += nb, out += nout) {
      switch (kind) {
        case Kind::kForward: {
          memory src(g.XDesc(), Engine(), a), user_w(g.WDesc(), Engine(), b);
          memory dst(g.YDesc(), Engine(), out);
          Reorder(stream, user_w, kernel);
          p.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, kernel},
                                       {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
          break;
        }
        case Kind::kInputGrad: {
          memory dy(g.YDesc(), Engine(), a), user_w(g.WDesc(), Engine(), b);
          memory dx(g.XDesc(), Engine(), out);
          Reorder(stream, user_w, kernel);
          p.primitive.execute(stream, {{DNNL_ARG_DIFF_DST, dy}, {DNNL_ARG_WEIGHTS, kernel},
                                       {DNNL_ARG_DIFF_SRC, dx}, {DNNL_ARG_SCRATCHPAD, scratchpad}});
          break;
        }
        case Kind::kKernelGrad: {
          memory src(g.XDesc(), Engine(), a), dy(g.YDesc(), Engine(), b);
          memory dw(g.WDesc(), Engine(), out);
          p.primitive.execute(stream, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, dy},
                                       {DNNL_ARG_DIFF_WEIGHTS, kernel},
                                       {DNNL_ARG_SCRATCHPAD, scratchpad}});
          Reorder(stream, kernel, dw);
          break;
        }
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error Forward(F32 x, F32 w, F32Out y, int64_t sh, int64_t sw, int64_t ph_lo, int64_t ph_hi,
                   int64_t pw_lo, int64_t pw_hi) {
  return Convolve(Kind::kForward, x.typed_data(), w.typed_data(), y->typed_data(), x.dimensions(),
                  w.dimensions(), y->dimensions(), sh, sw, ph_lo, ph_hi, pw_lo, pw_hi);
}

ffi::Error InputGrad(F32 dy, F32 w, F32Out dx, int64_t sh, int64_t sw, int64_t ph_lo,
                     int64_t ph_hi, int64_t pw_lo, int64_t pw_hi) {
  return Convolve(Kind::kInputGrad, dy.typed_data(), w.typed_data(), dx->typed_data(),
                  dx->dimensions(), w.dimensions(), dy.dimensions(), sh, sw, ph_lo, ph_hi, pw_lo,
                  pw_hi);
}

ffi::Error KernelGrad(F32 x, F32 dy, F32Out dw, int64_t sh, int64_t sw, int64_t ph_lo,
                      int64_t ph_hi, int64_t pw_lo, int64_t pw_hi) {
  return Convolve(Kind::kKernelGrad, x.typed_data(), dy.typed_data(), dw->typed_data(),
                  x.dimensions(), dw->dimensions(), dy.dimensions(), sh, sw, ph_lo, ph_hi, pw_lo,
                  pw_hi);
}

auto Binding() {
  return ffi::Ffi::Bind()
      .Arg<F32>()
      .Arg<F32>()
      .Ret<F32>()
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("ph_lo")
      .Attr<int64_t>("ph_hi")
      .Attr<int64_t>("pw_lo")
      .Attr<int64_t>("pw_hi");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvForward, Forward, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvInputGrad, InputGrad, Binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(OnednnConvKernelGrad, KernelGrad, Binding());
