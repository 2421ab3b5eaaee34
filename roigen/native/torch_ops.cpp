// torch.ops.roigen.* registered from C++: the forward ops of one kernel package, for
// programs that run without roigen's Python ops (AOTInductor packages, C++ servers).
//
// The library sits in a package folder written by `roigen generate --torch-library`,
// next to torch_library.json (roigen/torch_library.py writes it: the ops' schemas as
// roigen's Python registration declares them and, for each compiled spec, its parameters,
// output shapes and the kernels to call) and kernels.so; TVM's runtime is in lib/.
// Loading the library registers the package's ops.  A call checks its arguments as
// roigen's Python ops do, since the kernels trust them, finds the kernel compiled for its
// parameters and runs it through TVM's FFI.  Backward ops are not registered: AOTInductor
// packages are inference graphs.

// Tensor methods and the few functions used, not all of ATen: half the compile time.
#define TORCH_ASSERT_ONLY_METHOD_OPERATORS
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/isfinite.h>
#include <ATen/ops/tensor.h>
#include <ATen/ops/where.h>
#include <ATen/ops/zeros.h>
#include <dlfcn.h>
#include <torch/csrc/jit/frontend/function_schema_parser.h>
#include <torch/library.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "parallel_launch.h"

#include <cmath>
#include <fstream>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

// One output dimension: value(source) * mul / div, with source N, C, H, W of the input,
// the row count (boxes, or images for whole-map ops) or none (a constant, mul).
struct Dim {
  std::string source;
  int64_t mul = 1, div = 1;
};

struct Kernel {
  std::string op, dtype, prefix, pack;  // pack: the separate layout kernel, or empty
  ffi::Map<ffi::Any, ffi::Any> params;
  int64_t lanes = 0, table_entries = 0;  // table_entries 0: per call (adaptive sampling)
  int64_t box_columns = 5;                // a rois row: (batch index, box..., per-bin offsets...)
  std::vector<int64_t> nonnegative;       // box columns that must be >= 0 (a rotated box's sizes)
  bool packed = false, tables = false, aux = false;
  std::vector<Dim> output, kernel_output;
};

struct Package {
  std::string dir, target, error;  // error: why loading failed (then no op is registered)
  std::vector<std::pair<std::string, std::string>> ops;  // (name, schema after the name)
  std::vector<Kernel> kernels;
  int64_t max_table_entries = 0, max_pixels = 0, reserve_above = 0;
  std::optional<ffi::Module> module;  // loaded on the first call
};

Package& package() {
  static Package p;
  return p;
}

