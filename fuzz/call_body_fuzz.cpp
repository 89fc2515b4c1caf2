// Fuzz target: the call body reader and runner (src/core/protocol/call.hpp run_call_body), what
// a worker does with every task, initializer and mp::process call it is sent. A body names an
// invoker and a target as (module, offset); the runner must call nothing but an invoker this
// program registered, and hand it only a target in executable code.
//
// This binary registers three invokers of its own (the "wrappers"), and no other: each
// records that it ran and with which target, then -- only if the target is the one it was
// made for -- lets the library's own invoker (detail::invoker / chunk_invoker, never
// registered here) decode the arguments and call it. Each target records being called and
// checks that a wrapper is the one calling it.
//
// The input is [mode][body]; mode bit 0: the call has a result (a pool task) or not (an
// initializer, an mp::process). Code offsets move with every build, so an input may name this
// binary's functions symbolically: an offset 0xfefefefe000000NN is replaced by the real offset
// of function NN of known_functions() before the body is run (seeds and committed regression
// inputs do; any other offset is used as it is). Oracles, from an independent parse of the body and
// the program's own segment table (dl_iterate_phdr):
//   - a body that is truncated, names an invoker that is not a wrapper, or names a target
//     outside the executable segments of its module: result_status::bad_arguments, and
//     nothing ran;
//   - otherwise exactly the named wrapper ran, once, with exactly the named target;
//   - no target ever runs except through its own wrapper.
// A registered invoker that is handed a target in executable code that is not its own
// function is what the design allows (os/code_identity.hpp: "a forged offset can at worst name
// other code of the same program"); the wrappers refuse to call it and count it. Set
// MULTIPROC_FUZZ_STRICT_TARGETS=1 to make that a crash instead.
#include <link.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <multiproc/detail/call.hpp>

#include "../src/core/protocol/call.hpp"
#include "../src/core/protocol/frame.hpp"
#include "../src/os/code_identity.hpp"
#include "support.hpp"

namespace core = multiproc::detail;

namespace {

// ---- the targets: each records being called, and by whom ------------------------------------

/// The wrapper running now, and the target it is about to call (set only around that call).
thread_local core::raw_function calling = nullptr;
int targets_run = 0;

void entered(core::raw_function self) {
  MULTIPROC_FUZZ_CHECK(calling == self);  // else a target ran outside its registered invoker
  ++targets_run;
}

int add(int a, int b) {
  entered(reinterpret_cast<core::raw_function>(&add));
  return static_cast<int>(static_cast<unsigned>(a) + static_cast<unsigned>(b));
}

double total(std::vector<double> values) {
  entered(reinterpret_cast<core::raw_function>(&total));
  double sum = 0;
  for (double v : values)
    sum += v;
  return sum;
}

std::string shout(std::string text) {
  entered(reinterpret_cast<core::raw_function>(&shout));
  return text + "!";
}

// ---- the wrappers: the only registered invokers of this program ------------------------------

struct run_record {
  core::invoker_fn invoker = nullptr;
  core::raw_function target = nullptr;
  int count = 0;
};
run_record last_run;
unsigned long forged_targets = 0;

template <core::invoker_fn Wrapper, auto Target, core::invoker_fn Real>
void wrapped(core::raw_function target, std::istream& in, std::ostream* out) {
  last_run.invoker = Wrapper;
  last_run.target = target;
  ++last_run.count;
  const auto own = reinterpret_cast<core::raw_function>(Target);
  if (target != own) {
    // A registered invoker, a target in executable code, but not the function this invoker
    // was instantiated for: the library's invoker would call it with the wrong signature.
    if (forged_targets++ == 0 || std::getenv("MULTIPROC_FUZZ_STRICT_TARGETS") != nullptr) {
      std::fprintf(stderr,
                   "multiproc fuzz: a registered invoker was handed a target that is not its "
                   "function (%p); the runner accepted it (executable code)\n",
                   reinterpret_cast<void*>(target));
      if (std::getenv("MULTIPROC_FUZZ_STRICT_TARGETS") != nullptr) std::abort();
    }
    return;
  }
  calling = own;
  try {
    Real(target, in, out);
  } catch (...) {
    calling = nullptr;
    throw;
  }
  calling = nullptr;
}

void wrap_add(core::raw_function, std::istream&, std::ostream*);
void wrap_total(core::raw_function, std::istream&, std::ostream*);
void wrap_shout_chunk(core::raw_function, std::istream&, std::ostream*);

void wrap_add(core::raw_function target, std::istream& in, std::ostream* out) {
  wrapped<&wrap_add, &add, &core::invoker<int (*)(int, int)>::call>(target, in, out);
}
void wrap_total(core::raw_function target, std::istream& in, std::ostream* out) {
  wrapped<&wrap_total, &total, &core::invoker<double (*)(std::vector<double>)>::call>(target, in,
                                                                                      out);
}
void wrap_shout_chunk(core::raw_function target, std::istream& in, std::ostream* out) {
  if (out == nullptr && multiproc_fuzz::skip_known("noresult")) {
    // Known (chunk_invoker_run_without_a_result_stream_is_refused): the library's chunk
    // invoker writes its results through `out` unchecked, and run_call_body passes none for
    // an initializer or an mp::process call. Count the run, call nothing.
    last_run.invoker = &wrap_shout_chunk;
    last_run.target = target;
    ++last_run.count;
    return;
  }
  wrapped<&wrap_shout_chunk, &shout,
          &core::chunk_invoker<std::string (*)(std::string), false>::call>(target, in, out);
}

const bool registered = core::register_invoker(&wrap_add) && core::register_invoker(&wrap_total) &&
                        core::register_invoker(&wrap_shout_chunk);

// ---- an independent view of the program's code ------------------------------------------------

struct module_view {
  std::string name;
  std::uintptr_t base = 0;
  std::vector<std::pair<std::uintptr_t, std::uintptr_t>> executable;
};

int collect(dl_phdr_info* info, std::size_t, void* out) {
  auto& modules = *static_cast<std::vector<module_view>*>(out);
  module_view m;
  m.name = modules.empty() ? std::string() : (info->dlpi_name ? info->dlpi_name : "");
  m.base = static_cast<std::uintptr_t>(info->dlpi_addr);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const auto& segment = info->dlpi_phdr[i];
    if (segment.p_type == PT_LOAD && (segment.p_flags & PF_X)) {
      m.executable.emplace_back(m.base + segment.p_vaddr,
                                m.base + segment.p_vaddr + segment.p_memsz);
    }
  }
  modules.push_back(std::move(m));
  return 0;
}

