// What roigen's Python runtime calls natively (roigen/native/__init__.py, through ctypes):
//   roigen_parallel_launch   TVM's parallel launch on torch's threads (parallel_launch.h)
//   roigen_pool_tensor       a tensor in reused memory (output_pool.h), as DLPack
#include <dlpack/dlpack.h>

#include "output_pool.h"
#include "parallel_launch.h"

namespace {

struct Owned {
  DLManagedTensor managed;
  std::vector<int64_t> shape;
  size_t size_class;
};

void release(DLManagedTensor* managed) {
  auto* owned = static_cast<Owned*>(managed->manager_ctx);
  roigen::output_pool::give(managed->dl_tensor.data, owned->size_class);
  delete owned;
}

}  // namespace

extern "C" {

int roigen_parallel_launch(roigen::FTVMParallelLambda flambda, void* cdata, int num_task) {
  return roigen::parallel_launch(flambda, cdata, num_task);
}

// A contiguous CPU tensor of `shape` and (code, bits), uninitialised; torch calls its
// deleter when the tensor's storage dies, which hands the memory back to the pool.
// Null if the memory cannot be had.
DLManagedTensor* roigen_pool_tensor(int32_t ndim, const int64_t* shape, uint8_t code, uint8_t bits) {
  size_t bytes = bits / 8;
  for (int32_t i = 0; i < ndim; ++i) bytes *= static_cast<size_t>(shape[i]);
  auto* owned = new Owned{{}, std::vector<int64_t>(shape, shape + ndim), roigen::output_pool::size_class(bytes)};
  void* data = roigen::output_pool::take(owned->size_class);
  if (!data) {
    delete owned;
    return nullptr;
  }
  DLTensor& t = owned->managed.dl_tensor;
  t.data = data;
  t.device = {kDLCPU, 0};
  t.ndim = ndim;
  t.dtype = {code, bits, 1};
  t.shape = owned->shape.data();
  t.strides = nullptr;
  t.byte_offset = 0;
  owned->managed.manager_ctx = owned;
  owned->managed.deleter = release;
  return &owned->managed;
}

void roigen_pool_set_limit(uint64_t bytes) { roigen::output_pool::set_limit(bytes); }

void roigen_pool_trim() { roigen::output_pool::trim(0); }

uint64_t roigen_pool_size_class(uint64_t bytes) { return roigen::output_pool::size_class(bytes); }

uint64_t roigen_pool_idle_bytes() { return roigen::output_pool::idle_bytes(); }

}  // extern "C"