std::string own_dir() {
  Dl_info info;
  if (!dladdr(reinterpret_cast<void*>(&own_dir), &info) || !info.dli_fname) return ".";
  std::string path = info.dli_fname;
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

std::vector<Dim> dims(const ffi::Any& value) {
  std::vector<Dim> out;
  for (const ffi::Any& d : value.cast<ffi::Array<ffi::Any>>()) {
    auto parts = d.cast<ffi::Array<ffi::Any>>();
    out.push_back({std::string(parts[0].cast<ffi::String>()), parts[1].cast<int64_t>(), parts[2].cast<int64_t>()});
  }
  return out;
}

void read_description(Package& p) {
  std::string path = p.dir + "/torch_library.json";
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot read " + path);
  std::stringstream text;
  text << file.rdbuf();
  ffi::String err;
  auto root = ffi::json::Parse(text.str(), &err).cast<ffi::Map<ffi::Any, ffi::Any>>();
  if (!err.empty()) throw std::runtime_error(path + ": " + std::string(err));
  p.target = root.at("target").cast<ffi::String>();
  auto limits = root.at("limits").cast<ffi::Map<ffi::Any, ffi::Any>>();
  p.max_table_entries = limits.at("max_table_entries").cast<int64_t>();
  p.max_pixels = limits.at("max_pixels").cast<int64_t>();
  p.reserve_above = limits.at("reserve_above").cast<int64_t>();
  for (const ffi::Any& item : root.at("ops").cast<ffi::Array<ffi::Any>>()) {
    auto op = item.cast<ffi::Map<ffi::Any, ffi::Any>>();
    p.ops.emplace_back(op.at("name").cast<ffi::String>(), op.at("schema").cast<ffi::String>());
  }
  for (const ffi::Any& item : root.at("kernels").cast<ffi::Array<ffi::Any>>()) {
    auto k = item.cast<ffi::Map<ffi::Any, ffi::Any>>();
    Kernel kernel;
    kernel.op = k.at("op").cast<ffi::String>();
    kernel.dtype = k.at("dtype").cast<ffi::String>();
    kernel.prefix = k.at("prefix").cast<ffi::String>();
    auto pack = k.at("pack").as<ffi::String>();
    kernel.pack = pack ? std::string(*pack) : "";
    kernel.params = k.at("params").cast<ffi::Map<ffi::Any, ffi::Any>>();
    kernel.lanes = k.at("lanes").cast<int64_t>();
    kernel.table_entries = k.at("table_entries").cast<int64_t>();
    kernel.packed = k.at("packed").cast<bool>();
    kernel.tables = k.at("tables").cast<bool>();
    kernel.aux = k.at("aux").cast<bool>();
    kernel.box_columns = k.at("box_columns").cast<int64_t>();
    for (const ffi::Any& col : k.at("nonnegative_box_columns").cast<ffi::Array<ffi::Any>>()) {
      kernel.nonnegative.push_back(col.cast<int64_t>());
    }
    kernel.output = dims(k.at("output"));
    kernel.kernel_output = dims(k.at("kernel_output"));
    p.kernels.push_back(std::move(kernel));
  }
}

ffi::Module& module() {
  Package& p = package();
  static std::mutex loading;
  std::lock_guard<std::mutex> lock(loading);
  if (!p.module) {
    // The kernels report errors through libtvm_ffi and run on libtvm_runtime's thread
    // pool: make both global (the ones this process has, else the package's lib/) so
    // that the kernel library, loaded next, finds them.
    for (std::string name : {"libtvm_ffi.so", "libtvm_runtime.so"}) {
      std::string path = p.dir + "/lib/" + name;
      TORCH_CHECK(dlopen(name.c_str(), RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) ||
                      dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL),
                  "roigen: cannot load ", path, ": ", dlerror());
    }
    std::string kernels = p.dir + "/kernels.so";
    p.module = ffi::Module::LoadFromFile(kernels);
    // Parallel loops on torch's threads rather than a second pool (parallel_launch.h).
    void* handle = dlopen(kernels.c_str(), RTLD_NOW | RTLD_NOLOAD);
    if (handle && !dlsym(handle, "__TVMBackendParallelBarrier")) {
      if (auto slot = reinterpret_cast<void**>(dlsym(handle, "__TVMBackendParallelLaunch"))) {
        *slot = reinterpret_cast<void*>(&roigen::parallel_launch);
      }
    }
  }
  return *p.module;
}

// Matching an op's arguments against a kernel's parameters -------------------------------

bool same(const c10::IValue& given, const ffi::Any& compiled) {
  if (given.isBool()) return compiled.as<bool>() == given.toBool();
  if (given.isInt()) return compiled.as<int64_t>() == given.toInt();
  if (given.isDouble()) {
    auto v = compiled.try_cast<double>();
    return v && *v == given.toDouble();
  }
  if (given.isString()) {
    auto v = compiled.as<ffi::String>();
    return v && std::string(*v) == given.toStringRef();
  }
  if (given.isIntList()) {
    auto v = compiled.as<ffi::Array<ffi::Any>>();
    auto list = given.toIntVector();
    if (!v || v->size() != list.size()) return false;
    for (size_t i = 0; i < list.size(); ++i) {
      if ((*v)[i].as<int64_t>() != list[i]) return false;
    }
    return true;
  }
  return false;
}