const std::vector<module_view>& modules() {
  static const std::vector<module_view> list = [] {
    std::vector<module_view> found;
    dl_iterate_phdr(&collect, &found);
    return found;
  }();
  return list;
}

/// The executable address (module, offset) names, or 0.
std::uintptr_t executable_address(std::string_view module, std::uint64_t offset) {
  for (const auto& m : modules()) {
    if (m.name != module) continue;
    const std::uintptr_t address = m.base + static_cast<std::uintptr_t>(offset);
    for (const auto& [begin, end] : m.executable) {
      if (address >= begin && address < end) return address;
    }
    return 0;  // the first module of that name is the one the runner looks in
  }
  return 0;
}

bool is_wrapper(std::uintptr_t address) {
  return address == reinterpret_cast<std::uintptr_t>(&wrap_add) ||
         address == reinterpret_cast<std::uintptr_t>(&wrap_total) ||
         address == reinterpret_cast<std::uintptr_t>(&wrap_shout_chunk);
}

// ---- symbolic code references ------------------------------------------------------------------

constexpr std::uint64_t symbolic_mark = 0xfefefefe00000000;

/// The functions an input may name symbolically, by index.
const std::vector<core::raw_function>& known_functions() {
  static const std::vector<core::raw_function> list = {
      reinterpret_cast<core::raw_function>(&wrap_add),
      reinterpret_cast<core::raw_function>(&wrap_total),
      reinterpret_cast<core::raw_function>(&wrap_shout_chunk),
      reinterpret_cast<core::raw_function>(&add),
      reinterpret_cast<core::raw_function>(&total),
      reinterpret_cast<core::raw_function>(&shout),
      reinterpret_cast<core::raw_function>(&core::invoker<int (*)(int, int)>::call),
  };
  return list;
}

std::uint64_t real_offset(std::uint64_t offset) {
  if ((offset & 0xffffffff00000000) != symbolic_mark) return offset;
  const auto& functions = known_functions();
  const std::size_t index = static_cast<std::size_t>(offset & 0xffffffff) % functions.size();
  multiproc::detail::os::code_location where;
  MULTIPROC_FUZZ_CHECK(
      multiproc::detail::os::locate_code(reinterpret_cast<const void*>(functions[index]), where));
  return where.offset;
}

/// `body` with its symbolic offsets replaced (as it is if its code references do not parse).
std::string resolve_symbols(std::string_view body) {
  multiproc_fuzz::plain_reader parse(body);
  std::string_view invoker_module, target_module;
  std::uint64_t invoker_offset = 0, target_offset = 0;
  if (!parse.string(invoker_module) || !parse.u64(invoker_offset) || !parse.string(target_module) ||
      !parse.u64(target_offset)) {
    return std::string(body);
  }
  std::string out;
  core::append_string(out, invoker_module);
  core::append_u64(out, real_offset(invoker_offset));
  core::append_string(out, target_module);
  core::append_u64(out, real_offset(target_offset));
  out.append(body.substr(body.size() - parse.remaining()));
  return out;
}

