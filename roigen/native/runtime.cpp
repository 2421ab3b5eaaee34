// What roigen's Python runtime calls natively (roigen/native/__init__.py, through ctypes):
//   roigen_parallel_launch   TVM's parallel launch on torch's threads (parallel_launch.h)
//   roigen_set_serial        run this thread's next launches as one task, on this thread
//   roigen_pool_tensor       a tensor in reused memory (output_pool.h), as DLPack
//   roigen_rows_ok           whether box rows pass the ops' value checks
#include <dlpack/dlpack.h>

#include <cmath>

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

// The value checks of roigen/ops/_checks.py's check_rois_for, in one pass over the rows.
template <typename T>
int rows_ok(const T* rows, int64_t count, int64_t columns, int64_t batch, uint64_t nonnegative) {
  for (int64_t k = 0; k < count; ++k) {
    const T* row = rows + k * columns;
    for (int64_t j = 0; j < columns; ++j) {
      if (!std::isfinite(row[j])) return 0;
      if (j < 64 && (nonnegative >> j & 1) && row[j] < 0) return 0;
    }
    if (row[0] != std::trunc(row[0]) || row[0] < 0 || row[0] >= static_cast<T>(batch)) return 0;
  }
  return 1;
}

// Set by the thread that calls a kernel too small to share (roigen_set_serial): handing
// its tasks to a worker costs more than running them, 50-100 us for a sleeping worker.
thread_local bool serial = false;

}  // namespace

extern "C" {

int roigen_parallel_launch(roigen::FTVMParallelLambda flambda, void* cdata, int num_task) {
  // One task is the whole loop: a kernel splits its loop by the task count it is given.
  return roigen::parallel_launch(flambda, cdata, serial ? 1 : num_task);
}

void roigen_set_serial(int on) { serial = on != 0; }

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

// Whether `count` contiguous rows of `columns` floats (doubles if `is_double`) hold finite
// values, an integer batch index in [0, batch) in column 0, and values >= 0 in the columns
// whose bits `nonnegative` sets.  Python says what is wrong when this says no: each torch
// op it would take to find out costs 30-60 us between large kernels (cold caches), more
// than the scan.
int roigen_rows_ok(const void* rows, int64_t count, int64_t columns, int is_double, int64_t batch,
                   uint64_t nonnegative) {
  return is_double ? rows_ok(static_cast<const double*>(rows), count, columns, batch, nonnegative)
                   : rows_ok(static_cast<const float*>(rows), count, columns, batch, nonnegative);
}

void roigen_pool_set_limit(uint64_t bytes) { roigen::output_pool::set_limit(bytes); }

void roigen_pool_trim() { roigen::output_pool::trim(0); }

uint64_t roigen_pool_size_class(uint64_t bytes) { return roigen::output_pool::size_class(bytes); }

uint64_t roigen_pool_idle_bytes() { return roigen::output_pool::idle_bytes(); }

}  // extern "C"
