// Call bodies (see call.hpp): the invoker registry, encoding, and the checked run.
#include "call.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <istream>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <typeinfo>
#include <unordered_set>

#include <multiproc/errors.hpp>

#include "../../os/code_identity.hpp"
#include "codec.hpp"
#include "frame.hpp"

#if __has_include(<cxxabi.h>)
#include <cxxabi.h>
#define MULTIPROC_HAVE_CXXABI 1
#endif

namespace multiproc::detail {

// ---- invoker registry ---------------------------------------------------------------------------

namespace {
struct invoker_registry {
  std::mutex mutex;
  std::unordered_set<const void*> known;
};
invoker_registry& registry() {
  // Function-local: registrations run during static initialisation, in any order.
  static invoker_registry instance;
  return instance;
}
bool is_registered_invoker(const void* address) {
  thread_local const void* last_seen = nullptr;  // workers run the same invoker many times
  if (address == last_seen) return true;
  auto& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.known.count(address) == 0) return false;
  last_seen = address;
  return true;
}
}  // namespace

bool register_invoker(invoker_fn invoker) noexcept {
  try {
    auto& r = registry();
    std::lock_guard<std::mutex> lock(r.mutex);
    r.known.insert(reinterpret_cast<const void*>(invoker));
    return true;
  } catch (...) {
    return false;
  }
}

// ---- handles that travel with a call ------------------------------------------------------

namespace {
/// The call being encoded or decoded on this thread, if any (nested encodings, e.g. a
/// serialize() that submits work, save and restore them).
thread_local handle_list* outgoing = nullptr;
thread_local ticket_list* outgoing_tickets = nullptr;
thread_local handle_list* incoming = nullptr;

template <class List>
class travelling_with {
 public:
  travelling_with(List*& slot, List* list) : slot_(slot), saved_(slot) { slot = list; }
  ~travelling_with() { slot_ = saved_; }
  travelling_with(const travelling_with&) = delete;
  travelling_with& operator=(const travelling_with&) = delete;

 private:
  List*& slot_;
  List* saved_;
};

[[noreturn]] void refuse_travel() {
  throw serialization_error(
      serialization_error::phase::encode_arguments,
      "a queue, pipe or shared object travels only as an argument of mp::process, of a pool "
      "task or of a pool initializer, not inside a queue or pipe nor as a task's result");
}
}  // namespace

std::uint32_t travel_out(os::native_handle handle) {
  if (outgoing == nullptr) refuse_travel();
  try {
    outgoing->push_back(os::duplicate_handle(handle, os::handle_kind::travelling));
  } catch (const std::system_error& e) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              std::string("could not copy a handle for the call: ") + e.what());
  }
  return static_cast<std::uint32_t>(outgoing->size() - 1);
}

void travel_ticket_out(std::unique_ptr<travel_ticket> ticket) {
  if (outgoing_tickets == nullptr) refuse_travel();
  outgoing_tickets->push_back(std::move(ticket));
}

os::owned_handle travel_in(std::uint32_t index) {
  if (incoming == nullptr || index >= incoming->size() || !(*incoming)[index]) {
    throw serialization_error(serialization_error::phase::decode_arguments,
                              "an argument names a handle that did not come with the call");
  }
  return std::move((*incoming)[index]);
}

// ---- encoding -----------------------------------------------------------------------------------

namespace {
void append_code(std::string& out, const void* address) {
  os::code_location where;
  if (!os::locate_code(address, where)) {
    throw serialization_error(serialization_error::phase::encode_arguments,
                              "the target's code lies in no loaded module");
  }
  append_string(out, where.module);
  append_u64(out, where.offset);
}

}  // namespace

void encode_call_body(const call_spec& call, std::string& out, std::size_t body_start,
                      bool allow_block, os::shared_block& block, std::size_t& block_size,
                      handle_list* handles, ticket_list* tickets) {
  // A call that carries handles carries their tickets too.
  ticket_list unused;
  const travelling_with collecting(outgoing, handles);
  const travelling_with collecting_tickets(
      outgoing_tickets, handles == nullptr ? nullptr : (tickets != nullptr ? tickets : &unused));
  append_code(out, reinterpret_cast<const void*>(call.invoker));
  append_code(out, reinterpret_cast<const void*>(call.target));
  output_lease lease;
  std::ostream& stream = lease.open(&out, body_start, allow_block, &block, &block_size);
  try {
    call.write_arguments(stream, call.arguments);
  } catch (const error&) {
    throw;
  } catch (const std::exception& e) {
    out.resize(std::min(out.size(), body_start));
    block = os::shared_block();
    throw serialization_error(serialization_error::phase::encode_arguments, e.what());
  }
  if (!stream) {
    throw serialization_error(serialization_error::phase::encode_arguments, "stream failure");
  }
}

