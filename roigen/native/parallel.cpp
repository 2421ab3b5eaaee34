// parallel_launch.h for kernels loaded from Python: roigen.native.run_on_torch_threads points
// each kernel library's __TVMBackendParallelLaunch here.
#include "parallel_launch.h"

extern "C" int roigen_parallel_launch(roigen::FTVMParallelLambda flambda, void* cdata, int num_task) {
  return roigen::parallel_launch(flambda, cdata, num_task);
}
