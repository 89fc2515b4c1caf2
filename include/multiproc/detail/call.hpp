// multiproc — internals the public templates need: target checking, invokers and the
// description of one call. Not part of the API.
#pragma once

#include <algorithm>
#include <cstddef>
#include <iosfwd>
#include <istream>
#include <memory>
#include <ostream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <multiproc/config.hpp>
#include <multiproc/serialization.hpp>

namespace multiproc::detail {

/// Any function pointer, type-erased.
using raw_function = void (*)();
/// Decodes the arguments from `arguments`, calls `target`, and (if `result` is not null)
/// encodes the result into it. Codec failures throw codec_failure; the target's own
/// exceptions pass through unchanged.
using invoker_fn = void (*)(raw_function target, std::istream& arguments, std::ostream* result);
/// Writes the arguments of a call (held at `arguments`) into a cereal binary archive.
using argument_writer = void (*)(std::ostream& out, const void* arguments);

/// Thrown by invokers when decoding the arguments or encoding the result fails, so the
/// worker can tell a codec failure from the target's own exception.
struct codec_failure {
  bool while_decoding;  // true: decoding the arguments; false: encoding the result
  std::string message;
};

/// Records an invoker as one this program instantiated; workers run no other. Called from
/// static initialisation. Never throws.
MULTIPROC_API bool register_invoker(invoker_fn invoker) noexcept;

/// One call to make in another process: who decodes, what runs, how arguments are written.
struct call_spec {
  invoker_fn invoker;
  raw_function target;
  argument_writer write_arguments;
  const void* arguments;
};

/// A call encoded to run later: its bytes and the handles its arguments carry. Defined in the
/// library.
struct encoded_call;
/// Encodes a call to run later (a process's target, a pool's initializer). Throws
/// serialization_error.
MULTIPROC_API std::shared_ptr<const encoded_call> encode_call(const call_spec& call);

template <class>
inline constexpr bool dependent_false = false;

// ---- what a target is -----------------------------------------------------------------------

template <class T>
struct signature_of_pointer {
  static constexpr bool valid = false;
};
template <class R, class... A>
struct signature_of_pointer<R (*)(A...)> {
  static constexpr bool valid = true;
  using pointer = R (*)(A...);
  using result = R;
  using arguments = std::tuple<std::decay_t<A>...>;
  static constexpr std::size_t arity = sizeof...(A);
  static constexpr bool has_mutable_reference =
      (... || (std::is_lvalue_reference_v<A> && !std::is_const_v<std::remove_reference_t<A>>));
};
template <class R, class... A>
struct signature_of_pointer<R (*)(A...) noexcept> : signature_of_pointer<R (*)(A...)> {};

template <class M>
struct call_operator_pointer {
  using type = void;
};
#define MULTIPROC_DETAIL_CALL_OPERATOR(QUALIFIERS)                   \
  template <class C, class R, class... A>                            \
  struct call_operator_pointer<R (C::*)(A...) QUALIFIERS> {          \
    using type = R (*)(A...);                                        \
  };                                                                 \
  template <class C, class R, class... A>                            \
  struct call_operator_pointer<R (C::*)(A...) QUALIFIERS noexcept> { \
    using type = R (*)(A...);                                        \
  };
MULTIPROC_DETAIL_CALL_OPERATOR()
MULTIPROC_DETAIL_CALL_OPERATOR(const)
MULTIPROC_DETAIL_CALL_OPERATOR(&)
MULTIPROC_DETAIL_CALL_OPERATOR(const&)
#undef MULTIPROC_DETAIL_CALL_OPERATOR

template <class F, class = void>
struct has_single_call_operator : std::false_type {};
template <class F>
struct has_single_call_operator<F, std::void_t<decltype(&F::operator())>> : std::true_type {};

/// The plain function pointer type a target stands for (void if it stands for none).
template <class F>
struct target_pointer {
  using type = void;
};
template <class F>
requires(
    std::is_pointer_v<F>&& std::is_function_v<std::remove_pointer_t<F>>) struct target_pointer<F> {
  using type = typename signature_of_pointer<F>::pointer;
};
template <class F>
requires(std::is_class_v<F>&& has_single_call_operator<F>::value) struct target_pointer<F> {
  using type = typename call_operator_pointer<decltype(&F::operator())>::type;
};

/// Turns a target into a plain function pointer, refusing (at compile time, with a message
/// saying what to do) anything whose state could not reach another process.
template <class F>
auto to_function_pointer(F&& target) {
  using D = std::decay_t<F>;
  using P = typename target_pointer<D>::type;
  if constexpr (std::is_class_v<D> && !has_single_call_operator<D>::value) {
    static_assert(dependent_false<D>,
                  "multiproc: the target must be a plain function or a lambda with spelled-out "
                  "parameter types. A generic lambda (auto parameters) or an overloaded function "
                  "object names no single function the other process could call: give the "
                  "parameters concrete types.");
    return static_cast<void (*)()>(nullptr);
  } else if constexpr (std::is_void_v<P>) {
    static_assert(dependent_false<D>,
                  "multiproc: the target must be a plain function or a captureless lambda "
                  "(member function pointers and other callables cannot be sent to another "
                  "process).");
    return static_cast<void (*)()>(nullptr);
  } else if constexpr (std::is_class_v<D> && !std::is_convertible_v<D, P>) {
    static_assert(dependent_false<D>,
                  "multiproc: the target is a lambda with captures or a function object with "
                  "state. Its state cannot reach a process that does not share memory with this "
                  "one. Capture nothing and pass the state as an argument instead, e.g. "
                  "mp::process p([](int n) { /*...*/ }, n);");
    return static_cast<P>(nullptr);
  } else {
    return static_cast<P>(target);
  }
}

template <class P, class... Args>
constexpr void check_arguments() {
  using sig = signature_of_pointer<P>;
  using params = typename sig::arguments;
  static_assert(!sig::has_mutable_reference,
                "multiproc: the target takes a non-const reference. Arguments are copied into the "
                "other process, so a change there would never reach the caller: take the "
                "parameter by value or by const reference, and return what you compute.");
  static_assert(sizeof...(Args) == sig::arity,
                "multiproc: the number of arguments does not match the target's parameters.");
  if constexpr (sizeof...(Args) == sig::arity) {
    static_assert(
        []<std::size_t... I>(std::index_sequence<I...>) {
          return (... && std::is_constructible_v<std::tuple_element_t<I, params>, Args&&>);
        }(std::make_index_sequence<sizeof...(Args)>{}),
        "multiproc: an argument cannot be converted to the target's parameter type.");
  }
  static_assert(
      []<std::size_t... I>(std::index_sequence<I...>) {
        return (... && is_transferable_v<std::tuple_element_t<I, params>>);
      }(std::make_index_sequence<sig::arity>{}),
      "multiproc: an argument type cannot be serialised, so it cannot be copied to another "
      "process. Use std types (std::string, std::vector, std::map, ...: not raw pointers or "
      "handles), or give your type a `template <class Archive> void serialize(Archive& ar)` "
      "member (cereal) that lists its fields.");
}

template <class R>
constexpr void check_result() {
  static_assert(is_transferable_v<R>,
                "multiproc: the target's result type cannot be serialised, so it cannot be copied "
                "back from the worker. Return std types or give your type a "
                "`template <class Archive> void serialize(Archive& ar)` member (cereal).");
}

// ---- invokers ---------------------------------------------------------------------------------

template <class Tuple>
void decode_into(std::istream& in, Tuple& value) {
  try {
    input_archive archive(in);
    archive(value);
  } catch (const std::exception& e) {
    throw codec_failure{true, e.what()};
  }
}

template <class T>
void encode_value(std::ostream* out, const T& value) {
  try {
    cereal::BinaryOutputArchive archive(*out);
    archive(value);
  } catch (const std::exception& e) {
    throw codec_failure{false, e.what()};
  }
}

/// Calls a function pointer of type P with arguments decoded from the stream; encodes the
/// result when asked to and when there is one.
template <class P>
struct invoker {
  static void call(raw_function target, std::istream& in, std::ostream* out) {
    using sig = signature_of_pointer<P>;
    typename sig::arguments arguments;
    decode_into(in, arguments);
    auto function = reinterpret_cast<P>(target);
    if constexpr (std::is_void_v<typename sig::result>) {
      std::apply(function, std::move(arguments));
    } else if constexpr (!is_transferable_v<typename sig::result>) {
      // Only mp::process calls such a target (a pool refuses it at compile time): the result
      // is discarded, so it need not be serialisable.
      (void)std::apply(function, std::move(arguments));
    } else if (out == nullptr) {
      (void)std::apply(function, std::move(arguments));
    } else {
      encode_value(out, std::apply(function, std::move(arguments)));
    }
  }
  static inline const bool registered = register_invoker(&call);
};

/// Numbers travel as one block of bytes per chunk (one stream call, not one per item); the
/// bytes are those cereal's binary archive writes item by item, so both ends agree either way.
/// Not bool: std::vector<bool> has no contiguous storage.
template <class T>
inline constexpr bool block_encoded_v = std::is_arithmetic_v<T> && !std::is_same_v<T, bool>;

/// A sequence travels as its count, then its elements.
template <class T>
void write_sequence(cereal::BinaryOutputArchive& archive, const T* first, std::size_t count) {
  archive(cereal::make_size_tag(static_cast<cereal::size_type>(count)));
  if constexpr (block_encoded_v<T>) {
    archive(cereal::binary_data(first, count * sizeof(T)));
  } else {
    for (std::size_t i = 0; i < count; ++i)
      archive(first[i]);
  }
}
/// The same for a std::vector (std::vector<bool> included).
template <class T>
void write_sequence(cereal::BinaryOutputArchive& archive, const std::vector<T>& values) {
  if constexpr (block_encoded_v<T>) {
    write_sequence(archive, values.data(), values.size());
  } else {
    archive(cereal::make_size_tag(static_cast<cereal::size_type>(values.size())));
    for (std::size_t i = 0; i < values.size(); ++i) {
      const T& value = values[i];  // a bool, not a std::vector<bool>::reference
      archive(value);
    }
  }
}

/// Reads what write_sequence wrote, appending to `out`.
template <class T>
void read_sequence(input_archive& archive, std::vector<T>& out) {
  cereal::size_type count = 0;
  archive(cereal::make_size_tag(count));
  const std::size_t have = out.size();
  const auto n = static_cast<std::size_t>(count);
  // The count is the peer's claim: memory is taken as the items arrive (at most one step of
  // 1 MiB ahead of them), so a short input that claims a huge count costs what it holds.
  constexpr std::size_t step_bytes = std::size_t{1} << 20;
  constexpr std::size_t step = std::max<std::size_t>(1, step_bytes / sizeof(T));
  if (out.capacity() - have < n)
    out.reserve(std::max(have + std::min(n, step), 2 * out.capacity()));
  if constexpr (block_encoded_v<T>) {
    for (std::size_t done = 0; done < n;) {
      const std::size_t now = std::min(n - done, std::max(step, done));
      out.resize(have + done + now);
      archive(cereal::binary_data(out.data() + have + done, now * sizeof(T)));
      done += now;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      T value{};
      archive(value);
      out.push_back(std::move(value));
    }
  }
}

/// Runs P over a chunk of items (map: each item is the argument; starmap: each item is the
/// tuple of arguments). The chunk travels as a count followed by the items; the result as a
/// count followed by the results.
template <class P, bool Star>
struct chunk_invoker {
  using sig = signature_of_pointer<P>;
  using item = std::conditional_t<Star, typename sig::arguments,
                                  std::decay_t<std::tuple_element_t<0, typename sig::arguments>>>;
  using result = typename sig::result;