using Args = std::map<std::string, c10::IValue>;

std::string describe(const Args& args, const Kernel& any) {
  std::ostringstream s;
  for (const auto& [key, value] : any.params) {
    std::string name = key.cast<ffi::String>();
    s << (s.tellp() ? ", " : "") << name << "=" << args.at(name);
  }
  return s.str();
}

const Kernel& find_kernel(const std::string& op, const Args& args, const std::string& dtype) {
  const Kernel* some = nullptr;
  for (const Kernel& k : package().kernels) {
    if (k.op != op) continue;
    some = &k;
    if (k.dtype != dtype) continue;
    bool match = true;
    for (const auto& [key, value] : k.params) {
      auto it = args.find(std::string(key.cast<ffi::String>()));
      match = match && it != args.end() && same(it->second, value);
    }
    if (match) return k;
  }
  TORCH_CHECK(some, "roigen: this package has no kernel of ", op);
  TORCH_CHECK(false, "roigen: this package has no ", op, " kernel for ", describe(args, *some), " in ", dtype,
              "; generate the package with --spec for these parameters");
}

// Argument checks (the same as roigen/ops/_checks.py: the kernels trust what they get) -----

std::string compute_dtype(const at::Tensor& input) {
  switch (input.scalar_type()) {
    case at::kFloat: case at::kHalf: case at::kBFloat16: return "float32";
    case at::kDouble: return "float64";
    default: TORCH_CHECK_TYPE(false, "input dtype must be one of bfloat16, float16, float32, float64, got ",
                              input.scalar_type());
  }
}

void check_input(const at::Tensor& input) {
  TORCH_CHECK(input.dim() == 4, "input must be a 4-D (N, C, H, W) tensor, got shape ", input.sizes());
  compute_dtype(input);
  TORCH_CHECK(input.size(2) >= 1 && input.size(3) >= 1, "input must have H, W >= 1, got shape ", input.sizes());
  TORCH_CHECK(input.device().is_cpu(), "input is on ", input.device(), ": this package's kernels run CPU tensors");
}

void check_rois(const at::Tensor& rois, const at::Tensor& input, int64_t columns = 5,
                const std::vector<int64_t>& nonnegative = {}) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == columns, "boxes must be a Tensor[K, ", columns, "], got shape ",
              rois.sizes());
  TORCH_CHECK(rois.device() == input.device(), "boxes are on ", rois.device(), " but input is on ", input.device());
  TORCH_CHECK_TYPE(rois.scalar_type() == input.scalar_type(), "boxes dtype ", rois.scalar_type(),
                   " differs from input dtype ", input.scalar_type());
  if (rois.size(0) == 0) return;
  TORCH_CHECK(at::isfinite(rois).all().item<bool>(), "boxes hold NaN or infinite values");
  at::Tensor index = rois.select(1, 0);
  TORCH_CHECK(index.eq(index.trunc()).all().item<bool>(), "boxes[:, 0] (the batch index) must hold integers");
  double low = index.min().item<double>(), high = index.max().item<double>();
  TORCH_CHECK(low >= 0 && high < input.size(0), "boxes[:, 0] (the batch index) must lie in [0, ", input.size(0),
              "), got values in [", low, ", ", high, "]");
  for (int64_t col : nonnegative) {
    TORCH_CHECK(!rois.select(1, col).lt(0).any().item<bool>(), "boxes[:, ", col,
                "] (a box size) must be >= 0 with aligned=True, got ", rois.select(1, col).min().item<double>());
  }
}

int64_t available_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kib;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return INT64_MAX;
}

