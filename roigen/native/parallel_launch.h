// TVM's parallel launch on torch's intra-op thread pool.
//
// A TVM CPU kernel hands each parallel loop to TVMBackendParallelLaunch through the pointer
// __TVMBackendParallelLaunch in its library, which TVM's loader sets to its own thread pool.
// Next to torch that makes two pools on the same cores: torch's OpenMP workers spin for a
// while after every torch op, and a kernel called in that window waited for them (a small
// RoI-SPP went from 0.4 ms to 4-8 ms after a large torch call; fpn_box from 25 ms to
// 110 ms).  Pointing the kernels at this launch runs them on torch's own threads instead:
// one pool, as many threads as torch.get_num_threads(), whatever ran before.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace roigen {

// TVM's C ABI for parallel loops (tvm/runtime/c_backend_api.h).
struct TVMParallelGroupEnv {
  void* sync_handle;  // TVM's barrier; kernels that use one are left on TVM's pool
  int32_t num_task;
};
using FTVMParallelLambda = int (*)(int task_id, TVMParallelGroupEnv* penv, void* cdata);

// Task i of `num_task` (0: one per thread) runs flambda(i); a kernel splits its loop by
// task id and count, so the result does not depend on which thread runs which task.
inline int parallel_launch(FTVMParallelLambda flambda, void* cdata, int num_task) {
  int tasks = num_task > 0 ? num_task : at::get_num_threads();
  TVMParallelGroupEnv env{nullptr, tasks};
  if (tasks == 1) return flambda(0, &env, cdata) != 0 ? -1 : 0;  // no OpenMP region for one task
  std::atomic<int> status{0};
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      if (flambda(static_cast<int>(task), &env, cdata) != 0) status = -1;
    }
  });
  return status;
}

}  // namespace roigen