  static void call(raw_function target, std::istream& in, std::ostream* out) {
    // A chunk's results have nowhere to go in a call run for no result (an initializer, an
    // mp::process target): only a peer's forged frame gets here.
    if (out == nullptr) throw codec_failure{true, "a map chunk sent as a call without a result"};
    auto function = reinterpret_cast<P>(target);
    std::vector<item> items;
    try {
      input_archive archive(in);
      read_sequence(archive, items);
    } catch (const std::exception& e) {
      throw codec_failure{true, e.what()};
    }
    std::vector<result> results;
    results.reserve(items.size());
    for (auto& element : items) {
      if constexpr (Star) {
        results.push_back(std::apply(function, std::move(element)));
      } else {
        results.push_back(function(std::move(element)));
      }
    }
    try {
      cereal::BinaryOutputArchive archive(*out);
      write_sequence(archive, results);
    } catch (const std::exception& e) {
      throw codec_failure{false, e.what()};
    }
  }
  static inline const bool registered = register_invoker(&call);
};

/// Decodes a chunk result (count, then the results) and appends it to `out`.
template <class R>
void decode_chunk(std::istream& in, std::vector<R>& out) {
  input_archive archive(in);
  read_sequence(archive, out);
}

/// Writes a std::tuple of arguments.
template <class Tuple>
void write_tuple(std::ostream& out, const void* arguments) {
  cereal::BinaryOutputArchive archive(out);
  archive(*static_cast<const Tuple*>(arguments));
}

/// Items of a chunk to write: a pointer and a count into a materialised input.
template <class Item>
struct chunk_view {
  const Item* first;
  std::size_t count;
};
template <class Item>
void write_chunk(std::ostream& out, const void* arguments) {
  const auto& view = *static_cast<const chunk_view<Item>*>(arguments);
  cereal::BinaryOutputArchive archive(out);
  write_sequence(archive, view.first, view.count);
}

/// An argument already of the parameter's type is referred to, not copied, while the call is
/// encoded (a large argument is then copied once, straight into the message); any other is
/// converted to the parameter's type first.
template <class Param, class Arg>
using stored_argument =
    std::conditional_t<std::is_same_v<Param, std::decay_t<Arg>>, const Param&, Param>;
template <class Params, class... Args>
struct stored_tuple;
template <class... P, class... Args>
struct stored_tuple<std::tuple<P...>, Args...> {
  using type = std::tuple<stored_argument<P, Args>...>;
};

/// Everything a call needs, checked and bound: the function pointer, the arguments as the
/// target's parameter types, and the invoker.
template <class F, class... Args>
struct bound_call {
  using pointer = decltype(to_function_pointer(std::declval<F>()));
  using sig = signature_of_pointer<pointer>;
  using result = typename sig::result;

  pointer function;
  typename stored_tuple<typename sig::arguments, Args...>::type arguments;

  bound_call(F&& target, Args&&... args)
      : function(to_function_pointer(std::forward<F>(target))),
        arguments(std::forward<Args>(args)...) {}

  call_spec spec() const {
    (void)invoker<pointer>::registered;  // instantiates the registration in this program
    return call_spec{&invoker<pointer>::call, reinterpret_cast<raw_function>(function),
                     &write_tuple<decltype(arguments)>, &arguments};
  }
};

template <class F, class... Args>
constexpr bool check_call() {
  using D = std::decay_t<F>;
  using P = typename target_pointer<D>::type;
  if constexpr (!std::is_void_v<P>) check_arguments<P, Args...>();
  return true;
}

}  // namespace multiproc::detail