// A request that cannot fit is refused before any kernel runs: a scratch allocation that
// fails inside TVM's thread pool takes the process down (roigen/limits.py).
void reserve(int64_t bytes, const char* what) {
  if (bytes < package().reserve_above) return;
  int64_t free = available_bytes();
  TORCH_CHECK_WITH(OutOfMemoryError, bytes <= free, "roigen: ", what, " need ", bytes, " bytes, but ", free,
                   " are available; pass fewer boxes, a smaller output_size or a smaller map");
}

// Threads that run kernels (each holds its own slab of a fused kernel's scratch).
int64_t pool_threads() { return at::get_num_threads(); }

// Calling kernels ---------------------------------------------------------------------------

DLTensor dl(const at::Tensor& x) {
  DLTensor t{};
  t.data = x.data_ptr();
  t.device = {kDLCPU, 0};
  t.ndim = static_cast<int32_t>(x.dim());
  t.dtype = {static_cast<uint8_t>(at::isFloatingType(x.scalar_type()) ? kDLFloat : kDLInt),
             static_cast<uint8_t>(x.element_size() * 8), 1};
  t.shape = const_cast<int64_t*>(x.sizes().data());
  t.strides = const_cast<int64_t*>(x.strides().data());
  return t;
}

void call(const Kernel& k, const std::string& name, const std::vector<at::Tensor>& tensors,
          const std::vector<int64_t>& scalars = {}) {
  ffi::Optional<ffi::Function> fn = module()->GetFunction(k.prefix + name);
  TORCH_CHECK(fn.has_value(), "roigen: kernels.so has no function ", k.prefix, name);
  std::vector<DLTensor> views;
  views.reserve(tensors.size());
  std::vector<ffi::AnyView> args;
  for (const at::Tensor& t : tensors) {
    views.push_back(dl(t));
    args.emplace_back(&views.back());
  }
  for (int64_t s : scalars) args.emplace_back(s);
  ffi::Any result;
  try {
    fn.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "roigen: ", k.op, " kernel failed: ", e.what());
  }
}

std::vector<int64_t> shape_of(const std::vector<Dim>& dims, at::IntArrayRef input, int64_t rows) {
  std::vector<int64_t> out;
  for (const Dim& d : dims) {
    int64_t value = d.source == "rows" ? rows
                    : d.source == "N"  ? input[0]
                    : d.source == "C"  ? input[1]
                    : d.source == "H"  ? input[2]
                    : d.source == "W"  ? input[3]
                                       : 1;
    TORCH_CHECK(value * d.mul % d.div == 0, "input: dimension ", d.source, " (", value, ") must be a multiple of ",
                d.div, " for this op (position-sensitive pooling: PH*PW)");
    out.push_back(value * d.mul / d.div);
  }
  return out;
}