/// `body` (real offsets, as encode_call writes) with the offsets of known functions made
/// symbolic.
std::string symbolic(const std::string& body) {
  multiproc_fuzz::plain_reader parse(body);
  std::string_view modules[2];
  std::uint64_t offsets[2] = {0, 0};
  MULTIPROC_FUZZ_CHECK(parse.string(modules[0]) && parse.u64(offsets[0]) &&
                       parse.string(modules[1]) && parse.u64(offsets[1]));
  std::string out;
  for (int i = 0; i < 2; ++i) {
    std::uint64_t offset = offsets[i];
    const auto& functions = known_functions();
    for (std::size_t index = 0; index < functions.size(); ++index) {
      multiproc::detail::os::code_location where;
      if (multiproc::detail::os::locate_code(reinterpret_cast<const void*>(functions[index]),
                                             where) &&
          where.module == modules[i] && where.offset == offset) {
        offset = symbolic_mark | index;
      }
    }
    core::append_string(out, modules[i]);
    core::append_u64(out, offset);
  }
  out.append(std::string_view(body).substr(body.size() - parse.remaining()));
  return out;
}

// ---- seeds --------------------------------------------------------------------------------------

template <class Tuple>
std::string encoded(core::invoker_fn invoker, core::raw_function target, const Tuple& arguments) {
  const core::call_spec spec{invoker, target, &core::write_tuple<Tuple>, &arguments};
  return core::encode_call(spec)->bytes;
}

std::vector<std::string> seeds() {
  const auto as = [](auto function) { return reinterpret_cast<core::raw_function>(function); };
  std::vector<std::string> bodies;
  bodies.push_back(encoded(&wrap_add, as(&add), std::tuple<int, int>(2, 40)));
  bodies.push_back(encoded(&wrap_total, as(&total),
                           std::tuple<std::vector<double>>(std::vector<double>{1.5, 2.5, 3})));
  {
    // A chunk: the items as write_sequence writes them.
    const std::vector<std::string> items{"a", "bc", ""};
    const core::chunk_view<std::string> view{items.data(), items.size()};
    const core::call_spec spec{&wrap_shout_chunk, as(&shout), &core::write_chunk<std::string>,
                               &view};
    bodies.push_back(core::encode_call(spec)->bytes);
  }
  // Forged: the wrong target for an invoker; an unregistered invoker (the library's own).
  bodies.push_back(encoded(&wrap_add, as(&shout), std::tuple<int, int>(1, 2)));
  bodies.push_back(
      encoded(&core::invoker<int (*)(int, int)>::call, as(&add), std::tuple<int, int>(1, 2)));
  std::vector<std::string> out;
  for (const auto& body : bodies) {
    out.push_back(std::string(1, '\1') + symbolic(body));
    out.push_back(std::string(1, '\0') + symbolic(body));
  }
  out.push_back(std::string(1, '\1') + bodies.front());  // one with this build's real offsets
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  MULTIPROC_FUZZ_CHECK(registered);
  std::atexit([] {
    if (forged_targets != 0) {
      std::fprintf(stderr,
                   "multiproc fuzz: %lu calls reached a registered invoker with a target that "
                   "is not its function\n",
                   forged_targets);
    }
  });
  (void)modules();
  multiproc_fuzz::write_seeds_if_asked(seeds());
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool with_result = (data[0] & 1) != 0;
  const std::string resolved =
      resolve_symbols(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  // An allocation of exactly the body's size, so that ASan sees any read past its end.
  const std::unique_ptr<char[]> exact(new char[resolved.size()]);
  std::memcpy(exact.get(), resolved.data(), resolved.size());
  const char* body = exact.get();
  const std::string_view bytes(body, resolved.size());

  // What the runner must do, decided without it.
  multiproc_fuzz::plain_reader parse(bytes);
  std::string_view invoker_module, target_module;
  std::uint64_t invoker_offset = 0, target_offset = 0;
  std::uintptr_t invoker = 0, target = 0;
  if (parse.string(invoker_module) && parse.u64(invoker_offset) && parse.string(target_module) &&
      parse.u64(target_offset)) {
    invoker = executable_address(invoker_module, invoker_offset);
    target = executable_address(target_module, target_offset);
  }
  const bool must_refuse = !is_wrapper(invoker) || target == 0;

  last_run = run_record{};
  targets_run = 0;
  std::string result;
  const core::task_outcome outcome = core::run_call_body(
      body, bytes.size(), with_result ? &result : nullptr, 0, false, nullptr, nullptr, nullptr);
  MULTIPROC_FUZZ_CHECK(calling == nullptr);
  if (must_refuse) {
    MULTIPROC_FUZZ_CHECK(outcome.status == core::result_status::bad_arguments);
    MULTIPROC_FUZZ_CHECK(last_run.count == 0);
    MULTIPROC_FUZZ_CHECK(targets_run == 0);
    MULTIPROC_FUZZ_CHECK(result.empty());
  } else {
    MULTIPROC_FUZZ_CHECK(last_run.count == 1);
    MULTIPROC_FUZZ_CHECK(reinterpret_cast<std::uintptr_t>(last_run.invoker) == invoker);
    MULTIPROC_FUZZ_CHECK(reinterpret_cast<std::uintptr_t>(last_run.target) == target);
    MULTIPROC_FUZZ_CHECK(targets_run <= (with_result ? 1 << 20 : 1));
  }
  if (outcome.status != core::result_status::ok) MULTIPROC_FUZZ_CHECK(result.empty());
  return 0;
}
