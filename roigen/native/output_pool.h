// Memory for the kernels' large outputs, kept for reuse after the caller frees them.
//
// Each call returns fresh tensors (51 MB for fpn_box's forward, 111 MB for its input
// gradient).  Allocations that large come straight from mmap, and every first-touched
// 4 KiB page then costs a fault: 11-15 ms to allocate and fill 51 MB here, against 2-3 ms
// to refill memory already mapped.  A training or inference loop frees the previous
// call's outputs before the next call, so blocks freed by the caller wait here, by size
// class, for the next output of their class.  Idle blocks are bounded (set_limit); past
// the bound a freed block goes back to the system.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace roigen::output_pool {

struct State {
  std::mutex lock;
  std::unordered_map<size_t, std::vector<void*>> idle;  // by size class
  size_t idle_bytes = 0, limit = 0;
};

inline State& state() {
  static State* s = new State;  // never destroyed: tensors may be freed during exit
  return *s;
}

// Sizes rounded up to an eighth of their power of two: at most 12.5 % more memory, and
// outputs whose box count varies a little between calls share a class.
inline size_t size_class(size_t bytes) {
  if (bytes == 0) return 64;
  size_t step = 64;
  while (step * 16 <= bytes) step *= 2;
  return (bytes + step - 1) / step * step;
}

inline void* take(size_t cls) {
  {
    State& s = state();
    std::lock_guard<std::mutex> guard(s.lock);
    auto it = s.idle.find(cls);
    if (it != s.idle.end() && !it->second.empty()) {
      void* block = it->second.back();
      it->second.pop_back();
      s.idle_bytes -= cls;
      return block;
    }
  }
  void* block = nullptr;
  return posix_memalign(&block, 64, cls) == 0 ? block : nullptr;
}

inline void give(void* block, size_t cls) {
  State& s = state();
  {
    std::lock_guard<std::mutex> guard(s.lock);
    if (s.idle_bytes + cls <= s.limit) {
      s.idle[cls].push_back(block);
      s.idle_bytes += cls;
      return;
    }
  }
  std::free(block);
}

// Release idle blocks until at most `keep` bytes are idle.
inline void trim(size_t keep) {
  std::vector<void*> release;
  {
    State& s = state();
    std::lock_guard<std::mutex> guard(s.lock);
    for (auto& [cls, blocks] : s.idle) {
      while (s.idle_bytes > keep && !blocks.empty()) {
        release.push_back(blocks.back());
        blocks.pop_back();
        s.idle_bytes -= cls;
      }
    }
  }
  for (void* block : release) std::free(block);
}

// Keep at most `bytes` idle from now on.
inline void set_limit(size_t bytes) {
  {
    State& s = state();
    std::lock_guard<std::mutex> guard(s.lock);
    s.limit = bytes;
  }
  trim(bytes);
}

inline size_t idle_bytes() {
  State& s = state();
  std::lock_guard<std::mutex> guard(s.lock);
  return s.idle_bytes;
}

}  // namespace roigen::output_pool