// `into`, for a caller that runs several kernels into one output (FPN's levels): the kernel
// writes its output (kernel shape, compute dtype) there, allocated on the first call; the
// caller has checked the rows, some of which may be blanked to batch index -1 (no image:
// the kernels' tasks skip them, see roigen/backends/base.py).
std::tuple<at::Tensor, at::Tensor> forward(const std::string& op, const at::Tensor& input,
                                           const c10::optional<at::Tensor>& rois, const Args& args, bool keep_aux,
                                           at::Tensor* into = nullptr) {
  check_input(input);
  std::string dtype = compute_dtype(input);
  const Kernel& k = find_kernel(op, args, dtype);
  if (rois && !into) check_rois(*rois, input, k.box_columns, k.nonnegative);
  int64_t n = input.size(0), c = input.size(1), h = input.size(2), w = input.size(3);
  int64_t rows = rois ? rois->size(0) : n;
  auto out_shape = shape_of(k.output, input.sizes(), rows);
  auto kernel_shape = shape_of(k.kernel_output, input.sizes(), rows);
  int64_t numel = c10::multiply_integers(out_shape);
  int64_t aux_numel = k.aux && keep_aux ? numel : 0;
  if (input.numel() == 0 || numel == 0) {
    return {at::zeros(out_shape, input.options()), at::zeros({aux_numel}, input.options().dtype(at::kInt))};
  }
  auto compute = input.options().dtype(dtype == "float64" ? at::kDouble : at::kFloat);
  at::Tensor x = input.to(compute.dtype()).contiguous();
  int64_t itemsize = x.element_size();
  int64_t blocks = k.lanes ? (c + k.lanes - 1) / k.lanes : 0;
  int64_t scratch = !k.packed ? 0 : k.pack.empty() ? h * w * k.lanes * itemsize * pool_threads()
                                                    : n * blocks * h * w * k.lanes * itemsize;
  reserve(numel * itemsize + aux_numel * 4 + scratch, "the output and the kernels' scratch");

  at::Tensor data = x;
  if (!k.pack.empty()) {
    data = at::empty({n, blocks, h, w, k.lanes}, compute);
    call(k, k.pack, {x, data});
  }
  std::vector<at::Tensor> tensors{data};
  if (rois) {
    at::Tensor r = rois->to(compute.dtype()).contiguous();
    tensors.push_back(r);
    if (k.tables) {
      int64_t entries = k.table_entries;
      if (!entries) {
        at::Tensor size = at::zeros({1}, compute.dtype(at::kLong));
        call(k, "table_size", {r, size});
        entries = size.item<int64_t>();
      }
      TORCH_CHECK(h * w <= package().max_pixels, "input: a ", h, "x", w, " map has more pixels than the sample "
                  "tables' int32 offsets address (", package().max_pixels, "); split the map");
      TORCH_CHECK(k.table_entries || entries <= package().max_table_entries,
                  "boxes: with sampling_ratio <= 0 each bin takes ceil(box side / output side) samples per axis, "
                  "and a box here needs ", entries / 2, " samples over its bins' rows and columns, more than the "
                  "limit of ", package().max_table_entries / 2, " for adaptive sampling; pass sampling_ratio > 0 "
                  "or clip the boxes to the map");
      reserve(rows * entries * (4 + itemsize), "the sample tables");
      at::Tensor itab = at::empty({rows, entries}, compute.dtype(at::kInt));
      at::Tensor ftab = at::empty({rows, entries}, compute);
      call(k, "tables", {r, itab, ftab}, {h, w});
      tensors.push_back(itab);
      tensors.push_back(ftab);
    }
  }
  at::Tensor out = into && into->defined() ? *into : at::empty(kernel_shape, compute);
  if (into) *into = out;
  at::Tensor aux = at::empty({aux_numel}, compute.dtype(at::kInt));
  tensors.push_back(out);
  tensors.push_back(aux);
  call(k, "forward", tensors);
  return {out.view(out_shape).to(input.scalar_type()), aux};
}

// The boxed kernels: one for every op of the package, reading arguments by schema name ----

Args arguments(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema().arguments();
  Args args;
  auto first = stack->end() - static_cast<std::ptrdiff_t>(schema.size());
  for (size_t i = 0; i < schema.size(); ++i) args[schema[i].name()] = first[i];
  torch::jit::drop(*stack, schema.size());
  return args;
}

void check_target(const Args& args) {
  const std::string& target = args.at("target").toStringRef();
  TORCH_CHECK(target == "auto" || target == "host" || target == package().target, "target ", target,
              ": this package holds kernels for ", package().target);
}

std::string op_name(const c10::OperatorHandle& op) {
  const std::string& name = op.schema().name();
  return name.substr(name.find("::") + 2);
}

void run_op(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  Args args = arguments(op, stack);
  check_target(args);
  c10::optional<at::Tensor> rois;
  if (args.count("rois")) rois = args.at("rois").toTensor();
  auto [out, aux] = forward(op_name(op), args.at("input").toTensor(), rois, args, args.at("keep_aux").toBool());
  stack->emplace_back(std::move(out));
  stack->emplace_back(std::move(aux));
}

