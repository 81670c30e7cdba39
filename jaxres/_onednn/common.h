// What jaxres's oneDNN handlers share: the engine, the lock that serializes calls, dtypes.
#pragma once

#include <mutex>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace jaxres_onednn {

inline dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One stream per calling thread, made once: on oneDNN's SYCL runtime (the 2026 packages) a stream is a SYCL
// queue, too dear to make per call.
inline dnnl::stream& Stream() {
  thread_local dnnl::stream stream(Engine());
  return stream;
}

// Whether this oneDNN runs its kernels on OpenMP threads (onednn-cpu-gomp), which jaxres's thread planning
// (omp_set_num_threads, two gradients in two OpenMP sections) assumes; the SYCL/TBB builds do not.
inline bool OpenMPRuntime() { return dnnl::version()->cpu_runtime == DNNL_RUNTIME_OMP; }

// XLA may call handlers from several threads; oneDNN's OpenMP team is one.
inline std::mutex& Lock() {
  static std::mutex mutex;
  return mutex;
}

inline dnnl::memory::data_type DataType(xla::ffi::DataType t) {
  return t == xla::ffi::DataType::BF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

inline bool FloatType(xla::ffi::DataType t) {
  return t == xla::ffi::DataType::F32 || t == xla::ffi::DataType::BF16;
}

}  // namespace jaxres_onednn