std::shared_ptr<const encoded_call> encode_call(const call_spec& call) {
  auto encoded = std::make_shared<encoded_call>();
  os::shared_block unused;
  std::size_t unused_size = 0;
  encode_call_body(call, encoded->bytes, 0, false, unused, unused_size, &encoded->handles,
                   &encoded->tickets);
  return encoded;
}

// ---- running ------------------------------------------------------------------------------------

namespace {
/// The demangled type of the exception being handled, e.g. "std::runtime_error".
std::string current_exception_type() {
#if defined(MULTIPROC_HAVE_CXXABI)
  const std::type_info* type = abi::__cxa_current_exception_type();
  if (type == nullptr) return "unknown";
  int status = 0;
  char* readable = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
  std::string name = (status == 0 && readable != nullptr) ? readable : type->name();
  std::free(readable);
  return name;
#else
  try {
    throw;
  } catch (const std::exception& e) {
    std::string name = typeid(e).name();  // MSVC: "class std::runtime_error"
    for (const char* prefix : {"class ", "struct "}) {
      if (name.rfind(prefix, 0) == 0) name.erase(0, std::strlen(prefix));
    }
    return name;
  } catch (...) {
    return "unknown (not a std::exception)";
  }
#endif
}

/// The what() of the exception being handled (empty if it is not a std::exception).
std::string current_exception_message() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return std::string();
  }
}

}  // namespace

task_outcome run_call_body(const char* body, std::size_t size, std::string* result_out,
                           std::size_t result_start, bool allow_block,
                           os::shared_block* result_block, std::size_t* result_block_size,
                           handle_list* handles, os::shared_block* consumed_arguments) {
  task_outcome outcome;
  invoker_fn invoker = nullptr;
  raw_function target = nullptr;
  body_reader reader(body, size);
  try {
    const std::string_view invoker_module = reader.string();
    const std::uint64_t invoker_offset = reader.u64();
    const std::string_view target_module = reader.string();
    const std::uint64_t target_offset = reader.u64();
    const void* invoker_address = os::resolve_code(invoker_module, invoker_offset);
    if (invoker_address == nullptr || !is_registered_invoker(invoker_address)) {
      throw std::runtime_error(
          "refused the call: its invoker is not one this program instantiated");
    }
    const void* target_address = os::resolve_code(target_module, target_offset);
    if (target_address == nullptr) {
      throw std::runtime_error("refused the call: its target is not in an executable mapping of " +
                               std::string(target_module.empty() ? "the program" : target_module));
    }
    invoker = reinterpret_cast<invoker_fn>(const_cast<void*>(invoker_address));
    target = reinterpret_cast<raw_function>(const_cast<void*>(target_address));
  } catch (const std::exception& e) {
    outcome.status = result_status::bad_arguments;
    outcome.message = e.what();
    return outcome;
  }
  const travelling_with providing(incoming, handles);
  // What the target encodes (a call it starts itself) collects its own handles; its result
  // may carry none.
  const travelling_with no_handles_out(outgoing, static_cast<handle_list*>(nullptr));
  const travelling_with no_tickets_out(outgoing_tickets, static_cast<ticket_list*>(nullptr));
  std::istream& arguments = memory_input(reader.position(), reader.remaining(), consumed_arguments);
  output_lease lease;
  std::ostream* result = nullptr;
  if (result_out != nullptr) {
    result = &lease.open(result_out, result_start, allow_block, result_block, result_block_size);
  }
  try {
    invoker(target, arguments, result);
    return outcome;
  } catch (const codec_failure& failure) {
    outcome.status =
        failure.while_decoding ? result_status::bad_arguments : result_status::bad_result;
    outcome.message = failure.message;
  } catch (...) {
    outcome.status = result_status::raised;
    outcome.type_name = current_exception_type();
    outcome.message = current_exception_message();
  }
  if (result_out != nullptr) result_out->resize(std::min(result_out->size(), result_start));
  if (result_block != nullptr) *result_block = os::shared_block();
  return outcome;
}

}  // namespace multiproc::detail