// FPN: each box RoIAligned on its level's map (levels computed by the caller, as in
// roigen/ops/multi_scale.py), rows in box order.  Every level runs on every box, the other
// levels' rows blanked to batch index -1, and writes its own rows of one output: no split,
// scatter or zero fill (roigen/ops/multi_scale.py measures it).
void run_multi_scale(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  Args args = arguments(op, stack);
  check_target(args);
  auto features = args.at("features").toTensorVector();
  at::Tensor rois = args.at("rois").toTensor(), levels = args.at("levels").toTensor();
  auto scales = args.at("scales").toDoubleVector();
  auto size = args.at("output_size").toIntVector();
  TORCH_CHECK(!features.empty() && scales.size() == features.size(),
              "scales must give one scale per feature map: ", scales.size(), " for ", features.size());
  TORCH_CHECK(size.size() == 2, "output_size must be (height, width)");
  for (const auto& f : features) {
    check_input(f);
    TORCH_CHECK(f.size(0) == features[0].size(0) && f.size(1) == features[0].size(1) &&
                f.scalar_type() == features[0].scalar_type(),
                "features must share batch size, channels, dtype and device");
  }
  check_rois(rois, features[0]);
  int64_t count = static_cast<int64_t>(features.size());
  TORCH_CHECK(levels.dim() == 1 && levels.size(0) == rois.size(0) && levels.scalar_type() == at::kLong,
              "levels must be an int64 Tensor[K], one level per box");
  TORCH_CHECK(!levels.numel() || levels.ge(0).logical_and(levels.lt(count)).all().item<bool>(),
              "levels must lie in [0, ", count, "), the levels of features");
  std::vector<int64_t> shape{rois.size(0), features[0].size(1), size[0], size[1]};
  if (c10::multiply_integers(shape) == 0) {
    stack->emplace_back(at::zeros(shape, features[0].options()));
    return;
  }
  Args align{{"pooled_height", size[0]}, {"pooled_width", size[1]}, {"sampling_ratio", args.at("sampling_ratio")},
             {"aligned", args.at("aligned")}, {"mode", std::string("avg")}};
  at::Tensor blank = at::tensor({-1.0, 0.0, 0.0, 0.0, 0.0}, rois.options());
  at::Tensor out;
  for (int64_t level = 0; level < count; ++level) {
    at::Tensor mine = levels.eq(level);
    if (!mine.any().item<bool>()) continue;
    align["spatial_scale"] = scales[level];
    forward("roi_align", features[level], at::where(mine.unsqueeze(1), rois, blank).contiguous(), align, false,
            &out);
  }
  stack->emplace_back(out.view(shape).to(features[0].scalar_type()));
}

// Registration: reading the package must not throw out of the library's constructor (that
// would abort the process inside dlopen); a failure is kept for roigen_torch_error().
TORCH_LIBRARY_FRAGMENT(roigen, m) {
  Package& p = package();
  p.dir = own_dir();
  try {
    read_description(p);
  } catch (const std::exception& e) {
    p.error = e.what();
    return;
  }
  for (const auto& [name, schema] : p.ops) {
    if (c10::Dispatcher::singleton().findSchema({"roigen::" + name, ""})) {
      p.error = "roigen::" + name + " is registered already (roigen's Python ops were imported): not registering "
                "this package's ops";
      return;
    }
  }
  for (const auto& [name, schema] : p.ops) {
    m.def(torch::jit::parseSchema(name + schema));
    auto kernel = name == "multi_scale_roi_align" ? torch::CppFunction::makeFromBoxedFunction<&run_multi_scale>()
                                                  : torch::CppFunction::makeFromBoxedFunction<&run_op>();
    m.impl(name.c_str(), torch::dispatch(c10::DispatchKey::CPU, std::move(kernel)));
  }
}

}  // namespace

// Why the library registered nothing, or "" (roigen.torch_library.load raises it).
extern "C" const char* roigen_torch_error() { return package().error.c_str(); }
